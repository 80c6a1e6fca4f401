// The pure parts of examples/kv: hashing, size classes, layout, and the table and allocator run over a plain Buffer
// against a Map (the multi-process test on a cluster is test/kv.test.ts).
import test from 'ava';
import {
  classFor,
  formatBytes,
  hashKey,
  KvError,
  planLayout,
  readLayout,
  retag,
  sizeClasses,
  type CreateOptions,
  type Layout,
} from '../../examples/kv/layout.ts';
import * as table from '../../examples/kv/table.ts';

function fresh(size: number, opts: CreateOptions = {}): { mem: Buffer; l: Layout } {
  const mem = Buffer.alloc(size);
  formatBytes(planLayout(size, opts)).copy(mem, 0);
  const l = readLayout(mem);
  if (!l) throw new Error('not formatted');
  return { mem, l };
}

const tx = (mem: Buffer, l: Layout): table.Txn => new table.Txn(mem, l);

test('hashKey is MurmurHash3 x86_32 (reference vectors)', (t) => {
  t.is(hashKey(Buffer.alloc(0), 0), 0);
  t.is(hashKey(Buffer.alloc(0), 1), 0x514e28b7);
  t.is(hashKey(Buffer.from('hello'), 0), 0x248bfa47);
  t.is(hashKey(Buffer.from('The quick brown fox jumps over the lazy dog'), 0), 0x2e4ff723);
  t.is(hashKey(Buffer.from([0x21, 0x43, 0x65, 0x87]), 0x5082edee), 0x2362f9de);
});

test('size classes grow by at most a quarter and classFor picks the smallest that holds a record', (t) => {
  const cs = sizeClasses(1024 * 1024 + 300);
  t.is(cs[0], 32);
  t.true((cs[cs.length - 1] ?? 0) >= 1024 * 1024 + 300);
  for (let i = 1; i < cs.length; i++) {
    const [a, b] = [cs[i - 1] ?? 0, cs[i] ?? 0];
    t.true(b > a && b <= Math.ceil((a * 1.25) / 8) * 8 + 8 && b % 8 === 0, `${String(a)} -> ${String(b)}`);
  }
  for (const n of [1, 32, 33, 1048, 4096, 100_000]) {
    const i = classFor(cs, n);
    t.true((cs[i] ?? 0) >= n && (i === 0 || (cs[i - 1] ?? 0) < n));
  }
  t.is(classFor(cs, (cs[cs.length - 1] ?? 0) + 1), -1);
});

test('a formatted header reads back; a blank one is null; a foreign one is refused', (t) => {
  const { mem, l } = fresh(1 << 20, { slots: 1024, arenas: 4, maxKeyBytes: 64, maxValueBytes: 2048 });
  t.like(l, { slots: 1024, arenas: 4, maxKeyBytes: 64, maxValueBytes: 2048, maxProbe: 256, heapEnd: 1 << 20 });
  t.true(l.slotsAt % 4096 === 0 && l.heapAt % 4096 === 0 && l.heapAt >= l.slotsAt + 1024 * 8);
  t.is(readLayout(Buffer.alloc(8192)), null);
  mem.write('NOTKVSTR', 0, 'latin1');
  t.throws(() => readLayout(mem), { instanceOf: KvError, message: /bad magic/ });
});

test('planLayout rejects bad options with INVALID_ARGUMENT', (t) => {
  const bad = (size: number, o: CreateOptions, re: RegExp): void => {
    const e = t.throws(() => planLayout(size, o), { instanceOf: KvError, message: re });
    t.is(e?.code, 'INVALID_ARGUMENT');
  };
  bad(1 << 20, { slots: 1000 }, /power of two/);
  bad(1 << 20, { maxKeyBytes: 0 }, /maxKeyBytes/);
  bad(1 << 20, { maxValueBytes: 2 << 20 }, /maxValueBytes/);
  bad(64 << 10, { slots: 4096, arenas: 8 }, /too small/);
  bad(33 * 2 ** 30, {}, /dataset size/);
});

test('retag changes every byte of the tag and nothing else', (t) => {
  const b = Buffer.alloc(24, 7);
  for (let i = 0; i < 200; i++) {
    const before = Buffer.from(b);
    retag(b, 8);
    for (let j = 8; j < 16; j++) t.not(b[j], before[j]);
    t.true(b.subarray(0, 8).equals(before.subarray(0, 8)) && b.subarray(16).equals(before.subarray(16)));
  }
});

test('Txn merges the pages it read into ranges', (t) => {
  const { mem, l } = fresh(1 << 20);
  const x = tx(mem, l);
  x.read(4096 * 3 + 10, 8);
  x.read(4096 * 4 - 4, 8);
  x.read(4096 * 9, 1);
  t.deepEqual(x.reads(), [
    { offset: 4096 * 3, length: 8192 },
    { offset: 4096 * 9, length: 4096 },
  ]);
});

test('random puts, deletes and updates agree with a Map, and freed records are reused', (t) => {
  const { mem, l } = fresh(4 << 20, { slots: 4096, arenas: 1, maxValueBytes: 3000 });
  const model = new Map<string, Buffer>();
  let seed = 12345;
  const rnd = (n: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  const value = (): Buffer => Buffer.alloc(rnd(3) === 0 ? rnd(3000) : rnd(40), String.fromCharCode(97 + rnd(26)));
  for (let i = 0; i < 20_000; i++) {
    const key = `k${String(rnd(600))}`;
    const op = rnd(10);
    const x = tx(mem, l);
    if (op < 5) {
      const v = value();
      table.put(x, Buffer.from(key), v);
      model.set(key, v);
    } else if (op < 8) {
      t.is(table.del(x, Buffer.from(key)), model.delete(key));
    } else {
      const got = table.update(x, Buffer.from(key), (old) => {
        t.deepEqual(old, model.get(key));
        return rnd(4) === 0 ? undefined : Buffer.concat([old ?? Buffer.alloc(0), Buffer.from('+')]);
      });
      if (got === undefined) model.delete(key);
      else model.set(key, Buffer.from(got));
    }
  }
  for (let i = 0; i < 600; i++)
    t.deepEqual(table.get(mem, l, Buffer.from(`k${String(i)}`)), model.get(`k${String(i)}`));
  const entries = table.scan(mem, l);
  t.is(entries.length, model.size);
  for (const e of entries) t.deepEqual(e.value, model.get(e.key.toString()));
  t.deepEqual(
    table
      .scan(mem, l, Buffer.from('k59'), 1000)
      .map((e) => e.key.toString())
      .sort(),
    [...model.keys()].filter((k) => k.startsWith('k59')).sort(),
  );
  const s = table.stats(mem, l);
  t.is(s.live, model.size);
  // Without reuse, 20 000 operations would have handed out far more than the live data.
  const liveBytes = [...model.entries()].reduce((n, [k, v]) => n + 24 + k.length + v.length, 0);
  t.true(
    s.heapAllocated < 4 * liveBytes + 600 * 3100,
    `allocated ${String(s.heapAllocated)}, live ${String(liveBytes)}`,
  );
  // Deleting everything and putting it back: the second round takes every record from the free lists (the first
  // may need blocks of other classes, as an in-place overwrite keeps a bigger record).
  const cycle = (): number => {
    for (const k of [...model.keys()]) t.true(table.del(tx(mem, l), Buffer.from(k)));
    t.is(table.stats(mem, l).live, 0);
    for (const [k, v] of model) table.put(tx(mem, l), Buffer.from(k), v);
    return table.stats(mem, l).heapAllocated;
  };
  const first = cycle();
  t.is(cycle(), first);
});

test('records up to a page never straddle a page boundary', (t) => {
  const { mem, l } = fresh(8 << 20, { slots: 4096, arenas: 3, maxValueBytes: 5000 });
  for (let i = 0; i < 1500; i++) {
    const x = tx(mem, l);
    table.put(x, Buffer.from(`k${String(i)}`), Buffer.alloc([10, 1000, 1100, 3000, 4060, 4500][i % 6] ?? 0, i));
  }
  let straddling = 0;
  for (let i = 0; i < 1500; i++) {
    const at = table.lookup(mem, l, Buffer.from(`k${String(i)}`));
    t.true(at.found);
    const cap = mem.readUInt32LE(at.rec + 8);
    if (cap <= 4096 && Math.floor(at.rec / 4096) !== Math.floor((at.rec + cap - 1) / 4096)) straddling++;
  }
  t.is(straddling, 0);
});

test('a full hash table or heap gives RESOURCE_EXHAUSTED and leaves the store untouched', (t) => {
  const { mem, l } = fresh(1 << 20, { slots: 16, maxProbe: 16, arenas: 1 });
  for (let i = 0; i < 16; i++) table.put(tx(mem, l), Buffer.from(`key${String(i)}`), Buffer.from(`v${String(i)}`));
  const snap = Buffer.from(mem);
  const e = t.throws(() => table.put(tx(mem, l), Buffer.from('one-more'), Buffer.from('x')), {
    instanceOf: table.FullError,
  });
  t.is(e?.code, 'RESOURCE_EXHAUSTED');
  t.regex(e?.message ?? '', /hash table full/);
  t.true(mem.equals(snap));
  for (let i = 0; i < 16; i++)
    t.deepEqual(table.get(mem, l, Buffer.from(`key${String(i)}`)), Buffer.from(`v${String(i)}`));
  // Overwriting an existing key still works in a full table.
  table.put(tx(mem, l), Buffer.from('key3'), Buffer.from('new'));
  t.deepEqual(table.get(mem, l, Buffer.from('key3')), Buffer.from('new'));

  const h = fresh(64 << 10, { slots: 64, arenas: 1, maxValueBytes: 4000 });
  let n = 0;
  const big = Buffer.alloc(4000, 1);
  for (;;) {
    const before = Buffer.from(h.mem);
    try {
      table.put(tx(h.mem, h.l), Buffer.from(`b${String(n)}`), big);
      n++;
    } catch (err) {
      t.true(err instanceof table.FullError);
      t.regex((err as Error).message, /store full/);
      t.true(h.mem.equals(before));
      break;
    }
  }
  t.true(n > 5);
  for (let i = 0; i < n; i++) t.deepEqual(table.get(h.mem, h.l, Buffer.from(`b${String(i)}`)), big);
});

test('keys and values outside the limits are INVALID_ARGUMENT before anything is written', (t) => {
  const { mem, l } = fresh(1 << 20, { maxKeyBytes: 8, maxValueBytes: 100 });
  const snap = Buffer.from(mem);
  for (const [k, v] of [
    [Buffer.alloc(0), Buffer.alloc(1)],
    [Buffer.alloc(9, 1), Buffer.alloc(1)],
    [Buffer.from('ok'), Buffer.alloc(101)],
  ] as const) {
    const e = t.throws(() => table.put(tx(mem, l), k, v), { instanceOf: KvError });
    t.is(e?.code, 'INVALID_ARGUMENT');
  }
  t.true(mem.equals(snap));
  table.put(tx(mem, l), Buffer.from('ok'), Buffer.alloc(100, 2));
  t.deepEqual(table.get(mem, l, Buffer.from('ok')), Buffer.alloc(100, 2));
});

test('a delete or an insert lists the slots it decided on as reads; an in-place overwrite lists none', (t) => {
  const { mem, l } = fresh(1 << 20);
  const ins = tx(mem, l);
  table.put(ins, Buffer.from('a'), Buffer.from('1'));
  t.true(ins.wrote);
  t.true(
    ins
      .reads()
      .some(
        (r) =>
          r.offset <= l.slotsAt + 8 * (hashKey(Buffer.from('a')) & (l.slots - 1)) && r.offset + r.length > l.slotsAt,
      ),
  );
  const over = tx(mem, l);
  table.put(over, Buffer.from('a'), Buffer.from('2'));
  t.deepEqual(over.reads(), []);
  const gone = tx(mem, l);
  t.false(table.del(gone, Buffer.from('missing')));
  t.false(gone.wrote);
  t.true(gone.reads().length > 0);
});

test('a torn record (out-of-range offset in a slot) is reported as TornView, not read', (t) => {
  const { mem, l } = fresh(1 << 20);
  table.put(tx(mem, l), Buffer.from('a'), Buffer.from('1'));
  const s = hashKey(Buffer.from('a')) & (l.slots - 1);
  mem.writeUInt32LE(0xffffff, l.slotsAt + 8 * s + 4);
  t.throws(() => table.get(mem, l, Buffer.from('a')), { instanceOf: table.TornView });
});

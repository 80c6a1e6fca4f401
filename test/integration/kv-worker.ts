// A process of test/kv.test.ts: runs one job on the key-value store of examples/kv through the SDK and prints one
// JSON line. Jobs: create (the dataset and store), work (random acknowledged operations; prints what was
// acknowledged), dump (every entry, in one snapshot), tags (two sessions on two nodes interleave puts of one key).
import { CommitConflictError, connect } from '../../clients/typescript/index.ts';
import { KvStore } from '../../examples/kv/index.ts';
import { TAG_BYTES } from '../../examples/kv/layout.ts';
import * as table from '../../examples/kv/table.ts';

interface Job {
  mode: 'create' | 'work' | 'dump' | 'tags';
  socket: string;
  /** tags: the second node's socket. */
  socket2?: string;
  name: string;
  /** work: this process's keys are `${prefix}${0..keys-1}`; it is their only writer. */
  prefix?: string;
  keys?: number;
  ops?: number;
  /** work: shared 8-byte counters every process increments. */
  counters?: string[];
  seed?: number;
}

const job = JSON.parse(process.argv[2] ?? '{}') as Job;
const hp = await connect({ socketPath: job.socket });
try {
  if (job.mode === 'create') {
    const kv = await KvStore.open(hp, job.name, {
      create: { size: 8 << 20, replicas: 2, slots: 1024, maxProbe: 128, arenas: 2, maxValueBytes: 6000 },
    });
    process.stdout.write(JSON.stringify({ slots: kv.layout.slots }) + '\n');
  } else if (job.mode === 'tags') {
    // Two writers of one key whose new values differ from the old one in disjoint bytes. Each stages its put in its
    // own session (no commit yet); b commits first, then a. Round 1 as the store does it; round 2 with a's record
    // tag put back to its old bytes before the commit (a store without tags).
    const hp2 = await connect({ socketPath: job.socket2 ?? '' });
    try {
      const a = await KvStore.open(hp, job.name, { create: { size: 4 << 20, replicas: 2, maxValueBytes: 64 } });
      const b = await KvStore.open(hp2, job.name);
      const rounds: { aCommit: string; value: string }[] = [];
      for (const keepTag of [false, true]) {
        const key = Buffer.from(keepTag ? 'untagged' : 'tagged');
        await a.put(key, 'aaaaaaaa');
        while ((await b.get(key))?.toString() !== 'aaaaaaaa') await new Promise((r) => setTimeout(r, 10));
        // Both sync points after the put above, so each session's base image of the record is that put.
        await a.ds.refresh();
        await b.ds.refresh();
        const memA = a.ds.map();
        const at = table.lookup(memA, a.layout, key);
        const oldTag = Buffer.from(memA.subarray(at.rec, at.rec + TAG_BYTES));
        table.put(new table.Txn(memA, a.layout), key, Buffer.from('abaaaaaa'));
        if (keepTag) oldTag.copy(memA, at.rec);
        table.put(new table.Txn(b.ds.map(), b.layout), key, Buffer.from('aabaaaaa'));
        await b.ds.commit();
        let aCommit = 'ok';
        try {
          await a.ds.commit();
        } catch (e) {
          if (!(e instanceof CommitConflictError)) throw e;
          aCommit = 'ABORTED';
          await a.ds.rollback();
        }
        await b.ds.refresh();
        const va = (await a.get(key))?.toString() ?? '';
        const vb = (await b.get(key))?.toString() ?? '';
        rounds.push({ aCommit, value: va === vb ? va : `a ${va}, b ${vb}` });
      }
      process.stdout.write(JSON.stringify({ rounds }) + '\n');
    } finally {
      hp2.close();
    }
  } else if (job.mode === 'dump') {
    const kv = await KvStore.open(hp, job.name);
    const entries = await kv.scan();
    const stats = await kv.stats();
    process.stdout.write(
      JSON.stringify({
        entries: Object.fromEntries(entries.map((e) => [e.key.toString(), e.value.toString('hex')])),
        live: stats.live,
      }) + '\n',
    );
  } else {
    const kv = await KvStore.open(hp, job.name);
    let seed = job.seed ?? 1;
    const rnd = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 8) % n;
    };
    // What this process's acknowledged operations leave: key -> hex value, or null (absent).
    const model: Record<string, string | null> = {};
    const increments: Record<string, number> = {};
    const value = (): Buffer => {
      // Mostly small values, some spanning pages (they move to another size class when they grow).
      const b = Buffer.alloc(rnd(5) === 0 ? 2000 + rnd(4000) : 1 + rnd(64));
      for (let i = 0; i < b.length; i++) b[i] = rnd(256);
      return b;
    };
    const keys = job.keys ?? 20;
    for (let i = 0; i < (job.ops ?? 100); i++) {
      const key = `${job.prefix ?? 'p'}${String(rnd(keys))}`;
      const op = rnd(100);
      try {
        await step(key, op);
      } catch (e) {
        const code = (e as { code?: string }).code ?? '';
        throw new Error(
          `operation ${String(i)} (kind ${String(op)}) on ${key}: ${code} ${e instanceof Error ? e.message : String(e)}`,
          { cause: e },
        );
      }
    }
    async function step(key: string, op: number): Promise<void> {
      if (op < 35) {
        const v = value();
        await kv.put(key, v);
        model[key] = v.toString('hex');
      } else if (op < 50) {
        const existed = await kv.delete(key);
        const known = model[key];
        if (known !== undefined && existed !== (known !== null)) {
          throw new Error(`delete(${key}) said ${String(existed)} but this process's last write says otherwise`);
        }
        model[key] = null;
      } else if (op < 65) {
        // Read-modify-write of an own key: append a byte (or delete it).
        const r = await kv.update(key, (old) =>
          rnd(6) === 0 ? undefined : Buffer.concat([old ?? Buffer.alloc(0), Buffer.from([rnd(256)])]),
        );
        model[key] = r === undefined ? null : r.toString('hex');
      } else if (op < 75) {
        // Two keys in one commit.
        const other = `${job.prefix ?? 'p'}${String(rnd(keys))}`;
        const [a, b] = [value(), value()];
        await kv.batch((bt) => {
          bt.put(key, a);
          bt.put(other, b);
        });
        model[key] = a.toString('hex');
        model[other] = b.toString('hex');
      } else if (op < 85) {
        const got = await kv.get(key);
        const known = model[key];
        if (known !== undefined && (got === undefined ? null : got.toString('hex')) !== known) {
          throw new Error(`get(${key}) does not show this process's last acknowledged write`);
        }
      } else {
        const c = job.counters?.[rnd(job.counters.length)];
        if (c !== undefined) {
          await kv.increment(c);
          increments[c] = (increments[c] ?? 0) + 1;
        }
      }
    }
    process.stdout.write(JSON.stringify({ model, increments, counters: kv.counters }) + '\n');
  }
} finally {
  hp.close();
}

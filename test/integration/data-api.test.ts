// The gRPC hotpot.v1.Data service on real nodes, from TypeScript (grpc-js) and from Python (clients/python).
import { execFile } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { openApp, startApp } from '../helpers/app.ts';
import { CallError, dataClient } from '../helpers/data-client.ts';
import { nodeStats, startDispatcher, startNode, tempDir } from '../helpers/cluster.ts';
import { ensurePythonStubs, PY_DIR, PYTHON } from '../helpers/python.ts';

const MiB = 1024 * 1024;

test.before(ensurePythonStubs);

async function cluster(t: ExecutionContext, n: number, env: NodeJS.ProcessEnv = {}) {
  const dir = tempDir(t);
  // The chunk size is cluster-wide: a test that sets HOTPOT_CHUNK_SIZE sets it for the dispatcher too.
  const chunkEnv: NodeJS.ProcessEnv = env.HOTPOT_CHUNK_SIZE ? { HOTPOT_CHUNK_SIZE: env.HOTPOT_CHUNK_SIZE } : {};
  const d = await startDispatcher(t, { stateDir: join(dir, 'd'), leaseMs: 4000, env: chunkEnv });
  const nodes = [];
  for (let i = 1; i <= n; i++) {
    const pool = join('/dev/shm', `hotpot-test-${String(process.pid)}-${dir.slice(-6)}-n${String(i)}`);
    t.teardown(() => {
      rmSync(pool, { recursive: true, force: true });
    });
    const p = await startNode(t, {
      dispatcher: d.address,
      name: `n${String(i)}`,
      stateDir: join(dir, `n${String(i)}`),
      extra: ['--pool-dir', pool],
      env,
    });
    nodes.push({ ...p, grpc: p.fields.grpc ?? '' });
  }
  return nodes;
}

async function rejects(t: ExecutionContext, p: Promise<unknown>, code: string, what: string): Promise<CallError> {
  try {
    await p;
  } catch (e) {
    const err = e as CallError;
    t.is(err.code, code, `${what}: ${err.details}`);
    return err;
  }
  t.fail(`${what}: expected ${code}, the call succeeded`);
  return new CallError('OK', '', undefined);
}

/** Runs Python with the clients/python package importable; resolves with stdout, rejects on a non-zero exit. */
function python(args: string[], env: NodeJS.ProcessEnv = {}, cwd?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      PYTHON,
      args,
      { env: { ...process.env, PYTHONPATH: PY_DIR, ...env }, timeout: 60_000, cwd },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`python ${args.join(' ')} failed: ${err.message}\n${stderr}`));
        else resolve(stdout);
      },
    );
  });
}

const pattern = (seed: number, n: number): Buffer => {
  const b = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = (x & 0xff) | 1; // never 0: every byte differs from the zeroed base
  }
  return b;
};

test('every Data RPC works over TCP and the unix socket, and writes stay private until commit', async (t) => {
  t.timeout(180_000);
  const [n1, n2] = await cluster(t, 2);
  if (!n1 || !n2) throw new Error('cluster');
  t.true(n1.grpc.startsWith('unix:'));
  const a = dataClient(t, n1.address);
  const b = dataClient(t, n2.grpc);
  const sa = await a.open({
    name: 'rpc',
    create: true,
    sizeBytes: 8 * MiB,
    mode: 'CONSISTENCY_MODE_MRMW',
    replicas: 2,
  });
  t.is(sa.sizeBytes, 8 * MiB);
  t.is(sa.replicas, 2);
  t.is(sa.mode, 'CONSISTENCY_MODE_MRMW');
  t.is(sa.maxMessageBytes, MiB);
  t.true(sa.session.length >= 16);
  const sb = await b.open({ name: 'rpc' });
  t.is(sb.datasetId, sa.datasetId);
  t.not(sb.session, sa.session);

  // Offsets in both chunks (each 4 MiB chunk has its own owner), one write spanning a page boundary.
  for (const off of [4094, 4 * MiB + 100]) {
    const w = await a.write({ session: sa.session, offset: off, data: Buffer.from('cafebabe', 'hex') });
    t.is(w.bytesWritten, 4);
    t.deepEqual((await a.read({ session: sa.session, offset: off, length: 4 })).data, Buffer.from('cafebabe', 'hex'));
    t.deepEqual(
      (await b.read({ session: sb.session, offset: off, length: 4 })).data,
      Buffer.alloc(4),
      'uncommitted writes are private to the session',
    );
  }
  const c = await a.commit({ session: sa.session, replicas: 2 });
  t.true(c.copies >= 2);
  // The typed outcome: N asked for, and not under-replicated (every push reached its node).
  t.is(c.replicas, 2);
  t.false(c.underReplicated);
  t.is(c.pages, 3);
  t.is(c.bytes, 8);
  // B's session still reads its sync point's data for pages it had read; a refresh moves it to the latest.
  const r = await b.refresh({ session: sb.session });
  t.is(r.pagesKept, 0);
  for (const off of [4094, 4 * MiB + 100]) {
    t.deepEqual((await b.read({ session: sb.session, offset: off, length: 4 })).data, Buffer.from('cafebabe', 'hex'));
  }

  // Rollback drops private changes; refresh drops pages that carry no change and keeps real ones.
  await b.write({ session: sb.session, offset: 0, data: Buffer.from('0102', 'hex') });
  t.is((await b.rollback({ session: sb.session })).pagesDropped, 1);
  t.deepEqual((await b.read({ session: sb.session, offset: 0, length: 2 })).data, Buffer.alloc(2));
  await b.write({ session: sb.session, offset: 0, data: Buffer.from('0000', 'hex') }); // same bytes: no change
  await b.write({ session: sb.session, offset: 3 * 4096, data: Buffer.from('07', 'hex') });
  const rf = await b.refresh({ session: sb.session });
  t.deepEqual([rf.pagesKept, rf.pagesDropped], [1, 1]);
  const cb = await b.commit({ session: sb.session });
  t.is(cb.pages, 1);
  t.is(cb.ranges, 1);

  // A commit with nothing private is a no-op that succeeds.
  t.is((await a.commit({ session: sa.session })).pages, 0);
  await a.refresh({ session: sa.session });
  t.deepEqual((await a.read({ session: sa.session, offset: 3 * 4096, length: 1 })).data, Buffer.from('07', 'hex'));

  // MRSW calls on an MRMW dataset are a wrong-mode error; a release without a lease is a no-op.
  await rejects(
    t,
    a.acquire({ session: sa.session, ranges: [{ offset: 0, length: 1 }], leaseMs: 1000 }),
    'FAILED_PRECONDITION',
    'acquire on an MRMW dataset',
  );
  t.false((await a.release({ session: sa.session })).released);

  await a.write({ session: sa.session, offset: 0, data: Buffer.from('ff', 'hex') });
  t.is((await a.close({ session: sa.session })).pagesDropped, 1);
  await rejects(t, a.read({ session: sa.session, offset: 0, length: 1 }), 'NOT_FOUND', 'read after close');
  await rejects(t, a.close({ session: sa.session }), 'NOT_FOUND', 'second close');
  t.deepEqual(
    (await b.read({ session: sb.session, offset: 0, length: 1 })).data,
    Buffer.alloc(1),
    'closed uncommitted',
  );
});

test('streaming reads and writes move a multi-MiB range exactly, in messages of at most 1 MiB', async (t) => {
  t.timeout(180_000);
  const [n1, n2] = await cluster(t, 2);
  if (!n1 || !n2) throw new Error('cluster');
  const a = dataClient(t, n1.grpc);
  const b = dataClient(t, n2.address);
  const sa = await a.open({ name: 'stream', create: true, sizeBytes: 16 * MiB, replicas: 1 });
  const off = 3 * MiB + 123; // unaligned, crossing a chunk boundary at 4 MiB
  const data = pattern(42, 5 * MiB + 7);
  const pieces = [];
  for (let at = 0; at < data.length; at += MiB) {
    pieces.push({ session: at === 0 ? sa.session : '', offset: off + at, data: data.subarray(at, at + MiB) });
  }
  const w = await a.writeStream(pieces);
  t.is(w.bytesWritten, data.length);
  t.is(w.privatePages, Math.floor((off + data.length - 1) / 4096) - Math.floor(off / 4096) + 1);
  const own = await a.readStream(sa.session, off, data.length);
  t.true(own.data.equals(data), 'the session reads its own streamed writes');
  const c = await a.commit({ session: sa.session });
  t.is(c.bytes, data.length);

  const sb = await b.open({ name: 'stream' });
  const got = await b.readStream(sb.session, off - 5, data.length + 10);
  t.is(got.sizes.length, 6);
  t.true(got.sizes.every((s) => s <= MiB));
  t.true(got.data.subarray(0, 5).equals(Buffer.alloc(5)));
  t.true(got.data.subarray(5, 5 + data.length).equals(data), 'another node streams back exactly the committed bytes');
  t.true(got.data.subarray(5 + data.length).equals(Buffer.alloc(5)));
  // A whole-dataset stream.
  const all = await b.readStream(sb.session, 0, 16 * MiB);
  t.is(all.data.length, 16 * MiB);
  t.is(all.sizes.length, 16);
});

test('a ReadStream the client cancels, at any point, leaves its session usable', async (t) => {
  t.timeout(180_000);
  const [n1] = await cluster(t, 1);
  if (!n1) throw new Error('cluster');
  const a = dataClient(t, n1.grpc);
  const s = await a.open({ name: 'cancelled', create: true, sizeBytes: 32 * MiB, replicas: 1 });
  for (let i = 0; i < 40; i++) {
    // Cancelled after 0-3 messages arrived, or after a few ms: while the node reads, writes or waits for the client.
    const stream = a.raw.ReadStream(
      { session: s.session, offset: 0, length: 32 * MiB },
      { deadline: Date.now() + 30_000 },
    );
    stream.on('error', () => undefined);
    const after = i % 5;
    await new Promise<void>((resolve) => {
      let got = 0;
      if (after === 4) {
        setTimeout(() => {
          stream.cancel();
          resolve();
        }, i % 7);
        return;
      }
      stream.on('data', () => {
        got++;
        if (got > after) return;
        if (got === after || after === 0) {
          stream.cancel();
          resolve();
        }
      });
      if (after === 0) {
        stream.cancel();
        resolve();
      }
    });
    // The session answers at once: the cancelled stream let go of it.
    const r = await Promise.race([
      a.read({ session: s.session, offset: 0, length: 8 }),
      new Promise<null>((resolve) => setTimeout(() => resolve(null), 10_000)),
    ]);
    t.not(r, null, `the session answers after stream ${String(i)} was cancelled`);
    if (r === null) return;
  }
});

test('bad inputs get the documented status codes and change nothing', async (t) => {
  t.timeout(120_000);
  const [n1] = await cluster(t, 1);
  if (!n1) throw new Error('cluster');
  const a = dataClient(t, n1.address);
  await rejects(t, a.open({ name: 'bad name!' }), 'INVALID_ARGUMENT', 'bad name');
  await rejects(t, a.open({ name: '' }), 'INVALID_ARGUMENT', 'empty name');
  await rejects(t, a.open({ name: 'missing' }), 'NOT_FOUND', 'open of a missing dataset');
  await rejects(t, a.open({ name: 'x', create: true, sizeBytes: 0 }), 'INVALID_ARGUMENT', 'create size 0');
  await rejects(
    t,
    a.open({ name: 'x', create: true, sizeBytes: MiB, replicas: 65 }),
    'INVALID_ARGUMENT',
    'replicas 65',
  );
  await rejects(
    t,
    a.open({ name: 'x', create: true, sizeBytes: MiB, mode: 7 as never }),
    'INVALID_ARGUMENT',
    'unknown mode',
  );
  const s = (await a.open({ name: 'v', create: true, sizeBytes: MiB })).session;
  await rejects(t, a.read({ session: '', offset: 0, length: 1 }), 'INVALID_ARGUMENT', 'no session');
  await rejects(t, a.read({ session: 'nope', offset: 0, length: 1 }), 'NOT_FOUND', 'unknown session');
  await rejects(t, a.read({ session: s, offset: 0, length: 0 }), 'INVALID_ARGUMENT', 'length 0');
  await rejects(t, a.read({ session: s, offset: 0, length: MiB + 1 }), 'INVALID_ARGUMENT', 'read > 1 MiB');
  await rejects(t, a.read({ session: s, offset: MiB - 1, length: 2 }), 'OUT_OF_RANGE', 'read past the end');
  await rejects(t, a.read({ session: s, offset: 2 ** 60, length: 1 }), 'INVALID_ARGUMENT', 'offset beyond 2^53');
  await rejects(t, a.write({ session: s, offset: 0, data: Buffer.alloc(0) }), 'INVALID_ARGUMENT', 'empty write');
  await rejects(t, a.write({ session: s, offset: MiB, data: Buffer.alloc(1) }), 'OUT_OF_RANGE', 'write at the end');
  await rejects(
    t,
    a.write({ session: s, offset: 0, data: Buffer.alloc(MiB + 1) }),
    'INVALID_ARGUMENT',
    'write > 1 MiB',
  );
  await rejects(t, a.readStream(s, 0, MiB + 1), 'OUT_OF_RANGE', 'stream past the end');
  await rejects(
    t,
    a.writeStream([
      { session: s, offset: 0, data: Buffer.from('01', 'hex') },
      { session: 'other', offset: 1, data: Buffer.from('02', 'hex') },
    ]),
    'INVALID_ARGUMENT',
    'stream switching sessions',
  );
  await rejects(t, a.writeStream([]), 'INVALID_ARGUMENT', 'empty write stream');
  await rejects(t, a.commit({ session: s, replicas: 65 }), 'INVALID_ARGUMENT', 'commit replicas 65');
  await rejects(
    t,
    a.commit({ session: s, reads: [{ offset: MiB - 1, length: 2 }] }),
    'OUT_OF_RANGE',
    'read range past the end',
  );
  await rejects(t, a.commit({ session: s, replicas: 3 }), 'FAILED_PRECONDITION', 'more replicas than nodes');
  // None of it left a change behind except the one byte the switching stream wrote before failing.
  t.is((await a.rollback({ session: s })).pagesDropped, 1);
  t.deepEqual((await a.read({ session: s, offset: 0, length: 2 })).data, Buffer.alloc(2));
  t.is((await a.commit({ session: s })).pages, 0);
});

test('a write-write conflict aborts the later commit with its ranges, and nothing of it is applied', async (t) => {
  t.timeout(120_000);
  const [n1, n2] = await cluster(t, 2);
  if (!n1 || !n2) throw new Error('cluster');
  const a = dataClient(t, n1.address);
  const b = dataClient(t, n2.address);
  const sa = (await a.open({ name: 'cf', create: true, sizeBytes: MiB })).session;
  const sb = (await b.open({ name: 'cf' })).session;
  await a.write({ session: sa, offset: 100, data: Buffer.from('aaaa', 'hex') });
  await b.write({ session: sb, offset: 100, data: Buffer.from('bbbb', 'hex') });
  await b.write({ session: sb, offset: 8000, data: Buffer.from('cc', 'hex') });
  await a.commit({ session: sa });
  const e = await rejects(t, b.commit({ session: sb }), 'ABORTED', 'conflicting commit');
  t.is(e.metadata?.get('hotpot-conflicts')[0], '100+2');
  t.regex(e.details, /100\+2/);
  // Nothing of B's commit applied, not even the non-conflicting byte; its changes are still private.
  const sc = (await a.open({ name: 'cf' })).session;
  t.deepEqual((await a.read({ session: sc, offset: 100, length: 2 })).data, Buffer.from('aaaa', 'hex'));
  t.deepEqual((await a.read({ session: sc, offset: 8000, length: 1 })).data, Buffer.alloc(1));
  t.deepEqual((await b.read({ session: sb, offset: 100, length: 2 })).data, Buffer.from('bbbb', 'hex'));
  // Roll back, redo on the latest data, commit.
  await b.rollback({ session: sb });
  t.deepEqual((await b.read({ session: sb, offset: 100, length: 2 })).data, Buffer.from('aaaa', 'hex'));
  await b.write({ session: sb, offset: 102, data: Buffer.from('bb', 'hex') });
  t.is((await b.commit({ session: sb })).ranges, 1);
});

test('commit read validation aborts when a page the session read changed since its sync point', async (t) => {
  t.timeout(120_000);
  const [n1, n2] = await cluster(t, 2);
  if (!n1 || !n2) throw new Error('cluster');
  const a = dataClient(t, n1.address);
  const b = dataClient(t, n2.address);
  const sa = (await a.open({ name: 'rv', create: true, sizeBytes: MiB })).session;
  const sb = (await b.open({ name: 'rv' })).session;
  // B reads x (page 0) and writes y (page 5) based on it; A changes x meanwhile.
  t.deepEqual((await b.read({ session: sb, offset: 0, length: 1 })).data, Buffer.alloc(1));
  await b.write({ session: sb, offset: 5 * 4096, data: Buffer.from('01', 'hex') });
  await a.write({ session: sa, offset: 0, data: Buffer.from('09', 'hex') });
  await a.commit({ session: sa });
  await rejects(t, b.commit({ session: sb, reads: [{ offset: 0, length: 1 }] }), 'ABORTED', 'stale read');
  const sc = (await a.open({ name: 'rv' })).session;
  t.deepEqual((await a.read({ session: sc, offset: 5 * 4096, length: 1 })).data, Buffer.alloc(1), 'nothing applied');
  // Redo on fresh data: the validation passes (read-only validation too).
  await b.rollback({ session: sb });
  await b.write({ session: sb, offset: 5 * 4096, data: Buffer.from('0a', 'hex') });
  t.is((await b.commit({ session: sb, reads: [{ offset: 0, length: 1 }] })).pages, 1);
  t.is((await b.commit({ session: sb, reads: [{ offset: 0, length: 4096 }] })).pages, 0);
});

test('an abandoned session is closed after the idle timeout', async (t) => {
  t.timeout(120_000);
  const [n1] = await cluster(t, 1, { HOTPOT_DATA_IDLE_TIMEOUT_MS: '500' });
  if (!n1) throw new Error('cluster');
  const a = dataClient(t, n1.address);
  const o = await a.open({ name: 'idle', create: true, sizeBytes: MiB });
  t.is(o.idleTimeoutMs, 500);
  await a.write({ session: o.session, offset: 0, data: Buffer.from('01', 'hex') });
  // An abandoned MRSW holder: its lease (much longer than the idle timeout) must not outlive its session.
  const sw = (await a.open({ name: 'idle-sw', create: true, sizeBytes: MiB, mode: 'CONSISTENCY_MODE_MRSW' })).session;
  await a.acquire({ session: sw, ranges: [{ offset: 0, length: 1 }], leaseMs: 600_000 });
  // Any request would count as use, so this test cannot poll the session: it stays away for 6 idle timeouts.
  await new Promise((r) => setTimeout(r, 3000));
  await rejects(t, a.read({ session: o.session, offset: 0, length: 1 }), 'NOT_FOUND', 'abandoned session');
  const s2 = (await a.open({ name: 'idle' })).session;
  t.deepEqual((await a.read({ session: s2, offset: 0, length: 1 })).data, Buffer.alloc(1), 'its changes were dropped');
  const sw2 = (await a.open({ name: 'idle-sw' })).session;
  await a.acquire({ session: sw2, ranges: [{ offset: 0, length: 1 }], leaseMs: 1000 });
  t.pass('the closed session released its lease');
});

test('Python writes and commits, a TypeScript mmap app on another node reads the bytes, and the reverse', async (t) => {
  t.timeout(180_000);
  const [n1, n2] = await cluster(t, 2);
  if (!n1 || !n2) throw new Error('cluster');
  const script = `
import sys, hotpot
c = hotpot.Client(sys.argv[1])
ds = c.open("py", create=True, size=8 << 20, replicas=2)
ds.write(4 * 1024 * 1024 - 2, bytes.fromhex(sys.argv[2]))
r = ds.commit()
print(r.copies, r.bytes, r.replicas, int(r.under_replicated))
`;
  const out = await python(['-c', script, n1.grpc, 'deadbeef']);
  t.deepEqual(out.trim().split(' ').map(Number), [2, 4, 2, 0]);

  const app = await startApp(t, n2.socket);
  await app.call({ op: 'connect' });
  await app.call({ op: 'open', name: 'py' });
  await app.call({ op: 'map' });
  t.is((await app.call<{ hex: string }>({ op: 'read', offset: 4 * MiB - 2, length: 4 })).hex, 'deadbeef');

  // Reverse: the mmap app commits, Python on the other node reads (a 2 MiB read goes through ReadStream).
  await app.call({ op: 'write', offset: 2 * MiB + 1, hex: '0badf00d' });
  await app.call({ op: 'commit' });
  const read = `
import sys, hotpot
ds = hotpot.Client(sys.argv[1]).open("py")
print(ds.read(2 * 1024 * 1024 + 1, 4).hex())
big = ds.read(1024 * 1024, 3 * 1024 * 1024)
print(len(big), big[1024 * 1024 + 1 : 1024 * 1024 + 5].hex(), big[3 * 1024 * 1024 - 2 :].hex())
try:
    ds.read(8 << 20, 1)
except hotpot.HotpotError as e:
    print(e.code)
ds.close()
`;
  const lines = (await python(['-c', read, n1.address])).trim().split('\n');
  t.deepEqual(lines, ['0badf00d', `${String(3 * MiB)} 0badf00d dead`, 'OUT_OF_RANGE']);
});

test("Python's Client() finds the node in ./.hotpot/cluster.json, as the CLI does", async (t) => {
  t.timeout(120_000);
  const [n1] = await cluster(t, 1);
  if (!n1) throw new Error('cluster');
  const cwd = tempDir(t);
  mkdirSync(join(cwd, '.hotpot'));
  writeFileSync(
    join(cwd, '.hotpot', 'cluster.json'),
    JSON.stringify({ dispatcher: '', nodes: [{ id: 1, address: n1.address }] }),
  );
  const out = await python(
    [
      '-c',
      "from hotpot import Client; c = Client(); d = c.open('py-cf', create=True, size=16384); print(c.address, d.size)",
    ],
    { HOTPOT_GRPC: '' },
    cwd,
  );
  t.is(out.trim(), `${n1.address} 16384`);
});

test('MRSW over gRPC: commit needs acquire, held pages refuse a second session until release, close releases', async (t) => {
  t.timeout(180_000);
  const [n1, n2] = await cluster(t, 2);
  if (!n1 || !n2) throw new Error('cluster');
  const a = dataClient(t, n1.grpc);
  const b = dataClient(t, n2.address);
  const o = await a.open({ name: 'sw', create: true, sizeBytes: 8 * MiB, mode: 'CONSISTENCY_MODE_MRSW' });
  t.is(o.mode, 'CONSISTENCY_MODE_MRSW');
  const sa = o.session;
  const sb = (await b.open({ name: 'sw' })).session;

  // Without a lease the owners refuse the write, and nothing is applied.
  await a.write({ session: sa, offset: 4 * MiB + 10, data: Buffer.from('11', 'hex') });
  const e = await rejects(t, a.commit({ session: sa }), 'FAILED_PRECONDITION', 'commit without acquire');
  t.regex(e.details, /acquire/);
  t.deepEqual((await b.read({ session: sb, offset: 4 * MiB + 10, length: 1 })).data, Buffer.alloc(1));

  // Bad acquires change nothing.
  await rejects(t, a.acquire({ session: sa, ranges: [], leaseMs: 30_000 }), 'INVALID_ARGUMENT', 'no ranges');
  await rejects(
    t,
    a.acquire({ session: sa, ranges: [{ offset: 8 * MiB - 1, length: 2 }], leaseMs: 30_000 }),
    'OUT_OF_RANGE',
    'range past the end',
  );
  await rejects(
    t,
    a.acquire({ session: sa, ranges: [{ offset: 0, length: 1 }], leaseMs: 0 }),
    'INVALID_ARGUMENT',
    'lease_ms 0',
  );
  await rejects(
    t,
    a.acquire({ session: 'nope', ranges: [{ offset: 0, length: 1 }], leaseMs: 30_000 }),
    'NOT_FOUND',
    'unknown session',
  );

  // Acquire pages in both chunks (owned by different nodes); the kept private change now commits.
  const l = await a.acquire({
    session: sa,
    ranges: [
      { offset: 100, length: 10 },
      { offset: 4 * MiB + 10, length: 1 },
    ],
    leaseMs: 60_000,
  });
  t.true(l.leaseId.length > 0);
  t.true(l.fencingEpoch > 0);
  t.true(l.expiresUnixMs > 0);
  t.deepEqual(
    l.ranges.map((r) => [r.offset, r.length]),
    [
      [0, 4096],
      [4 * MiB, 4096],
    ],
  );
  await rejects(
    t,
    a.acquire({ session: sa, ranges: [{ offset: 0, length: 1 }], leaseMs: 30_000 }),
    'FAILED_PRECONDITION',
    'a second lease in one session',
  );
  await a.write({ session: sa, offset: 100, data: Buffer.from('2222', 'hex') });
  const c = await a.commit({ session: sa });
  t.is(c.pages, 2);
  t.is(c.bytes, 3);
  // Writing a page outside the lease is refused.
  await a.write({ session: sa, offset: 2 * 4096, data: Buffer.from('33', 'hex') });
  await rejects(t, a.commit({ session: sa }), 'FAILED_PRECONDITION', 'page outside the lease');
  await a.rollback({ session: sa });
  await b.refresh({ session: sb });
  t.deepEqual((await b.read({ session: sb, offset: 100, length: 2 })).data, Buffer.from('2222', 'hex'));
  t.deepEqual((await b.read({ session: sb, offset: 4 * MiB + 10, length: 1 })).data, Buffer.from('11', 'hex'));

  // Another session (on another node) cannot take held pages: at once ABORTED, or it waits for the release.
  await rejects(
    t,
    b.acquire({ session: sb, ranges: [{ offset: 4000, length: 200 }], leaseMs: 60_000 }),
    'ABORTED',
    'acquire of held pages',
  );
  let settled = false;
  const waiting = b.acquire({ session: sb, ranges: [{ offset: 4000, length: 200 }], leaseMs: 60_000, waitMs: 60_000 });
  void waiting.then(
    () => (settled = true),
    () => (settled = true),
  );
  // A round trip to the dispatcher, which answers calls in order: the waiter is still waiting.
  t.is((await a.barrier({ session: sa, name: 'tick', parties: 1, timeoutMs: 10_000 })).arrival, 0);
  t.false(settled, 'the waiting acquire did not return while the pages were held');
  t.true((await a.release({ session: sa })).released);
  const lb = await waiting;
  t.true(lb.fencingEpoch > l.fencingEpoch, 'a later grant has a newer fencing epoch');
  t.false((await a.release({ session: sa })).released, 'release without a lease is a no-op');

  // A released holder cannot commit any more; the new holder can.
  await a.write({ session: sa, offset: 0, data: Buffer.from('44', 'hex') });
  await rejects(t, a.commit({ session: sa }), 'FAILED_PRECONDITION', 'commit after release');
  await a.rollback({ session: sa });
  await b.write({ session: sb, offset: 4096, data: Buffer.from('55', 'hex') });
  t.is((await b.commit({ session: sb })).pages, 1);

  // Closing the session gives its lease back: the pages are free at once.
  await b.close({ session: sb });
  const again = await a.acquire({ session: sa, ranges: [{ offset: 4096, length: 1 }], leaseMs: 60_000 });
  t.true(again.fencingEpoch > lb.fencingEpoch);
  t.deepEqual((await a.read({ session: sa, offset: 4096, length: 1 })).data, Buffer.from('55', 'hex'), 'synced');
});

test('a barrier over gRPC releases its parties together, across nodes and with an mmap app, and times out clearly', async (t) => {
  t.timeout(180_000);
  const [n1, n2] = await cluster(t, 2);
  if (!n1 || !n2) throw new Error('cluster');
  const a = dataClient(t, n1.grpc);
  const b = dataClient(t, n2.address);
  const sa = (await a.open({ name: 'bar', create: true, sizeBytes: MiB })).session;
  const sb = (await b.open({ name: 'bar' })).session;

  const [ra, rb] = await Promise.all([
    a.barrier({ session: sa, name: 'meet', parties: 2, timeoutMs: 60_000 }),
    b.barrier({ session: sb, name: 'meet', parties: 2, timeoutMs: 60_000 }),
  ]);
  t.is(ra.generation, rb.generation);
  t.deepEqual([ra.arrival, rb.arrival].sort(), [0, 1]);

  // The same barrier as the mmap SDK's: a gRPC caller and an mmap app meet; the name is reused (next generation).
  const app = await openApp(t, n2.socket, 'bar');
  const [rg, rm] = await Promise.all([
    a.barrier({ session: sa, name: 'meet', parties: 2, timeoutMs: 60_000 }),
    app.call<{ generation: number; arrival: number }>({ op: 'barrier', name: 'meet', parties: 2, timeoutMs: 60_000 }),
  ]);
  t.is(rg.generation, ra.generation + 1);
  t.is(rm.generation, rg.generation);

  const e = await rejects(
    t,
    a.barrier({ session: sa, name: 'alone', parties: 2, timeoutMs: 300 }),
    'DEADLINE_EXCEEDED',
    'a barrier nobody else reaches',
  );
  t.regex(e.details, /only 1 of 2 parties/);
  await rejects(t, a.barrier({ session: sa, name: 'x', parties: 2, timeoutMs: 0 }), 'INVALID_ARGUMENT', 'timeout 0');
  await rejects(
    t,
    a.barrier({ session: sa, name: 'bad name', parties: 2, timeoutMs: 100 }),
    'INVALID_ARGUMENT',
    'bad name',
  );
  await rejects(t, a.barrier({ session: 'nope', name: 'x', parties: 2, timeoutMs: 100 }), 'NOT_FOUND', 'no session');
});

test('Python acquires, commits and releases on an MRSW dataset; an mmap app then takes the pages', async (t) => {
  t.timeout(180_000);
  const [n1, n2] = await cluster(t, 2);
  if (!n1 || !n2) throw new Error('cluster');
  const script = `
import sys, hotpot
with hotpot.Client(sys.argv[1]) as c:
    with c.open("pysw", create=True, size=1 << 20, mode="mrsw") as ds:
        ds.write(4096, b"py")
        try:
            ds.commit()
        except hotpot.HotpotError as e:
            print(e.code)
        lease = ds.acquire([(4096, 2)], lease_ms=60000)
        print(lease.ranges)
        r = ds.commit()
        print(r.pages, r.bytes)
        print(ds.barrier("py-solo", 1, timeout_ms=10000).arrival)
        print(ds.release(), ds.release())
`;
  const lines = (await python(['-c', script, n1.grpc])).trim().split('\n');
  t.deepEqual(lines, ['FAILED_PRECONDITION', '[(4096, 4096)]', '1 2', '0', 'True False']);

  const app = await startApp(t, n2.socket);
  await app.call({ op: 'connect' });
  await app.call({ op: 'open', name: 'pysw' });
  await app.call({ op: 'map' });
  await app.call({ op: 'acquire', ranges: [{ offset: 4096, length: 2 }], leaseMs: 60_000 });
  t.is(
    (await app.call<{ hex: string }>({ op: 'read', offset: 4096, length: 2 })).hex,
    Buffer.from('py').toString('hex'),
  );
  await app.call({ op: 'write', offset: 4096, hex: '4142' });
  await app.call({ op: 'commit' });
  await app.call({ op: 'release' });
  // A read-only session reads; its writes are refused, and its commit writes nothing (it only checks its reads).
  const read = `
import sys, hotpot
with hotpot.Client(sys.argv[1]) as c:
    with c.open("pysw", read_only=True) as ds:
        print(ds.read(4096, 2))
        try:
            ds.write(0, b"x")
        except hotpot.HotpotError as e:
            print(e.code)
        print(ds.commit().pages)
`;
  t.deepEqual((await python(['-c', read, n1.address])).trim().split('\n'), ["b'AB'", 'PERMISSION_DENIED', '0']);
});

test("a snapshot Read shows the latest commit whole, with the session's own private writes on top", async (t) => {
  t.timeout(120_000);
  const [n1, n2] = await cluster(t, 2);
  if (!n1 || !n2) throw new Error('cluster');
  const a = dataClient(t, n1.address);
  const b = dataClient(t, n2.grpc);
  const sa = (await a.open({ name: 'snap', create: true, sizeBytes: 8 * MiB, replicas: 1 })).session;
  const sb = (await b.open({ name: 'snap' })).session;
  // B's sync point is before A's commit; a snapshot read is not tied to it.
  t.deepEqual((await b.read({ session: sb, offset: 4 * MiB - 2, length: 4 })).data, Buffer.alloc(4));
  await a.write({ session: sa, offset: 4 * MiB - 2, data: Buffer.from('01020304', 'hex') }); // two chunks
  await a.commit({ session: sa });
  t.deepEqual(
    (await b.read({ session: sb, offset: 4 * MiB - 2, length: 4 })).data,
    Buffer.alloc(4),
    'a plain read still shows the sync point',
  );
  // B's private write is on another page (a page the session wrote is its private copy as a whole).
  await b.write({ session: sb, offset: 4 * MiB + 4096, data: Buffer.from('aa', 'hex') });
  const snap = await b.read({ session: sb, offset: 4 * MiB - 2, length: 4099, snapshot: true });
  t.deepEqual(snap.data, Buffer.concat([Buffer.from('01020304', 'hex'), Buffer.alloc(4094), Buffer.from('aa', 'hex')]));
  t.is(snap.offset, 4 * MiB - 2);
  // A snapshot read moves nothing: the private write is still there and still private.
  t.deepEqual((await a.read({ session: sa, offset: 4 * MiB + 4096, length: 1 })).data, Buffer.alloc(1));
  t.is((await b.rollback({ session: sb })).pagesDropped, 1);
  // ReadStream with snapshot: every message at most 1 MiB, the bytes exact.
  const data = pattern(7, 2 * MiB + 5);
  const pieces = [];
  for (let at = 0; at < data.length; at += MiB) {
    pieces.push({ session: sa, offset: 3 * MiB + 1 + at, data: data.subarray(at, at + MiB) });
  }
  await a.writeStream(pieces);
  await a.commit({ session: sa });
  const got = await b.readStream(sb, 3 * MiB, 3 * MiB, true);
  t.deepEqual(got.sizes, [MiB, MiB, MiB]);
  t.true(got.data.subarray(1, 1 + data.length).equals(data));
  // The limits and errors of a plain Read hold for a snapshot Read.
  await rejects(t, b.read({ session: sb, offset: 0, length: MiB + 1, snapshot: true }), 'INVALID_ARGUMENT', '> 1 MiB');
  await rejects(t, b.read({ session: sb, offset: 8 * MiB - 1, length: 2, snapshot: true }), 'OUT_OF_RANGE', 'end');
  await rejects(t, b.read({ session: 'nope', offset: 0, length: 1, snapshot: true }), 'NOT_FOUND', 'no session');
  // Python: the snapshot keyword.
  const script = `
import sys, hotpot
with hotpot.Client(sys.argv[1]) as c:
    with c.open("snap") as ds:
        ds.write(3 * 1024 * 1024, b"\\x09")
        print(ds.read(3 * 1024 * 1024, 3, snapshot=True).hex(), len(ds.read(0, 3 << 20, snapshot=True)))
`;
  t.is((await python(['-c', script, n2.grpc])).trim(), `09${data.subarray(0, 2).toString('hex')} ${String(3 * MiB)}`);
});

test('snapshot Reads on a third node never see part of a transfer that spans three owners', async (t) => {
  t.timeout(240_000);
  // 64 KiB chunks, so that one 1 MiB Read covers three chunks with three owners (placement is round-robin).
  const CHUNK = 64 * 1024;
  const ACCOUNTS = 30;
  const INITIAL = 100;
  const TRANSFERS = 150;
  const SPAN = 3 * CHUNK;
  const total = ACCOUNTS * INITIAL;
  const offsetOf = (i: number): number => (i % 3) * CHUNK + Math.floor(i / 3) * 512;
  const [n1, n2, n3] = await cluster(t, 3, { HOTPOT_CHUNK_SIZE: String(CHUNK) });
  if (!n1 || !n2 || !n3) throw new Error('cluster');
  const writer = await startApp(t, n1.socket);
  await writer.call({ op: 'connect' });
  // The writer's per-slot counter lives at 3 MiB (app-worker.ts), so the dataset is 4 MiB.
  const info = await writer.call<{ id: number; chunkSize: number }>({
    op: 'open',
    name: 'snapbank',
    create: { size: 4 * MiB, mode: 'mrmw', replicas: 1 },
  });
  t.is(info.chunkSize, CHUNK);
  await writer.call({ op: 'map' });
  const i32 = Buffer.alloc(4);
  i32.writeInt32LE(INITIAL);
  for (let i = 0; i < ACCOUNTS; i++) await writer.call({ op: 'write', offset: offsetOf(i), hex: i32.toString('hex') });
  await writer.call({ op: 'commit' });

  const c = dataClient(t, n3.address);
  const session = (await c.open({ name: 'snapbank' })).session;
  const sumOf = (b: Buffer): number => {
    let s = 0;
    for (let i = 0; i < ACCOUNTS; i++) s += b.readInt32LE(offsetOf(i));
    return s;
  };
  t.is(sumOf((await c.read({ session, offset: 0, length: SPAN, snapshot: true })).data), total);
  // The accounts' three chunks have three different owners.
  const owners = new Map<number, number>();
  for (const n of [n1, n2, n3]) {
    for (const ch of (await nodeStats(n.address)).chunks) {
      if (ch.datasetId === info.id && ch.chunk < 3 && ch.ownerNodeId !== 0) owners.set(ch.chunk, ch.ownerNodeId);
    }
  }
  t.is(new Set(owners.values()).size, 3, `owners of chunks 0..2: ${JSON.stringify([...owners])}`);

  let running = true;
  const run = writer.call<{ acked: number; conflicts: number }>({
    op: 'bankTransfers',
    count: TRANSFERS,
    accounts: ACCOUNTS,
    slot: 0,
    stride: CHUNK,
  });
  void run.finally(() => (running = false));
  const snapshotSums: number[] = [];
  let plainReads = 0;
  let plainOff = 0;
  let unavailable = 0;
  while (running) {
    try {
      snapshotSums.push(sumOf((await c.read({ session, offset: 0, length: SPAN, snapshot: true })).data));
    } catch (e) {
      // Retryable by contract: a commit stayed open on node 3 for about 2 s.
      if (!(e instanceof CallError && e.code === 'UNAVAILABLE')) throw e;
      unavailable++;
    }
    // A plain Read of the same span after a refresh (sync point now): page by page, it may straddle a transfer.
    await c.refresh({ session });
    plainReads++;
    if (sumOf((await c.read({ session, offset: 0, length: SPAN })).data) !== total) plainOff++;
  }
  const r = await run;
  t.true(r.acked > 0);
  t.true(snapshotSums.length >= 1, 'at least one snapshot Read during the run');
  t.deepEqual(
    snapshotSums.filter((s) => s !== total),
    [],
    'every snapshot Read saw whole transfers',
  );
  const end = await c.read({ session, offset: 3 * MiB, length: 4, snapshot: true });
  t.is(end.data.readUInt32LE(0), r.acked, 'applied transfers == acknowledged ones');
  t.is(sumOf((await c.read({ session, offset: 0, length: SPAN, snapshot: true })).data), total);
  t.log(
    `transfers acknowledged ${String(r.acked)} (conflicts retried ${String(r.conflicts)}); snapshot Reads ${String(snapshotSums.length)} all whole (${String(unavailable)} UNAVAILABLE retried); plain Reads ${String(plainReads)}, of which saw a partial transfer ${String(plainOff)}`,
  );
  for (const n of [n1, n2, n3]) t.is((await nodeStats(n.address)).lockedPages, 0);
});

// No lost read-modify-write (issue 9, docs/design/consistency.md "Never already there"): a commit whose old bytes
// are not the committed bytes is ABORTED even when its new bytes equal them, through the SDK (commit and
// transaction(), with and without a read set) and the gRPC Data API.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { hexU32, openApp } from '../helpers/app.ts';
import { dataClient, type CallError } from '../helpers/data-client.ts';
import { startDispatcher, startNode, tempDir } from '../helpers/cluster.ts';

const MiB = 1024 * 1024;

async function twoNodes(t: ExecutionContext) {
  const dir = tempDir(t);
  const d = await startDispatcher(t, { stateDir: join(dir, 'd') });
  const nodes = [];
  for (const name of ['a', 'b']) {
    const pool = join('/dev/shm', `hotpot-lu-${String(process.pid)}-${dir.slice(-6)}-${name}`);
    t.teardown(() => {
      rmSync(pool, { recursive: true, force: true });
    });
    const n = await startNode(t, {
      dispatcher: d.address,
      name,
      stateDir: join(dir, name),
      extra: ['--pool-dir', pool, '--durability', 'memory'],
    });
    nodes.push({ ...n, grpc: n.fields.grpc ?? '' });
  }
  const [a, b] = nodes;
  if (!a || !b) throw new Error('two nodes expected');
  return { a, b };
}

test('two processes that both write v+1 over v: the second commit is ABORTED with the range (SDK)', async (t) => {
  t.timeout(120_000);
  const { a, b } = await twoNodes(t);
  const x = await openApp(t, a.socket, 'ctr', { size: 8 * MiB, mode: 'mrmw', replicas: 2 });
  const y = await openApp(t, b.socket, 'ctr');
  for (const p of [x, y]) t.is((await p.call<{ hex: string }>({ op: 'read', offset: 0, length: 4 })).hex, hexU32(0));
  await x.call({ op: 'write', offset: 0, hex: hexU32(1) });
  await y.call({ op: 'write', offset: 0, hex: hexU32(1) });
  await x.call({ op: 'commit' });
  const r = await y.attempt({ op: 'commit' });
  t.false(r.ok, 'a stale read-modify-write must not be acknowledged');
  if (!r.ok) {
    t.is(r.error.code, 'ABORTED');
    t.deepEqual(r.error.conflicts, [{ offset: 0, length: 1 }]);
  }
  // Rolled back, the process sees 1 and its increment gives 2.
  await y.call({ op: 'rollback' });
  t.is((await y.call<{ hex: string }>({ op: 'read', offset: 0, length: 4 })).hex, hexU32(1));
  await y.call({ op: 'write', offset: 0, hex: hexU32(2) });
  await y.call({ op: 'commit' });
  await x.call({ op: 'refresh' });
  t.is((await x.call<{ hex: string }>({ op: 'read', offset: 0, length: 4 })).hex, hexU32(2));
});

test('transaction() increments from two nodes, with and without a read set, lose nothing', async (t) => {
  t.timeout(170_000);
  const { a, b } = await twoNodes(t);
  const apps = [
    await openApp(t, a.socket, 'inc', { size: 8 * MiB, mode: 'mrmw', replicas: 2 }),
    await openApp(t, b.socket, 'inc'),
    await openApp(t, a.socket, 'inc'),
    await openApp(t, b.socket, 'inc'),
  ];
  const count = 150;
  // Counter at 0 incremented without reads, counter at 4096 with reads; two processes on each node for each.
  const results = await Promise.all(
    apps.flatMap((p) => [
      p.call<{ acked: number; runs: number }>({ op: 'increments', offset: 0, count, reads: false }),
      p.call<{ acked: number; runs: number }>({ op: 'increments', offset: 4096, count, reads: true }),
    ]),
  );
  const retries = results.reduce((s, r) => s + r.runs - r.acked, 0);
  t.log(`${String(results.length * count)} increments, ${String(retries)} retried after ABORTED`);
  const check = await openApp(t, b.socket, 'inc');
  t.is((await check.call<{ hex: string }>({ op: 'read', offset: 0, length: 4 })).hex, hexU32(apps.length * count));
  t.is((await check.call<{ hex: string }>({ op: 'read', offset: 4096, length: 4 })).hex, hexU32(apps.length * count));
});

test('gRPC Commit without reads refuses a write based on a stale read (Data API)', async (t) => {
  t.timeout(120_000);
  const { a, b } = await twoNodes(t);
  const ca = dataClient(t, a.grpc);
  const cb = dataClient(t, b.grpc);
  const sa = await ca.open({ name: 'g', create: true, sizeBytes: 8 * MiB, replicas: 2 });
  const sb = await cb.open({ name: 'g' });
  const readAt = async (c: typeof ca, session: string): Promise<number> =>
    (await c.read({ session, offset: 0, length: 4 })).data.readUInt32LE(0);
  t.is(await readAt(ca, sa.session), 0);
  t.is(await readAt(cb, sb.session), 0);
  await ca.write({ session: sa.session, offset: 0, data: Buffer.from(hexU32(1), 'hex') });
  await cb.write({ session: sb.session, offset: 0, data: Buffer.from(hexU32(1), 'hex') });
  await ca.commit({ session: sa.session });
  const err = await cb.commit({ session: sb.session }).then(
    () => null,
    (e: unknown) => e as CallError,
  );
  t.truthy(err, 'the second commit must not be acknowledged');
  t.is(err?.code, 'ABORTED');
  await cb.rollback({ session: sb.session });
  t.is(await readAt(cb, sb.session), 1);
  // Many increments from both nodes through Commit without reads, retrying on ABORTED: none is lost.
  const loop = async (c: typeof ca, session: string, n: number): Promise<void> => {
    for (let i = 0; i < n;) {
      const v = await readAt(c, session);
      await c.write({ session, offset: 0, data: Buffer.from(hexU32(v + 1), 'hex') });
      try {
        await c.commit({ session });
        i++;
      } catch (e) {
        if ((e as CallError).code !== 'ABORTED') throw e;
        await c.rollback({ session });
      }
    }
  };
  await Promise.all([loop(ca, sa.session, 100), loop(cb, sb.session, 100)]);
  await ca.rollback({ session: sa.session });
  t.is(await readAt(ca, sa.session), 201);
});

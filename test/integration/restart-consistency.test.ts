// Consistency across an owner's crash between applying a commit to its own pages and pushing it to the nodes that
// cache them (issue 9, points 2 and 3; docs/design/consistency.md "Crash recovery"). The owner is started with
// the fault point owner.after-local-apply (it exits right there; test addon only) and restarted on its pool.
import test, { type ExecutionContext } from 'ava';
import { hexI32, openApp, readI32 } from '../helpers/app.ts';
import { nodeStats, startCluster, waitFor, type NodeProc, type TestCluster } from '../helpers/cluster.ts';
import { FAULT_EXIT_CODE, faultEnv } from '../helpers/fault-points.ts';

const MiB = 1024 * 1024;
const REQUEST_TIMEOUT_MS = 2000;
const CRASH = faultEnv('owner.after-local-apply');

/** Byte offset of the first chunk (of `chunk` bytes) that `owner` owns in the dataset seen from `via`. */
async function chunkOwnedBy(via: NodeProc, owner: NodeProc, chunk: number): Promise<number> {
  const stats = await nodeStats(via.address);
  const c = stats.chunks.find((x) => x.datasetId > 0 && x.ownerNodeId === owner.id);
  if (!c) throw new Error(`node ${String(owner.id)} owns no chunk`);
  return c.chunk * chunk;
}

async function crashAndRestart(t: ExecutionContext, c: TestCluster, i: number): Promise<NodeProc> {
  const dead = c.nodes[i];
  if (!dead) throw new Error('no such node');
  t.is((await dead.exited).code, FAULT_EXIT_CODE, 'the owner stopped at the fault point');
  const again = await c.restart(i, {});
  t.is(again.id, dead.id);
  // Same data-plane address: peers that still have the old one reach this node, never another that took its port.
  t.is(again.data, dead.data);
  return again;
}

test('an MRSW holder after an owner crash sees the increment the owner applied and adds to it', async (t) => {
  t.timeout(150_000);
  const c = await startCluster(t, {
    nodes: 3,
    prefix: 'rc-mrsw',
    common: { HOTPOT_REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS) },
    env: (i) => (i === 1 ? CRASH : {}),
  });
  const [n1, n2, n3] = c.nodes;
  if (!n1 || !n2 || !n3) throw new Error('3 nodes');
  const w1 = await openApp(t, n1.socket, 'm', { size: 12 * MiB, mode: 'mrsw', replicas: 1 });
  const w2 = await openApp(t, n3.socket, 'm');
  const off = await chunkOwnedBy(n1, n2, 4 * MiB);
  t.is(await readI32(w2, off), 0); // node 3 caches the page
  await w1.call({ op: 'acquire', ranges: [{ offset: off, length: 4 }], leaseMs: 20_000 });
  t.is(await readI32(w1, off), 0);
  await w1.call({ op: 'write', offset: off, hex: hexI32(1) });
  const failed = await w1.attempt({ op: 'commit' });
  t.false(failed.ok, 'the owner crashed during the commit');
  await w1.call({ op: 'release' });
  await crashAndRestart(t, c, 1);
  // The next holder, on the node whose copy missed the owner's push, reads the applied increment and adds to it.
  await w2.call({ op: 'acquire', ranges: [{ offset: off, length: 4 }], leaseMs: 20_000, waitMs: 10_000 });
  const seen = await readI32(w2, off);
  t.is(seen, 1, 'the holder sees the increment its owner applied before crashing');
  await w2.call({ op: 'write', offset: off, hex: hexI32(seen + 1) });
  await w2.call({ op: 'commit' });
  await w2.call({ op: 'release' });
  const check = await openApp(t, c.nodes[1]?.socket ?? '', 'm');
  t.is(await readI32(check, off), 2, 'no increment lost');
});

test('snapshot reads never see half of a transfer whose second owner crashed after applying its part', async (t) => {
  t.timeout(150_000);
  const chunk = 64 * 1024;
  const c = await startCluster(t, {
    nodes: 3,
    prefix: 'rc-snap',
    common: { HOTPOT_REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS), HOTPOT_CHUNK_SIZE: String(chunk) },
    env: (i) => (i === 1 ? CRASH : {}),
  });
  const [n1, n2, n3] = c.nodes;
  if (!n1 || !n2 || !n3) throw new Error('3 nodes');
  const committer = await openApp(t, n3.socket, 'bank', { size: 3 * chunk, mode: 'mrmw', replicas: 1 });
  const a = await chunkOwnedBy(n3, n1, chunk);
  const b = await chunkOwnedBy(n3, n2, chunk);
  const readers = [await openApp(t, n1.socket, 'bank'), await openApp(t, n3.socket, 'bank')];
  for (const r of readers) for (const o of [a, b]) t.is(await readI32(r, o), 0);
  // A transfer of 100 from a (owner node 1) to b (owner node 2): node 2 crashes after applying its part locally.
  await committer.call({ op: 'write', offset: a, hex: hexI32(-100) });
  await committer.call({ op: 'write', offset: b, hex: hexI32(100) });
  const r = await committer.attempt({ op: 'commit' });
  t.false(r.ok, 'the commit could not complete while an owner was down');
  // While node 2 is down (and well past 4 x the request timeout), a snapshot either fails or shows 0: never -100.
  const wrong: number[] = [];
  let ok = 0;
  const until = Date.now() + 5 * REQUEST_TIMEOUT_MS;
  while (Date.now() < until) {
    for (const reader of readers) {
      const s = await reader.attempt<{ sum: number }>({ op: 'snapshot-sum', offsets: [a, b] });
      if (!s.ok) continue;
      ok++;
      if (s.value.sum !== 0) wrong.push(s.value.sum);
    }
  }
  t.log(`while the owner was down: ${String(ok)} snapshot reads succeeded, ${String(wrong.length)} wrong`);
  t.deepEqual(wrong, [], 'no snapshot saw half of the transfer');
  await crashAndRestart(t, c, 1);
  // Once the owner is back the decided commit completes everywhere and snapshots see all of it.
  for (const reader of readers) {
    const sum = await waitFor(
      'a snapshot read after the owner restarted',
      async () => {
        const s = await reader.attempt<{ sum: number }>({ op: 'snapshot-sum', offsets: [a, b] });
        return s.ok ? s.value.sum : undefined;
      },
      60_000,
    );
    t.is(sum, 0);
    await reader.call({ op: 'refresh' });
    t.is(await readI32(reader, a), -100);
    t.is(await readI32(reader, b), 100);
  }
  for (const n of c.nodes) t.is((await nodeStats(n.address)).lockedPages, 0);
});

test('a commit whose owner is paused past the request timeout reports what happened: DEADLINE_EXCEEDED applied nothing', async (t) => {
  t.timeout(120_000);
  const c = await startCluster(t, {
    nodes: 2,
    prefix: 'rc-timeout',
    leaseMs: 20_000, // the pause must not cost the owner its membership
    common: { HOTPOT_REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS) },
  });
  const [n1, n2] = c.nodes;
  if (!n1 || !n2) throw new Error('2 nodes');
  const w = await openApp(t, n1.socket, 't', { size: 8 * MiB, mode: 'mrmw', replicas: 1 });
  const off = await chunkOwnedBy(n1, n2, 4 * MiB);
  t.is(await readI32(w, off), 0);
  await w.call({ op: 'write', offset: off, hex: hexI32(7) });
  n2.child.kill('SIGSTOP');
  const resume = setTimeout(() => n2.child.kill('SIGCONT'), 1.5 * REQUEST_TIMEOUT_MS);
  t.teardown(() => clearTimeout(resume));
  const started = Date.now();
  const r = await w.attempt({ op: 'commit' });
  t.log(
    `commit to a paused owner: ${r.ok ? 'OK' : `${r.error.code}: ${r.error.message}`} after ${String(Date.now() - started)} ms`,
  );
  t.false(r.ok, 'the owner was paused when the commit was due');
  if (!r.ok) {
    t.is(r.error.code, 'DEADLINE_EXCEEDED');
    t.regex(r.error.message, /nothing was applied/);
  }
  // Nothing was applied anywhere, also after the owner woke up and read the late PREPARE.
  await new Promise((res) => setTimeout(res, 1000));
  await w.call({ op: 'rollback' });
  t.is(await readI32(w, off), 0);
  const fresh = await openApp(t, n2.socket, 't');
  t.is(await readI32(fresh, off), 0);
  // And the page is not left locked: the next commit goes through.
  await w.call({ op: 'write', offset: off, hex: hexI32(8) });
  await w.call({ op: 'commit' });
  await fresh.call({ op: 'refresh' });
  t.is(await readI32(fresh, off), 8);
});

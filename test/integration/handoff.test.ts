// Planned handoff (docs/design/availability.md "Handoff"): a node stopped with SIGTERM, or drained with `hotpot
// drain NODE`, first gives every chunk it owns to another live node. Commits on those chunks from other nodes pause
// only while a chunk moves (the committer retries on the new map), nothing is lost, and a node that comes back does
// not take its chunks back.
import test from 'ava';
import { dispatcherClient } from '../../services/cli/client.ts';
import { unary } from '../../services/common/rpc.ts';
import type { OpenDatasetResponse__Output } from '../../services/generated/hotpot/v1/OpenDatasetResponse.ts';
import { openApp, type App } from '../helpers/app.ts';
import { nodeStats, runCli, startCluster, waitFor, type NodeProc } from '../helpers/cluster.ts';

const MiB = 1024 * 1024;
const CHUNK = 4 * MiB;

function at<T>(xs: T[], i: number): T {
  const x = xs[i];
  if (x === undefined) throw new Error(`no element ${String(i)}`);
  return x;
}

async function chunkMap(dispatcher: string, name: string): Promise<OpenDatasetResponse__Output> {
  const c = dispatcherClient(dispatcher);
  try {
    return await unary<OpenDatasetResponse__Output>((o, cb) => c.OpenDataset({ name }, o, cb));
  } finally {
    c.close();
  }
}

/** The u32 at `offset` as the app's session sees it after a refresh (the latest committed value). */
async function readU32(a: App, offset: number): Promise<number> {
  await a.call({ op: 'refresh' });
  return Buffer.from((await a.call<{ hex: string }>({ op: 'read', offset, length: 4 })).hex, 'hex').readUInt32LE(0);
}

/** Offsets (one u32 each) in chunks owned by `owner`, at most `n`. */
function offsetsOwnedBy(map: OpenDatasetResponse__Output, owner: number, n: number): number[] {
  return map.chunks
    .filter((c) => c.ownerNodeId === owner)
    .slice(0, n)
    .map((c) => c.index * CHUNK + 4096 + 64);
}

test('SIGTERM hands every owned chunk to a live node: increments from two other nodes go on and none is lost', async (t) => {
  t.timeout(180_000);
  const cl = await startCluster(t, { nodes: 3, leaseMs: 2000 });
  const n1 = at(cl.nodes, 0);
  const a = await openApp(t, at(cl.nodes, 1).socket, 'ho', { size: 8 * CHUNK, mode: 'mrmw', replicas: 2 });
  const b = await openApp(t, at(cl.nodes, 2).socket, 'ho');
  const before = await chunkMap(cl.dispatcher, 'ho');
  const offs = offsetsOwnedBy(before, n1.id, 2);
  t.true(offs.length >= 1, 'node 1 owns a chunk');
  const x = at(offs, 0);
  const y = offs[1] ?? x + 64;
  const count = 6000;
  // Both apps increment counters in node 1's chunks; node 1 is stopped while they run.
  const runs = [
    a.call<{ acked: number; maxMs: number }>({ op: 'increments', offset: x, count }),
    b.call<{ acked: number; maxMs: number }>({ op: 'increments', offset: y, count }),
  ];
  let finished = false;
  void Promise.all(runs).then(() => (finished = true));
  await new Promise((r) => setTimeout(r, 300));
  t.false(finished, 'node 1 is stopped while the increments run');
  const stopped = Date.now();
  n1.child.kill('SIGTERM');
  const exit = await n1.exited;
  const stopMs = Date.now() - stopped;
  t.is(exit.code, 0, `node 1 exited cleanly: ${n1.stderr.slice(-5).join('\n')}`);
  const [ra, rb] = await Promise.all(runs);
  t.is(ra?.acked, count);
  t.is(rb?.acked, count);
  // Every chunk of node 1 has a live owner; the counters hold every acknowledged increment.
  const after = await chunkMap(cl.dispatcher, 'ho');
  const moved = before.chunks.filter((c) => c.ownerNodeId === n1.id).length;
  t.false(
    after.chunks.some((c) => c.ownerNodeId === n1.id),
    'no chunk is owned by the stopped node',
  );
  t.true(after.chunks.every((c) => c.ownerAlive));
  t.is(await readU32(a, x), x === y ? 2 * count : count);
  if (x !== y) t.is(await readU32(b, y), count);
  const log = n1.stderr.join('\n');
  t.regex(log, /chunk handed off/);
  t.log(
    `node 1 handed off ${String(moved)} chunks and exited ${String(stopMs)} ms after SIGTERM; longest increment ` +
      `${String(Math.max(ra?.maxMs ?? 0, rb?.maxMs ?? 0))} ms`,
  );
  // The new owners report the chunks they took over.
  const taken = await waitFor('the new owners to count the chunks they took over', async () => {
    const counts = await Promise.all(
      [1, 2].map(async (i) => (await nodeStats(at(cl.nodes, i).address)).counters?.chunksTakenOver ?? 0),
    );
    const sum = counts.reduce((s, v) => s + v, 0);
    return sum === moved ? sum : undefined;
  });
  t.is(taken, moved);
});

test('hotpot drain NODE hands its chunks off and stops it; once back it owns none of them and serves the data', async (t) => {
  t.timeout(180_000);
  const cl = await startCluster(t, { nodes: 3, leaseMs: 2000 });
  const env = { HOTPOT_DISPATCHER: cl.dispatcher };
  const a = await openApp(t, at(cl.nodes, 2).socket, 'dr', { size: 4 * CHUNK, mode: 'mrmw', replicas: 2 });
  const n2: NodeProc = at(cl.nodes, 1);
  const before = await chunkMap(cl.dispatcher, 'dr');
  const off = at(offsetsOwnedBy(before, n2.id, 1), 0);
  await a.call({ op: 'write', offset: off, hex: 'cafef00d' });
  await a.call({ op: 'commit' });
  const out = await runCli(['drain', String(n2.id)], { env });
  t.is(out.code, 0, out.stderr);
  t.regex(out.stdout, /chunks handed off/);
  t.is((await n2.exited).code, 0);
  const after = await chunkMap(cl.dispatcher, 'dr');
  t.false(after.chunks.some((c) => c.ownerNodeId === n2.id));
  // The committed bytes are served by the new owner, and commits on the chunk go on.
  t.is(
    Buffer.from((await a.call<{ hex: string }>({ op: 'read', offset: off, length: 4 })).hex, 'hex').toString('hex'),
    'cafef00d',
  );
  await a.call({ op: 'write', offset: off + 4, hex: '01020304' });
  await a.call({ op: 'commit' });
  // Node 2 comes back: it does not take its chunks back, and an app there reads the latest bytes.
  const back = await cl.restart(1);
  const again = await chunkMap(cl.dispatcher, 'dr');
  t.false(again.chunks.some((c) => c.ownerNodeId === back.id));
  const c2 = await openApp(t, back.socket, 'dr');
  const seen = await waitFor('node 2 to read the latest bytes', async () => {
    await c2.call({ op: 'refresh' });
    const hex = (await c2.call<{ hex: string }>({ op: 'read', offset: off, length: 8 })).hex;
    return hex === 'cafef00d01020304' ? hex : undefined;
  });
  t.is(seen, 'cafef00d01020304');
  // Draining an unknown node is a clear error.
  const bad = await runCli(['drain', '99'], { env });
  t.not(bad.code, 0);
  t.regex(bad.stderr, /not a member/);
});

// Owner failover, the dispatcher's side (docs/design/availability.md "Failover"): when the owner of a chunk is
// declared dead and fewer than N members are down, the chunk map names a new owner one era later, which recovers the
// chunk from the other holders; the old owner does not take it back when it returns.
import test, { type ExecutionContext } from 'ava';
import { dispatcherClient } from '../../services/cli/client.ts';
import { unary } from '../../services/common/rpc.ts';
import type { Chunk__Output } from '../../services/generated/hotpot/v1/Chunk.ts';
import type { CreateDatasetResponse__Output } from '../../services/generated/hotpot/v1/CreateDatasetResponse.ts';
import type { OpenDatasetResponse__Output } from '../../services/generated/hotpot/v1/OpenDatasetResponse.ts';
import { openApp } from '../helpers/app.ts';
import { listNodes, runCli, startCluster, waitFor, type TestCluster } from '../helpers/cluster.ts';

const MiB = 1024 * 1024;
const CHUNK = 4 * MiB;
const LEASE_MS = 1000;
const NAME = 'fo';

async function setup(t: ExecutionContext, prefix: string) {
  const cl = await startCluster(t, { nodes: 3, leaseMs: LEASE_MS, prefix, common: { HOTPOT_FAILOVER: '1' } });
  const c = dispatcherClient(cl.dispatcher);
  t.teardown(() => c.close());
  const created = await unary<CreateDatasetResponse__Output>((o, cb) =>
    c.CreateDataset({ name: NAME, sizeBytes: 3 * CHUNK, mode: 'CONSISTENCY_MODE_MRMW', replicas: 2 }, o, cb),
  );
  if (!created.dataset) throw new Error('no dataset');
  const open = () => unary<OpenDatasetResponse__Output>((o, cb) => c.OpenDataset({ name: NAME }, o, cb));
  return { cl, created, open };
}

/** The start index (for restart) and process of node `id`. */
function nodeIndex(cl: TestCluster, id: number): number {
  const i = cl.nodes.findIndex((n) => n.id === id);
  if (i < 0) throw new Error(`no process for node ${String(id)}`);
  return i;
}

async function kill(cl: TestCluster, id: number): Promise<void> {
  const p = cl.nodes[nodeIndex(cl, id)];
  p?.child.kill('SIGKILL');
  await p?.exited;
}

async function waitState(cl: TestCluster, id: number, state: string): Promise<void> {
  await waitFor(`node ${String(id)} to be ${state}`, async () =>
    (await listNodes(cl.dispatcher)).nodes.some((n) => n.id === id && n.state === state) ? true : undefined,
  );
}

const chunk = (r: { chunks: Chunk__Output[] }, i: number): Chunk__Output => {
  const c = r.chunks[i];
  if (!c) throw new Error(`no chunk ${String(i)}`);
  return c;
};

test('the chunks of an owner killed with -9 get a new owner one era later, which it keeps when the old one returns', async (t) => {
  t.timeout(150_000);
  const { cl, created, open } = await setup(t, 'fo1');
  const victim = chunk(created, 0).ownerNodeId;
  const owned = created.chunks.filter((c) => c.ownerNodeId === victim).map((c) => c.index);
  const others = cl.nodes.filter((n) => n.id !== victim);
  const [writerNode, readerNode] = others;
  if (!writerNode || !readerNode) throw new Error('3 nodes');
  // Committed data in every chunk, N=2: each page is on the owner and one more node.
  const w = await openApp(t, writerNode.socket, NAME);
  await w.call({ op: 'fill', offset: 0, length: 3 * CHUNK, seed: 11 });
  await w.call({ op: 'commit' });

  await kill(cl, victim);
  const moved = await waitFor(
    'chunk 0 to fail over',
    async () => {
      const r = await open();
      return chunk(r, 0).ownerNodeId !== victim ? r : undefined;
    },
    LEASE_MS + 2000,
  );
  const c0 = chunk(moved, 0);
  t.true(
    others.some((n) => n.id === c0.ownerNodeId),
    'a live node owns it',
  );
  t.is(c0.era, 1);
  t.is(c0.replicaNodeIds[0], c0.ownerNodeId, 'the new owner comes first among the replicas');
  t.true(c0.replicaNodeIds.includes(victim), 'the old owner stays a replica: it holds a copy if it returns');
  t.true((moved.dataset?.generation ?? 0) > (created.dataset?.generation ?? 0), 'a new generation of the map');
  for (const c of moved.chunks) {
    if (owned.includes(c.index)) t.like(c, { era: 1, ownerAlive: true }, `chunk ${String(c.index)} failed over`);
    else t.like(c, { era: 0, ownerNodeId: chunk(created, c.index).ownerNodeId }, `chunk ${String(c.index)} stays`);
  }
  // `hotpot stat NAME` shows the era.
  const env = { HOTPOT_DISPATCHER: cl.dispatcher };
  const js = await runCli(['--json', 'stat', NAME], { env });
  t.is(js.code, 0, js.stderr);
  const parsed = JSON.parse(js.stdout) as { dataset: { chunks: { owner: number; era: number }[] } };
  t.like(parsed.dataset.chunks[0], { owner: c0.ownerNodeId, era: 1 });
  t.regex((await runCli(['stat', NAME], { env })).stdout, /OWNER ALIVE\s+ERA\s+LIVE COPIES/);

  // The new owners take the chunks over from the other holders while the old owner is still down (fewer than N
  // members down), report them (ChunkRecovered) and serve them: reads and commits go through them.
  const recovered = await waitFor(
    'the new owners to take the chunks over',
    async () => {
      const r = await open();
      return r.chunks.some((c) => c.ownerRecovering) ? undefined : r;
    },
    LEASE_MS + 10_000,
  );
  for (const i of owned) t.is(chunk(recovered, i).ownerNodeId, chunk(moved, i).ownerNodeId);
  const reader = await openApp(t, readerNode.socket, NAME);
  const check = await reader.call<{ badPages: number }>({ op: 'check', offset: 0, length: 3 * CHUNK, seed: 11 });
  t.is(check.badPages, 0, 'every committed page reads back from the new owners');
  await w.call({ op: 'fill', offset: 0, length: 3 * CHUNK, seed: 12 });
  await w.call({ op: 'commit' });

  // The old owner returns (same pool): it rejoins with its id, does not take its chunks back, and reads what was
  // committed while it was down.
  const again = await cl.restart(nodeIndex(cl, victim));
  t.is(again.id, victim);
  await waitState(cl, victim, 'NODE_STATE_ALIVE');
  const after = await open();
  for (const i of owned) {
    t.not(chunk(after, i).ownerNodeId, victim, `chunk ${String(i)} stays with its new owner`);
    t.is(chunk(after, i).era, 1);
  }
  const back = await openApp(t, again.socket, NAME);
  const seen = await back.call<{ badPages: number }>({ op: 'check', offset: 0, length: 3 * CHUNK, seed: 12 });
  t.is(seen.badPages, 0, 'the returning node reads the commits made while it was down');
});

test('no chunk fails over while as many members are down as the dataset has replicas, until one returns', async (t) => {
  t.timeout(150_000);
  const { cl, created, open } = await setup(t, 'fo2');
  const owner = chunk(created, 0).ownerNodeId;
  const first = cl.nodes.find((n) => n.id !== owner);
  if (!first) throw new Error('3 nodes');

  // One member down (not chunk 0's owner): its chunks fail over, chunk 0 stays.
  await kill(cl, first.id);
  await waitState(cl, first.id, 'NODE_STATE_DEAD');
  const one = await waitFor('the first dead node’s chunks to fail over', async () => {
    const r = await open();
    return r.chunks.some((c) => c.ownerNodeId === first.id) ? undefined : r;
  });
  t.like(chunk(one, 0), { ownerNodeId: owner, era: 0 });

  // Two of three down with N=2: the newest copy of a page may be on a down node, so chunk 0 waits for its owner.
  await kill(cl, owner);
  await waitState(cl, owner, 'NODE_STATE_DEAD');
  const two = await open();
  t.like(chunk(two, 0), { ownerNodeId: owner, ownerAlive: false, era: 0 });
  t.is(two.dataset?.generation, one.dataset?.generation, 'the map did not change');
  t.deepEqual(
    two.chunks.map((c) => [c.ownerNodeId, c.era]),
    one.chunks.map((c) => [c.ownerNodeId, c.era]),
  );

  // The first node returns: one member down again, so chunk 0 fails over now.
  const back = await cl.restart(nodeIndex(cl, first.id));
  t.is(back.id, first.id);
  const moved = await waitFor('chunk 0 to fail over once a member returned', async () => {
    const r = await open();
    return chunk(r, 0).ownerNodeId !== owner ? r : undefined;
  });
  t.like(chunk(moved, 0), { era: 1, ownerAlive: true });
});

test('a member that never returns is forgotten once every chunk has N live copies without it; a later failover goes on', async (t) => {
  t.timeout(150_000);
  const { cl, created, open } = await setup(t, 'fo3');
  const env = { HOTPOT_DISPATCHER: cl.dispatcher };
  const first = chunk(created, 0).ownerNodeId;
  const w = await openApp(t, (cl.nodes.find((n) => n.id !== first) ?? cl.nodes[0])?.socket ?? '', NAME);
  await w.call({ op: 'fill', offset: 0, length: 3 * CHUNK, seed: 21 });
  await w.call({ op: 'commit' });
  w.kill();

  // An alive member cannot be forgotten.
  const alive = await runCli(['forget', String(first)], { env });
  t.not(alive.code, 0);
  t.regex(alive.stderr, /alive/);

  // Node `first` dies for good: its chunks fail over, then every chunk is topped up to 2 live copies again; until
  // then `hotpot forget` refuses (a copy only it holds may still be needed).
  await kill(cl, first);
  await waitState(cl, first, 'NODE_STATE_DEAD');
  let refusals = 0;
  let last = '';
  await waitFor(
    'hotpot forget to succeed once every chunk has 2 live copies without the dead node',
    async () => {
      const r = await runCli(['forget', String(first)], { env });
      if (r.code === 0) return true;
      refusals++;
      last = r.stderr.trim();
      return undefined;
    },
    30_000,
  );
  t.log(`forget refused ${String(refusals)} time(s) first${last ? ` (last: ${last})` : ''}`);
  t.false(
    (await listNodes(cl.dispatcher)).nodes.some((n) => n.id === first),
    'no longer a member',
  );
  const mapped = await open();
  t.false(
    mapped.chunks.some((c) => c.replicaNodeIds.includes(first)),
    'dropped from every replica list',
  );

  // A second node dies: with the first one forgotten only 1 member is down (< N = 2), so its chunks fail over too
  // (had the first one still counted, they would wait for a return), and every page reads back on the last node.
  const second = cl.nodes.find((n) => n.id !== first && mapped.chunks.some((c) => c.ownerNodeId === n.id));
  const last3 = cl.nodes.find((n) => n.id !== first && n.id !== second?.id);
  if (!second || !last3) throw new Error('two live nodes, one owning a chunk');
  t.log(
    `first ${String(first)}, second ${String(second.id)}, last ${String(last3.id)}; chunks ${JSON.stringify(mapped.chunks.map((c) => [c.ownerNodeId, c.replicaNodeIds]))}`,
  );
  await kill(cl, second.id);
  const taken = await waitFor(
    'every chunk to be served by the last node',
    async () => {
      const r = await open();
      return r.chunks.every((c) => c.ownerNodeId === last3.id && !c.ownerRecovering) ? r : undefined;
    },
    LEASE_MS + 20_000,
  );
  for (const c of mapped.chunks) {
    if (c.ownerNodeId === second.id) t.is(chunk(taken, c.index).era, c.era + 1, `chunk ${String(c.index)} failed over`);
  }
  const reader = await openApp(t, last3.socket, NAME);
  for (let i = 0; i < 3; i++) {
    const r = await reader.call<{ badPages: number }>({ op: 'check', offset: i * CHUNK, length: CHUNK, seed: 21 });
    t.log(`chunk ${String(i)}: ${String(r.badPages)} bad`);
  }
  const check = await reader.call<{ badPages: number }>({ op: 'check', offset: 0, length: 3 * CHUNK, seed: 21 });
  t.is(check.badPages, 0, 'every committed page survives on the last node');
});

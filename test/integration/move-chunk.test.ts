// MoveChunk: the dispatcher side of a planned chunk handoff. Only the directory is checked here; the nodes are not
// told about the move, so their data path is out of scope.
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { dispatcherClient } from '../../services/cli/client.ts';
import { unary } from '../../services/common/rpc.ts';
import type { DispatcherClient } from '../../services/common/proto.ts';
import type { CreateDatasetResponse__Output } from '../../services/generated/hotpot/v1/CreateDatasetResponse.ts';
import type { MoveChunkRequest } from '../../services/generated/hotpot/v1/MoveChunkRequest.ts';
import type { MoveChunkResponse__Output } from '../../services/generated/hotpot/v1/MoveChunkResponse.ts';
import type { NodeInfo__Output } from '../../services/generated/hotpot/v1/NodeInfo.ts';
import type { OpenDatasetResponse__Output } from '../../services/generated/hotpot/v1/OpenDatasetResponse.ts';
import { listNodes, startDispatcher, startNode, tempDir, waitFor } from '../helpers/cluster.ts';
import { expectCode } from '../helpers/expect.ts';

const MiB = 1024 * 1024;

/** A dispatcher, two nodes and a dataset with 2 replicas; `a` owns chunk `chunk`, `b` is the other node. */
async function setup(t: ExecutionContext) {
  const dir = tempDir(t);
  const d = await startDispatcher(t, { stateDir: join(dir, 'd'), leaseMs: 1000 });
  const procs = [];
  for (const name of ['n1', 'n2']) {
    procs.push(await startNode(t, { dispatcher: d.address, name, stateDir: join(dir, name) }));
  }
  const c = dispatcherClient(d.address);
  t.teardown(() => c.close());
  const created = await unary<CreateDatasetResponse__Output>((o, cb) =>
    c.CreateDataset({ name: 'moving', sizeBytes: 16 * MiB, mode: 'CONSISTENCY_MODE_MRMW', replicas: 2 }, o, cb),
  );
  const members = (await listNodes(d.address)).nodes;
  const first = created.chunks[0];
  const a = members.find((n) => n.id === first?.ownerNodeId);
  const b = members.find((n) => n.id !== first?.ownerNodeId);
  if (!first || !a || !b || !created.dataset) throw new Error('unexpected cluster shape');
  const procB = procs.find((p) => p.id === b.id);
  if (!procB) throw new Error(`no process for node ${String(b.id)}`);
  return { d, c, dataset: created.dataset, chunks: created.chunks, chunk: first.index, a, b, procB };
}

const open = (c: DispatcherClient) =>
  unary<OpenDatasetResponse__Output>((o, cb) => c.OpenDataset({ name: 'moving' }, o, cb));
const move = (c: DispatcherClient, req: MoveChunkRequest) =>
  unary<MoveChunkResponse__Output>((o, cb) => c.MoveChunk(req, o, cb));
const asCaller = (n: NodeInfo__Output) => ({ nodeId: n.id, identity: n.identity, storeId: n.storeId });

test('the owner of a chunk hands it to another live node and the directory names the new owner', async (t) => {
  t.timeout(60_000);
  const { c, dataset, chunks, chunk, a, b } = await setup(t);
  const r = await move(c, { ...asCaller(a), datasetId: dataset.id, chunk, toNodeId: b.id });
  t.like(r.chunk, { index: chunk, ownerNodeId: b.id, ownerAlive: true, ownerRecovering: false });
  // The new owner comes first; the old owner stays a holder: it still has a full copy.
  t.deepEqual(r.chunk?.replicaNodeIds, [b.id, a.id]);
  t.true(r.generation > dataset.generation);

  const after = await open(c);
  t.is(after.dataset?.generation, r.generation);
  t.deepEqual(after.chunks[chunk], r.chunk);
  t.deepEqual(
    after.chunks.filter((ch) => ch.index !== chunk),
    chunks.filter((ch) => ch.index !== chunk),
    'other chunks keep their placement',
  );

  // The handoff is a one-way change of ownership: the old owner cannot move it again, the new one can.
  await expectCode(
    t,
    move(c, { ...asCaller(a), datasetId: dataset.id, chunk, toNodeId: b.id }),
    'FAILED_PRECONDITION',
    new RegExp(`owned by node ${String(b.id)}`),
  );
  const back = await move(c, { ...asCaller(b), datasetId: dataset.id, chunk, toNodeId: a.id });
  t.deepEqual(back.chunk?.replicaNodeIds, [a.id, b.id]);
  t.true(back.generation > r.generation);
});

test('a chunk move is refused unless the caller owns the chunk and the target is another live node', async (t) => {
  t.timeout(60_000);
  const { d, c, dataset, chunk, a, b, procB } = await setup(t);
  const ok = { ...asCaller(a), datasetId: dataset.id, chunk, toNodeId: b.id };
  await expectCode(
    t,
    move(c, { ...ok, ...asCaller(b), toNodeId: a.id }),
    'FAILED_PRECONDITION',
    new RegExp(`owned by node ${String(a.id)}, not node ${String(b.id)}`),
  );
  await expectCode(
    t,
    move(c, { ...ok, identity: 'someone-else' }),
    'FAILED_PRECONDITION',
    /not a member with identity "someone-else"/,
  );
  await expectCode(t, move(c, { ...ok, storeId: '0'.repeat(32) }), 'FAILED_PRECONDITION', /joined with store/);
  await expectCode(t, move(c, { ...ok, identity: '' }), 'INVALID_ARGUMENT', /identity is required/);
  await expectCode(t, move(c, { ...ok, toNodeId: 99 }), 'FAILED_PRECONDITION', /target node 99 is not a member/);
  await expectCode(t, move(c, { ...ok, toNodeId: a.id }), 'INVALID_ARGUMENT', /must name another node/);
  await expectCode(t, move(c, { ...ok, toNodeId: 0 }), 'INVALID_ARGUMENT', /must name another node/);
  await expectCode(t, move(c, { ...ok, datasetId: dataset.id + 100 }), 'NOT_FOUND', /not found/);
  await expectCode(t, move(c, { ...ok, chunk: 1000 }), 'NOT_FOUND', /has no chunk 1000/);
  const refused = await open(c);
  t.is(refused.dataset?.generation, dataset.generation, 'refused moves change nothing');
  t.is(refused.chunks[chunk]?.ownerNodeId, a.id);

  // A target whose lease expired cannot take the chunk. (Its own chunks fail over to `a`, a new generation of the
  // map; the chunk asked for stays where it was.)
  procB.child.kill('SIGKILL');
  await waitFor('the killed node to be declared dead', async () => {
    const n = (await listNodes(d.address)).nodes.find((x) => x.id === b.id);
    return n?.state === 'NODE_STATE_DEAD' ? n : undefined;
  });
  await expectCode(t, move(c, ok), 'FAILED_PRECONDITION', new RegExp(`target node ${String(b.id)} is not alive`));
  const after = await open(c);
  t.like(after.chunks[chunk], { ownerNodeId: a.id, era: 0 });
});

import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { dispatcherClient } from '../../services/cli/client.ts';
import { unary } from '../../services/common/rpc.ts';
import type { DispatcherClient } from '../../services/common/proto.ts';
import type { CreateDatasetRequest } from '../../services/generated/hotpot/v1/CreateDatasetRequest.ts';
import type { CreateDatasetResponse__Output } from '../../services/generated/hotpot/v1/CreateDatasetResponse.ts';
import type { ListDatasetsResponse__Output } from '../../services/generated/hotpot/v1/ListDatasetsResponse.ts';
import type { OpenDatasetResponse__Output } from '../../services/generated/hotpot/v1/OpenDatasetResponse.ts';
import type { StatDatasetResponse__Output } from '../../services/generated/hotpot/v1/StatDatasetResponse.ts';
import type { ResizeDatasetResponse__Output } from '../../services/generated/hotpot/v1/ResizeDatasetResponse.ts';
import { startDispatcher, startNode, tempDir, waitFor } from '../helpers/cluster.ts';
import { expectCode } from '../helpers/expect.ts';

const MiB = 1024 * 1024;

async function cluster(t: ExecutionContext, nodes: number, leaseMs = 1000) {
  const dir = tempDir(t);
  const d = await startDispatcher(t, { stateDir: join(dir, 'd'), leaseMs });
  const ns = [];
  for (let i = 1; i <= nodes; i++) {
    ns.push(await startNode(t, { dispatcher: d.address, name: `n${String(i)}`, stateDir: join(dir, `n${String(i)}`) }));
  }
  const c = dispatcherClient(d.address);
  t.teardown(() => c.close());
  return { dir, d, nodes: ns, c };
}

const create = (c: DispatcherClient, req: CreateDatasetRequest) =>
  unary<CreateDatasetResponse__Output>((o, cb) => c.CreateDataset(req, o, cb));
const stat = (c: DispatcherClient, name: string) =>
  unary<StatDatasetResponse__Output>((o, cb) => c.StatDataset({ name }, o, cb));

test('create, open, stat, list, resize and delete a dataset', async (t) => {
  t.timeout(60_000);
  const { c } = await cluster(t, 3);
  const r = await create(c, { name: 'graph.v1', sizeBytes: 64 * MiB, mode: 'CONSISTENCY_MODE_MRMW', replicas: 2 });
  t.like(r.dataset, {
    name: 'graph.v1',
    sizeBytes: 64 * MiB,
    mode: 'CONSISTENCY_MODE_MRMW',
    replicas: 2,
    chunkCount: 16,
  });
  t.is(r.chunks.length, 16);
  // Round-robin placement over the 3 live nodes, each chunk with 2 distinct replica holders, owner first.
  t.deepEqual(new Set(r.chunks.map((ch) => ch.ownerNodeId)).size, 3);
  for (const ch of r.chunks) {
    t.is(ch.replicaNodeIds.length, 2);
    t.is(ch.replicaNodeIds[0], ch.ownerNodeId);
    t.not(ch.replicaNodeIds[0], ch.replicaNodeIds[1]);
    t.true(ch.ownerAlive);
  }
  const open = await unary<OpenDatasetResponse__Output>((o, cb) => c.OpenDataset({ name: 'graph.v1' }, o, cb));
  t.deepEqual(open.chunks, r.chunks);
  t.is(open.members.length, 3);
  t.true(open.epoch > 0);
  await create(c, { name: 'b', sizeBytes: 10, mode: 'CONSISTENCY_MODE_MRSW', replicas: 1 });
  const list = await unary<ListDatasetsResponse__Output>((o, cb) => c.ListDatasets({}, o, cb));
  t.deepEqual(
    list.datasets.map((d) => [d.name, d.sizeBytes, d.mode]),
    [
      ['b', 4096, 'CONSISTENCY_MODE_MRSW'],
      ['graph.v1', 64 * MiB, 'CONSISTENCY_MODE_MRMW'],
    ],
  );
  const grown = await unary<ResizeDatasetResponse__Output>((o, cb) =>
    c.ResizeDataset({ name: 'graph.v1', sizeBytes: 80 * MiB }, o, cb),
  );
  t.is(grown.dataset?.chunkCount, 20);
  t.deepEqual(grown.chunks.slice(0, 16), r.chunks, 'growing keeps existing placement');
  t.true((grown.dataset?.generation ?? 0) > (r.dataset?.generation ?? 0));
  await unary((o, cb) => c.DeleteDataset({ name: 'b' }, o, cb));
  await expectCode(t, stat(c, 'b'), 'NOT_FOUND', /dataset "b" not found/);
});

test('every bad input is refused with its exact error', async (t) => {
  t.timeout(60_000);
  const { c } = await cluster(t, 2);
  const ok = { name: 'x', sizeBytes: MiB, mode: 'CONSISTENCY_MODE_MRMW', replicas: 1 } as const;
  await expectCode(t, create(c, { ...ok, name: '' }), 'INVALID_ARGUMENT', /invalid dataset name/);
  await expectCode(t, create(c, { ...ok, name: 'has space' }), 'INVALID_ARGUMENT', /invalid dataset name/);
  await expectCode(t, create(c, { ...ok, name: 'a/b' }), 'INVALID_ARGUMENT', /invalid dataset name/);
  await expectCode(t, create(c, { ...ok, name: 'n'.repeat(129) }), 'INVALID_ARGUMENT', /invalid dataset name/);
  await expectCode(t, create(c, { ...ok, sizeBytes: 0 }), 'INVALID_ARGUMENT', /size must be greater than 0/);
  await expectCode(t, create(c, { ...ok, sizeBytes: 2 ** 40 + 1 }), 'INVALID_ARGUMENT', /exceeds the limit/);
  await expectCode(
    t,
    create(c, { ...ok, mode: 'CONSISTENCY_MODE_UNSPECIFIED' }),
    'INVALID_ARGUMENT',
    /mode must be mrmw or mrsw/,
  );
  await expectCode(t, create(c, { ...ok, replicas: 0 }), 'INVALID_ARGUMENT', /replicas must be at least 1/);
  await expectCode(t, create(c, { ...ok, replicas: 3 }), 'INVALID_ARGUMENT', /replicas 3 exceeds the 2 live node/);
  await create(c, ok);
  await expectCode(t, create(c, ok), 'ALREADY_EXISTS', /dataset "x" already exists/);
  await expectCode(t, stat(c, 'nope'), 'NOT_FOUND', /dataset "nope" not found/);
  await expectCode(
    t,
    unary((o, cb) => c.OpenDataset({ name: 'nope' }, o, cb)),
    'NOT_FOUND',
    /not found/,
  );
  await expectCode(
    t,
    unary((o, cb) => c.DeleteDataset({ name: 'nope' }, o, cb)),
    'NOT_FOUND',
    /not found/,
  );
  await expectCode(
    t,
    unary((o, cb) => c.ResizeDataset({ name: 'x', sizeBytes: 4096 }, o, cb)),
    'INVALID_ARGUMENT',
    /can only grow/,
  );
  await expectCode(
    t,
    unary((o, cb) => c.ResizeDataset({ name: 'nope', sizeBytes: MiB }, o, cb)),
    'NOT_FOUND',
    /not found/,
  );
  await expectCode(t, stat(c, 'bad name'), 'INVALID_ARGUMENT', /invalid dataset name/);
  // Nothing bad was stored.
  const list = await unary<ListDatasetsResponse__Output>((o, cb) => c.ListDatasets({}, o, cb));
  t.deepEqual(
    list.datasets.map((d) => d.name),
    ['x'],
  );
});

test('kill -9 of the dispatcher and a restart lose no dataset or chunk map', async (t) => {
  t.timeout(90_000);
  const dir = tempDir(t);
  const stateDir = join(dir, 'd');
  const d = await startDispatcher(t, { stateDir, leaseMs: 2000 });
  const port = Number(d.address.split(':')[1]);
  const n1 = await startNode(t, { dispatcher: d.address, name: 'n1', stateDir: join(dir, 'n1') });
  await startNode(t, { dispatcher: d.address, name: 'n2', stateDir: join(dir, 'n2') });
  const c = dispatcherClient(d.address);
  t.teardown(() => c.close());
  const made = [];
  for (let i = 0; i < 5; i++) {
    made.push(
      await create(c, {
        name: `ds${String(i)}`,
        sizeBytes: (i + 1) * 3 * MiB,
        mode: 'CONSISTENCY_MODE_MRMW',
        replicas: 2,
      }),
    );
  }
  await unary((o, cb) => c.ResizeDataset({ name: 'ds0', sizeBytes: 9 * MiB }, o, cb));
  await unary((o, cb) => c.DeleteDataset({ name: 'ds4' }, o, cb));
  d.child.kill('SIGKILL');
  await d.exited;
  const d2 = await startDispatcher(t, { stateDir, leaseMs: 2000, port });
  const c2 = dispatcherClient(d2.address);
  t.teardown(() => c2.close());
  const list = await unary<ListDatasetsResponse__Output>((o, cb) => c2.ListDatasets({}, o, cb));
  t.deepEqual(
    list.datasets.map((x) => x.name),
    ['ds0', 'ds1', 'ds2', 'ds3'],
  );
  for (let i = 1; i < 4; i++) {
    const s = await stat(c2, `ds${String(i)}`);
    t.deepEqual(s.dataset, made[i]?.dataset);
    t.deepEqual(s.chunks, made[i]?.chunks);
  }
  t.is((await stat(c2, 'ds0')).dataset?.sizeBytes, 9 * MiB);
  // Nodes carry on: their heartbeats are accepted by the restarted dispatcher and they stay alive.
  const s1 = await waitFor('node still a member', async () => {
    const r = await stat(c2, 'ds1');
    return r.chunks.every((ch) => ch.ownerAlive) ? r : undefined;
  });
  t.truthy(s1);
  // New datasets get new ids (the id counter survived too).
  const fresh = await create(c2, { name: 'after', sizeBytes: MiB, mode: 'CONSISTENCY_MODE_MRMW', replicas: 1 });
  t.true((fresh.dataset?.id ?? 0) > (made[4]?.dataset?.id ?? 0));
  t.truthy(n1);
});

test('chunks of a killed node are shown without a live owner', async (t) => {
  t.timeout(60_000);
  const { c, nodes } = await cluster(t, 3, 700);
  await create(c, { name: 'm', sizeBytes: 24 * MiB, mode: 'CONSISTENCY_MODE_MRMW', replicas: 1 });
  const victim = nodes[1];
  if (!victim) throw new Error('no node');
  const killedAt = Date.now();
  victim.child.kill('SIGKILL');
  const s = await waitFor('owner marked dead', async () => {
    const r = await stat(c, 'm');
    return r.chunks.some((ch) => !ch.ownerAlive) ? r : undefined;
  });
  t.true(Date.now() - killedAt < 700 + 3000);
  for (const ch of s.chunks) t.is(ch.ownerAlive, ch.ownerNodeId !== victim.id);
  t.true(s.chunks.some((ch) => ch.ownerNodeId === victim.id));
});

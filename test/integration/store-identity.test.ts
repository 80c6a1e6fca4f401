// A node that lost its store must not serve zeros (issue 9, point 5; docs/design/consistency.md "A node that lost
// its store"). Each node's pool has an identity the dispatcher remembers: a node that rejoins with a new store (a
// replaced machine, a wiped pool and data dir) has its chunks refused until it has recovered them from the nodes
// holding copies; a node that comes back with an older copy of its store is refused.
import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { openApp } from '../helpers/app.ts';
import { listNodes, startCluster, waitFor } from '../helpers/cluster.ts';
import { dispatcherClient } from '../../services/cli/client.ts';
import { unary } from '../../services/common/rpc.ts';
import type { StatDatasetResponse__Output } from '../../services/generated/hotpot/v1/StatDatasetResponse.ts';

const MiB = 1024 * 1024;

async function stat(dispatcher: string, name: string): Promise<StatDatasetResponse__Output> {
  const c = dispatcherClient(dispatcher);
  try {
    return await unary<StatDatasetResponse__Output>((o, cb) => c.StatDataset({ name }, o, cb));
  } finally {
    c.close();
  }
}

test('a node restarted with an empty pool and data dir recovers its chunks from their holders and never serves zeros', async (t) => {
  t.timeout(170_000);
  const c = await startCluster(t, { nodes: 3, prefix: 'store', durability: 'disk' });
  const [n1, n2, n3] = c.nodes;
  if (!n1 || !n2 || !n3) throw new Error('3 nodes');
  const w = await openApp(t, n1.socket, 'acct', { size: 12 * MiB, mode: 'mrmw', replicas: 2 });
  await w.call({ op: 'fill', offset: 0, length: 12 * MiB, seed: 9 });
  await w.call({ op: 'commit' });
  const before = (await listNodes(c.dispatcher)).nodes.find((x) => x.id === n2.id);
  // Node 2 is lost with its pool and data dir (a replaced machine keeps only its name).
  n2.child.kill('SIGKILL');
  await n2.exited;
  const pool = readdirSync('/dev/shm').find((d) => d.startsWith('hotpot-store-') && d.endsWith('-n2'));
  if (pool) rmSync(join('/dev/shm', pool), { recursive: true, force: true });
  rmSync(join(c.dir, 'n2', 'data'), { recursive: true, force: true });
  const again = await c.restart(1);
  t.is(again.id, n2.id);
  const after = (await listNodes(c.dispatcher)).nodes.find((x) => x.id === n2.id);
  t.truthy(before?.storeId);
  t.not(after?.storeId, before?.storeId, 'the dispatcher sees a new store');
  // Its chunk is served again once recovered (and reported): never zeros.
  await waitFor(
    'node 2 recovered its chunk',
    async () => ((await stat(c.dispatcher, 'acct')).chunks.some((x) => x.ownerRecovering) ? undefined : true),
    60_000,
  );
  const chunks = (await stat(c.dispatcher, 'acct')).chunks;
  const owned = chunks.filter((x) => x.ownerNodeId === n2.id).map((x) => x.index);
  t.true(owned.length > 0, 'node 2 owns a chunk');
  for (const reader of [await openApp(t, n3.socket, 'acct'), await openApp(t, again.socket, 'acct')]) {
    const r = await reader.call<{ badPages: number; pages: number }>({
      op: 'check',
      offset: 0,
      length: 12 * MiB,
      seed: 9,
    });
    t.is(r.badPages, 0, 'every page reads as committed');
  }
  // It owns them again: a commit to its chunk goes through and a validated read of it passes.
  const off = (owned[0] ?? 0) * 4 * MiB;
  await w.call({ op: 'rollback' });
  await w.call({ op: 'write', offset: off, hex: 'abcd' });
  await w.call({ op: 'commit' });
  await w.call({ op: 'commitReads', reads: [{ offset: off, length: 4096 }] });
});

test('a node that comes back with an older copy of its store is refused with a clear message', async (t) => {
  t.timeout(120_000);
  const c = await startCluster(t, { nodes: 1, prefix: 'store-old', durability: 'disk' });
  const n = c.nodes[0];
  if (!n) throw new Error('1 node');
  const idFile = join(c.dir, 'n1', 'data', 'store.id');
  const backup = readFileSync(idFile, 'utf8'); // a copy of the store taken at its first start (incarnation 1)
  const stop = async (): Promise<void> => {
    c.nodes[0]?.child.kill('SIGKILL');
    await c.nodes[0]?.exited;
  };
  await stop();
  await c.restart(0); // incarnation 2
  await stop();
  await c.restart(0); // incarnation 3: the dispatcher last saw 3
  await stop();
  writeFileSync(idFile, backup); // the backup is restored: it opens as incarnation 2
  const err = await t.throwsAsync(c.restart(0));
  t.regex(err?.message ?? '', /older copy of its store/);
});

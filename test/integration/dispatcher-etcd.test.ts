// Dispatchers with their state in a real etcd (`hotpot dispatcher --store etcd://…`): one leads, a standby waits
// (it listens only once it leads), and after `kill -9` of the leader the standby leads once the leader's election
// lease runs out, with every dataset the dead leader acknowledged.
import test from 'ava';
import { dispatcherClient } from '../../services/cli/client.ts';
import { unary } from '../../services/common/rpc.ts';
import type { ListDatasetsResponse__Output } from '../../services/generated/hotpot/v1/ListDatasetsResponse.ts';
import { spawnHotpot, startNode, tempDir, waitFor } from '../helpers/cluster.ts';
import { startEtcd } from '../helpers/etcd.ts';

const TTL_S = 2;

function dispatcher(t: Parameters<typeof spawnHotpot>[0], endpoint: string, dir: string) {
  return spawnHotpot(
    t,
    [
      'dispatcher',
      '--listen',
      '127.0.0.1:0',
      '--state-dir',
      dir,
      '--store',
      `etcd://${endpoint}`,
      '--etcd-prefix',
      '/hotpot-takeover/',
      '--election-ttl',
      String(TTL_S),
      '--lease-ms',
      '20000',
    ],
    { readyTimeoutMs: 120_000 },
  );
}

async function listDatasets(address: string): Promise<string[]> {
  const c = dispatcherClient(address);
  try {
    const r = await unary<ListDatasetsResponse__Output>((o, cb) => c.ListDatasets({}, o, cb));
    return r.datasets.map((d) => d.name).sort();
  } finally {
    c.close();
  }
}

async function create(address: string, name: string): Promise<void> {
  const c = dispatcherClient(address);
  try {
    await unary((o, cb) =>
      c.CreateDataset({ name, sizeBytes: 1 << 20, mode: 'CONSISTENCY_MODE_MRMW', replicas: 1 }, o, cb),
    );
  } finally {
    c.close();
  }
}

test('kill -9 of the leading dispatcher: the standby leads with every acknowledged dataset', async (t) => {
  const etcd = await startEtcd(t);
  const dir = tempDir(t);
  const a = await dispatcher(t, etcd.endpoint, `${dir}/a`);
  const leader = a.fields.address ?? '';
  const n = await startNode(t, { dispatcher: leader, name: 'n1', stateDir: `${dir}/n1` });
  t.true(n.id > 0);
  for (let i = 0; i < 5; i++) await create(leader, `ds${String(i)}`);
  // The standby: it reports the leader and does not lead (nor listen) while the leader lives.
  const b = dispatcher(t, etcd.endpoint, `${dir}/b`);
  let bReady = false;
  void b.then(() => (bReady = true)).catch(() => undefined);
  const value = await waitFor('a standby to watch the leader', async () => {
    const kvs = await etcd.client.getAll().prefix('/hotpot-takeover/leader').strings();
    return Object.keys(kvs).length === 1 ? kvs : undefined;
  });
  t.regex(JSON.stringify(value), new RegExp(leader.replace(/\./g, '\\.').replace(/:.*/, '')));
  await create(leader, 'last');
  t.false(bReady, 'the standby does not lead while the leader lives');

  a.child.kill('SIGKILL');
  const killed = Date.now();
  await a.exited;
  const standby = await b;
  const took = Date.now() - killed;
  t.log(`the standby led ${String(took)} ms after kill -9 of the leader (election TTL ${String(TTL_S)} s)`);
  t.deepEqual(await listDatasets(standby.fields.address ?? ''), ['ds0', 'ds1', 'ds2', 'ds3', 'ds4', 'last']);
  await create(standby.fields.address ?? '', 'after');
  t.true((await listDatasets(standby.fields.address ?? '')).includes('after'));
});

// Dispatchers with their state in a real etcd (`hotpot dispatcher --store etcd://…`): one leads, a standby waits
// (it listens and sends callers to the leader: dispatcher-standby.test.ts). Nodes and clients are given both addresses
// and follow the leader. After `kill -9` of the leader the standby leads once the leader's election lease runs out:
// with every dataset create and delete the dead leader acknowledged, and with the nodes still members (none is
// declared dead because the dispatcher changed).
import test from 'ava';
import { dispatcherClient } from '../../services/cli/client.ts';
import { HotpotError } from '../../services/common/errors.ts';
import { unary } from '../../services/common/rpc.ts';
import type { ListDatasetsResponse__Output } from '../../services/generated/hotpot/v1/ListDatasetsResponse.ts';
import { listNodes, runCli, type spawnHotpot, startNode, tempDir, waitFor } from '../helpers/cluster.ts';
import { startEtcd, startEtcdCluster, startEtcdDispatcher } from '../helpers/etcd.ts';
import { freePort } from '../helpers/ports.ts';
import { pythonLs } from '../helpers/python.ts';

const TTL_S = 2;
const LEASE_MS = 8000;

function dispatcher(t: Parameters<typeof spawnHotpot>[0], endpoint: string, dir: string, port: number) {
  return startEtcdDispatcher(t, {
    endpoint,
    dir,
    port,
    prefix: '/hotpot-takeover/',
    electionTtlS: TTL_S,
    leaseMs: LEASE_MS,
  });
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

/**
 * Runs `op` until it is acknowledged, retrying UNAVAILABLE / DEADLINE_EXCEEDED (the leader died or is not found yet).
 * `done` says which refusal after a retry means an earlier attempt was applied (its answer was lost).
 */
async function untilAcknowledged(op: () => Promise<unknown>, done: HotpotError['code']): Promise<number> {
  let attempts = 0;
  for (;;) {
    attempts++;
    try {
      await op();
      return attempts;
    } catch (e) {
      if (!(e instanceof HotpotError)) throw e;
      if (attempts > 1 && e.code === done) return attempts;
      if (e.code !== 'UNAVAILABLE' && e.code !== 'DEADLINE_EXCEEDED') throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

test('kill -9 of the leading dispatcher: the standby leads; no acknowledged create or delete is lost; nodes stay members', async (t) => {
  const etcd = await startEtcd(t);
  const dir = tempDir(t);
  const [pa, pb] = [await freePort(), await freePort()];
  const both = `127.0.0.1:${String(pa)},127.0.0.1:${String(pb)}`;
  const a = await dispatcher(t, etcd.endpoint, `${dir}/a`, pa);
  // The election key names the leader and where it serves (for standbys and operators: etcdctl get).
  const key = (await etcd.client.get('/hotpot-takeover/leader').string()) ?? '{}';
  t.is((JSON.parse(key) as { address?: string }).address, a.fields.address);
  const b = dispatcher(t, etcd.endpoint, `${dir}/b`, pb);
  let bLeadsAt = 0;
  void b.then(() => (bLeadsAt = Date.now())).catch(() => undefined);
  const n1 = await startNode(t, { dispatcher: both, name: 'n1', stateDir: `${dir}/n1` });
  const n2 = await startNode(t, { dispatcher: both, name: 'n2', stateDir: `${dir}/n2` });
  const before = await listNodes(both);
  const epochOf = (id: number) => before.nodes.find((n) => n.id === id)?.stateEpoch;

  // Creates and deletes from a client that knows both dispatchers, while the leader is killed midway.
  const client = dispatcherClient(both);
  t.teardown(() => {
    client.close();
  });
  const expected = new Set<string>();
  let retried = 0;
  let killedAt = 0;
  for (let i = 0; i < 40; i++) {
    const name = `ds${String(i)}`;
    retried +=
      (await untilAcknowledged(
        () =>
          unary((o, cb) =>
            client.CreateDataset({ name, sizeBytes: 1 << 20, mode: 'CONSISTENCY_MODE_MRMW', replicas: 2 }, o, cb),
          ),
        'ALREADY_EXISTS',
      )) - 1;
    expected.add(name);
    if (i % 3 === 2) {
      retried +=
        (await untilAcknowledged(() => unary((o, cb) => client.DeleteDataset({ name }, o, cb)), 'NOT_FOUND')) - 1;
      expected.delete(name);
    }
    if (i === 15) {
      t.is(bLeadsAt, 0, 'the standby does not lead while the leader lives');
      a.child.kill('SIGKILL');
      killedAt = Date.now();
    }
  }
  const standby = await b;
  t.log(`${String(retried)} retried calls; the standby led ${String(bLeadsAt - killedAt)} ms after the kill`);
  t.is(standby.fields.address, `127.0.0.1:${String(pb)}`);
  t.deepEqual(await listDatasets(both), [...expected].sort());
  // The CLI and the Python client given both addresses reach the new leader too.
  const cli = await runCli(['--dispatcher', both, '--json', 'ls']);
  t.is(cli.code, 0, cli.stderr);
  t.deepEqual((JSON.parse(cli.stdout) as { name: string }[]).map((d) => d.name).sort(), [...expected].sort());
  t.deepEqual(await pythonLs(both), [...expected].sort());

  // Both nodes heartbeat to the new leader and are the same members as before (no death, no rejoin).
  // The new leader gave every live member one lease from when it loaded (before it led): a later expiry is a heartbeat.
  const after = await waitFor('both nodes to heartbeat to the new leader', async () => {
    const r = await listNodes(both);
    return r.nodes.every((n) => n.leaseExpiresUnixMs > bLeadsAt + 200 + LEASE_MS) ? r : undefined;
  });
  for (const n of [n1, n2]) {
    const m = after.nodes.find((x) => x.id === n.id);
    t.is(m?.state, 'NODE_STATE_ALIVE');
    t.is(m?.stateEpoch, epochOf(n.id), `node ${String(n.id)} was not declared dead nor rejoined`);
  }
  t.false(
    standby.stderr.some((l) => l.includes('node lease expired')),
    'the new leader declared no node dead',
  );
});

test('losing etcd quorum: the leader steps down and writes fail with UNAVAILABLE; when quorum returns a standby leads with every acknowledged write', async (t) => {
  const etcd = await startEtcdCluster(t, 3);
  const dir = tempDir(t);
  const [pa, pb] = [await freePort(), await freePort()];
  const both = `127.0.0.1:${String(pa)},127.0.0.1:${String(pb)}`;
  const a = await dispatcher(t, etcd.endpoints, `${dir}/a`, pa);
  const b = dispatcher(t, etcd.endpoints, `${dir}/b`, pb);
  const client = dispatcherClient(both);
  t.teardown(() => {
    client.close();
  });
  // Revoking a certificate: a dispatcher write that needs no live node, and idempotent (a retry after a lost answer
  // finds it revoked).
  const fingerprint = (n: number) =>
    Array.from({ length: 32 }, (_, i) => (i === 0 ? n : i).toString(16).padStart(2, '0'))
      .join(':')
      .toUpperCase();
  const revoke = (n: number) =>
    unary((o, cb) =>
      client.RevokeCertificate({ fingerprint: fingerprint(n), subject: `CN=${String(n)}`, expiresUnixMs: 0 }, o, cb),
    );
  await revoke(1);
  // A follower goes first (no etcd election): two of three members still write.
  const etcdLeader = await etcd.leader();
  const [follower, other] = [0, 1, 2].filter((i) => i !== etcdLeader);
  await etcd.kill(follower ?? 0);
  await untilAcknowledged(() => revoke(2), 'OK');
  await etcd.kill(other ?? 0);
  const exit = await a.exited;
  t.is(exit.code, 1, 'the leader exits once it cannot keep its election lease');
  t.true(a.stderr.some((l) => l.includes('no longer the leader')));
  const refused = await t.throwsAsync(revoke(3));
  t.true(refused instanceof HotpotError && refused.code === 'UNAVAILABLE', String(refused));
  etcd.restart(follower ?? 0);
  etcd.restart(other ?? 0);
  const standby = await b;
  t.is(standby.fields.address, `127.0.0.1:${String(pb)}`);
  // The client's channel may still be backing off from the refused connections: it retries, as clients do.
  let listed: { certificates: { fingerprint: string }[] } | undefined;
  await untilAcknowledged(async () => {
    listed = await unary<{ certificates: { fingerprint: string }[] }>((o, cb) =>
      client.ListRevokedCertificates({}, o, cb),
    );
  }, 'OK');
  t.deepEqual(listed?.certificates.map((x) => x.fingerprint).sort(), [fingerprint(1), fingerprint(2)]);
});

// A standby dispatcher (state in etcd, another one leads) listens and sends callers to the leader: every call is
// answered UNAVAILABLE with the leader's address in the `hotpot-leader` trailer, after the same authentication as
// on the leader. The CLI, nodes and the Python client given only the standby's address (or a list it comes first in)
// follow it; when the leader dies the standby takes over on the same address.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import test from 'ava';
import { clientSecurity, dispatcherClient } from '../../services/cli/client.ts';
import { LEADER_TRAILER } from '../../services/common/dispatcher-client.ts';
import { hotpotV1, type DispatcherClient } from '../../services/common/proto.ts';
import { unary } from '../../services/common/rpc.ts';
import { channelFor, type Security } from '../../services/common/tls.ts';
import type { ListDatasetsResponse__Output } from '../../services/generated/hotpot/v1/ListDatasetsResponse.ts';
import { listNodes, runCli, startNode, TEST_TLS_DIR, tempDir, waitFor } from '../helpers/cluster.ts';
import { startEtcd, startEtcdDispatcher } from '../helpers/etcd.ts';
import { freePort } from '../helpers/ports.ts';
import { pythonLs } from '../helpers/python.ts';

/** A client of exactly one address, which does not follow redirects: to see what a standby answers. */
function plainClient(address: string, security: Security = clientSecurity()): DispatcherClient {
  const { credentials, options } = channelFor(address, security, 'dispatcher');
  return new hotpotV1.Dispatcher(address, credentials, options);
}

/** The status of one ListDatasets call on `c`. */
function listStatus(c: DispatcherClient): Promise<grpc.StatusObject> {
  return new Promise((resolve) => {
    const call = c.ListDatasets({}, { deadline: Date.now() + 5000 }, () => undefined);
    call.on('status', resolve);
  });
}

async function names(c: DispatcherClient): Promise<string[]> {
  const r = await unary<ListDatasetsResponse__Output>((o, cb) => c.ListDatasets({}, o, cb));
  return r.datasets.map((d) => d.name).sort();
}

test('a standby sends every authenticated caller to the leader; clients given only its address follow, and it takes over on that address', async (t) => {
  t.timeout(240_000);
  const etcd = await startEtcd(t);
  const dir = tempDir(t);
  const [pa, pb] = [await freePort(), await freePort()];
  const [addrA, addrB] = [`127.0.0.1:${String(pa)}`, `127.0.0.1:${String(pb)}`];
  const opts = { endpoint: etcd.endpoint, prefix: '/hotpot-standby/', electionTtlS: 2, leaseMs: 8000 };
  const a = await startEtcdDispatcher(t, { ...opts, dir: `${dir}/a`, port: pa });
  const b = startEtcdDispatcher(t, { ...opts, dir: `${dir}/b`, port: pb });
  void b.catch(() => undefined);

  // What the standby answers: UNAVAILABLE, naming the leader, and nothing done.
  const raw = plainClient(addrB);
  t.teardown(() => {
    raw.close();
  });
  const s = await waitFor('the standby to listen and name the leader', async () => {
    const st = await listStatus(raw);
    return st.metadata.get(LEADER_TRAILER).length > 0 ? st : undefined;
  });
  t.is(s.code, grpc.status.UNAVAILABLE);
  t.deepEqual(s.metadata.get(LEADER_TRAILER), [addrA]);
  t.regex(s.details, new RegExp(`dispatcher ${addrB} is a standby; the leader is at ${addrA}`));

  // The same authentication as on the leader: no credential, or a certificate of another CA, is refused; a bearer
  // token is checked (with the leader): a forged one is refused, a valid one is sent on.
  const none = new hotpotV1.Dispatcher(addrB, grpc.credentials.createSsl(readFileSync(join(TEST_TLS_DIR, 'ca.crt'))), {
    'grpc.ssl_target_name_override': 'dispatcher.hotpot',
    'grpc.default_authority': 'dispatcher.hotpot',
  });
  t.teardown(() => {
    none.close();
  });
  const anon = await listStatus(none);
  t.is(anon.code, grpc.status.UNAUTHENTICATED, anon.details);
  t.deepEqual(anon.metadata.get(LEADER_TRAILER), [], 'no leader named to an unauthenticated caller');
  const made = await runCli(['--dispatcher', addrA, '--json', 'token', 'create', '--user', 'ops', '--role', 'admin']);
  t.is(made.code, 0, made.stderr);
  const token = (JSON.parse(made.stdout) as { token: string }).token;
  const ca = readFileSync(join(TEST_TLS_DIR, 'ca.crt'));
  const forged = await listStatus(plainClient(addrB, { bearer: { dir: TEST_TLS_DIR, ca, token: token + 'x' } }));
  t.is(forged.code, grpc.status.UNAUTHENTICATED, forged.details);
  const tokenRaw = await listStatus(plainClient(addrB, { bearer: { dir: TEST_TLS_DIR, ca, token } }));
  t.is(tokenRaw.code, grpc.status.UNAVAILABLE, tokenRaw.details);
  t.deepEqual(tokenRaw.metadata.get(LEADER_TRAILER), [addrA]);

  // A node given only the standby's address joins (through the leader) and stays a member across the takeover.
  const n1 = await startNode(t, { dispatcher: addrB, name: 'n1', stateDir: `${dir}/n1` });
  const before = await listNodes(addrA);
  const epoch = before.nodes.find((n) => n.id === n1.id)?.stateEpoch;
  t.is(before.nodes.find((n) => n.id === n1.id)?.state, 'NODE_STATE_ALIVE');

  // Clients that know only the standby, or a list with the standby first, reach the leader.
  const one = await runCli(['--dispatcher', addrB, 'create', 'one', '--size', '1MiB']);
  t.is(one.code, 0, one.stderr);
  const viaToken = dispatcherClient(addrB, { bearer: { dir: TEST_TLS_DIR, ca, token } });
  t.teardown(() => {
    viaToken.close();
  });
  t.deepEqual(await names(viaToken), ['one']);
  const standbyFirst = dispatcherClient(`${addrB},${addrA}`);
  t.teardown(() => {
    standbyFirst.close();
  });
  t.deepEqual(await names(standbyFirst), ['one']);
  t.deepEqual(await pythonLs(addrB), ['one']);

  // kill -9 of the leader: the standby leads on its address; the clients that used the leader come back to it.
  a.child.kill('SIGKILL');
  const leader = await b;
  t.is(leader.fields.address, addrB);
  const two = await runCli(['--dispatcher', addrB, 'create', 'two', '--size', '1MiB']);
  t.is(two.code, 0, two.stderr);
  for (const [what, c] of [
    ['the token client', viaToken],
    ['the standby-first list client', standbyFirst],
  ] as const) {
    const seen = await waitFor(`${what} to reach the new leader`, () => names(c).catch(() => undefined));
    t.deepEqual(seen, ['one', 'two'], what);
  }
  const after = await waitFor('the node to heartbeat to the new leader', async () => {
    const r = await listNodes(addrB);
    return r.nodes.every((n) => n.leaseExpiresUnixMs > Date.now() + 1000) ? r : undefined;
  });
  const m = after.nodes.find((n) => n.id === n1.id);
  t.is(m?.state, 'NODE_STATE_ALIVE');
  t.is(m?.stateEpoch, epoch, 'the node was not declared dead nor rejoined');
  const health = await runCli(['--dispatcher', addrB, '--json', 'ls']);
  t.is(health.code, 0, health.stderr);
});

// The RPC policy (services/common/authz.ts): every method of every service is listed, and who may call what.
import test from 'ava';
import { authorize, POLICY_METHODS, posixOf, standing, type Principal } from '../../services/common/authz.ts';
import { hotpotV1 } from '../../services/common/proto.ts';
import { certHolder } from '../../services/common/tls.ts';

const DAEMON = 999;
const admin: Principal = { kind: 'cert', role: 'admin', name: 'admin' };
const node: Principal = { kind: 'cert', role: 'node', name: 'n1' };
const alice: Principal = { kind: 'cert', role: 'user', name: 'alice', uid: 1000, gid: 100 };
const localUser: Principal = { kind: 'local', uid: 1000, gid: 100, pid: 1, groups: [100, 7] };
const localRoot: Principal = { kind: 'local', uid: 0, gid: 0, pid: 1, groups: [] };
const localDaemon: Principal = { kind: 'local', uid: DAEMON, gid: 5, pid: 1, groups: [] };

test('every method of every hotpot service has a rule (a new RPC cannot be added without one)', (t) => {
  for (const svc of [hotpotV1.Dispatcher.service, hotpotV1.Node.service, hotpotV1.Data.service]) {
    for (const def of Object.values(svc)) t.true(POLICY_METHODS.includes(def.path), def.path);
  }
});

test('no credential: UNAUTHENTICATED except health; an unknown method is refused even to admins', (t) => {
  t.like(authorize('/hotpot.v1.Data/Open', null, DAEMON), { ok: false, code: 'UNAUTHENTICATED' });
  t.like(authorize('/grpc.health.v1.Health/Check', null, DAEMON), { ok: true });
  t.like(authorize('/hotpot.v1.Dispatcher/Nope', admin, DAEMON), { ok: false, code: 'PERMISSION_DENIED' });
});

test('who may call what', (t) => {
  const may = (p: Principal, m: string): boolean => authorize(m, p, DAEMON).ok;
  // Admin everything listed; nodes the membership and dataset lookups; users and local apps the Data API.
  t.true(may(admin, '/hotpot.v1.Dispatcher/DeleteDataset'));
  t.true(may(admin, '/hotpot.v1.Node/DumpPage'));
  t.true(may(node, '/hotpot.v1.Dispatcher/Join'));
  t.true(may(node, '/hotpot.v1.Dispatcher/OpenDataset'));
  t.false(may(node, '/hotpot.v1.Dispatcher/DeleteDataset'));
  t.false(may(node, '/hotpot.v1.Dispatcher/SetDatasetAccess'));
  t.false(may(node, '/hotpot.v1.Node/DumpPage'));
  t.false(may(node, '/hotpot.v1.Dispatcher/ListLeases'));
  t.false(may(node, '/hotpot.v1.Data/Open'));
  t.true(may(alice, '/hotpot.v1.Data/Open'));
  t.true(may(alice, '/hotpot.v1.Node/Barrier'));
  t.false(may(alice, '/hotpot.v1.Node/Stats'));
  t.false(may(alice, '/hotpot.v1.Node/Events'));
  t.false(may(alice, '/hotpot.v1.Dispatcher/Join'));
  t.false(may(alice, '/hotpot.v1.Dispatcher/ListNodes'));
  t.true(may(localUser, '/hotpot.v1.Data/Commit'));
  t.false(may(localUser, '/hotpot.v1.Node/SetDebugMask'));
  // Root and the daemon's own user are admins on the unix socket; --insecure makes everyone one.
  t.true(may(localRoot, '/hotpot.v1.Node/SetDebugMask'));
  t.true(may(localDaemon, '/hotpot.v1.Node/Drain'));
  t.is(standing({ kind: 'insecure' }, DAEMON), 'admin');
});

test('the uid:gid and groups a principal opens datasets as', (t) => {
  t.deepEqual(posixOf(admin, DAEMON), { uid: 0, gid: 0, groups: [] });
  t.deepEqual(posixOf(alice, DAEMON), { uid: 1000, gid: 100, groups: [] });
  // A local app's supplementary groups (SO_PEERGROUPS) count too.
  t.deepEqual(posixOf(localUser, DAEMON), { uid: 1000, gid: 100, groups: [100, 7] });
  t.deepEqual(posixOf(localDaemon, DAEMON), { uid: 0, gid: 0, groups: [] });
  // A node's certificate is nobody's as a dataset user.
  t.deepEqual(posixOf(node, DAEMON), { uid: 65534, gid: 65534, groups: [] });
});

test('a certificate names its role and name; a user certificate must carry its uid:gid', (t) => {
  t.deepEqual(certHolder({ subject: { O: 'hotpot', OU: 'node', CN: 'n1' }, subjectaltname: 'DNS:node.hotpot' }), {
    role: 'node',
    name: 'n1',
  });
  t.deepEqual(certHolder({ subject: { OU: 'user', CN: 'alice' }, subjectaltname: 'URI:hotpot-posix:1000:100' }), {
    role: 'user',
    name: 'alice',
    uid: 1000,
    gid: 100,
  });
  t.is(certHolder({ subject: { OU: 'user', CN: 'alice' }, subjectaltname: '' }), null);
  t.is(certHolder({ subject: { OU: 'root', CN: 'x' }, subjectaltname: '' }), null);
  t.is(certHolder({ subject: { OU: 'admin' }, subjectaltname: '' }), null);
});

// Who may open a dataset from a node's app socket (issue 12, "Datasets have an owner and a mode"; docs/security.md):
// the node checks the app's SO_PEERCRED uid/gid against the dataset's owner and permission bits. A
// dataset an app creates is its creator's, 0600; one created over gRPC or the CLI is uid 0's. uid 0 may always.
import { chmodSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import test from 'ava';
import { startApp, type App } from '../helpers/app.ts';
import { runCli, startCluster } from '../helpers/cluster.ts';

const MiB = 1024 * 1024;
const NOBODY = { uid: 65534, gid: 65534 };

async function connected(t: Parameters<typeof startApp>[0], socket: string, as?: typeof NOBODY): Promise<App> {
  const a = await startApp(t, socket, {}, as);
  await a.call({ op: 'connect' });
  return a;
}

test('an unprivileged local user cannot open a dataset it may not, until its owner or uid 0 lets it', async (t) => {
  t.timeout(120_000);
  // The app sockets belong to group nogroup (nobody's), mode 0660.
  const c = await startCluster(t, { nodes: 1, prefix: 'access', common: { HOTPOT_SOCKET_GROUP: 'nogroup' } });
  const n = c.nodes[0];
  if (!n) throw new Error('1 node');
  const env = { HOTPOT_DISPATCHER: c.dispatcher };
  // Another user must reach the socket (the test's directories are 0700 root's).
  for (let d = dirname(n.socket); d.startsWith(c.dir); d = dirname(d)) chmodSync(d, 0o755);
  const st = statSync(n.socket);
  t.is(st.mode & 0o777, 0o660);
  t.is(st.gid, NOBODY.gid);
  t.is(statSync(join(dirname(n.socket), 'grpc.sock')).mode & 0o777, 0o660);
  // A user outside the group cannot even connect.
  const outsider = await startApp(t, n.socket, {}, { uid: 1, gid: 1 });
  const denied = await outsider.attempt({ op: 'connect' });
  t.false(denied.ok);
  if (!denied.ok) t.regex(denied.error.message, /Permission denied/);
  // root's app creates a dataset: owner 0:0, 0600.
  const root = await connected(t, n.socket);
  await root.call({ op: 'open', name: 'secret', create: { size: 4 * MiB, mode: 'mrmw', replicas: 1 } });
  const js = JSON.parse((await runCli(['--json', 'stat', 'secret'], { env })).stdout) as {
    dataset: { owner: { uid: number; gid: number }; permissions: string };
  };
  t.deepEqual(js.dataset.owner, { uid: 0, gid: 0 });
  t.is(js.dataset.permissions, '0600');

  // nobody is refused, with a message naming the owner and the bits.
  const other = await connected(t, n.socket, NOBODY);
  const refused = await other.attempt({ op: 'open', name: 'secret' });
  t.false(refused.ok);
  if (!refused.ok) {
    t.is(refused.error.code, 'PERMISSION_DENIED');
    t.regex(refused.error.message, /uid 65534 .*may not write dataset "secret": owner 0:0, permissions 0600/);
  }
  t.false((await other.attempt({ op: 'open', name: 'secret', readOnly: true })).ok, 'no read bit: not even to read');
  // Read for others (0644) is not enough to open for commits; it is to open read-only, and that session's commits
  // are refused.
  t.is((await runCli(['chmod', '0644', 'secret'], { env })).code, 0);
  t.false((await other.attempt({ op: 'open', name: 'secret' })).ok);
  await other.call({ op: 'open', name: 'secret', readOnly: true });
  const ro = await other.attempt({ op: 'commit' });
  t.false(ro.ok);
  if (!ro.ok) {
    t.is(ro.error.code, 'PERMISSION_DENIED');
    t.regex(ro.error.message, /read-only/);
  }
  // A read-only mapping (root's here: mapping needs userfaultfd) reads the committed bytes; its writes stay private to
  // the app, its commit is refused, and the dataset keeps what was committed.
  await root.call({ op: 'map' });
  await root.call({ op: 'write', offset: 0, hex: 'c0ffee' });
  await root.call({ op: 'commit' });
  const reader = await connected(t, n.socket);
  await reader.call({ op: 'open', name: 'secret', readOnly: true });
  await reader.call({ op: 'map' });
  t.is((await reader.call<{ hex: string }>({ op: 'read', offset: 0, length: 3 })).hex, 'c0ffee');
  await reader.call({ op: 'write', offset: 0, hex: '0bad00' });
  const refused2 = await reader.attempt({ op: 'commit' });
  t.false(refused2.ok);
  if (!refused2.ok) t.is(refused2.error.code, 'PERMISSION_DENIED');
  await root.call({ op: 'refresh' });
  t.is((await root.call<{ hex: string }>({ op: 'read', offset: 0, length: 3 })).hex, 'c0ffee');
  // Group read-write for its group: allowed once it is the owning group.
  t.is((await runCli(['chmod', '0660', 'secret'], { env })).code, 0);
  t.false((await other.attempt({ op: 'open', name: 'secret' })).ok);
  const chown = await runCli(['chown', `0:${String(NOBODY.gid)}`, 'secret'], { env });
  t.is(chown.code, 0, chown.stderr);
  t.regex(chown.stdout, /owner 0:65534 rw-rw----/);
  t.true((await other.attempt({ op: 'open', name: 'secret' })).ok);

  // nobody's own dataset is nobody's (0600): root may open it anyway.
  await other.call({ op: 'open', name: 'mine', create: { size: 4 * MiB, mode: 'mrmw', replicas: 1 } });
  const mine = JSON.parse((await runCli(['--json', 'stat', 'mine'], { env })).stdout) as {
    dataset: { owner: { uid: number; gid: number } };
  };
  t.deepEqual(mine.dataset.owner, NOBODY);
  t.true((await root.attempt({ op: 'open', name: 'mine' })).ok);

  // Bad input is refused with a clear message.
  const bad = await runCli(['chmod', '999', 'secret'], { env });
  t.is(bad.code, 2);
  t.regex(bad.stderr, /octal/);
  t.is((await runCli(['chown', 'alice', 'secret'], { env })).code, 2);
});

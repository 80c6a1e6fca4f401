// An app keeps running while its node daemon is killed (-9) and restarted: touched pages stay readable, requests
// fail with UNAVAILABLE, a fault on an unfetched page waits for the new daemon, the shim reconnects by itself,
// changes made before the restart are refused (ABORTED) and redone, and new commits reach the other node.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { startApp, type App } from '../helpers/app.ts';
import { startDispatcher, startNode, tempDir, waitFor } from '../helpers/cluster.ts';

const MiB = 1024 * 1024;

async function read(app: App, offset: number, length = 4): Promise<string> {
  return (await app.call<{ hex: string }>({ op: 'read', offset, length })).hex;
}

test('an app survives its node daemon being killed and restarted, and its new commits reach the other node', async (t) => {
  t.timeout(300_000);
  const dir = tempDir(t);
  const d = await startDispatcher(t, { stateDir: join(dir, 'd'), leaseMs: 4000 });
  const pool = (i: number) =>
    join('/dev/shm', `hotpot-test-restart-${String(process.pid)}-${dir.slice(-6)}-n${String(i)}`);
  t.teardown(() => {
    for (const i of [1, 2]) rmSync(pool(i), { recursive: true, force: true });
  });
  const nodeOpts = (i: number) => ({
    dispatcher: d.address,
    name: `n${String(i)}`,
    stateDir: join(dir, `n${String(i)}`),
    extra: ['--pool-dir', pool(i)],
  });
  const n1 = await startNode(t, nodeOpts(1));
  const n2 = await startNode(t, nodeOpts(2));
  // A wait budget far above any restart time here: a fault while node 1 is down must wait, never fail.
  const a = await startApp(t, n1.socket, { HOTPOT_RECONNECT_WAIT_MS: '120000' });
  const b = await startApp(t, n2.socket);
  for (const x of [a, b]) await x.call({ op: 'connect' });
  await a.call({ op: 'open', name: 'restart', create: { size: 8 * MiB, mode: 'mrmw', replicas: 2 } });
  await b.call({ op: 'open', name: 'restart' });
  for (const x of [a, b]) await x.call({ op: 'map' });
  // One offset in each of two chunks (owned by different nodes).
  const offsets = [100, 4 * MiB + 8];
  for (const offset of offsets) await a.call({ op: 'write', offset, hex: 'cafebabe' });
  t.true((await a.call<{ copies: number }>({ op: 'commit' })).copies >= 2);
  for (const offset of offsets) t.is(await read(a, offset), 'cafebabe');
  const touched = await a.call<{ sha256: string }>({ op: 'hash', offset: 0, length: 64 * 1024 });

  n1.child.kill('SIGKILL');
  await n1.exited;

  // While node 1 is down: touched pages read fine, a commit is refused at once.
  for (const offset of offsets) t.is(await read(a, offset), 'cafebabe');
  t.is((await a.call<{ sha256: string }>({ op: 'hash', offset: 0, length: 64 * 1024 })).sha256, touched.sha256);
  await a.call({ op: 'write', offset: 200, hex: '0badf00d' }); // a private change made before the restart
  const down = await a.attempt({ op: 'commit' });
  t.false(down.ok);
  if (!down.ok) {
    t.is(down.error.code, 'UNAVAILABLE');
    t.regex(down.error.message, /is down; reconnecting/);
  }
  // A page never fetched: the app's thread waits in the fault until the new daemon serves it.
  const unfetched = read(a, 6 * MiB);
  // Still waiting a moment later (a shim that answered with zeros, or poisoned the page, would have settled).
  const settled = await Promise.race([
    unfetched.then(() => true),
    new Promise<false>((r) => setTimeout(() => r(false), 300)),
  ]);
  t.false(settled, 'the read of an unfetched page waits for the daemon');

  await startNode(t, nodeOpts(1)); // the same name, state dir, socket path and pool
  t.is(await unfetched, '00000000');

  // The shim reconnects by itself. The change made before the restart cannot be committed (its base images died
  // with the old daemon): ABORTED with no conflict ranges, the private page kept.
  const stale = await waitFor(
    'the app to reconnect',
    async () => {
      const r = await a.attempt({ op: 'commit' });
      return !r.ok && r.error.code === 'UNAVAILABLE' ? undefined : r;
    },
    90_000,
  );
  t.false(stale.ok);
  if (!stale.ok) {
    t.is(stale.error.code, 'ABORTED');
    t.regex(stale.error.message, /restarted after these changes were made; rollback\(\) and redo them/);
    t.deepEqual(stale.error.conflicts, []);
  }
  t.is(await read(a, 200), '0badf00d');
  // transaction() treats it as a conflict: rolls back and runs again, and the second run commits.
  const tx = await a.call<{ runs: number }>({
    op: 'transactionWrite',
    writes: offsets.map((offset) => ({ offset, hex: 'feedface' })),
  });
  t.is(tx.runs, 2);
  t.is(await read(a, 200), '00000000', 'the rollback dropped the change made before the restart');
  for (const offset of offsets) {
    const seen = await waitFor(`node 2 to see the commit at ${String(offset)}`, async () => {
      await b.call({ op: 'refresh' });
      const h = await read(b, offset);
      return h === 'feedface' ? h : undefined;
    });
    t.is(seen, 'feedface');
  }
  // And a plain commit after the reconnect, too.
  await a.call({ op: 'write', offset: 4 * MiB + 16, hex: '12345678' });
  t.true((await a.call<{ copies: number }>({ op: 'commit' })).copies >= 2);

  // The app never died: it exits normally when told to.
  void a.attempt({ op: 'exit' }).catch(() => undefined);
  t.deepEqual(await a.exited, { code: 0, signal: null });
});

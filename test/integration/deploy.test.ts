// The deploy files: the systemd units pass `systemd-analyze verify`, deploy/make-secret.sh makes a cluster secret,
// and the units' command lines with the example environment files and a made secret start a working cluster.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { hotpotBin, projectRoot } from '../../services/common/paths.ts';
import { listNodes, spawnHotpot, tempDir, TEST_TLS_DIR, waitFor } from '../helpers/cluster.ts';

const deploy = join(projectRoot, 'deploy');
const units = ['hotpot-dispatcher.service', 'hotpot-node.service'];
const installedBin = '/usr/local/bin/hotpot';

/** The unit's `ExecStart=` line, split into words (the units use no quoting). */
function execStart(unit: string): string[] {
  const line = readFileSync(join(deploy, 'systemd', unit), 'utf8')
    .split('\n')
    .find((l) => l.startsWith('ExecStart='));
  if (line === undefined) throw new Error(`${unit} has no ExecStart=`);
  return line.slice('ExecStart='.length).trim().split(/\s+/);
}

/** KEY=VALUE lines of an environment file (comments and blank lines left out). */
function envFile(path: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const l = line.trim();
    if (l === '' || l.startsWith('#')) continue;
    const i = l.indexOf('=');
    if (i <= 0) throw new Error(`${path}: not KEY=VALUE: ${l}`);
    env[l.slice(0, i)] = l.slice(i + 1);
  }
  return env;
}

/**
 * `systemd-analyze verify` of the unit with its ExecStart pointing at this checkout's bin/hotpot.mjs; the problems
 * it reports. It exits 0 on an unknown key or a bad value and only says so on stderr, so every stderr line that
 * names the unit counts.
 */
function verify(t: ExecutionContext, unitText: string, name: string): string[] {
  const dir = tempDir(t, 'hotpot-units-');
  const path = join(dir, name);
  writeFileSync(path, unitText.replaceAll(installedBin, hotpotBin));
  const r = spawnSync('systemd-analyze', ['verify', path], { encoding: 'utf8' });
  const problems = r.stderr.split('\n').filter((l) => l.includes(name));
  if (r.status !== 0) problems.push(`systemd-analyze verify exited ${String(r.status)}: ${r.stderr}`);
  return problems;
}

const analyze = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
if (analyze.error !== undefined) {
  test.skip('the systemd units pass systemd-analyze verify (SKIPPED: systemd-analyze is not installed; apt-get install systemd)', () =>
    undefined);
} else {
  test('the systemd units pass systemd-analyze verify', (t) => {
    for (const unit of units) {
      const text = readFileSync(join(deploy, 'systemd', unit), 'utf8');
      t.true(text.includes(`ExecStart=${installedBin} `), `${unit} runs ${installedBin}`);
      t.deepEqual(verify(t, text, unit), [], unit);
    }
  });

  test('systemd-analyze verify as used here reports a misspelt key, a bad value and a missing program', (t) => {
    const text = readFileSync(join(deploy, 'systemd/hotpot-node.service'), 'utf8');
    t.true(verify(t, text.replace('KillMode=mixed', 'KillMod=mixed'), 'hotpot-node.service').length > 0);
    t.true(verify(t, text.replace('Restart=on-failure', 'Restart=sometimes'), 'hotpot-node.service').length > 0);
    t.true(
      verify(t, text.replace(`ExecStart=${installedBin}`, 'ExecStart=/nonexistent/hotpot'), 'x.service').length > 0,
    );
  });
}

test('make-secret.sh writes a 0600 environment file with a 32-byte hex secret and keeps an existing one', (t) => {
  const file = join(tempDir(t), 'etc-hotpot', 'secret.env');
  const script = join(deploy, 'make-secret.sh');
  execFileSync(script, [file], { encoding: 'utf8' });
  t.is(statSync(file).mode & 0o777, 0o600);
  const first = readFileSync(file, 'utf8');
  t.regex(first, /^HOTPOT_CLUSTER_SECRET=[0-9a-f]{64}\n$/);
  const again = spawnSync(script, [file], { encoding: 'utf8' });
  t.is(again.status, 1);
  t.regex(again.stderr, /exists; keeping it/);
  t.is(readFileSync(file, 'utf8'), first);
  execFileSync(script, ['--force', file], { encoding: 'utf8' });
  t.not(readFileSync(file, 'utf8'), first);
  t.is(spawnSync(script, [], { encoding: 'utf8' }).status, 2);
});

test("the units' command lines with the example environment files and a made secret form a cluster; SIGTERM stops the node with exit 0", async (t) => {
  t.timeout(180_000);
  const dir = tempDir(t);
  const secretFile = join(dir, 'secret.env');
  execFileSync(join(deploy, 'make-secret.sh'), [secretFile]);
  const secret = envFile(secretFile);
  // Only what differs on a test machine is replaced: addresses, directories and the test's own CA.
  const local = (file: string, overrides: Record<string, string>): Record<string, string> => {
    const env = envFile(join(deploy, 'systemd', file));
    for (const key of Object.keys(overrides)) t.true(key in env, `${file} sets ${key}`);
    return { ...secret, ...env, ...overrides };
  };
  const args = (unit: string, stateDir: string): string[] =>
    execStart(unit)
      .slice(1)
      .map((a) => (a.startsWith('/var/lib/hotpot/') ? stateDir : a));

  const d = await spawnHotpot(t, args('hotpot-dispatcher.service', join(dir, 'dispatcher')), {
    env: local('dispatcher.env', { HOTPOT_LISTEN: '127.0.0.1:0', HOTPOT_TLS_DIR: TEST_TLS_DIR }),
  });
  const dispatcher = d.fields.address ?? '';
  const pool = join('/dev/shm', `hotpot-test-deploy-${String(process.pid)}-${dir.slice(-6)}`);
  t.teardown(() => {
    rmSync(pool, { recursive: true, force: true });
  });
  const nodeEnv = local('node.env', {
    HOTPOT_DISPATCHER: dispatcher,
    HOTPOT_LISTEN: '127.0.0.1:0',
    HOTPOT_TLS_DIR: TEST_TLS_DIR,
    HOTPOT_SOCKET: join(dir, 'node.sock'),
  });
  const n = await spawnHotpot(t, args('hotpot-node.service', join(dir, 'node')), {
    env: { ...nodeEnv, HOTPOT_POOL_DIR: pool },
  });
  t.is(n.fields.identity, nodeEnv.HOTPOT_NODE_NAME);
  t.is(n.fields.socket, join(dir, 'node.sock'));
  t.true(existsSync(join(dir, 'node', 'data-port')), 'the node keeps its data port in its state dir');
  await waitFor('the node alive', async () =>
    (await listNodes(dispatcher)).nodes.some(
      (m) => m.identity === nodeEnv.HOTPOT_NODE_NAME && m.state === 'NODE_STATE_ALIVE',
    )
      ? true
      : undefined,
  );
  n.child.kill('SIGTERM');
  t.deepEqual(await n.exited, { code: 0, signal: null });
  await waitFor('the node left', async () =>
    (await listNodes(dispatcher)).nodes.some(
      (m) => m.identity === nodeEnv.HOTPOT_NODE_NAME && m.state === 'NODE_STATE_LEFT',
    )
      ? true
      : undefined,
  );
  d.child.kill('SIGTERM');
  t.deepEqual(await d.exited, { code: 0, signal: null });
});

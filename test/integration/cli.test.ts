import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import {
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
} from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import test, { type ExecutionContext } from 'ava';
import { hotpotBin, POOL_DIR_FILE, projectRoot } from '../../services/common/paths.ts';
import { listNodes, runCli, startDispatcher, startNode, tempDir, TEST_SECRET } from '../helpers/cluster.ts';
import { clientSecurity } from '../../services/cli/client.ts';

test('the CLI creates, lists, stats and removes datasets, with --json and exit codes 0/1/2', async (t) => {
  t.timeout(90_000);
  const dir = tempDir(t);
  const d = await startDispatcher(t, { stateDir: join(dir, 'd') });
  await startNode(t, { dispatcher: d.address, name: 'a', stateDir: join(dir, 'a') });
  await startNode(t, { dispatcher: d.address, name: 'b', stateDir: join(dir, 'b') });
  const env = { HOTPOT_DISPATCHER: d.address };
  const created = await runCli(['create', 'kv', '--size', '64MiB', '--mode', 'mrmw', '--replicas', '2'], { env });
  t.is(created.code, 0, created.stderr);
  t.regex(created.stdout, /created dataset kv \(id \d+\): 64MiB, mrmw, 2 replica\(s\), 16 chunk\(s\) of 4MiB/);
  const js = await runCli(['--json', 'stat', 'kv'], { env });
  t.is(js.code, 0);
  const parsed = JSON.parse(js.stdout) as {
    dataset: { chunks: { owner: number; ownerAlive: boolean }[]; sizeBytes: number };
  };
  t.is(parsed.dataset.sizeBytes, 64 * 1024 * 1024);
  t.is(parsed.dataset.chunks.length, 16);
  const human = await runCli(['stat', 'kv'], { env });
  t.regex(human.stdout, /CHUNK\s+OWNER\s+REPLICAS\s+OWNER ALIVE/);
  const ls = await runCli(['ls', '--json'], { env });
  t.deepEqual(
    (JSON.parse(ls.stdout) as { name: string }[]).map((x) => x.name),
    ['kv'],
  );
  const nodes = await runCli(['nodes', '--json'], { env });
  t.is((JSON.parse(nodes.stdout) as { nodes: unknown[] }).nodes.length, 2);
  const dup = await runCli(['create', 'kv', '--size', '1MiB'], { env });
  t.is(dup.code, 1);
  t.regex(dup.stderr, /ALREADY_EXISTS: dataset "kv" already exists/);
  const dupJson = await runCli(['--json', 'create', 'kv', '--size', '1MiB'], { env });
  t.is(dupJson.code, 1);
  t.deepEqual(JSON.parse(dupJson.stderr), {
    error: { code: 'ALREADY_EXISTS', message: 'dataset "kv" already exists' },
  });
  const usage = await runCli(['create', 'z', '--size', 'lots'], { env });
  t.is(usage.code, 2);
  t.regex(usage.stderr, /invalid size "lots"/);
  const badMode = await runCli(['create', 'z', '--size', '1MiB', '--mode', 'xyz'], { env });
  t.is(badMode.code, 2);
  t.is((await runCli(['bogus'], { env })).code, 2);
  const version = await runCli(['--version']);
  t.is(version.code, 0);
  t.is(
    version.stdout.trim(),
    (JSON.parse(readFileSync(join(projectRoot, 'package.json'), 'utf8')) as { version: string }).version,
  );
  // Output past the pipe's buffer arrives whole (it was cut at 64-128 KiB: the CLI exited before stdout drained).
  t.is((await runCli(['create', 'wide', '--size', '8GiB', '--replicas', '1'], { env })).code, 0);
  const wide = await runCli(['--json', 'stat', 'wide'], { env });
  t.is(wide.code, 0, wide.stderr);
  t.true(wide.stdout.length > 256 * 1024, `${String(wide.stdout.length)} bytes of JSON`);
  t.is((JSON.parse(wide.stdout) as { dataset: { chunks: unknown[] } }).dataset.chunks.length, 2048);
  // A reader that stops early (`| head`) ends the command quietly, exit 0, not an EPIPE stack trace.
  const piped = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    const sh = spawn(
      'bash',
      ['-o', 'pipefail', '-c', `"${process.execPath}" "${hotpotBin}" --json stat wide | head -c 100 >/dev/null`],
      { env: { ...process.env, ...env, HOTPOT_TRACES_EXPORTER: 'none' }, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    sh.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    sh.once('exit', (code) => {
      resolve({ code, stderr });
    });
  });
  t.is(piped.code, 0, piped.stderr);
  t.notRegex(piped.stderr, /EPIPE/);
  t.is((await runCli(['rm', 'wide'], { env })).code, 0);
  const rm = await runCli(['rm', 'kv'], { env });
  t.is(rm.code, 0);
  t.is((await runCli(['rm', 'kv'], { env })).code, 1);
  const down = await runCli(['ls'], { env: { HOTPOT_DISPATCHER: '127.0.0.1:1' } });
  t.is(down.code, 1);
  t.regex(
    down.stderr,
    /^hotpot: cannot reach the dispatcher at 127\.0\.0\.1:1 \(connection refused\): is the cluster running\?/,
  );
});

test('hotpot node --transport rdma without the kernel module stops at start naming the device; an unknown transport is refused', async (t) => {
  t.timeout(60_000);
  if (existsSync('/dev/hotpot-rdma')) {
    t.pass('this machine has /dev/hotpot-rdma (the module is loaded): nothing to refuse');
    return;
  }
  const dir = tempDir(t);
  const common = ['node', '--insecure', '--dispatcher', '127.0.0.1:1', '--state-dir', join(dir, 'state')];
  const env = { HOTPOT_CLUSTER_SECRET: TEST_SECRET, HOTPOT_POOL_DIR: join(dir, 'pool') };
  const rdma = await runCli([...common, '--transport', 'rdma'], { env });
  t.is(rdma.code, 1, rdma.stderr);
  t.regex(rdma.stderr, /transport rdma: \/dev\/hotpot-rdma does not exist: load the kernel module/);
  const viaEnv = await runCli(common, { env: { ...env, HOTPOT_TRANSPORT: 'rdma' } });
  t.is(viaEnv.code, 1, viaEnv.stderr);
  t.regex(viaEnv.stderr, /\/dev\/hotpot-rdma does not exist/);
  const bad = await runCli([...common, '--transport', 'udp'], { env });
  t.not(bad.code, 0);
  t.regex(bad.stderr, /Allowed choices are tcp, rdma/);
});

test('hotpot up starts a dispatcher and N nodes, prints one readiness line, and stops them on SIGTERM', async (t) => {
  t.timeout(120_000);
  const cwd = tempDir(t);
  // With the Prometheus exporter, each node serves metrics on its own port (base + i - 1). Below the kernel's
  // ephemeral range (32768+), where another test's outgoing connection may hold the port (once: "up exited 1").
  const promBase = 20_000 + (process.pid % 12_000);
  const child = spawn(process.execPath, [hotpotBin, 'up', '--nodes', '3'], {
    cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      HOTPOT_TRACES_EXPORTER: 'none',
      HOTPOT_METRICS_EXPORTER: 'prometheus',
      HOTPOT_PROMETHEUS_PORT: String(promBase),
    },
  });
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (l) => {
      if (l.startsWith('READY ')) resolve(l);
    });
    child.once('exit', (code) => reject(new Error(`up exited ${String(code)}: ${stderr}`)));
  });
  t.regex(
    line,
    /^READY hotpot up dispatcher=127\.0\.0\.1:\d+ nodes=1@127\.0\.0\.1:\d+,2@127\.0\.0\.1:\d+,3@127\.0\.0\.1:\d+ state=/,
  );
  t.true(existsSync(join(cwd, '.hotpot', 'cluster.json')));
  const cluster = JSON.parse(readFileSync(join(cwd, '.hotpot', 'cluster.json'), 'utf8')) as { dispatcher: string };
  // up made the cluster CA and an admin certificate under .hotpot/tls; its processes issued their own.
  const upTls = clientSecurity({ tlsDir: join(cwd, '.hotpot', 'tls') });
  t.deepEqual(
    readdirSync(join(cwd, '.hotpot', 'tls')).sort(),
    ['admin.crt', 'admin.key', 'ca.crt', 'ca.key', 'dispatcher.crt', 'dispatcher.key']
      .concat(['node.node-1', 'node.node-2', 'node.node-3'].flatMap((b) => [`${b}.crt`, `${b}.key`]))
      .sort(),
  );
  t.is(statSync(join(cwd, '.hotpot', 'tls', 'ca.key')).mode & 0o777, 0o600);
  const members = await listNodes(cluster.dispatcher, upTls);
  t.is(members.nodes.filter((n) => n.state === 'NODE_STATE_ALIVE').length, 3);
  for (let i = 0; i < 3; i++) {
    const r = await fetch(`http://127.0.0.1:${String(promBase + i)}/metrics`);
    t.is(r.status, 200, `node ${String(i + 1)} serves metrics on port ${String(promBase + i)}`);
    t.regex(await r.text(), /hotpot/);
  }
  // The CLI finds the cluster and its certificates from ./.hotpot/cluster.json.
  const created = await runCli(['create', 'demo', '--size', '8MiB', '--replicas', '3'], {
    cwd,
    env: { HOTPOT_TLS_DIR: undefined, HOTPOT_CERT: undefined },
  });
  t.is(created.code, 0, created.stderr);
  const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  child.kill('SIGTERM');
  t.is(await exited, 0);
  t.false(existsSync(join(cwd, '.hotpot', 'cluster.json')));
  await t.throwsAsync(listNodes(cluster.dispatcher, upTls));
});

/** The pids of `pid`'s children running the hotpot CLI (from /proc; not the TypeScript loader's helper). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid && readFileSync(`/proc/${d}/cmdline`, 'utf8').includes('hotpot.mjs')) out.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return !readFileSync(`/proc/${String(pid)}/stat`, 'utf8').includes(') Z ');
  } catch {
    return false;
  }
};

async function upUnder(t: ExecutionContext, how: 'sh' | 'direct') {
  const cwd = tempDir(t);
  // `npm start` runs `sh -c "node bin/hotpot.mjs up"`: a SIGTERM to it may reach only the shell.
  const cmd = `'${process.execPath}' '${hotpotBin}' up --nodes 2; echo done`;
  const child =
    how === 'sh'
      ? spawn('/bin/sh', ['-c', cmd], { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: process.env })
      : spawn(process.execPath, [hotpotBin, 'up', '--nodes', '2'], {
          cwd,
          stdio: ['ignore', 'pipe', 'pipe'],
          env: process.env,
        });
  // up's log (its children's lines come through it): what stopped when, shown if something outlives the budget.
  const log: string[] = [];
  createInterface({ input: child.stderr }).on('line', (l) => {
    if (/stop|shutting|exited|failed|error/i.test(l)) log.push(l.slice(0, 300));
  });
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (l) => {
      if (l.startsWith('READY ')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`up exited ${String(code)}`)));
  });
  const up = how === 'sh' ? (childrenOf(child.pid ?? 0)[0] ?? 0) : (child.pid ?? 0);
  const daemons = childrenOf(up);
  t.teardown(() => {
    for (const p of [up, ...daemons]) if (alive(p)) process.kill(p, 'SIGKILL');
  });
  t.is(daemons.length, 3, 'a dispatcher and 2 nodes');
  return { child, up, daemons, log };
}

/** Waits until none of `pids` is alive; else a description of each one left (command, state, kernel wait). */
async function allGone(pids: number[], ms: number): Promise<string> {
  for (const until = Date.now() + ms; Date.now() < until; await new Promise((r) => setTimeout(r, 100))) {
    if (pids.every((p) => !alive(p))) return '';
  }
  return pids
    .filter(alive)
    .map((p) => {
      const read = (f: string): string => {
        try {
          return readFileSync(`/proc/${String(p)}/${f}`, 'utf8');
        } catch {
          return '?';
        }
      };
      const cmd = read('cmdline').split('\0').slice(2, 3).join(' ');
      const state = read('stat').split(') ')[1]?.split(' ')[0] ?? '?';
      // Every thread: its name, state and kernel wait, and its kernel stack (root only), to see which one holds the stop.
      let threads: string[];
      try {
        threads = readdirSync(`/proc/${String(p)}/task`).map((tid) => {
          const task = `task/${tid}`;
          const tstate = read(`${task}/stat`).split(') ')[1]?.split(' ')[0] ?? '?';
          const stack = read(`${task}/stack`).trim().split('\n').slice(0, 4).join(' < ');
          return `${tid} ${read(`${task}/comm`).trim()} ${tstate} ${read(`${task}/wchan`)} [${stack}]`;
        });
      } catch {
        threads = ['?'];
      }
      return `pid ${String(p)} (${cmd}) state ${state} wchan ${read('wchan')}${userStacks(p)}; threads: ${threads.join(' | ')}`;
    })
    .join('; ');
}

/** Every thread's user-space stack (function names, innermost first), by gdb when it is installed; else ''. */
function userStacks(pid: number): string {
  const r = spawnSync('gdb', ['-p', String(pid), '-batch', '-nx', '-ex', 'thread apply all bt 14'], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  if (r.error || typeof r.stdout !== 'string') return '';
  const threads: string[] = [];
  for (const line of r.stdout.split('\n')) {
    const head = /^Thread \d+ \(Thread 0x[0-9a-f]+ \(LWP (\d+)\) "([^"]*)"\)/.exec(line);
    if (head) threads.push(`${head[1] ?? ''} ${head[2] ?? ''}:`);
    const frame = /^#\d+\s+(?:0x[0-9a-f]+ in )?([^\s(]+)/.exec(line);
    // libc's futex and thread-start frames say nothing the next frame does not.
    const fn = frame?.[1] ?? '';
    const last = threads.length - 1;
    if (last >= 0 && fn !== '' && !/^(__|do_futex|start_thread|clone)/.test(fn)) {
      threads[last] = `${threads[last] ?? ''} ${fn.slice(0, 60)}`;
    }
  }
  return threads.length > 0 ? `; user stacks: ${threads.join(' | ')}` : '';
}

// hotpot up gives each group of children (nodes, then the dispatcher) STOP_GRACE_MS (15 s) before it kills them, so
// the whole stop is bounded by twice that; a stop that takes longer than a few seconds is logged.
const UP_STOP_BOUND_MS = 35_000;

test('hotpot up stops the whole cluster when the shell that ran it dies on SIGTERM (npm start), and when it is killed -9', async (t) => {
  t.timeout(180_000);
  const viaShell = await upUnder(t, 'sh');
  let since = Date.now();
  viaShell.child.kill('SIGTERM'); // the shell only
  let left = await allGone([viaShell.up, ...viaShell.daemons], UP_STOP_BOUND_MS);
  t.is(left, '', `up, dispatcher and nodes are gone; up's log:\n${viaShell.log.join('\n')}`);
  if (Date.now() - since > 5000) t.log(`the stop via the shell took ${String(Date.now() - since)} ms`, viaShell.log);
  const direct = await upUnder(t, 'direct');
  since = Date.now();
  direct.child.kill('SIGKILL'); // up itself, no chance to stop anything
  left = await allGone(direct.daemons, UP_STOP_BOUND_MS);
  t.is(left, '', `its dispatcher and nodes stop when their pipe from up closes; their log:\n${direct.log.join('\n')}`);
  if (Date.now() - since > 5000) t.log(`the stop after kill -9 took ${String(Date.now() - since)} ms`, direct.log);
});

test('hotpot clean removes a stopped cluster: its pools in /dev/shm and its state; refused while it runs', async (t) => {
  t.timeout(120_000);
  const cwd = tempDir(t);
  const up = spawn(process.execPath, [hotpotBin, 'up', '--nodes', '2'], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => {
    if (up.exitCode === null) up.kill('SIGKILL');
  });
  up.stderr.resume();
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: up.stdout }).on('line', (l) => {
      if (l.startsWith('READY ')) resolve();
    });
    up.once('exit', (code) => reject(new Error(`up exited ${String(code)}`)));
  });
  const pools = ['node-1', 'node-2'].map((n) => readFileSync(join(cwd, '.hotpot', n, 'pool-dir'), 'utf8').trim());
  t.teardown(() => {
    for (const p of pools) rmSync(p, { recursive: true, force: true });
  });
  for (const p of pools) t.true(p.startsWith('/dev/shm/hotpot/') && existsSync(p), p);
  const busy = await runCli(['clean', '--yes'], { cwd });
  t.is(busy.code, 1);
  t.regex(busy.stderr, /a cluster is running under .*\.hotpot \(hotpot up, pid \d+\): stop it first/);
  const exited = new Promise((r) => up.once('exit', r));
  up.kill('SIGTERM');
  await exited;
  for (const p of pools) t.true(existsSync(p), 'the pools outlive the cluster');
  const dry = await runCli(['clean'], { cwd });
  t.is(dry.code, 2);
  for (const p of pools) t.true(dry.stdout.includes(p));
  t.true(existsSync(join(cwd, '.hotpot')), 'nothing removed without --yes');
  const done = await runCli(['clean', '--yes'], { cwd });
  t.is(done.code, 0, done.stderr);
  for (const p of pools) t.false(existsSync(p));
  t.false(existsSync(join(cwd, '.hotpot')));
  const again = await runCli(['clean'], { cwd });
  t.is(again.code, 0);
  t.regex(again.stdout, /nothing to clean/);
});

test('hotpot certs: init makes the CA once, issue signs certificates by role, list shows them', async (t) => {
  const dir = join(tempDir(t), 'tls');
  const env = { HOTPOT_TLS_DIR: dir };
  const init = await runCli(['certs', 'init'], { env });
  t.is(init.code, 0, init.stderr);
  t.regex(init.stdout, /created the cluster CA/);
  t.is(statSync(join(dir, 'ca.key')).mode & 0o777, 0o600);
  t.regex((await runCli(['certs', 'init'], { env })).stdout, /is kept/);
  t.is(
    (await runCli(['certs', 'issue', 'node', 'db1', '--host', '10.0.0.5', '--host', 'db1.example'], { env })).code,
    0,
  );
  // A user needs its uid:gid; a bad role, a bad name and a second issue without --force are usage errors.
  const noUid = await runCli(['certs', 'issue', 'user', 'alice'], { env });
  t.is(noUid.code, 2);
  t.regex(noUid.stderr, /needs --uid and --gid/);
  t.is((await runCli(['certs', 'issue', 'user', 'alice', '--uid', '1000', '--gid', '100'], { env })).code, 0);
  t.is((await runCli(['certs', 'issue', 'root', 'x'], { env })).code, 2);
  t.is((await runCli(['certs', 'issue', 'admin', '../evil'], { env })).code, 2);
  const again = await runCli(['certs', 'issue', 'node', 'db1'], { env });
  t.is(again.code, 2);
  t.regex(again.stderr, /exists \(--force replaces it\)/);
  t.is(
    (await runCli(['certs', 'issue', 'node', 'db1', '--force', '--host', '10.0.0.5', '--host', 'db1.example'], { env }))
      .code,
    0,
  );
  const list = JSON.parse((await runCli(['--json', 'certs', 'list'], { env })).stdout) as {
    file: string;
    role: string;
    name: string;
  }[];
  t.deepEqual(
    list.map((c) => [c.file, c.role, c.name]),
    [
      ['node.db1.crt', 'node', 'db1'],
      ['user.alice.crt', 'user', 'alice'],
    ],
  );
  // The node's certificate is valid for the addresses it was issued for, and names a user's uid:gid.
  const node = new X509Certificate(readFileSync(join(dir, 'node.db1.crt')));
  for (const san of [
    'DNS:node.hotpot',
    'DNS:localhost',
    'IP Address:127.0.0.1',
    'IP Address:10.0.0.5',
    'DNS:db1.example',
  ]) {
    t.true((node.subjectAltName ?? '').split(', ').includes(san), san);
  }
  t.true(node.checkIssued(new X509Certificate(readFileSync(join(dir, 'ca.crt')))));
  const user = new X509Certificate(readFileSync(join(dir, 'user.alice.crt')));
  t.regex(user.subjectAltName ?? '', /URI:hotpot-posix:1000:100/);
});

test('the CLI runs from the compiled JavaScript in dist/, without tsx; it falls back to the sources when one changed', async (t) => {
  t.timeout(90_000);
  /** Runs a script with the copy's or the checkout's scripts/build-status.mjs as `m`; resolves to its exit code. */
  const withBuildStatus = (cwd: string, body: string) =>
    new Promise<number | null>((resolve) => {
      const code = `import('./scripts/build-status.mjs').then((m) => { ${body} })`;
      spawn(process.execPath, ['-e', code], { cwd, stdio: 'ignore' }).once('exit', resolve);
    });
  t.is(
    await withBuildStatus(projectRoot, 'process.exit(m.builtIsCurrent() ? 0 : 1)'),
    0,
    'dist/ is built from the current sources (npm run build; npm test runs it)',
  );
  // A copy of the checkout whose node_modules has every package but tsx: importing tsx fails there.
  const dir = tempDir(t);
  const root = join(dir, 'hotpot');
  for (const f of ['bin', 'scripts', 'dist', 'services', 'clients/typescript', 'native/index.ts', 'package.json']) {
    cpSync(join(projectRoot, f), join(root, f), {
      recursive: true,
      filter: (src) => !src.startsWith(join(projectRoot, 'clients', 'typescript', 'dist')),
    });
  }
  for (const f of ['tsconfig.json', 'tsconfig.build.json']) cpSync(join(projectRoot, f), join(root, f));
  // The copy's dist/ is the checkout's, built from the same sources: stamped for the copies of them.
  t.is(await withBuildStatus(root, 'require("node:fs").writeFileSync(m.stampFile, m.stampText(m.sourceState()))'), 0);
  symlinkSync(join(projectRoot, 'proto'), join(root, 'proto'));
  for (const f of ['binding.gyp', 'build']) symlinkSync(join(projectRoot, 'native', f), join(root, 'native', f));
  mkdirSync(join(root, 'node_modules'));
  for (const name of readdirSync(join(projectRoot, 'node_modules'))) {
    if (name !== 'tsx' && name !== '.bin') {
      symlinkSync(join(projectRoot, 'node_modules', name), join(root, 'node_modules', name));
    }
  }
  const bin = join(root, 'bin', 'hotpot.mjs');
  const started: ChildProcess[] = [];
  t.teardown(() => {
    for (const c of started) c.kill('SIGKILL');
  });
  /** Runs the copy's CLI; with `ready`, returns once it printed its READY line (a daemon), leaving it running. */
  const cli = (args: string[], opts: { ready?: boolean; env?: NodeJS.ProcessEnv } = {}) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [bin, ...args], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, HOTPOT_TRACES_EXPORTER: 'none', ...opts.env },
      });
      started.push(child);
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
        if (opts.ready && /^READY /m.test(stdout)) resolve({ code: null, stdout, stderr });
      });
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.once('exit', (code) => {
        resolve({ code, stdout, stderr });
      });
    });

  // A daemon and CLI commands, all from the copy.
  const dispatcher = await cli(['dispatcher', '--listen', '127.0.0.1:0', '--state-dir', join(dir, 'd')], {
    ready: true,
    env: { HOTPOT_CLUSTER_SECRET: TEST_SECRET },
  });
  const address = /address=(\S+)/.exec(dispatcher.stdout)?.[1];
  t.truthy(address, `${dispatcher.stdout}\n${dispatcher.stderr}`);
  const env = { HOTPOT_DISPATCHER: address ?? '' };
  const nodeDir = join(dir, 'n');
  const node = await cli(['node', '--listen', '127.0.0.1:0', '--name', 'n', '--state-dir', nodeDir], {
    ready: true,
    env: { ...env, HOTPOT_CLUSTER_SECRET: TEST_SECRET },
  });
  t.regex(node.stdout, /^READY /m, node.stderr);
  t.teardown(() => {
    const pool = join(nodeDir, POOL_DIR_FILE);
    if (existsSync(pool)) rmSync(readFileSync(pool, 'utf8').trim(), { recursive: true, force: true });
  });
  const help = await cli(['--help']);
  t.is(help.code, 0, help.stderr);
  t.regex(help.stdout, /Usage: hotpot/);
  const created = await cli(['create', 'compiled', '--size', '1MiB'], { env });
  t.is(created.code, 0, created.stderr);
  const ls = await cli(['--json', 'ls'], { env });
  t.is(ls.code, 0, ls.stderr);
  t.deepEqual(
    (JSON.parse(ls.stdout) as { name: string }[]).map((x) => x.name),
    ['compiled'],
  );

  // An edited source makes dist/ stale: the CLI then runs the sources, which needs tsx (absent from the copy).
  const edited = join(root, 'services', 'cli', 'main.ts');
  const later = new Date(Date.now() + 5_000);
  utimesSync(edited, later, later);
  const stale = await cli(['--help']);
  t.not(stale.code, 0);
  t.regex(stale.stderr, /Cannot find (package|module) 'tsx'/);
});

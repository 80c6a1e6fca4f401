// `hotpot up` as a whole: how it stops (npm start + SIGTERM, SIGHUP, `hotpot down`), its logs, its metrics ports.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import test, { type ExecutionContext } from 'ava';
import { hotpotBin, projectRoot } from '../../services/common/paths.ts';
import { runCli, tempDir } from '../helpers/cluster.ts';

interface Up {
  child: ChildProcess;
  ready: Record<string, string>;
  stderr: string[];
  exited: Promise<number | null>;
}

/** Starts `cmd args` in `cwd` (a `hotpot up`, or npm running one) and waits for up's READY line. */
async function startUp(
  t: ExecutionContext,
  cwd: string,
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv = {},
  ownGroup = false,
): Promise<Up> {
  const child = spawn(cmd, args, {
    cwd,
    detached: ownGroup,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, HOTPOT_TRACES_EXPORTER: 'none', ...env },
  });
  const stderr: string[] = [];
  createInterface({ input: child.stderr }).on('line', (l) => stderr.push(l));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const ready = await new Promise<Record<string, string>>((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (l) => {
      if (l.startsWith('READY hotpot up ')) {
        resolve(
          Object.fromEntries(l.split(' ').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])),
        );
      }
    });
    void exited.then((code) => reject(new Error(`${cmd} exited ${String(code)}: ${stderr.slice(-20).join('\n')}`)));
  });
  // Safety net: whatever the test did, nothing it started outlives it (pools are removed by `down --clean` or here).
  const procs = hotpotProcessesIn(cwd);
  t.teardown(async () => {
    for (const p of procs) if (alive(p)) process.kill(p, 'SIGKILL');
    if (child.exitCode === null) child.kill('SIGKILL');
    await allGone(procs);
    await runCli(['clean', '--yes'], { cwd });
  });
  return { child, ready, stderr, exited };
}

/** The hotpot processes (bin/hotpot.mjs) running in `cwd`: `hotpot up` and the dispatcher and nodes it started. */
function hotpotProcessesIn(cwd: string): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        return (
          readlinkSync(`/proc/${d}/cwd`) === cwd && readFileSync(`/proc/${d}/cmdline`, 'utf8').includes('hotpot.mjs')
        );
      } catch {
        return false; // gone meanwhile, or another user's
      }
    })
    .map(Number);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !readFileSync(`/proc/${String(pid)}/stat`, 'utf8').includes(') Z ');
  } catch {
    return false;
  }
}

async function allGone(pids: number[]): Promise<boolean> {
  for (const until = Date.now() + 60_000; Date.now() < until; await new Promise((r) => setTimeout(r, 100))) {
    if (pids.every((p) => !alive(p))) return true;
  }
  return false;
}

/** The JSON log events on up's stderr (other lines, such as npm's, skipped). */
function events(stderr: string[]): Record<string, unknown>[] {
  return stderr.flatMap((l) => {
    try {
      return [JSON.parse(l) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
}

type Stop = 'SIGTERM to npm' | 'Ctrl-C';

const npmStartStops = test.macro<[Stop]>({
  async exec(t, how) {
    t.timeout(180_000);
    const cwd = tempDir(t);
    // The project's own start script, with the path of bin/hotpot.mjs made absolute.
    const start = (
      JSON.parse(readFileSync(join(projectRoot, 'package.json'), 'utf8')) as { scripts: { start: string } }
    ).scripts.start;
    writeFileSync(
      join(cwd, 'package.json'),
      JSON.stringify({
        name: 'up-test',
        private: true,
        scripts: { start: start.replace('bin/hotpot.mjs', hotpotBin) },
      }),
    );
    // Ctrl-C in a terminal: SIGINT to the foreground process group, npm and the `hotpot up` it runs (npm passes a
    // second one on); not to the dispatcher and nodes, which up keeps in their own groups.
    const npm = await startUp(t, cwd, 'npm', ['start', '--', '--nodes', '2'], {}, how === 'Ctrl-C');
    const procs = hotpotProcessesIn(cwd);
    t.is(procs.length, 4, 'up, a dispatcher and 2 nodes');
    if (how === 'Ctrl-C') process.kill(-(npm.child.pid ?? 0), 'SIGINT');
    else npm.child.kill('SIGTERM');
    t.is(await npm.exited, 0, npm.stderr.slice(-20).join('\n'));
    t.true(await allGone(procs), 'up, the dispatcher and the nodes are gone');
    t.false(existsSync(join(cwd, '.hotpot', 'cluster.json')));
    // Children's lines are JSON (stderr is a pipe) named by process; up says what it stopped, in order.
    const log = events(npm.stderr);
    t.true(log.some((e) => e.proc === 'dispatcher' && e.msg === 'dispatcher serving'));
    t.true(log.some((e) => e.proc === 'node-2' && e.msg === 'joined the cluster'));
    const stopped = log.filter((e) => e.name === 'up' && e.msg === 'stopped').map((e) => [e.child, e.code]);
    t.deepEqual(stopped.slice(-1), [['dispatcher', 0]]);
    t.deepEqual(
      stopped
        .slice(0, 2)
        .map(([c]) => String(c))
        .sort(),
      ['node-1', 'node-2'],
    );
    t.true(log.some((e) => e.name === 'up' && e.msg === 'cluster stopped' && e.clean === true));
  },
  title: (_, how: Stop) => `npm start stops the whole cluster on ${how}, the nodes before the dispatcher, and exits 0`,
});

test(npmStartStops, 'SIGTERM to npm');
test(npmStartStops, 'Ctrl-C');

test('hotpot down stops the cluster started here and waits for it; down --clean also removes its pools', async (t) => {
  t.timeout(180_000);
  const cwd = tempDir(t);
  const up = await startUp(t, cwd, process.execPath, [hotpotBin, 'up', '--nodes', '2']);
  const procs = hotpotProcessesIn(cwd);
  t.is(procs.length, 4, 'up, a dispatcher and 2 nodes');
  const second = await runCli(['up', '--nodes', '1'], { cwd });
  t.is(second.code, 1);
  t.regex(second.stderr, /a cluster is already running under .*\.hotpot \(hotpot up, pid \d+\): hotpot down stops it/);
  const pools = ['node-1', 'node-2'].map((n) => readFileSync(join(cwd, '.hotpot', n, 'pool-dir'), 'utf8').trim());
  const down = await runCli(['down'], { cwd });
  t.is(down.code, 0, down.stderr);
  t.regex(
    down.stdout,
    new RegExp(`^stopped the cluster under .*\\.hotpot \\(hotpot up, pid ${String(up.child.pid)}\\)`),
  );
  t.is(await up.exited, 0);
  t.true(await allGone(procs));
  for (const p of pools) t.true(existsSync(p), 'down alone keeps the pools');
  const again = await runCli(['down'], { cwd });
  t.is(again.code, 0);
  t.regex(again.stdout, /^no cluster is running under .*\.hotpot/);
  const cleaned = await runCli(['--json', 'down', '--clean'], { cwd });
  t.is(cleaned.code, 0, cleaned.stderr);
  const r = JSON.parse(cleaned.stdout) as { stopped: number | null; removed: string[] };
  t.is(r.stopped, null);
  t.deepEqual(r.removed.slice().sort(), [...pools, join(cwd, '.hotpot')].sort());
  for (const p of [...pools, join(cwd, '.hotpot')]) t.false(existsSync(p), p);
});

test('hotpot up with HOTPOT_LOG_FORMAT=pretty prints one named line per event, serves metrics per node, stops on SIGHUP', async (t) => {
  t.timeout(180_000);
  const cwd = tempDir(t);
  // Below the kernel's ephemeral range (32768+), where an outgoing connection may hold a port; not cli.test.ts's.
  const base = 20_000 + ((process.pid + 6000) % 12_000);
  const up = await startUp(t, cwd, process.execPath, [hotpotBin, 'up', '--nodes', '2'], {
    HOTPOT_LOG_FORMAT: 'pretty',
    HOTPOT_METRICS_EXPORTER: 'prometheus',
    HOTPOT_PROMETHEUS_PORT: String(base),
  });
  const urls = [1, 2].map((i) => `http://127.0.0.1:${String(base + i - 1)}/metrics`);
  const dispatcherUrl = `http://127.0.0.1:${String(base - 1)}/metrics`;
  t.is(up.ready.metrics, [`dispatcher@${dispatcherUrl}`, ...urls.map((u, i) => `${String(i + 1)}@${u}`)].join(','));
  const file = JSON.parse(readFileSync(join(cwd, '.hotpot', 'cluster.json'), 'utf8')) as {
    nodes: { metrics?: string }[];
    dispatcherMetrics?: string;
  };
  t.deepEqual(
    file.nodes.map((n) => n.metrics),
    urls,
  );
  t.is(file.dispatcherMetrics, dispatcherUrl);
  for (const u of urls) {
    const r = await fetch(u);
    t.is(r.status, 200, u);
    t.regex(await r.text(), /^hotpot_\w+/m, u);
  }
  const d = await fetch(dispatcherUrl);
  t.is(d.status, 200);
  t.regex(await d.text(), /^hotpot_dispatcher_members\{/m);
  const procs = hotpotProcessesIn(cwd);
  up.child.kill('SIGHUP');
  t.is(await up.exited, 0);
  t.true(await allGone(procs));
  const pretty = /^\d\d:\d\d:\d\d\.\d{3} (INFO |WARN |ERROR|DEBUG) \[(dispatcher|node-\d|up)\] \S/;
  t.deepEqual(
    up.stderr.filter((l) => !pretty.test(l) && !l.startsWith('    at ')),
    [],
    'every line is one pretty event',
  );
  for (const want of [
    /\[dispatcher\] dispatcher serving address=127\.0\.0\.1:\d+/,
    /\[node-1\] prometheus metrics endpoint host=127\.0\.0\.1 port=\d+/,
    /\[node-2\] joined the cluster node=2/,
    /\[up\] stopping the cluster reason=SIGHUP/,
    /\[up\] cluster stopped clean=true/,
  ]) {
    t.true(
      up.stderr.some((l) => want.test(l)),
      String(want),
    );
  }
});

test('hotpot up refuses a bad log format or metrics port base before starting anything', async (t) => {
  const cwd = tempDir(t);
  const badFormat = await runCli(['up'], { cwd, env: { HOTPOT_LOG_FORMAT: 'fancy' } });
  t.is(badFormat.code, 2);
  t.regex(badFormat.stderr, /HOTPOT_LOG_FORMAT must be json or pretty \(got "fancy"\)/);
  const env = { HOTPOT_METRICS_EXPORTER: 'prometheus' };
  const badPort = await runCli(['up'], { cwd, env: { ...env, HOTPOT_PROMETHEUS_PORT: 'x' } });
  t.is(badPort.code, 2);
  t.regex(
    badPort.stderr,
    /HOTPOT_PROMETHEUS_PORT must be a port in 2\.\.65535 under hotpot up \(the dispatcher takes the one below; got "x"\)/,
  );
  const pastEnd = await runCli(['up', '--nodes', '3'], { cwd, env: { ...env, HOTPOT_PROMETHEUS_PORT: '65534' } });
  t.is(pastEnd.code, 2);
  t.regex(pastEnd.stderr, /the metrics ports of 3 nodes \(one each\) go past 65535/);
  t.false(existsSync(join(cwd, '.hotpot', 'cluster.json')));
});

test('hotpot down stops a cluster that is still starting: nothing it started is left', async (t) => {
  t.timeout(180_000);
  const cwd = tempDir(t);
  const up = spawn(process.execPath, [hotpotBin, 'up', '--nodes', '2'], {
    cwd,
    stdio: ['ignore', 'ignore', 'ignore'],
    env: { ...process.env, HOTPOT_TRACES_EXPORTER: 'none' },
  });
  const exited = new Promise<number | null>((r) => up.once('exit', (code) => r(code)));
  t.teardown(async () => {
    for (const p of hotpotProcessesIn(cwd)) process.kill(p, 'SIGKILL');
    await runCli(['clean', '--yes'], { cwd });
  });
  // up.pid is written before anything starts; READY comes after the dispatcher and both nodes serve.
  while (!existsSync(join(cwd, '.hotpot', 'up.pid'))) await new Promise((r) => setTimeout(r, 20));
  const down = await runCli(['down'], { cwd });
  t.is(down.code, 0, down.stderr);
  t.regex(down.stdout, new RegExp(`^stopped the cluster under .*\\.hotpot \\(hotpot up, pid ${String(up.pid)}\\)`));
  t.is(await exited, 0);
  for (const until = Date.now() + 60_000; hotpotProcessesIn(cwd).length > 0 && Date.now() < until;) {
    await new Promise((r) => setTimeout(r, 100));
  }
  t.deepEqual(hotpotProcessesIn(cwd), []);
  t.false(existsSync(join(cwd, '.hotpot', 'up.pid')));
});

// `hotpot up`: a local cluster — one dispatcher and N nodes as child processes on free loopback ports,
// state under ./.hotpot/. Prints one readiness line; stops everything (nodes first, the dispatcher last) on
// SIGINT/SIGTERM/SIGHUP or `hotpot down`. `--ha`: 3 etcd members and 2 dispatchers with their state in etcd (one
// leads, one is a standby; one that exits is started again, as a standby), to try failover on one machine.
//
// The children run in their own process group, so a terminal's Ctrl-C reaches only this process, which stops them in
// order. Each holds a pipe from this process on its stdin (HOTPOT_STOP_WITH_PARENT): if this process dies, even by
// SIGKILL, the pipe closes and they stop. Their log lines (JSON) come through this process, which writes them on
// its stderr named by process: as they are (json) or one human line each (pretty; logger.ts).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { join, resolve } from 'node:path';
import { ConfigError } from '../common/config.ts';
import { createLogger, formatLogLine, logFormat, useColor } from '../common/logger.ts';
import { hotpotBin } from '../common/paths.ts';
import { certPaths, initCa, issueCert } from '../common/certs.ts';
import { HotpotError } from '../common/errors.ts';
import { runningUp, UP_PID_FILE } from './clean.ts';
import { CLUSTER_FILE, type ClusterFile } from './client.ts';

/** What `hotpot up` writes to cluster.json: the CLI's ClusterFile, and each node's metrics endpoint when it has one. */
export type UpClusterFile = Omit<ClusterFile, 'nodes'> & {
  nodes: (ClusterFile['nodes'][number] & { metrics?: string })[];
  /** The dispatcher's scrape endpoint (with the Prometheus exporter). */
  dispatcherMetrics?: string;
  /** --ha: the etcd members' client endpoints ("127.0.0.1:P,…"). */
  etcd?: string;
};

export interface UpOptions {
  nodes: number;
  stateDir: string;
  leaseMs: number;
  /** 3 etcd members + 2 dispatchers (state in etcd, one standby). */
  ha?: boolean;
}

/** The node lease under --ha: longer than a takeover (the election TTL, 3 s, plus a dispatcher's start). */
export const HA_MIN_LEASE_MS = 10_000;

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => {
        resolvePort(typeof a === 'object' && a ? a.port : 0);
      });
    });
  });
}

interface HaPorts {
  etcd: { client: number; peer: number }[];
  dispatchers: number[];
}

/** The loopback ports of the --ha cluster: chosen once and kept (etcd records its members' peer addresses). */
async function haPorts(stateDir: string): Promise<HaPorts> {
  const file = join(stateDir, 'ha-ports.json');
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as HaPorts;
  const ports: HaPorts = { etcd: [], dispatchers: [await freePort(), await freePort()] };
  for (let i = 0; i < 3; i++) ports.etcd.push({ client: await freePort(), peer: await freePort() });
  writeFileSync(file, JSON.stringify(ports, null, 2) + '\n');
  return ports;
}

/** The exporter's default port (services/node/observability.ts). */
const DEFAULT_PROMETHEUS_PORT = 9464;
/** How long a child has to stop after SIGINT before it is killed. */
const STOP_GRACE_MS = 15_000;

/**
 * With HOTPOT_METRICS_EXPORTER=prometheus, the port of node 1's scrape endpoint (node i serves base + i - 1; the
 * dispatcher base - 1 unless HOTPOT_DISPATCHER_PROMETHEUS_PORT says otherwise): HOTPOT_PROMETHEUS_PORT, else the
 * exporter's default. Null without the Prometheus exporter.
 */
export function metricsPortBase(nodes: number, env: NodeJS.ProcessEnv): number | null {
  if ((env.HOTPOT_METRICS_EXPORTER ?? '').toLowerCase() !== 'prometheus') return null;
  const raw = env.HOTPOT_PROMETHEUS_PORT ?? '';
  const base = raw === '' ? DEFAULT_PROMETHEUS_PORT : Number(raw);
  if (!Number.isInteger(base) || base < 2 || base > 65535) {
    throw new ConfigError(
      `HOTPOT_PROMETHEUS_PORT must be a port in 2..65535 under hotpot up (the dispatcher takes the one below; got "${raw}")`,
    );
  }
  if (base + nodes - 1 > 65535) {
    throw new ConfigError(
      `HOTPOT_PROMETHEUS_PORT=${String(base)}: the metrics ports of ${String(nodes)} nodes (one each) go past 65535`,
    );
  }
  return base;
}

function readyFields(line: string): Record<string, string> {
  return Object.fromEntries(
    line
      .split(' ')
      .slice(1)
      .filter((kv) => kv.includes('='))
      .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
  );
}

export async function runUp(opts: UpOptions): Promise<number> {
  const format = logFormat();
  const color = useColor();
  const log = createLogger('up');
  const stateDir = resolve(opts.stateDir);
  const promBase = metricsPortBase(opts.nodes, process.env);
  mkdirSync(stateDir, { recursive: true });
  const other = runningUp(stateDir);
  if (other !== null) {
    throw new HotpotError(
      'FAILED_PRECONDITION',
      `a cluster is already running under ${stateDir} (hotpot up, pid ${String(other)}): hotpot down stops it`,
    );
  }
  // From here on `hotpot down` and `hotpot clean` see this cluster, even before it is ready.
  writeFileSync(join(stateDir, UP_PID_FILE), `${String(process.pid)}\n`);
  // One cluster secret for the data plane, generated once and kept with the cluster's state (0600).
  const secretFile = join(stateDir, 'cluster.secret');
  if (!existsSync(secretFile)) writeFileSync(secretFile, randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
  // The cluster CA and the CLI's admin certificate, made once, under <state>/tls (docs/security.md); the dispatcher
  // and each node issue their own certificate from it when they first start. --insecure skips all of it.
  const insecure = process.env.HOTPOT_INSECURE === '1';
  const tlsDir = join(stateDir, 'tls');
  if (!insecure) {
    initCa(tlsDir);
    if (!existsSync(certPaths(tlsDir, 'admin', 'admin').cert)) issueCert(tlsDir, { role: 'admin', name: 'admin' });
  }
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HOTPOT_CLUSTER_SECRET: readFileSync(secretFile, 'utf8').trim(),
    ...(insecure ? {} : { HOTPOT_TLS_DIR: tlsDir }),
    // JSON from the children, which this process passes on or prettifies (they write to a pipe, not the terminal).
    HOTPOT_LOG_FORMAT: 'json',
    // stdin: a pipe only this process holds, so a child stops when it is gone (grpc-server.ts onShutdownSignal).
    HOTPOT_STOP_WITH_PARENT: '1',
  };

  const nodes: ChildProcess[] = [];
  const dispatchers: ChildProcess[] = [];
  const etcds: ChildProcess[] = [];
  const names = new Map<ChildProcess, string>();
  // An object, so TypeScript does not narrow it across the awaits that a signal handler interleaves with.
  const state = { stopping: false };

  /** `standbyReady`: a dispatcher that waits as a standby (--ha) is ready too. */
  const startChild = (
    name: string,
    args: string[],
    childEnv: NodeJS.ProcessEnv,
    standbyReady = false,
  ): Promise<Record<string, string>> =>
    new Promise((resolvePromise, reject) => {
      const child = spawn(process.execPath, [hotpotBin, ...args], {
        stdio: ['pipe', 'pipe', 'pipe'],
        env: { ...childEnv, HOTPOT_LOG_PROCESS: name },
        detached: true,
      });
      names.set(child, name);
      if (name.startsWith('dispatcher')) dispatchers.push(child);
      else nodes.push(child);
      createInterface({ input: child.stderr }).on('line', (line) => {
        if (format === 'pretty') process.stderr.write(formatLogLine(line, { name, color }) + '\n');
        else if (line.startsWith('{')) process.stderr.write(line + '\n');
        // Not a log event (a crash's stack trace): still one JSON line, named.
        else process.stderr.write(JSON.stringify({ level: 50, time: Date.now(), proc: name, msg: line }) + '\n');
      });
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`${name} did not become ready within 30 s`));
      }, 30_000);
      createInterface({ input: child.stdout }).on('line', (line) => {
        // A standby dispatcher (--ha) is ready once it waits for the leader.
        if (!line.startsWith('READY ') && !(standbyReady && line.startsWith('STANDBY '))) {
          process.stdout.write(`[${name}] ${line}\n`);
          return;
        }
        clearTimeout(timer);
        resolvePromise(readyFields(line));
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`${name} exited before ready (code ${String(code)}, signal ${String(signal)})`));
        if (!state.stopping) log.error({ child: name, code, signal }, 'a cluster process exited');
      });
    });

  /** SIGINT to `children`, SIGKILL after the grace; per child, true if it stopped by itself. */
  const stopGroup = (children: ChildProcess[], names: string[]): Promise<boolean[]> =>
    Promise.all(
      children.map(
        (c, i) =>
          new Promise<boolean>((r) => {
            if (c.exitCode !== null || c.signalCode !== null) {
              r(c.exitCode === 0);
              return;
            }
            const t = setTimeout(() => c.kill('SIGKILL'), STOP_GRACE_MS);
            c.once('exit', (code, signal) => {
              clearTimeout(t);
              log.info({ child: names[i], code, signal }, 'stopped');
              // Ended by the SIGINT itself: one still starting, before it handles signals.
              r(code === 0 || signal === 'SIGINT');
            });
            // SIGINT: the whole cluster stops, so nodes do not hand their chunks to each other first (SIGTERM would).
            c.kill('SIGINT');
          }),
      ),
    );

  const removeClusterFiles = (): void => {
    for (const f of [join(stateDir, 'cluster.json'), join(process.cwd(), CLUSTER_FILE)]) {
      try {
        if ((JSON.parse(readFileSync(f, 'utf8')) as Partial<ClusterFile>).pid === process.pid) rmSync(f);
      } catch {
        // none, or another cluster's
      }
    }
    // Last: until it is gone, `hotpot down` waits and `hotpot clean` refuses.
    rmSync(join(stateDir, UP_PID_FILE), { force: true });
  };

  const stopAll = async (code: number, why: string): Promise<never> => {
    // Already stopping: a second signal changes nothing (Ctrl-C on `npm start` brings two SIGINTs, the terminal's and
    // the one npm passes on); a child that hangs is killed after the grace period.
    if (state.stopping) return new Promise<never>(() => undefined);
    state.stopping = true;
    log.info({ reason: why }, 'stopping the cluster');
    // Nodes first, while the dispatcher can still answer them; the dispatcher last.
    const okNodes = await stopGroup(
      nodes,
      nodes.map((_, i) => `node-${String(i + 1)}`),
    );
    const live = dispatchers.filter((c) => c.exitCode === null && c.signalCode === null);
    const okDispatcher = await stopGroup(
      live,
      live.map((c) => names.get(c) ?? 'dispatcher'),
    );
    // etcd last: the dispatchers give up their election lease on the way out.
    await stopGroup(
      etcds,
      etcds.map((_, i) => `etcd-${String(i + 1)}`),
    );
    removeClusterFiles();
    const clean = [...okNodes, ...okDispatcher].every(Boolean);
    log.info({ clean }, clean ? 'cluster stopped' : 'cluster stopped; some processes did not stop cleanly');
    process.exit(code === 0 && !clean ? 1 : code);
  };
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => void stopAll(0, sig));
  // Started by something that died without passing a signal on (a shell wrapper that dies on SIGTERM and leaves its
  // child; `npm start` execs this process, so npm's signals reach it): stop with it.
  const parent = process.ppid;
  if (parent > 1) {
    setInterval(() => {
      try {
        process.kill(parent, 0);
      } catch (e) {
        // ESRCH: gone (EPERM: alive, another user's).
        if (!state.stopping && (e as NodeJS.ErrnoException).code === 'ESRCH') {
          void stopAll(0, `the process that started it (pid ${String(parent)}) is gone`);
        }
      }
    }, 500).unref();
  }

  try {
    // With Prometheus the dispatcher exports its metrics too (its own variables: a node's would bind the node's port).
    const dispatcherPort = promBase === null ? null : Number(env.HOTPOT_DISPATCHER_PROMETHEUS_PORT ?? promBase - 1);
    const dispatcherEnv =
      dispatcherPort === null
        ? env
        : {
            ...env,
            HOTPOT_DISPATCHER_METRICS_EXPORTER: env.HOTPOT_DISPATCHER_METRICS_EXPORTER ?? 'prometheus',
            HOTPOT_DISPATCHER_PROMETHEUS_PORT: String(dispatcherPort),
          };
    let dispatcher: string;
    let etcdEndpoints: string | undefined;
    if (opts.ha === true) {
      const ha = await startHa(stateDir, opts, etcds, log);
      etcdEndpoints = ha.endpoints;
      const leaseMs = Math.max(opts.leaseMs, HA_MIN_LEASE_MS);
      const start = (i: number, standbyReady: boolean): Promise<Record<string, string>> => {
        const name = `dispatcher-${String(i + 1)}`;
        const started = startChild(
          name,
          [
            'dispatcher',
            '--listen',
            `127.0.0.1:${String(ha.ports.dispatchers[i] ?? 0)}`,
            '--state-dir',
            join(stateDir, name),
            '--store',
            `etcd://${ha.endpoints}`,
            '--lease-ms',
            String(leaseMs),
          ],
          // One metrics port can be bound once: the first dispatcher exports.
          i === 0 ? dispatcherEnv : env,
          standbyReady,
        );
        const child = dispatchers.at(-1);
        // A dispatcher that exits (killed to try failover, or deposed) starts again, as a standby: as a supervisor
        // (systemd Restart=on-failure) does.
        child?.once('exit', () => {
          if (state.stopping) return;
          dispatchers.splice(dispatchers.indexOf(child), 1);
          setTimeout(() => {
            if (!state.stopping) void start(i, true).catch(() => undefined);
          }, 1000);
        });
        return started;
      };
      // The first leads (a fresh etcd); the second waits as a standby.
      await start(0, false);
      await start(1, true);
      dispatcher = ha.ports.dispatchers.map((p) => `127.0.0.1:${String(p)}`).join(',');
    } else {
      const d = await startChild(
        'dispatcher',
        [
          'dispatcher',
          '--listen',
          '127.0.0.1:0',
          '--state-dir',
          join(stateDir, 'dispatcher'),
          '--lease-ms',
          String(opts.leaseMs),
        ],
        dispatcherEnv,
      );
      dispatcher = d.address ?? '';
    }
    const members: UpClusterFile['nodes'] = [];
    const promHost = env.HOTPOT_PROMETHEUS_HOST ?? '127.0.0.1';
    for (let i = 1; i <= opts.nodes; i++) {
      // With Prometheus each node gets its own port (they all bound one, and every node after the first died).
      const port = promBase === null ? null : promBase + i - 1;
      const n = await startChild(
        `node-${String(i)}`,
        [
          'node',
          '--dispatcher',
          dispatcher,
          '--listen',
          '127.0.0.1:0',
          '--name',
          `node-${String(i)}`,
          '--state-dir',
          join(stateDir, `node-${String(i)}`),
        ],
        port === null ? env : { ...env, HOTPOT_PROMETHEUS_PORT: String(port) },
      );
      members.push({
        id: Number(n.id),
        address: n.address ?? '',
        data: n.data ?? '',
        socket: n.socket ?? '',
        ...(port === null ? {} : { metrics: `http://${promHost}:${String(port)}/metrics` }),
      });
    }
    const dispatcherMetrics =
      dispatcherPort === null
        ? undefined
        : `http://${env.HOTPOT_DISPATCHER_PROMETHEUS_HOST ?? '127.0.0.1'}:${String(dispatcherPort)}/metrics`;
    const file: UpClusterFile = {
      dispatcher,
      nodes: members,
      stateDir,
      pid: process.pid,
      ...(dispatcherMetrics === undefined ? {} : { dispatcherMetrics }),
      ...(etcdEndpoints === undefined ? {} : { etcd: etcdEndpoints }),
    };
    writeFileSync(join(stateDir, 'cluster.json'), JSON.stringify(file, null, 2) + '\n');
    if (resolve(join(process.cwd(), '.hotpot')) !== stateDir) {
      mkdirSync(join(process.cwd(), '.hotpot'), { recursive: true });
    }
    writeFileSync(join(process.cwd(), CLUSTER_FILE), JSON.stringify(file, null, 2) + '\n');
    const metrics =
      promBase === null
        ? ''
        : ` metrics=dispatcher@${dispatcherMetrics ?? ''},${members.map((n) => `${String(n.id)}@${n.metrics ?? ''}`).join(',')}`;
    process.stdout.write(
      `READY hotpot up dispatcher=${dispatcher} nodes=${members.map((n) => `${String(n.id)}@${n.address}`).join(',')} state=${stateDir}${metrics}\n`,
    );
    return await new Promise<number>(() => undefined);
  } catch (e) {
    if (state.stopping) return new Promise<number>(() => undefined);
    log.error({ err: e instanceof Error ? e.message : String(e) }, 'hotpot up failed');
    return stopAll(1, 'start failed');
  }
}

/** Starts the 3 etcd members of `hotpot up --ha` (logs in <state>/etcd/eN.log); resolves once they answer. */
async function startHa(
  stateDir: string,
  opts: UpOptions,
  etcds: ChildProcess[],
  log: ReturnType<typeof createLogger>,
): Promise<{ ports: HaPorts; endpoints: string }> {
  if (spawnSync('etcd', ['--version']).status !== 0) {
    throw new ConfigError('hotpot up --ha runs etcd: install it (Debian: apt-get install etcd-server)');
  }
  const ports = await haPorts(stateDir);
  const dir = join(stateDir, 'etcd');
  mkdirSync(dir, { recursive: true });
  const url = (p: number): string => `http://127.0.0.1:${String(p)}`;
  const initial = ports.etcd.map((m, i) => `e${String(i + 1)}=${url(m.peer)}`).join(',');
  ports.etcd.forEach((m, i) => {
    const name = `e${String(i + 1)}`;
    const out = openSync(join(dir, `${name}.log`), 'a');
    const child = spawn(
      'etcd',
      [
        ...['--name', name, '--data-dir', join(dir, name), '--listen-client-urls', url(m.client)],
        ...['--advertise-client-urls', url(m.client), '--listen-peer-urls', url(m.peer)],
        ...['--initial-advertise-peer-urls', url(m.peer), '--initial-cluster', initial],
        ...['--initial-cluster-state', 'new', '--initial-cluster-token', `hotpot-up-${stateDir}`],
      ],
      { stdio: ['ignore', out, out], detached: true },
    );
    closeSync(out);
    etcds.push(child);
  });
  const endpoints = ports.etcd.map((m) => `127.0.0.1:${String(m.client)}`).join(',');
  const { Etcd3 } = await import('etcd3');
  const client = new Etcd3({
    hosts: ports.etcd.map((m) => url(m.client)),
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + 2000 }),
  });
  try {
    for (const deadline = Date.now() + 30_000; ;) {
      try {
        await client.get('hotpot-up-ready').string();
        break;
      } catch (e) {
        if (Date.now() > deadline) {
          throw new Error(`etcd did not answer within 30 s (logs in ${dir})`, { cause: e });
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  } finally {
    client.close();
  }
  log.info({ etcd: endpoints, nodes: opts.nodes }, 'etcd is up (3 members)');
  return { ports, endpoints };
}

// Real processes for integration tests: dispatcher and nodes started through bin/hotpot.mjs on port 0 with
// temp dirs; readiness from their READY line (never a fixed sleep); SIGKILL on teardown as a safety net.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { ExecutionContext } from 'ava';
import { hotpotBin, POOL_DIR_FILE } from '../../services/common/paths.ts';
import { clientSecurity, dispatcherClient, nodeClient } from '../../services/cli/client.ts';
import { initCa, issueCert } from '../../services/common/certs.ts';
import type { Security } from '../../services/common/tls.ts';
import { unary } from '../../services/common/rpc.ts';
import type { ListNodesResponse__Output } from '../../services/generated/hotpot/v1/ListNodesResponse.ts';
import type { StatsResponse__Output } from '../../services/generated/hotpot/v1/StatsResponse.ts';
import { startProxy, type TcpProxy } from './tcp-proxy.ts';

export const TEST_SECRET = 'test-cluster-secret-0123456789abcdef';

/**
 * One cluster CA per test process, with an admin certificate: the processes it starts inherit HOTPOT_TLS_DIR (each
 * dispatcher and node issues its own certificate from the CA key there) and its clients use the admin one.
 */
export const TEST_TLS_DIR = ((): string => {
  const dir = mkdtempSync(join(tmpdir(), 'hotpot-tls-'));
  initCa(dir);
  issueCert(dir, { role: 'admin', name: 'admin' });
  process.env.HOTPOT_TLS_DIR = dir;
  process.env.HOTPOT_CERT = 'admin';
  delete process.env.HOTPOT_INSECURE;
  process.on('exit', () => {
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
})();

/** Issues a user certificate from the test CA; returns the client security to call as that user. */
export function userSecurity(name: string, uid: number, gid: number): Security {
  if (!existsSync(join(TEST_TLS_DIR, `user.${name}.crt`))) issueCert(TEST_TLS_DIR, { role: 'user', name, uid, gid });
  return clientSecurity({ tlsDir: TEST_TLS_DIR, cert: `user.${name}` });
}

export interface Proc {
  child: ChildProcess;
  fields: Record<string, string>;
  stderr: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function tempDir(t: ExecutionContext, prefix = 'hotpot-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

export function spawnHotpot(
  t: ExecutionContext,
  args: string[],
  opts: {
    env?: NodeJS.ProcessEnv;
    cwd?: string;
    readyTimeoutMs?: number;
    /** Called with the process as soon as it is spawned (e.g. to kill or watch a standby before it is READY). */
    onSpawn?: (child: ChildProcess, stderr: string[]) => void;
  } = {},
): Promise<Proc> {
  const child = spawn(process.execPath, [hotpotBin, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, HOTPOT_TRACES_EXPORTER: 'none', HOTPOT_CLUSTER_SECRET: TEST_SECRET, ...opts.env },
    cwd: opts.cwd,
  });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const stderr: string[] = [];
  createInterface({ input: child.stderr }).on('line', (l) => stderr.push(l));
  opts.onSpawn?.(child, stderr);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      resolve({ code, signal });
    });
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`hotpot ${args.join(' ')} not ready in time; stderr:\n${stderr.slice(-20).join('\n')}`));
    }, opts.readyTimeoutMs ?? 90_000);
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (!line.startsWith('READY ')) return;
      clearTimeout(timer);
      const fields: Record<string, string> = {};
      for (const kv of line.split(' ').slice(1)) {
        const i = kv.indexOf('=');
        if (i > 0) fields[kv.slice(0, i)] = kv.slice(i + 1);
      }
      resolve({ child, fields, stderr, exited });
    });
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(
        new Error(
          `hotpot ${args.join(' ')} exited before ready (code ${String(code)}, signal ${String(signal)}):\n${stderr.slice(-20).join('\n')}`,
        ),
      );
    });
  });
}

export async function startDispatcher(
  t: ExecutionContext,
  opts: { stateDir: string; leaseMs?: number; port?: number; env?: NodeJS.ProcessEnv },
): Promise<Proc & { address: string }> {
  const p = await spawnHotpot(
    t,
    [
      'dispatcher',
      '--listen',
      `127.0.0.1:${String(opts.port ?? 0)}`,
      '--state-dir',
      opts.stateDir,
      '--lease-ms',
      String(opts.leaseMs ?? 3000),
    ],
    { env: opts.env ?? {} },
  );
  return { ...p, address: p.fields.address ?? '' };
}

export async function startNode(
  t: ExecutionContext,
  opts: { dispatcher: string; name: string; stateDir: string; extra?: string[]; env?: NodeJS.ProcessEnv },
): Promise<Proc & { id: number; address: string; socket: string; data: string }> {
  const p = await spawnHotpot(
    t,
    [
      '--dispatcher',
      opts.dispatcher,
      'node',
      '--listen',
      '127.0.0.1:0',
      '--name',
      opts.name,
      '--state-dir',
      opts.stateDir,
      ...(opts.extra ?? []),
    ],
    { env: opts.env ?? {} },
  );
  // A node started without --pool-dir puts its pool in /dev/shm/hotpot/… (recorded in its state dir): removed after
  // the test (if the node still runs then, it keeps its open files until it is killed).
  const poolFile = join(opts.stateDir, POOL_DIR_FILE);
  const pool = existsSync(poolFile) ? readFileSync(poolFile, 'utf8').trim() : '';
  if (pool.startsWith('/dev/shm/hotpot/')) t.teardown(() => rmSync(pool, { recursive: true, force: true }));
  return {
    ...p,
    id: Number(p.fields.id),
    address: p.fields.address ?? '',
    socket: p.fields.socket ?? '',
    data: p.fields.data ?? '',
  };
}

export async function listNodes(dispatcher: string, security?: Security): Promise<ListNodesResponse__Output> {
  const c = dispatcherClient(dispatcher, security);
  try {
    return await unary<ListNodesResponse__Output>((o, cb) => c.ListNodes({}, o, cb));
  } finally {
    c.close();
  }
}

export async function nodeStats(address: string): Promise<StatsResponse__Output> {
  const c = nodeClient(address);
  try {
    return await unary<StatsResponse__Output>((o, cb) => c.Stats({}, o, cb));
  } finally {
    c.close();
  }
}

/** Polls `check` until it returns a value (not undefined) or the deadline passes. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: unknown = null;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > until) {
      throw new Error(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function runCli(
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [hotpotBin, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: opts.cwd,
      env: { ...process.env, HOTPOT_TRACES_EXPORTER: 'none', ...opts.env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('exit', (code) => {
      resolve({ code, stdout, stderr });
    });
  });
}

export type NodeProc = Awaited<ReturnType<typeof startNode>>;

/** A dispatcher and `nodes` nodes with stable names, state and pool directories, so a node can be killed and
 * restarted on the same state (it keeps its id). Pools live in /dev/shm and are removed on teardown. */
export interface TestCluster {
  dispatcher: string;
  dir: string;
  /** The live process of each node, by start index; a restarted node replaces its dead process. */
  nodes: NodeProc[];
  /** Starts node `i` again (after it died or was killed) with `env` (default: its start env). */
  restart(i: number, env?: NodeJS.ProcessEnv): Promise<NodeProc>;
}

export async function startCluster(
  t: ExecutionContext,
  opts: {
    nodes: number;
    /** Env of node `i` at its first start. */
    env?: (i: number) => NodeJS.ProcessEnv;
    /** Env of every process, dispatcher included (e.g. HOTPOT_CHUNK_SIZE, which is cluster-wide). */
    common?: NodeJS.ProcessEnv;
    leaseMs?: number;
    durability?: 'memory' | 'disk';
    prefix?: string;
  },
): Promise<TestCluster> {
  const dir = tempDir(t);
  const common = opts.common ?? {};
  const d = await startDispatcher(t, { stateDir: join(dir, 'd'), leaseMs: opts.leaseMs ?? 4000, env: common });
  const pools: string[] = [];
  for (let i = 0; i < opts.nodes; i++) {
    pools.push(
      join('/dev/shm', `hotpot-${opts.prefix ?? 'tc'}-${String(process.pid)}-${dir.slice(-6)}-n${String(i + 1)}`),
    );
  }
  t.teardown(() => {
    for (const p of pools) rmSync(p, { recursive: true, force: true });
  });
  const args = (i: number, env: NodeJS.ProcessEnv) => ({
    dispatcher: d.address,
    name: `n${String(i + 1)}`,
    stateDir: join(dir, `n${String(i + 1)}`),
    extra: ['--pool-dir', pools[i] ?? '', '--durability', opts.durability ?? 'memory'],
    env: { ...common, ...env },
  });
  const startEnv: NodeJS.ProcessEnv[] = [];
  const nodes: NodeProc[] = [];
  for (let i = 0; i < opts.nodes; i++) {
    startEnv.push(opts.env?.(i) ?? {});
    nodes.push(await startNode(t, args(i, startEnv[i] ?? {})));
  }
  return {
    dispatcher: d.address,
    dir,
    nodes,
    async restart(i, env) {
      const again = await startNode(t, args(i, env ?? startEnv[i] ?? {}));
      nodes[i] = again;
      return again;
    },
  };
}

/** One more node of cluster `c` whose link to the dispatcher goes through a TCP proxy the test can cut (its data-plane
 * links to the other nodes stay direct); memory durability, its pool removed on teardown. */
export async function startNodeBehindProxy(
  t: ExecutionContext,
  c: TestCluster,
  name: string,
  env: NodeJS.ProcessEnv = {},
): Promise<{ node: NodeProc; proxy: TcpProxy }> {
  const proxy = await startProxy(c.dispatcher);
  t.teardown(() => proxy.close());
  const pool = join('/dev/shm', `hotpot-proxied-${String(process.pid)}-${c.dir.slice(-6)}-${name}`);
  t.teardown(() => {
    rmSync(pool, { recursive: true, force: true });
  });
  const node = await startNode(t, {
    dispatcher: proxy.address,
    name,
    stateDir: join(c.dir, name),
    extra: ['--pool-dir', pool, '--durability', 'memory'],
    env,
  });
  return { node, proxy };
}

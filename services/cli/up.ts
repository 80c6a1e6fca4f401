// `hotpot up`: a local cluster — one dispatcher and N nodes as child processes on free loopback ports,
// state under ./.hotpot/. Prints one readiness line; stops everything on SIGINT/SIGTERM.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join, resolve } from 'node:path';
import { hotpotBin } from '../common/paths.ts';
import { certPaths, initCa, issueCert } from '../common/certs.ts';
import { CLUSTER_FILE, type ClusterFile } from './client.ts';

interface Started {
  child: ChildProcess;
  fields: Record<string, string>;
}

function startChild(name: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 30_000): Promise<Started> {
  return new Promise((resolvePromise, reject) => {
    // stdin: a pipe only this process holds, so the child stops when it is gone (HOTPOT_STOP_WITH_PARENT).
    const child = spawn(process.execPath, [hotpotBin, ...args], {
      stdio: ['pipe', 'pipe', 'inherit'],
      env: { ...env, HOTPOT_STOP_WITH_PARENT: '1' },
    });
    const rl = createInterface({ input: child.stdout });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${name} did not become ready within ${String(timeoutMs)} ms`));
    }, timeoutMs);
    rl.on('line', (line) => {
      if (!line.startsWith('READY ')) {
        process.stdout.write(`[${name}] ${line}\n`);
        return;
      }
      clearTimeout(timer);
      const fields = Object.fromEntries(
        line
          .split(' ')
          .slice(1)
          .filter((kv) => kv.includes('='))
          .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
      );
      resolvePromise({ child, fields });
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited before ready (code ${String(code)}, signal ${String(signal)})`));
    });
  });
}

export async function runUp(opts: { nodes: number; stateDir: string; leaseMs: number }): Promise<number> {
  const stateDir = resolve(opts.stateDir);
  mkdirSync(stateDir, { recursive: true });
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
  };
  const children: ChildProcess[] = [];
  let stopping = false;
  const stopAll = async (code: number): Promise<never> => {
    stopping = true;
    await Promise.all(
      children.map(
        (c) =>
          new Promise<void>((r) => {
            if (c.exitCode !== null || c.signalCode !== null) {
              r();
              return;
            }
            const t = setTimeout(() => c.kill('SIGKILL'), 5000);
            c.once('exit', () => {
              clearTimeout(t);
              r();
            });
            // SIGINT: the whole cluster stops, so nodes do not hand their chunks to each other first (SIGTERM would).
            c.kill('SIGINT');
          }),
      ),
    );
    rmSync(join(process.cwd(), CLUSTER_FILE), { force: true });
    process.exit(code);
  };
  process.on('SIGINT', () => void stopAll(0));
  process.on('SIGTERM', () => void stopAll(0));
  // Started by something that died without passing a signal on (`npm start` runs `sh -c`, which dies on SIGTERM and
  // leaves its child): stop with it. (If this process itself dies, its children see their stdin close.)
  const parent = process.ppid;
  if (parent > 1) {
    setInterval(() => {
      try {
        process.kill(parent, 0);
      } catch (e) {
        // ESRCH: gone (EPERM: alive, another user's).
        if (!stopping && (e as NodeJS.ErrnoException).code === 'ESRCH') {
          process.stderr.write(`hotpot up: the process that started it (pid ${String(parent)}) is gone: stopping\n`);
          void stopAll(0);
        }
      }
    }, 500).unref();
  }

  try {
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
      env,
    );
    children.push(d.child);
    const dispatcher = d.fields.address ?? '';
    const nodes: ClusterFile['nodes'] = [];
    // With the Prometheus exporter each node gets its own port, base + i - 1 (they all bound the base, and every node
    // after the first died at start); port 0 (any free one) is left as it is.
    const promBase = env.HOTPOT_METRICS_EXPORTER === 'prometheus' ? Number(env.HOTPOT_PROMETHEUS_PORT ?? 9464) : 0;
    const nodeEnv = (i: number): NodeJS.ProcessEnv =>
      promBase > 0 ? { ...env, HOTPOT_PROMETHEUS_PORT: String(promBase + i - 1) } : env;
    for (let i = 1; i <= opts.nodes; i++) {
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
        nodeEnv(i),
      );
      children.push(n.child);
      nodes.push({
        id: Number(n.fields.id),
        address: n.fields.address ?? '',
        data: n.fields.data ?? '',
        socket: n.fields.socket ?? '',
      });
    }
    for (const c of children) {
      c.once('exit', (code, signal) => {
        if (!stopping)
          process.stderr.write(
            `hotpot up: a cluster process exited (code ${String(code)}, signal ${String(signal)})\n`,
          );
      });
    }
    const file: ClusterFile = { dispatcher, nodes, stateDir, pid: process.pid };
    writeFileSync(join(stateDir, 'cluster.json'), JSON.stringify(file, null, 2) + '\n');
    if (resolve(join(process.cwd(), '.hotpot')) !== stateDir) {
      mkdirSync(join(process.cwd(), '.hotpot'), { recursive: true });
    }
    writeFileSync(join(process.cwd(), CLUSTER_FILE), JSON.stringify(file, null, 2) + '\n');
    process.stdout.write(
      `READY hotpot up dispatcher=${dispatcher} nodes=${nodes.map((n) => `${String(n.id)}@${n.address}`).join(',')} state=${stateDir}\n`,
    );
    return await new Promise<number>(() => undefined);
  } catch (e) {
    process.stderr.write(`hotpot up: ${e instanceof Error ? e.message : String(e)}\n`);
    return stopAll(1);
  }
}

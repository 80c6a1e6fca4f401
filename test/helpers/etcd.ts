// A real etcd for tests: Debian's `etcd` binary (package etcd-server), one member on free loopback ports with a
// temp data dir; ready once a client read succeeds (never a fixed sleep); SIGKILL on teardown as a safety net.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import type { ExecutionContext } from 'ava';
import { freePort } from './ports.ts';
import { tempDir } from './cluster.ts';

export interface EtcdProc {
  /** "127.0.0.1:PORT", as --store etcd://… takes it. */
  endpoint: string;
  child: ChildProcess;
  dir: string;
  /** A client of this etcd (closed at teardown). */
  client: Etcd3;
}

export function etcdBinary(): string {
  const bin = process.env.HOTPOT_TEST_ETCD ?? 'etcd';
  const r = spawnSync(bin, ['--version'], { encoding: 'utf8' });
  if (r.status !== 0) {
    throw new Error(`${bin} not found: install etcd (Debian: apt-get install etcd-server) or set HOTPOT_TEST_ETCD`);
  }
  return bin;
}

export async function startEtcd(t: ExecutionContext): Promise<EtcdProc> {
  const bin = etcdBinary();
  const dir = tempDir(t, 'hotpot-etcd-');
  const client = await freePort();
  const peer = await freePort();
  const c = `http://127.0.0.1:${String(client)}`;
  const p = `http://127.0.0.1:${String(peer)}`;
  const stderr: string[] = [];
  const child = spawn(
    bin,
    [
      '--name',
      'e1',
      '--data-dir',
      join(dir, 'data'),
      '--listen-client-urls',
      c,
      '--advertise-client-urls',
      c,
      '--listen-peer-urls',
      p,
      '--initial-advertise-peer-urls',
      p,
      '--initial-cluster',
      `e1=${p}`,
      '--initial-cluster-state',
      'new',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  child.stderr?.on('data', (b: Buffer) => {
    stderr.push(b.toString());
    if (stderr.length > 200) stderr.shift();
  });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const etcd = new Etcd3({
    hosts: c,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + 2000 }),
  });
  t.teardown(() => {
    etcd.close();
  });
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`etcd exited (${String(child.exitCode)}):\n${stderr.join('')}`);
    try {
      await etcd.get('hotpot-test-ready').string();
      break;
    } catch (e) {
      if (Date.now() > deadline) throw new Error(`etcd not ready in 30 s:\n${stderr.join('')}`, { cause: e });
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return { endpoint: `127.0.0.1:${String(client)}`, child, dir, client: etcd };
}

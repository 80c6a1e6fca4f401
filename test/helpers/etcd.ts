// A real etcd for tests: Debian's `etcd` binary (package etcd-server), one member (startEtcd) or several
// (startEtcdCluster) on free loopback ports with temp data dirs; ready once a client read succeeds (never a fixed
// sleep); SIGKILL on teardown as a safety net.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import type { ExecutionContext } from 'ava';
import { freePort } from './ports.ts';
import { spawnHotpot, tempDir } from './cluster.ts';

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

/** `tls`: serve clients over TLS with this certificate and key, and require client certificates of `ca`. */
export async function startEtcd(
  t: ExecutionContext,
  opts: { tls?: { cert: string; key: string; ca: string } } = {},
): Promise<EtcdProc> {
  const bin = etcdBinary();
  const dir = tempDir(t, 'hotpot-etcd-');
  const client = await freePort();
  const peer = await freePort();
  const c = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${String(client)}`;
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
      ...(opts.tls ? ['--cert-file', opts.tls.cert, '--key-file', opts.tls.key, '--trusted-ca-file', opts.tls.ca] : []),
      ...(opts.tls ? ['--client-cert-auth'] : []),
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
    ...(opts.tls
      ? {
          credentials: {
            rootCertificate: readFileSync(opts.tls.ca),
            certChain: readFileSync(opts.tls.cert),
            privateKey: readFileSync(opts.tls.key),
          },
        }
      : {}),
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

export interface EtcdMember {
  name: string;
  client: string;
  peer: string;
  dataDir: string;
  child: ChildProcess | null;
}

export interface EtcdCluster {
  /** "127.0.0.1:P1,127.0.0.1:P2,…", as --store etcd://… takes it. */
  endpoints: string;
  members: EtcdMember[];
  /** A client of the whole cluster (closed at teardown). */
  client: Etcd3;
  kill(i: number): Promise<void>;
  /** Starts member `i` again on its data dir (it rejoins the cluster). */
  restart(i: number): void;
  /** Index of the member that is etcd's raft leader now. */
  leader(): Promise<number>;
}

/** `size` etcd members on loopback forming one cluster; resolves once it answers reads. */
export async function startEtcdCluster(t: ExecutionContext, size: number): Promise<EtcdCluster> {
  const bin = etcdBinary();
  const dir = tempDir(t, 'hotpot-etcd-');
  const members: EtcdMember[] = [];
  for (let i = 0; i < size; i++) {
    members.push({
      name: `e${String(i + 1)}`,
      client: `http://127.0.0.1:${String(await freePort())}`,
      peer: `http://127.0.0.1:${String(await freePort())}`,
      dataDir: join(dir, `e${String(i + 1)}`),
      child: null,
    });
  }
  const initial = members.map((m) => `${m.name}=${m.peer}`).join(',');
  const start = (m: EtcdMember): void => {
    const child = spawn(
      bin,
      [
        ...['--name', m.name, '--data-dir', m.dataDir, '--listen-client-urls', m.client],
        ...['--advertise-client-urls', m.client, '--listen-peer-urls', m.peer, '--initial-advertise-peer-urls', m.peer],
        ...['--initial-cluster', initial, '--initial-cluster-state', 'new', '--initial-cluster-token', dir],
      ],
      { stdio: 'ignore' },
    );
    m.child = child;
    t.teardown(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
  };
  for (const m of members) start(m);
  const client = new Etcd3({
    hosts: members.map((m) => m.client),
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + 2000 }),
  });
  t.teardown(() => {
    client.close();
  });
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      await client.get('hotpot-test-ready').string();
      break;
    } catch (e) {
      if (Date.now() > deadline) throw new Error('etcd cluster not ready in 60 s', { cause: e });
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    endpoints: members.map((m) => m.client.replace('http://', '')).join(','),
    members,
    client,
    async kill(i) {
      const c = members[i]?.child;
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      const exited = new Promise((r) => c.once('exit', r));
      c.kill('SIGKILL');
      await exited;
    },
    restart(i) {
      const m = members[i];
      if (m) start(m);
    },
    async leader() {
      for (let i = 0; i < members.length; i++) {
        const m = members[i];
        if (!m?.child || m.child.exitCode !== null || m.child.signalCode !== null) continue;
        const one = new Etcd3({ hosts: m.client, defaultCallOptions: () => ({ deadline: Date.now() + 2000 }) });
        try {
          const st = await one.maintenance.status();
          if (st.leader === st.header.member_id) return i;
        } finally {
          one.close();
        }
      }
      throw new Error('no etcd member says it leads');
    },
  };
}

/**
 * A dispatcher with its state in etcd (`--store etcd://endpoint`) on `port`: it leads, or waits as a standby until it
 * does (its READY line comes then; up to 2 minutes).
 */
export function startEtcdDispatcher(
  t: Parameters<typeof spawnHotpot>[0],
  opts: { endpoint: string; dir: string; port: number; prefix: string; electionTtlS?: number; leaseMs?: number },
): ReturnType<typeof spawnHotpot> {
  return spawnHotpot(
    t,
    [
      'dispatcher',
      '--listen',
      `127.0.0.1:${String(opts.port)}`,
      '--state-dir',
      opts.dir,
      '--store',
      `etcd://${opts.endpoint}`,
      '--etcd-prefix',
      opts.prefix,
      '--election-ttl',
      String(opts.electionTtlS ?? 2),
      '--lease-ms',
      String(opts.leaseMs ?? 8000),
    ],
    { readyTimeoutMs: 120_000 },
  );
}

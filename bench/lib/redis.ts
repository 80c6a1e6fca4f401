// The Redis peer of the benchmarks: a primary and one replica on free local ports, appendonly with appendfsync
// always, so a SET followed by WAIT 1 0 is on the primary's disk and on the replica when WAIT answers.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from '../../test/helpers/ports.ts';
import type { Procs } from './procs.ts';
import { RespClient } from './resp.ts';

export async function redisPing(port: number, timeoutMs = 10_000): Promise<RespClient> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      const c = await RespClient.open(port);
      if ((await c.call('PING')) === 'PONG') return c;
      c.close();
    } catch {
      // not listening yet
    }
    if (Date.now() > until) throw new Error(`redis on port ${String(port)} did not answer PING`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface RedisPair {
  version: string;
  primaryPort: number;
  replicaPort: number;
}

/** Starts the pair under `work/redis-<tag>-*` and waits until the replica is connected. */
export async function startRedisPair(procs: Procs, work: string, tag: string): Promise<RedisPair> {
  const ports = [await freePort(), await freePort()] as const;
  const args = (port: number, dir: string): string[] => [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dir,
    '--appendonly',
    'yes',
    '--appendfsync',
    'always',
    '--save',
    '',
    '--daemonize',
    'no',
    '--protected-mode',
    'no',
    '--logfile',
    join(dir, 'redis.log'),
  ];
  const dirs = [join(work, `redis-${tag}-primary`), join(work, `redis-${tag}-replica`)] as const;
  for (const d of dirs) mkdirSync(d, { recursive: true });
  const version = (await procs.run('redis-server --version', 'redis-server', ['--version'])).trim();
  procs.spawnBackground('redis primary', 'redis-server', args(ports[0], dirs[0]));
  procs.spawnBackground('redis replica', 'redis-server', [
    ...args(ports[1], dirs[1]),
    '--replicaof',
    '127.0.0.1',
    String(ports[0]),
  ]);
  const primary = await redisPing(ports[0]);
  const replica = await redisPing(ports[1]);
  try {
    const until = Date.now() + 15_000;
    while ((await primary.call('WAIT', '1', '100')) !== 1) {
      if (Date.now() > until) throw new Error('redis replica did not connect');
    }
  } finally {
    primary.close();
    replica.close();
  }
  return { version, primaryPort: ports[0], replicaPort: ports[1] };
}

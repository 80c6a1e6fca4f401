// A local Hotpot cluster for a benchmark: a dispatcher and nodes started through bin/hotpot.mjs as Procs children
// (the same shape as bench/run.ts's clusters: port 0, state under the run's work dir, pools under /dev/shm).
import { join } from 'node:path';
import { hotpotBin } from '../../services/common/paths.ts';
import type { Procs, Ready } from './procs.ts';

export interface BenchNode {
  name: string;
  id: number;
  address: string;
  socket: string;
  proc: Ready;
}

export interface BenchCluster {
  dispatcher: string;
  nodes: BenchNode[];
  all: Ready[];
  env: NodeJS.ProcessEnv;
  cpus?: Partial<Record<string, string>>;
}

/** `cmd args`, run on the vCPUs `cpus` (taskset -c) when given. */
export function onCpus(cpus: string | undefined, cmd: string, args: string[]): [string, string[]] {
  return cpus === undefined ? [cmd, args] : ['taskset', ['-c', cpus, cmd, ...args]];
}

export async function startBenchCluster(
  procs: Procs,
  opts: {
    tag: string;
    /** State dirs go under `work`, node pools under `shm` (both made by the caller, removed by it). */
    work: string;
    shm: string;
    durability: 'memory' | 'disk';
    env: NodeJS.ProcessEnv;
    nodes?: number;
    /** vCPU lists (taskset -c) by node name ('a', 'b', …) and for the dispatcher; unpinned when absent. */
    cpus?: Partial<Record<string, string>>;
  },
): Promise<BenchCluster> {
  const root = join(opts.work, opts.tag);
  const d = await procs.spawnReady(
    'dispatcher',
    ...onCpus(opts.cpus?.dispatcher, process.execPath, [
      hotpotBin,
      'dispatcher',
      '--listen',
      '127.0.0.1:0',
      '--state-dir',
      join(root, 'dispatcher'),
      '--lease-ms',
      '3000',
    ]),
    { env: opts.env },
  );
  const dispatcher = d.fields.address ?? '';
  const c: BenchCluster = { dispatcher, nodes: [], all: [d], env: opts.env, ...(opts.cpus ? { cpus: opts.cpus } : {}) };
  for (let i = 0; i < (opts.nodes ?? 3); i++) await addBenchNode(procs, c, opts, String.fromCharCode(97 + i));
  return c;
}

/** Starts one more node `name` in a running bench cluster (state under `work`/`tag`, pool under `shm`/`tag`). */
export async function addBenchNode(
  procs: Procs,
  c: BenchCluster,
  opts: { tag: string; work: string; shm: string; durability: 'memory' | 'disk' },
  name: string,
): Promise<BenchNode> {
  const p = await procs.spawnReady(
    `node ${name}`,
    ...onCpus(c.cpus?.[name], process.execPath, [
      hotpotBin,
      '--dispatcher',
      c.dispatcher,
      'node',
      '--listen',
      '127.0.0.1:0',
      '--name',
      `bench-${opts.tag}-${name}`,
      '--state-dir',
      join(opts.work, opts.tag, name),
      '--pool-dir',
      join(opts.shm, opts.tag, name),
      '--durability',
      opts.durability,
    ]),
    { env: c.env },
  );
  const n: BenchNode = {
    name,
    id: Number(p.fields.id),
    address: p.fields.address ?? '',
    socket: p.fields.socket ?? '',
    proc: p,
  };
  c.nodes.push(n);
  c.all.push(p);
  return n;
}

export async function stopBenchCluster(procs: Procs, c: BenchCluster): Promise<void> {
  // Nodes first (graceful leave), then the dispatcher.
  await procs.stop(c.nodes.map((n) => n.proc.child));
  await procs.stop(c.all.map((p) => p.child));
}

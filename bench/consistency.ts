// Issue-4 benchmark: the paper's commit scalability workload (each node commits 32 random 4 KiB areas, N=1) for
// MRSW and MRMW at 1-4 nodes, and its conflict workload (k of 4 nodes commit the same 32 sequential 1 KiB areas in
// lock-step, vs disjoint areas), beside the paper's numbers and a raw floor from the same run (C: 4 KiB to two
// peers over loopback TCP without fdatasync, as the pool is memory-durable here like the paper's PM).
// Started by bench/consistency.sh; prints tables and writes bench/results/consistency.json.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { join } from 'node:path';
import { hotpotBin, projectRoot } from '../services/common/paths.ts';
import { startBenchCluster, stopBenchCluster } from './lib/cluster.ts';
import type { Ready } from './lib/procs.ts';
import { runBenchMain, startBenchRun } from './lib/setup.ts';
import { parseSamples, ratio, summarize, table, us, type Summary } from './lib/stats.ts';

const quick = process.argv.includes('--quick');
const ITER = quick ? 30 : 150;
const ROUNDS = quick ? 20 : 100;
const NODES = 4;
const DATASET_BYTES = 16 * 1024 * 1024; // 4 chunks of 4 MiB: one per node
const PAGES = DATASET_BYTES / 4096;
const PAPER_SCAL: Record<number, { mrsw: number; mrmw: number } | undefined> = {
  1: { mrsw: 32.3, mrmw: 30.3 },
  2: { mrsw: 14.3, mrmw: 13.9 },
  4: { mrsw: 18.3, mrmw: 14.4 },
};
const PAPER_CONFLICT: Record<number, number[]> = {
  // MRSW conflict, MRSW no conflict, MRMW conflict, MRMW no conflict (average µs)
  1: [101, 101, 91, 89],
  2: [172, 110, 156, 100],
  3: [206, 112, 198, 103],
  4: [227, 120, 239, 103],
};

const run = startBenchRun('hotpot-bench-cons-');
const { work, shm, procs, env } = run;
const log = (m: string): void => void process.stderr.write(`[bench] ${m}\n`);

async function createDataset(dispatcher: string, name: string, mode: 'mrsw' | 'mrmw'): Promise<void> {
  await procs.run(
    `create ${name}`,
    process.execPath,
    [
      hotpotBin,
      '--dispatcher',
      dispatcher,
      'create',
      name,
      '--size',
      String(DATASET_BYTES),
      '--mode',
      mode,
      '--replicas',
      '1',
    ],
    { env },
  );
}

interface AppResult {
  lat: number[];
  conflicts: number;
  wallNs: number;
  phase?: { acquireNs: number; commitNs: number; releaseNs: number };
}

async function runApps(jobs: { socket: string; job: Record<string, unknown> }[]): Promise<AppResult[]> {
  const outs = await Promise.all(
    jobs.map((j) =>
      procs.run('app', process.execPath, [
        '--import',
        'tsx',
        join(projectRoot, 'bench', 'consistency-app.ts'),
        JSON.stringify({ socket: j.socket, ...j.job }),
      ]),
    ),
  );
  return outs.map((o) => JSON.parse(o.trim().split('\n').at(-1) ?? '{}') as AppResult);
}

async function floor(): Promise<Summary> {
  const dir = join(work, 'floor');
  mkdirSync(dir, { recursive: true });
  const servers: Ready[] = [];
  for (const r of ['r1', 'r2']) {
    servers.push(
      await procs.spawnReady('persist2', join(projectRoot, 'bench/out/persist2'), ['replica', join(dir, r), 'nosync']),
    );
  }
  const out = await procs.run('persist2 client', join(projectRoot, 'bench/out/persist2'), [
    'client',
    ...servers.map((s) => s.fields.port ?? ''),
    String(quick ? 200 : 2000),
  ]);
  await Promise.all(servers.map((s) => s.exited));
  return summarize(parseSamples(out));
}

async function main(): Promise<void> {
  const started = Date.now();
  const c = await startBenchCluster(procs, { tag: 'cons', work, shm, durability: 'memory', env, nodes: NODES });
  const results: Record<string, unknown> = {};
  try {
    const fl = await floor();
    log(`floor: 4 KiB to 2 peers (no fdatasync) p50 ${us(fl.p50)}`);
    // Warm every page of the scalability datasets on every node? No: the paper's workload commits to random
    // pages; the first touch of each page costs a fetch, as it would there. One warm-up pass per process below.
    const scalRows: string[][] = [];
    const scal: Record<string, unknown>[] = [];
    for (const mode of ['mrmw', 'mrsw'] as const) {
      for (let n = 1; n <= NODES; n++) {
        const name = `scal-${mode}-${String(n)}`;
        await createDataset(c.dispatcher, name, mode);
        const jobs = c.nodes.slice(0, n).map((node) => ({
          socket: node.socket,
          job: { mode: 'scal', name, mrsw: mode === 'mrsw', iterations: ITER, pages: PAGES },
        }));
        await runApps(jobs.map((j) => ({ ...j, job: { ...j.job, iterations: Math.ceil(ITER / 5) } }))); // warm-up
        const rs = await runApps(jobs);
        const lat = rs.flatMap((r) => r.lat);
        const s = summarize(lat);
        const wall = Math.max(...rs.map((r) => r.wallNs)) / 1e9;
        const perSec = lat.length / wall;
        const conflicts = rs.reduce((a, r) => a + r.conflicts, 0);
        const paper = PAPER_SCAL[n]?.[mode];
        const meanPhase = (k: 'acquireNs' | 'commitNs' | 'releaseNs'): number =>
          rs.reduce((a, r) => a + (r.phase?.[k] ?? 0), 0) / lat.length / 1000;
        const phases = {
          acquireUs: meanPhase('acquireNs'),
          commitUs: meanPhase('commitNs'),
          releaseUs: meanPhase('releaseNs'),
        };
        scal.push({
          mode,
          nodes: n,
          commitsPerSec: perSec,
          summary: s,
          conflicts,
          phases,
          paperKPerSec: paper ?? null,
        });
        scalRows.push([
          mode.toUpperCase(),
          String(n),
          perSec.toFixed(0),
          us(s.p50),
          us(s.p99),
          String(conflicts),
          mode === 'mrsw' ? `${us(phases.acquireUs)} / ${us(phases.commitUs)} / ${us(phases.releaseUs)}` : '-',
          ratio(s.p50, fl.p50 * 32),
          paper === undefined ? '-' : `${String(paper)}K`,
        ]);
        log(`scal ${mode} n=${String(n)}: ${perSec.toFixed(0)} commits/s p50 ${us(s.p50)}`);
      }
    }
    results.scalability = scal;
    const conflictRows: string[][] = [];
    const conf: Record<string, unknown>[] = [];
    for (const mode of ['mrmw', 'mrsw'] as const) {
      for (const shared of [true, false]) {
        for (let k = 1; k <= NODES; k++) {
          const name = `conf-${mode}-${shared ? 's' : 'd'}-${String(k)}`;
          await createDataset(c.dispatcher, name, mode);
          const rs = await runApps(
            c.nodes.slice(0, k).map((node, i) => ({
              socket: node.socket,
              job: {
                mode: 'conflict',
                name,
                mrsw: mode === 'mrsw',
                iterations: ROUNDS,
                pages: PAGES,
                parties: k,
                base: shared ? 0 : i * 64 * 1024,
                tag: name,
              },
            })),
          );
          const s = summarize(rs.flatMap((r) => r.lat));
          const conflicts = rs.reduce((a, r) => a + r.conflicts, 0);
          const paper = PAPER_CONFLICT[k]?.[(mode === 'mrsw' ? 0 : 2) + (shared ? 0 : 1)];
          conf.push({ mode, shared, k, summary: s, conflicts, paperMeanUs: paper ?? null });
          conflictRows.push([
            mode.toUpperCase(),
            shared ? 'same areas' : 'disjoint',
            String(k),
            us(s.mean),
            us(s.p50),
            us(s.p99),
            String(conflicts),
            paper === undefined ? '-' : `${String(paper)} µs`,
          ]);
          log(`conflict ${mode} ${shared ? 'same' : 'disjoint'} k=${String(k)}: mean ${us(s.mean)}`);
        }
      }
    }
    results.conflict = conf;
    results.floor = fl;
    const machine = `${String(cpus().length)} vCPU ${cpus()[0]?.model ?? ''}, ${String(Math.round(totalmem() / 2 ** 30))} GiB, Linux ${release()}, load ${loadavg()
      .map((x) => x.toFixed(1))
      .join('/')}`;
    results.machine = machine;
    results.command = `sudo bash bench/consistency.sh${quick ? ' --quick' : ''}`;
    results.durationS = (Date.now() - started) / 1000;
    process.stdout.write(`\nMachine: ${machine}\nCommand: ${String(results.command)}\n`);
    process.stdout.write(
      `\nCommit scalability (each process commits 32 random 4 KiB areas, N=1, ${String(ITER)} commits per node; MRSW = acquire + commit + release)\n` +
        `floor: C 4 KiB to 2 peers over TCP, no fdatasync, p50 ${us(fl.p50)}; ratio = commit p50 / (32 x floor p50)\n` +
        table(
          [
            'mode',
            'nodes',
            'commits/s',
            'p50',
            'p99',
            'conflicts',
            'acquire / commit / release (mean)',
            'vs floor',
            'paper',
          ],
          scalRows,
        ) +
        '\n',
    );
    process.stdout.write(
      `\nConflicting commits (k processes, 32 x 1 KiB sequential areas, lock-step rounds via barrier, ${String(ROUNDS)} rounds)\n` +
        table(['mode', 'data', 'k', 'mean', 'p50', 'p99', 'aborted', 'paper mean'], conflictRows) +
        '\n',
    );
    mkdirSync(join(projectRoot, 'bench', 'results'), { recursive: true });
    writeFileSync(join(projectRoot, 'bench', 'results', 'consistency.json'), JSON.stringify(results, null, 2) + '\n');
  } finally {
    await stopBenchCluster(procs, c);
  }
}

await runBenchMain(run, main, { log });

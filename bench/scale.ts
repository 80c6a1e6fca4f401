// Scale benchmark (issue 13 "Scale"): what an empty dataset costs each node, by declared size. For each size a fresh
// 3-node cluster (durability disk, the default) creates one dataset (N=2), then writes one page at each end of it.
// Per node: RSS growth (VmRSS from /proc, the node's shared pool pages included), bytes allocated in its pool dir
// (/dev/shm) and in its data dir (st_blocks: holes cost nothing) beside the files' apparent size; the create time;
// whether a node was declared dead meanwhile (the membership epoch moves); the time of `hotpot stat NAME`.
//   node --import=tsx bench/scale.ts [--sizes 1GiB,64GiB,1TiB]
// Prints a table and writes bench/results/scale.json.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { hotpotBin, projectRoot } from '../services/common/paths.ts';
import { startBenchCluster, stopBenchCluster, type BenchCluster } from './lib/cluster.ts';
import { runBenchMain, startBenchRun } from './lib/setup.ts';
import { table } from './lib/stats.ts';

const UNITS: Record<string, number> = { KiB: 2 ** 10, MiB: 2 ** 20, GiB: 2 ** 30, TiB: 2 ** 40 };

function parseSize(s: string): number {
  const m = /^(\d+)(KiB|MiB|GiB|TiB)$/.exec(s);
  if (!m) throw new Error(`--sizes: "${s}" is not a size like 64GiB`);
  return Number(m[1]) * (UNITS[m[2] ?? ''] ?? 0);
}

const sizesArg = ((): string => {
  const i = process.argv.indexOf('--sizes');
  return i > 0 ? (process.argv[i + 1] ?? '') : '1GiB,64GiB,1TiB';
})();
const sizes = sizesArg.split(',').map((s) => ({ label: s, bytes: parseSize(s) }));

const run = startBenchRun('hotpot-bench-scale-');
const { work, shm, procs, env } = run;
const MiB = 2 ** 20;

function log(msg: string): void {
  process.stderr.write(`[scale] ${msg}\n`);
}

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${String(pid)}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) * 1024;
}

/** Allocated and apparent bytes under a directory (du; the redo log's sparse slots count only what they hold). */
function diskUse(dir: string): { allocated: number; apparent: number } {
  const n = (args: string[]): number =>
    Number(
      execFileSync('du', [...args, dir])
        .toString()
        .split('\t')[0],
    );
  return { allocated: n(['-s', '-B1']), apparent: n(['-s', '-b']) };
}

async function cli(c: BenchCluster, args: string[]): Promise<{ out: string; ms: number }> {
  const t0 = performance.now();
  const out = await procs.run(
    `hotpot ${args.join(' ')}`,
    process.execPath,
    [hotpotBin, '--dispatcher', c.dispatcher, ...args],
    {
      env: c.env,
    },
  );
  return { out, ms: performance.now() - t0 };
}

async function epoch(c: BenchCluster): Promise<{ epoch: number; dead: number }> {
  const r = JSON.parse((await cli(c, ['--json', 'nodes'])).out) as {
    epoch: number | string;
    nodes: { state: string }[];
  };
  return { epoch: Number(r.epoch), dead: r.nodes.filter((n) => n.state !== 'alive').length };
}

interface Row {
  size: string;
  /** Why the size could not be measured (e.g. the dispatcher did not answer the create in time). */
  error?: string;
  createMs: number;
  statMs: number;
  statLines: number;
  epochMoved: boolean;
  deadNodes: number;
  nodes: { rssGrowth: number; poolAllocated: number; poolApparent: number; dataAllocated: number }[];
}

async function measure(label: string, bytes: number): Promise<Row> {
  const tag = `s${label}`;
  mkdirSync(join(work, tag), { recursive: true });
  const c = await startBenchCluster(procs, { tag, work, shm, durability: 'disk', env });
  try {
    const pids = c.nodes.map((n) => n.proc.child.pid ?? 0);
    const e0 = await epoch(c);
    const rss0 = pids.map(rssBytes);
    const created = await cli(c, ['create', 'big', '--size', label, '--replicas', '2']);
    log(`${label}: created in ${created.ms.toFixed(0)} ms`);
    // One page at each end: the cost of pages used, not of the declared size.
    await cli(c, ['put', 'big', '--offset', '0', '--data', 'first page']);
    await cli(c, ['put', 'big', '--offset', String(bytes - 4096), '--data', 'last page']);
    const got = (
      await cli(c, [
        'get',
        'big',
        '--offset',
        String(bytes - 4096),
        '--length',
        '9',
        '--node',
        String(c.nodes[2]?.id ?? 3),
      ])
    ).out;
    if (got !== 'last page') throw new Error(`${label}: read back "${got}"`);
    const stat = await cli(c, ['stat', 'big']);
    const e1 = await epoch(c);
    const nodes = c.nodes.map((n, i) => {
      const pool = diskUse(join(shm, tag, n.name));
      const data = diskUse(join(work, tag, n.name, 'data'));
      return {
        rssGrowth: rssBytes(pids[i] ?? 0) - (rss0[i] ?? 0),
        poolAllocated: pool.allocated,
        poolApparent: pool.apparent,
        dataAllocated: data.allocated,
      };
    });
    return {
      size: label,
      createMs: created.ms,
      statMs: stat.ms,
      statLines: stat.out.split('\n').length - 1,
      epochMoved: e1.epoch !== e0.epoch,
      deadNodes: e1.dead,
      nodes,
    };
  } finally {
    await stopBenchCluster(procs, c);
  }
}

async function main(): Promise<void> {
  const rows: Row[] = [];
  for (const s of sizes) {
    try {
      rows.push(await measure(s.label, s.bytes));
    } catch (e) {
      const error = (e instanceof Error ? e.message : String(e)).split('\n').filter(Boolean).slice(-1)[0] ?? '';
      log(`${s.label}: ${error}`);
      rows.push({
        size: s.label,
        error,
        createMs: 0,
        statMs: 0,
        statLines: 0,
        epochMoved: false,
        deadNodes: 0,
        nodes: [],
      });
    }
  }
  const mb = (v: number): string => (v / MiB).toFixed(2);
  const per = (r: Row, f: (n: Row['nodes'][number]) => number): string => r.nodes.map((n) => mb(f(n))).join(' / ');
  process.stdout.write(
    table(
      [
        'dataset',
        'create',
        'nodes declared dead',
        'RSS growth MiB (a/b/c)',
        'pool MiB allocated',
        'pool apparent',
        'data dir MiB allocated',
        'stat',
      ],
      rows.map((r) =>
        r.error !== undefined
          ? [r.size, `FAILED: ${r.error.replace(/^hotpot: /, '').split(': ')[0] ?? ''}`, '', '', '', '', '', '']
          : [
              r.size,
              `${r.createMs.toFixed(0)} ms`,
              r.epochMoved || r.deadNodes > 0 ? `YES (${String(r.deadNodes)} now)` : 'none',
              per(r, (n) => n.rssGrowth),
              per(r, (n) => n.poolAllocated),
              `${(Math.max(...r.nodes.map((n) => n.poolApparent)) / 2 ** 30).toFixed(0)} GiB`,
              per(r, (n) => n.dataAllocated),
              `${r.statMs.toFixed(0)} ms, ${String(r.statLines)} lines`,
            ],
      ),
    ),
  );
  const machine = `${String(cpus().length)} vCPU ${cpus()[0]?.model ?? ''}`.trim();
  process.stdout.write(`\nmachine: ${machine}\nrerun: node --import=tsx bench/scale.ts --sizes ${sizesArg}\n`);
  mkdirSync(join(projectRoot, 'bench', 'results'), { recursive: true });
  writeFileSync(
    join(projectRoot, 'bench', 'results', 'scale.json'),
    JSON.stringify({ machine, date: new Date().toISOString(), rows }, null, 2) + '\n',
  );
}

await runBenchMain(run, main, { log });

// YCSB on examples/kv beside Redis (issue 13), started by bench/ycsb.sh: one Hotpot cluster (3 nodes, durability
// disk, the store's dataset with N=2) and one Redis pair (appendfsync always; writes SET + WAIT 1 0, reads GET) hold
// the same records in the same run; workloads A, B, C and F run with 1 and 16 client processes (Hotpot clients spread
// over the 3 nodes), each workload on both systems back to back. Prints ops/s, p50/p99 per operation and the
// Hotpot/Redis ratio; writes bench/results/ycsb.json.
//   bash bench/ycsb.sh [--quick] [--records N] [--seconds S] [--clients 1,16] [--workloads A,B,C,F]
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { projectRoot } from '../services/common/paths.ts';
import { classFor, recordBytes, sizeClasses } from '../examples/kv/layout.ts';
import { startBenchCluster, stopBenchCluster, type BenchCluster } from './lib/cluster.ts';
import { machine, machineLine } from './lib/machine.ts';
import { startRedisPair, type RedisPair } from './lib/redis.ts';
import { runBenchMain, startBenchRun, writeResults } from './lib/setup.ts';
import { ratio, summarize, table, us, type Summary } from './lib/stats.ts';
import { WORKLOADS, type ClientJob, type PhaseResult } from './ycsb-workloads.ts';

function flag(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i < 0 ? undefined : process.argv[i + 1];
}
const quick = process.argv.includes('--quick');
const RECORDS = Number(flag('--records') ?? (quick ? 10_000 : 100_000));
const SECONDS = Number(flag('--seconds') ?? (quick ? 2 : 10));
const CLIENTS = (flag('--clients') ?? '1,16').split(',').map(Number);
const WORKLOAD_NAMES = (flag('--workloads') ?? 'A,B,C,F').split(',');
const VALUE_BYTES = 1024;
const KEEP_SAMPLES = 20_000;
if (!Number.isInteger(RECORDS) || RECORDS < 100) throw new Error('--records: an integer >= 100');
if (!(SECONDS > 0)) throw new Error('--seconds: > 0');
if (CLIENTS.some((c) => !Number.isInteger(c) || c < 1 || c > 64)) throw new Error('--clients: integers 1..64');
for (const w of WORKLOAD_NAMES) if (!WORKLOADS[w]) throw new Error(`--workloads: unknown workload ${w}`);

const run = startBenchRun('hotpot-ycsb-');
const { work, shm, procs, env: hotpotEnv } = run;
const clients = new Set<ChildProcess>();

function log(msg: string): void {
  process.stderr.write(`[ycsb] ${msg}\n`);
}

/** A client process: answers one JSON line per command. */
interface Client {
  send(line: string): void;
  next<T>(): Promise<T>;
  child: ChildProcess;
}

async function startClient(job: ClientJob): Promise<Client> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(projectRoot, 'bench', 'ycsb-client.ts'), JSON.stringify(job)],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  clients.add(child);
  let err = '';
  child.stderr.on('data', (d: Buffer) => {
    err = (err + d.toString()).slice(-4000);
    for (const l of d.toString().trimEnd().split('\n')) log(`client ${String(child.pid)}: ${l}`);
  });
  const lines: string[] = [];
  const waiting: ((l: string) => void)[] = [];
  let dead: Error | null = null;
  const failed: ((e: Error) => void)[] = [];
  createInterface({ input: child.stdout }).on('line', (l) => {
    const w = waiting.shift();
    failed.shift();
    if (w) w(l);
    else lines.push(l);
  });
  child.once('exit', (code, signal) => {
    clients.delete(child);
    dead = new Error(`ycsb client exited (code ${String(code)}, signal ${String(signal)}): ${err}`);
    for (const f of failed.splice(0)) f(dead);
    waiting.length = 0;
  });
  const nextLine = (): Promise<string> => {
    const l = lines.shift();
    if (l !== undefined) return Promise.resolve(l);
    if (dead) return Promise.reject(dead);
    return new Promise((resolve, reject) => {
      waiting.push(resolve);
      failed.push(reject);
    });
  };
  const ready = await nextLine();
  if (ready !== 'READY') throw new Error(`ycsb client: unexpected first line ${ready}`);
  return {
    child,
    send: (line) => child.stdin.write(line + '\n'),
    next: async <T>() => JSON.parse(await nextLine()) as T,
  };
}

async function quit(cs: Client[]): Promise<void> {
  await Promise.all(
    cs.map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.child.exitCode !== null) {
            resolve();
            return;
          }
          c.child.once('exit', () => resolve());
          c.send('quit');
        }),
    ),
  );
}

function storeSize(records: number): number {
  const classes = sizeClasses(recordBytes(32, VALUE_BYTES));
  const rec = classes[classFor(classes, recordBytes(14, VALUE_BYTES))] ?? 0;
  const slots = 2 ** Math.ceil(Math.log2(records * 2.5));
  const bytes = records * rec * 1.3 + slots * 8 + (1 << 20);
  return Math.ceil(bytes / (4 << 20)) * (4 << 20);
}

interface Row {
  workload: string;
  clients: number;
  system: 'hotpot' | 'redis';
  opsPerSec: number;
  ops: number;
  read?: Summary;
  write?: Summary;
  errors: number;
  notFound: number;
  store?: { commits: number; conflicts: number; torn: number; snapshotRuns: number };
}

async function runPhase(cs: Client[], system: Row['system'], workload: string): Promise<Row> {
  for (const c of cs) c.send(`go ${workload} ${String(SECONDS * 1000)}`);
  const rs = await Promise.all(cs.map((c) => c.next<PhaseResult>()));
  const ops = rs.reduce((s, r) => s + r.ops, 0);
  const elapsed = Math.max(...rs.map((r) => r.elapsedMs)) / 1000;
  const read = rs.flatMap((r) => r.samples.read);
  const write = rs.flatMap((r) => [...r.samples.update, ...r.samples.rmw]);
  const sum = (k: 'commits' | 'conflicts' | 'torn' | 'snapshotRuns'): number =>
    rs.reduce((s, r) => s + (r.store?.[k] ?? 0), 0);
  return {
    workload,
    clients: cs.length,
    system,
    ops,
    opsPerSec: ops / elapsed,
    ...(read.length > 0 ? { read: summarize(read) } : {}),
    ...(write.length > 0 ? { write: summarize(write) } : {}),
    errors: rs.reduce((s, r) => s + r.errors, 0),
    notFound: rs.reduce((s, r) => s + r.notFound, 0),
    ...(system === 'hotpot'
      ? {
          store: {
            commits: sum('commits'),
            conflicts: sum('conflicts'),
            torn: sum('torn'),
            snapshotRuns: sum('snapshotRuns'),
          },
        }
      : {}),
  };
}

async function load(c: BenchCluster, redis: RedisPair): Promise<{ hotpotMs: number; redisMs: number }> {
  const size = storeSize(RECORDS);
  log(
    `load: ${String(RECORDS)} records of ${String(VALUE_BYTES)} B into Hotpot (dataset ${String(size >> 20)} MiB, N=2) and Redis`,
  );
  const base = { records: RECORDS, valueBytes: VALUE_BYTES, keepSamples: 0 };
  const h = await startClient({
    ...base,
    target: 'hotpot',
    socket: c.nodes[0]?.socket ?? '',
    name: 'ycsb',
    seed: 7,
    createSize: size,
  });
  h.send(`load 0 ${String(RECORDS)}`);
  const hl = await h.next<{ ms: number }>();
  await quit([h]);
  const r = await startClient({ ...base, target: 'redis', port: redis.primaryPort, seed: 8 });
  r.send(`load 0 ${String(RECORDS)}`);
  const rl = await r.next<{ ms: number }>();
  await quit([r]);
  return { hotpotMs: hl.ms, redisMs: rl.ms };
}

async function main(): Promise<void> {
  const started = Date.now();
  const m = machine();
  log(`machine: ${String(m.nproc)} vCPU, ${m.cpuModel}; load average ${String(m.loadAverage1m)}`);
  const cluster = await startBenchCluster(procs, { tag: 'ycsb', work, shm, durability: 'disk', env: hotpotEnv });
  const redis = await startRedisPair(procs, work, 'ycsb');
  const rows: Row[] = [];
  let loaded;
  let floors: { commit: Summary; mapGet: Summary } | undefined;
  try {
    loaded = await load(cluster, redis);
    for (const n of CLIENTS) {
      log(`${String(n)} client process(es) per system: starting`);
      const base = { records: RECORDS, valueBytes: VALUE_BYTES, keepSamples: KEEP_SAMPLES };
      const hot = await Promise.all(
        Array.from({ length: n }, (_, i) =>
          startClient({
            ...base,
            target: 'hotpot',
            socket: cluster.nodes[i % cluster.nodes.length]?.socket ?? '',
            name: 'ycsb',
            seed: 100 + i,
          }),
        ),
      );
      const red = await Promise.all(
        Array.from({ length: n }, (_, i) =>
          startClient({ ...base, target: 'redis', port: redis.primaryPort, seed: 200 + i }),
        ),
      );
      try {
        if (n === 1) {
          log(`floors: raw 1-page commit (N=2) and a JS Map get, ${String(SECONDS)} s each`);
          const hot0 = hot[0];
          if (hot0) {
            hot0.send(`floor ${String(SECONDS * 1000)}`);
            const f = await hot0.next<{ commit: number[]; mapGet: number[] }>();
            floors = { commit: summarize(f.commit), mapGet: summarize(f.mapGet) };
          }
        }
        for (const [wi, w] of WORKLOAD_NAMES.entries()) {
          // Alternate which system goes first, so drift on the shared machine falls on both.
          const order = wi % 2 === 0 ? (['hotpot', 'redis'] as const) : (['redis', 'hotpot'] as const);
          for (const sys of order) {
            log(`workload ${w}, ${String(n)} client(s), ${sys}: ${String(SECONDS)} s`);
            rows.push(await runPhase(sys === 'hotpot' ? hot : red, sys, w));
          }
        }
      } finally {
        await quit([...hot, ...red]);
      }
    }
  } finally {
    await stopBenchCluster(procs, cluster);
  }

  const command = `bash bench/ycsb.sh${process.argv.slice(2).length > 0 ? ' ' + process.argv.slice(2).join(' ') : ''}   # as root, from the repository root`;
  const out: string[] = [];
  out.push(`# YCSB on examples/kv beside Redis (issue 13) — ${m.date}`);
  out.push(machineLine(m));
  out.push(`command: ${command}`);
  out.push(
    `records: ${String(RECORDS)} × ${String(VALUE_BYTES)} B, Zipfian keys (theta 0.99), ${String(SECONDS)} s per workload and system; load: Hotpot ${(loaded.hotpotMs / 1000).toFixed(1)} s (batches of 256 puts per commit), Redis ${(loaded.redisMs / 1000).toFixed(1)} s (MSET of 100)`,
  );
  out.push(
    `Hotpot: 3 nodes, durability disk, dataset N=2; get = snapshot read of the mapping, update = put (a commit), RMW = update() (one atomic commit). Redis ${/v=(\S+)/.exec(redis.version)?.[1] ?? '?'}: primary + 1 replica, appendfsync always; read = GET, update = SET + WAIT 1 0, RMW = GET then SET + WAIT 1 0.`,
  );
  out.push('');
  const lat = (s?: Summary): string => (s ? `${us(s.p50)} / ${us(s.p99)}` : '-');
  const tableRows: string[][] = [];
  for (const n of CLIENTS) {
    for (const w of WORKLOAD_NAMES) {
      const h = rows.find((r) => r.workload === w && r.clients === n && r.system === 'hotpot');
      const r = rows.find((x) => x.workload === w && x.clients === n && x.system === 'redis');
      for (const x of [h, r]) {
        if (!x) continue;
        tableRows.push([
          `${w} (${WORKLOADS[w]?.what ?? ''})`,
          String(n),
          x.system,
          Math.round(x.opsPerSec).toLocaleString('en-US'),
          lat(x.read),
          lat(x.write),
          x.system === 'hotpot' ? ratio(x.opsPerSec, r?.opsPerSec) : '',
          x.store
            ? `${String(x.store.conflicts)} conflicts / ${String(x.store.commits)} commits, ${String(x.store.snapshotRuns)} snapshot runs, ${String(x.errors)} errors`
            : `${String(x.errors)} errors`,
        ]);
      }
    }
  }
  out.push(
    table(
      ['workload', 'clients', 'system', 'ops/s', 'read p50 / p99', 'write p50 / p99', 'Hotpot ÷ Redis ops/s', 'checks'],
      tableRows,
    ),
  );
  out.push('goals (issue 13): C and B ≥ 10× Redis ops/s, A ≥ 1×');
  if (floors) {
    const one = (sys: Row['system'], w: string): Row | undefined =>
      rows.find((r) => r.system === sys && r.clients === 1 && r.workload === w);
    const upd = one('hotpot', 'A')?.write;
    const get = one('hotpot', 'C')?.read;
    out.push('');
    out.push('floors (1 client, Hotpot node a, same run):');
    out.push(
      table(
        ['operation', 'p50', 'p99', 'kv operation p50 ÷ floor p50'],
        [
          [
            'raw SDK commit of 1 KiB in one page of a 12-chunk dataset (N=2, disk)',
            us(floors.commit.p50),
            us(floors.commit.p99),
            upd ? `update: ${ratio(upd.p50, floors.commit.p50)}` : '-',
          ],
          [
            'JS Map get + 1 KiB copy (in-process, no durability)',
            us(floors.mapGet.p50),
            us(floors.mapGet.p99),
            get ? `get: ${ratio(get.p50, floors.mapGet.p50)}` : '-',
          ],
        ],
      ),
    );
  }
  const bad = rows.reduce((s, r) => s + r.errors + r.notFound, 0);
  out.push(`checks: ${String(bad)} errors or missing keys in all runs`);
  out.push(`total run time: ${((Date.now() - started) / 1000).toFixed(0)} s`);
  process.stdout.write(out.join('\n') + '\n');
  mkdirSync(join(projectRoot, 'bench', 'results'), { recursive: true });
  const file = join(projectRoot, 'bench', 'results', quick ? 'ycsb-quick.json' : 'ycsb.json');
  writeResults(
    file,
    {
      machine: m,
      command,
      records: RECORDS,
      valueBytes: VALUE_BYTES,
      seconds: SECONDS,
      load: loaded,
      rows,
      report: out.join('\n'),
    },
    log,
  );
}

await runBenchMain(run, main, {
  log,
  // The client processes are spawned with a stdin pipe, outside run.procs.
  beforeCleanup: () => {
    for (const c of clients) c.kill('SIGKILL');
  },
});

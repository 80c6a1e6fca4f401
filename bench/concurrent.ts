// Concurrent committers (issue 13), started by bench/concurrent.sh: how commit throughput grows with the number of
// committers, and how many fdatasyncs a commit costs when commits can share them (group commit). One Hotpot cluster
// (dispatcher + 3 nodes, durability disk) with one MRMW dataset (N=2) in which every committer has its own page, in
// its own chunk, so the commits never conflict and land on all three owners; beside it in the same run, at the same
// concurrency, a Redis pair (appendfsync always; SET 4 KiB + WAIT 1 0) and a C floor with group commit
// (bench/floor/persist2_batch.c). For each level C: C closed-loop committer processes (Hotpot ones on nodes a, b, c
// in turn) start together and run S seconds. Prints one table per level (ops/s, p50/p99, fdatasyncs per operation,
// the ratios to Redis and to the floor) and a summary; writes bench/results/concurrent.json.
//   bash bench/concurrent.sh [--quick] [--clients 1,2,4,8,16,32] [--seconds 10]
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { projectRoot } from '../services/common/paths.ts';
import type { ConcurrentJob, ConcurrentResult } from './concurrent-client.ts';
import { startBenchCluster, stopBenchCluster, type BenchCluster, type BenchNode } from './lib/cluster.ts';
import { datasetLayout, hotpotCli, nodeCounters, type DatasetLayout } from './lib/cluster-admin.ts';
import { machine, machineLine, type Machine } from './lib/machine.ts';
import { startRedisPair, type RedisPair } from './lib/redis.ts';
import { runBenchMain, startBenchRun, writeResults } from './lib/setup.ts';
import { ratio, summarize, table, us, type Summary } from './lib/stats.ts';
import { Workers } from './lib/workers.ts';

function flag(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i < 0 ? undefined : process.argv[i + 1];
}
const quick = process.argv.includes('--quick');
const CLIENTS = (flag('--clients') ?? (quick ? '1,4,16' : '1,2,4,8,16,32')).split(',').map(Number);
const SECONDS = Number(flag('--seconds') ?? (quick ? 3 : 10));
if (CLIENTS.some((c) => !Number.isInteger(c) || c < 1 || c > 64)) throw new Error('--clients: integers 1..64');
if (!Number.isInteger(SECONDS) || SECONDS < 1 || SECONDS > 600) throw new Error('--seconds: an integer 1..600');
const PAGE = 4096;
const REPLICAS = 2;
const DATASET = 'concurrent';
const KEEP_SAMPLES = 20_000;
/** Between sending "go" and the common start: every committer has read its line by then. */
const START_MARGIN_MS = 500;

const run = startBenchRun('hotpot-concurrent-');
const { work, shm, procs, env: hotpotEnv } = run;
const floorBin = join(projectRoot, 'bench', 'out', 'persist2_batch');
const clientScript = join(projectRoot, 'bench', 'concurrent-client.ts');

function log(msg: string): void {
  process.stderr.write(`[concurrent] ${msg}\n`);
}
const workers = new Workers(log);

type System = 'hotpot' | 'redis' | 'floor';

interface Row {
  clients: number;
  system: System;
  ops: number;
  opsPerSec: number;
  latency: Summary | null;
  /** Summed over every process that syncs (Hotpot: all nodes; floor: both replicas); null when not counted. */
  fdatasyncsPerOp: number | null;
  failures: number;
  shortfalls: number;
  errors: string[];
  /** Hotpot: engine counter deltas summed over the nodes; floor: the replicas' own counts. */
  counters?: Record<string, number>;
}

// ---------------------------------------------------------------------------------------------- placement

interface Committer {
  index: number;
  node: BenchNode;
  ownerNode: BenchNode;
  chunk: number;
  page: number;
}

/**
 * Committer i runs on node i mod 3 and commits one page owned by node (2i + ⌊i/3⌋) mod 3: one committer in three is
 * on its page's owner (the local fast path), the others commit to a remote owner, and from 3 committers on all three
 * nodes own pages being committed. Each committer's page is in a chunk of its own.
 */
function ownerOf(i: number): number {
  return (2 * i + Math.floor(i / 3)) % 3;
}

function assign(nodes: BenchNode[], layout: DatasetLayout, count: number): Committer[] {
  const perChunk = layout.chunkSize / PAGE;
  const used = new Map<number, number>();
  const out: Committer[] = [];
  for (let i = 0; i < count; i++) {
    const node = nodes[i % nodes.length];
    const ownerNode = nodes[ownerOf(i) % nodes.length];
    if (!node || !ownerNode) throw new Error('concurrent: cluster has no nodes');
    const k = used.get(ownerNode.id) ?? 0;
    used.set(ownerNode.id, k + 1);
    const chunks = layout.owners.flatMap((o, c) => (o === ownerNode.id ? [c] : []));
    const chunk = chunks[k];
    if (chunk === undefined)
      throw new Error(`concurrent: node ${ownerNode.name} owns only ${String(chunks.length)} chunks of the dataset`);
    out.push({ index: i, node, ownerNode, chunk, page: chunk * perChunk + (i % perChunk) });
  }
  return out;
}

/** Chunks for `count` committers: as many per node as the busiest owner needs (placement is round-robin), + 1. */
function chunksFor(count: number): number {
  const per = [0, 0, 0];
  for (let i = 0; i < count; i++) per[ownerOf(i)] = (per[ownerOf(i)] ?? 0) + 1;
  return 3 * (Math.max(...per) + 1);
}

// ---------------------------------------------------------------------------------------------- one level

function sumRows(system: System, clients: number, rs: ConcurrentResult[]): Row {
  const ops = rs.reduce((s, r) => s + r.ops, 0);
  const elapsed = Math.max(...rs.map((r) => r.elapsedMs)) / 1000;
  const samples = rs.flatMap((r) => r.samples);
  return {
    clients,
    system,
    ops,
    opsPerSec: elapsed > 0 ? ops / elapsed : 0,
    latency: samples.length > 0 ? summarize(samples) : null,
    fdatasyncsPerOp: null,
    failures: rs.reduce((s, r) => s + r.failures, 0),
    shortfalls: rs.reduce((s, r) => s + r.shortfalls, 0),
    errors: rs.flatMap((r) => r.errors).slice(0, 5),
  };
}

async function closedLoops(jobs: ConcurrentJob[]): Promise<ConcurrentResult[]> {
  const ws = await Promise.all(jobs.map((j) => workers.start(clientScript, j)));
  try {
    const startAt = Date.now() + START_MARGIN_MS;
    for (const w of ws) w.send(`go ${String(startAt)} ${String(SECONDS * 1000)}`);
    return await Promise.all(ws.map((w) => w.next<ConcurrentResult>()));
  } finally {
    await workers.quit(ws);
  }
}

async function hotpotLevel(c: BenchCluster, committers: Committer[], n: number): Promise<Row> {
  const jobs: ConcurrentJob[] = committers.slice(0, n).map((x) => ({
    target: 'hotpot',
    socket: x.node.socket,
    name: DATASET,
    page: x.page,
    replicas: REPLICAS,
    keepSamples: KEEP_SAMPLES,
  }));
  // The counters are read once every committer is READY (its warm-up commits done) and again after the last result,
  // so their deltas hold the timed commits only.
  const ws = await Promise.all(jobs.map((j) => workers.start(clientScript, j)));
  let rs: ConcurrentResult[];
  let before: Record<string, number>[];
  let after: Record<string, number>[];
  try {
    before = await Promise.all(c.nodes.map((nd) => nodeCounters(c, nd)));
    const startAt = Date.now() + START_MARGIN_MS;
    for (const w of ws) w.send(`go ${String(startAt)} ${String(SECONDS * 1000)}`);
    rs = await Promise.all(ws.map((w) => w.next<ConcurrentResult>()));
    after = await Promise.all(c.nodes.map((nd) => nodeCounters(c, nd)));
  } finally {
    await workers.quit(ws);
  }
  const row = sumRows('hotpot', n, rs);
  const delta: Record<string, number> = {};
  for (const k of ['fdatasyncs', 'commits', 'commitAborts', 'conflicts', 'replicasSent', 'prepareCopiesSent'])
    if (before.every((b) => k in b) && after.every((a) => k in a))
      delta[k] = after.reduce((s, a, i) => s + (a[k] ?? 0) - (before[i]?.[k] ?? 0), 0);
  row.counters = delta;
  const fs = delta.fdatasyncs;
  row.fdatasyncsPerOp = fs === undefined || row.ops === 0 ? null : fs / row.ops;
  return row;
}

async function redisLevel(redis: RedisPair, n: number): Promise<Row> {
  const jobs: ConcurrentJob[] = Array.from({ length: n }, (_, i) => ({
    target: 'redis',
    port: redis.primaryPort,
    key: `committer-${String(i)}`,
    keepSamples: KEEP_SAMPLES,
  }));
  return sumRows('redis', n, await closedLoops(jobs));
}

async function floorLevel(n: number): Promise<Row> {
  // On the same disk as the node state dirs (both under the run's work dir).
  const dir = join(work, `floor-${String(n)}`);
  mkdirSync(dir, { recursive: true });
  const replicas = [
    await procs.spawnReady('persist2_batch replica 1', floorBin, ['replica', join(dir, 'r1')]),
    await procs.spawnReady('persist2_batch replica 2', floorBin, ['replica', join(dir, 'r2')]),
  ];
  const out = await procs.run('persist2_batch client', floorBin, [
    'client',
    ...replicas.map((r) => r.fields.port ?? ''),
    String(n),
    String(SECONDS),
  ]);
  await Promise.all(replicas.map((r) => r.exited));
  const lines = out.trim().split('\n');
  const head = /^# clients=\d+ writes=(\d+) elapsed_ns=(\d+) sent=(\d+) fsyncs=(\d+),(\d+)$/.exec(lines[0] ?? '');
  if (!head) throw new Error(`persist2_batch: unexpected first line ${JSON.stringify(lines[0])}`);
  const [writes, elapsedNs, sent, f1, f2] = head.slice(1).map(Number) as [number, number, number, number, number];
  const ns = lines.slice(1).map(Number);
  return {
    clients: n,
    system: 'floor',
    ops: writes,
    opsPerSec: writes / (elapsedNs / 1e9),
    latency: ns.length > 0 ? summarize(ns) : null,
    // The replicas count over their whole life, warm-up writes included: per write sent.
    fdatasyncsPerOp: sent > 0 ? (f1 + f2) / sent : null,
    failures: 0,
    shortfalls: 0,
    errors: [],
    counters: { writesSent: sent, fdatasyncsReplica1: f1, fdatasyncsReplica2: f2 },
  };
}

// ---------------------------------------------------------------------------------------------- report

function perOp(r: Row | undefined): string {
  if (!r) return '-';
  if (r.system === 'redis') return '- (not counted)';
  return r.fdatasyncsPerOp === null ? 'n/a' : r.fdatasyncsPerOp.toFixed(2);
}

function checks(r: Row): string {
  const parts = [`${String(r.failures)} failed`];
  if (r.system === 'hotpot') parts.push(`${String(r.shortfalls)} short of N`);
  if (r.errors.length > 0) parts.push(`first: ${r.errors[0] ?? ''}`);
  return parts.join(', ');
}

function report(rows: Row[], command: string, m: Machine, redisVersion: string): string[] {
  const find = (n: number, s: System): Row | undefined => rows.find((r) => r.clients === n && r.system === s);
  const out: string[] = [];
  out.push(`# Concurrent committers (issue 13) — ${m.date}`);
  out.push(machineLine(m));
  out.push(`command: ${command}`);
  out.push(
    `${String(SECONDS)} s per level and system, closed loops started together. Hotpot: 3 nodes, durability disk, one MRMW dataset with N=${String(REPLICAS)}; each committer (on nodes a, b, c in turn) rewrites all 4 KiB of its own page, in a chunk of its own, and commits (one committer in three on its page's owner). Redis ${/v=(\S+)/.exec(redisVersion)?.[1] ?? '?'}: primary + 1 replica, appendfsync always, one connection per client process, SET 4 KiB + WAIT 1 0. Floor: persist2_batch, one C thread per client writing 4 KiB to 2 replicas that pwrite everything received, fdatasync once and ack all.`,
  );
  out.push(
    'fdatasyncs per op: the fdatasync calls of all processes that persist (Hotpot: counter fdatasyncs summed over the 3 nodes; floor: both replicas) ÷ operations.',
  );
  for (const n of CLIENTS) {
    const h = find(n, 'hotpot');
    const r = find(n, 'redis');
    const f = find(n, 'floor');
    out.push('');
    out.push(`## ${String(n)} client${n > 1 ? 's' : ''}`);
    out.push('');
    out.push(
      table(
        ['system', 'clients', 'ops/s', 'p50', 'p99', 'fdatasyncs per op', 'hotpot ÷ redis', 'hotpot ÷ floor', 'checks'],
        [h, r, f].flatMap((x) =>
          x
            ? [
                [
                  x.system,
                  String(n),
                  Math.round(x.opsPerSec).toLocaleString('en-US'),
                  x.latency ? us(x.latency.p50) : '-',
                  x.latency ? us(x.latency.p99) : '-',
                  perOp(x),
                  x.system === 'hotpot' ? ratio(x.opsPerSec, r?.opsPerSec) : '',
                  x.system === 'hotpot' ? ratio(x.opsPerSec, f?.opsPerSec) : '',
                  checks(x),
                ],
              ]
            : [],
        ),
      ),
    );
  }
  out.push('');
  out.push('## Summary');
  out.push('');
  out.push(
    table(
      [
        'clients',
        'hotpot ops/s',
        'redis ops/s',
        'floor ops/s',
        'hotpot ÷ redis',
        'hotpot ÷ floor',
        'hotpot p50 / p99',
        'hotpot fdatasyncs per commit',
        'floor fdatasyncs per write',
      ],
      CLIENTS.map((n) => {
        const h = find(n, 'hotpot');
        const r = find(n, 'redis');
        const f = find(n, 'floor');
        const ops = (x?: Row): string => (x ? Math.round(x.opsPerSec).toLocaleString('en-US') : '-');
        return [
          String(n),
          ops(h),
          ops(r),
          ops(f),
          h ? ratio(h.opsPerSec, r?.opsPerSec) : '-',
          h ? ratio(h.opsPerSec, f?.opsPerSec) : '-',
          h?.latency ? `${us(h.latency.p50)} / ${us(h.latency.p99)}` : '-',
          perOp(h),
          perOp(f),
        ];
      }),
    ),
  );
  const hot = rows.filter((r) => r.system === 'hotpot');
  if (hot.some((r) => r.fdatasyncsPerOp === null))
    out.push('n/a: the nodes do not report an fdatasyncs counter (Stats) — the engine predates it.');
  else if (hot.some((r) => r.ops > 0 && r.counters?.fdatasyncs === 0))
    out.push('warning: the nodes counted no fdatasync under durability disk: a native addon built before the counter?');
  const bad = rows.reduce((s, r) => s + r.failures + r.shortfalls, 0);
  out.push(`checks: ${String(bad)} failed or under-replicated operations in all runs`);
  return out;
}

// ---------------------------------------------------------------------------------------------- main

async function main(): Promise<void> {
  const started = Date.now();
  const m = machine();
  log(`machine: ${String(m.nproc)} vCPU, ${m.cpuModel}; load average ${String(m.loadAverage1m)}`);
  const maxClients = Math.max(...CLIENTS);
  const cluster = await startBenchCluster(procs, {
    tag: 'concurrent',
    work,
    shm,
    durability: 'disk',
    env: hotpotEnv,
  });
  const redis = await startRedisPair(procs, work, 'concurrent');
  const rows: Row[] = [];
  try {
    const chunks = chunksFor(maxClients);
    await hotpotCli(procs, cluster, [
      'create',
      DATASET,
      '--size',
      String(chunks * 4 * 1024 * 1024),
      '--replicas',
      String(REPLICAS),
    ]);
    const layout = await datasetLayout(procs, cluster, DATASET);
    const committers = assign(cluster.nodes, layout, maxClients);
    log(
      `dataset ${DATASET}: ${String(layout.owners.length)} chunks of ${String(layout.chunkSize >> 20)} MiB, N=${String(REPLICAS)}; committers (node→owner): ${committers.map((x) => `${x.node.name}→${x.ownerNode.name}`).join(' ')}`,
    );
    for (const [li, n] of CLIENTS.entries()) {
      // Rotate which system goes first, so drift on the shared machine falls on all three.
      const order = (['hotpot', 'redis', 'floor'] as const).map((_, k, a) => a[(k + li) % a.length] as System);
      for (const sys of order) {
        log(`${String(n)} client(s), ${sys}: ${String(SECONDS)} s`);
        const row =
          sys === 'hotpot'
            ? await hotpotLevel(cluster, committers, n)
            : sys === 'redis'
              ? await redisLevel(redis, n)
              : await floorLevel(n);
        log(
          `  ${Math.round(row.opsPerSec).toLocaleString('en-US')} ops/s, p50 ${row.latency ? us(row.latency.p50) : '-'}, ${String(row.failures)} failed`,
        );
        rows.push(row);
      }
    }
  } finally {
    await stopBenchCluster(procs, cluster);
  }

  const command = `bash bench/concurrent.sh${process.argv.slice(2).length > 0 ? ' ' + process.argv.slice(2).join(' ') : ''}   # as root, from the repository root`;
  const out = report(rows, command, m, redis.version);
  out.push(`total run time: ${((Date.now() - started) / 1000).toFixed(0)} s`);
  process.stdout.write(out.join('\n') + '\n');
  mkdirSync(join(projectRoot, 'bench', 'results'), { recursive: true });
  const file = join(projectRoot, 'bench', 'results', quick ? 'concurrent-quick.json' : 'concurrent.json');
  writeResults(
    file,
    {
      machine: m,
      command,
      seconds: SECONDS,
      clients: CLIENTS,
      replicas: REPLICAS,
      rows,
      report: out.join('\n'),
    },
    log,
  );
}

await runBenchMain(run, main, {
  log,
  // The committer processes are spawned with a stdin pipe, outside run.procs.
  beforeCleanup: () => workers.killAll(),
});

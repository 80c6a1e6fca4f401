// Issue-3 benchmark orchestrator (started by bench/run.sh): raw C floors, the Redis peer and Hotpot on its own
// local clusters, all in one run. Prints one table per benchmark and writes bench/results/latest.json.
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { hotpotBin, projectRoot } from '../services/common/paths.ts';
import { initCa, issueCert } from '../services/common/certs.ts';
import type { CommitConfig } from './app.ts';
import { nodeCounters } from './lib/cluster-admin.ts';
import {
  addBenchNode,
  type BenchCluster,
  type BenchNode,
  onCpus,
  startBenchCluster,
  stopBenchCluster,
} from './lib/cluster.ts';
import { machine, machineLine, warmFreshMemory } from './lib/machine.ts';
import { Procs, type Ready } from './lib/procs.ts';
import { redisPing, startRedisPair } from './lib/redis.ts';
import { parseSamples, ratio, summarize, table, us, type Summary } from './lib/stats.ts';

const PAGE = 4096;
const quick = process.argv.includes('--quick');
/** `--security N`: only section 4, with N rounds (its per-round spread shrinks with more). */
const securityOnly = ((): number | null => {
  const i = process.argv.indexOf('--security');
  if (i < 0) return null;
  const n = Number(process.argv[i + 1]);
  if (!Number.isInteger(n) || n < 2 || n > 200) throw new Error('--security N: N rounds, 2..200');
  return n;
})();
/** `--seqread`: only section 1b (printed, not written to latest.json). */
const seqReadOnly = process.argv.includes('--seqread');
/**
 * `--pin-apart`: section 1 alone (printed, not written to latest.json), with the app and node a on vCPU 0 and the
 * dispatcher and nodes b and c on vCPU 1; the floor's client on vCPU 0 and its server on vCPU 1.
 */
const pinApart = process.argv.includes('--pin-apart');
const PIN_APART: Partial<Record<string, string>> = { a: '0', b: '1', c: '1', dispatcher: '1', app: '0' };
/** `--cold-memory`: no warm-up of fresh memory before the fault and sequential-read runs (lib/machine.ts). */
const coldMemory = process.argv.includes('--cold-memory');
/** How much memory the warm-ups write, as a multiple of what the timed part installs. */
const SEQ_WARM_FACTOR = 2;
const FAULT_WARM_FACTOR = 4;
const scale = (n: number): number => (quick ? Math.max(10, Math.floor(n / 10)) : n);
const COUNTS = {
  faultPages: scale(2000),
  faultWarmup: scale(200),
  fetchRtts: scale(20000),
  persists: scale(2000),
  redisOps: scale(2000),
  scanBytes: (quick ? 16 : 64) * 1024 * 1024,
  // Section 1b: bytes per sequential read, and runs (each on pages the reader has not touched yet).
  seqReadBytes: (quick ? 32 : 256) * 1024 * 1024,
  seqReadRuns: 3,
  scans32: 5,
  scans64: 3,
  reads: scale(1000),
  commitIterations: scale(150),
  commitWarmup: scale(15),
  // The paired security section: rounds (alternating which cluster goes first), and per round and cluster.
  securityRounds: securityOnly ?? (quick ? 2 : 6),
  securityFaultPages: scale(300),
  securityCommits: scale(60),
};

const outDir = join(projectRoot, 'bench', 'out');
const resultsFile = join(projectRoot, 'bench', 'results', 'latest.json');
const work = mkdtempSync('/tmp/hotpot-bench-');
const shm = mkdtempSync('/dev/shm/hotpot-bench-');
const procs = new Procs();
const secret = randomBytes(24).toString('hex');
// A cluster CA for the run's clusters (security on, as deployed); the bench's own clients use its admin certificate.
const tlsDir = join(work, 'tls');
initCa(tlsDir);
issueCert(tlsDir, { role: 'admin', name: 'admin' });
process.env.HOTPOT_TLS_DIR = tlsDir;
process.env.HOTPOT_CERT = 'admin';
const hotpotEnv = { HOTPOT_CLUSTER_SECRET: secret, HOTPOT_TRACES_EXPORTER: 'none', HOTPOT_TLS_DIR: tlsDir };

function log(msg: string): void {
  process.stderr.write(`[bench] ${msg}\n`);
}

function shuffle<T>(a: T[]): T[] {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [a[i], a[j]] = [a[j] as T, a[i] as T];
  }
  return a;
}

// ---------------------------------------------------------------------------------------------- raw floors

/** `pin`: 'same' runs client and servers on vCPU 0, 'apart' the client on vCPU 0 and the servers on vCPU 1. */
async function cFloor(
  bin: string,
  serverArgs: string[][],
  clientArgs: (ports: string[]) => string[],
  pin: 'no' | 'same' | 'apart',
) {
  const cpu = (server: boolean): string | undefined =>
    pin === 'no' ? undefined : pin === 'apart' && server ? '1' : '0';
  const servers: Ready[] = [];
  for (const a of serverArgs) {
    const [c, rest] = onCpus(cpu(true), join(outDir, bin), a);
    servers.push(await procs.spawnReady(bin, c, rest));
  }
  const [c, rest] = onCpus(cpu(false), join(outDir, bin), clientArgs(servers.map((s) => s.fields.port ?? '')));
  const out = await procs.run(`${bin} client`, c, rest);
  await Promise.all(servers.map((s) => s.exited));
  return summarize(parseSamples(out));
}

async function fetchFloors() {
  const first = pinApart ? 'client on vCPU 0, server on vCPU 1' : 'unpinned';
  log(`floors: C TCP 4 KiB fetch (${first}, then both on vCPU 0)`);
  const args = (p: string[]): string[] => ['client', p[0] ?? '', String(COUNTS.fetchRtts)];
  const fetch = await cFloor('tcp_fetch', [['server']], args, pinApart ? 'apart' : 'no');
  const fetchPinned = await cFloor('tcp_fetch', [['server']], args, 'same');
  return { fetch, fetchPinned };
}

/** The write floors, measured right before each commit section so both see the same machine load. */
async function persistFloors(tag: string) {
  log('floors: C 4 KiB to 2 peers, pwrite + fdatasync + ack (and without fdatasync)');
  // On the same disk as the node data dirs (both under the run's work dir).
  const dataDir = join(work, `floor-${tag}`);
  mkdirSync(dataDir, { recursive: true });
  const persist = await cFloor(
    'persist2',
    [
      ['replica', join(dataDir, 'r1')],
      ['replica', join(dataDir, 'r2')],
    ],
    (p) => ['client', p[0] ?? '', p[1] ?? '', String(COUNTS.persists)],
    'no',
  );
  const persistNoSync = await cFloor(
    'persist2',
    [
      ['replica', join(dataDir, 'r3'), 'nosync'],
      ['replica', join(dataDir, 'r4'), 'nosync'],
    ],
    (p) => ['client', p[0] ?? '', p[1] ?? '', String(COUNTS.persists)],
    'no',
  );
  return { persist, persistNoSync };
}

// ---------------------------------------------------------------------------------------------- Redis peer

async function redisPeer(tag: string) {
  log('peer: Redis primary + 1 replica, appendonly yes, appendfsync always; SET 4 KiB + WAIT 1 0');
  const { version, primaryPort } = await startRedisPair(procs, work, tag);
  const primary = await redisPing(primaryPort);
  const value = randomBytes(PAGE);
  const ns: number[] = [];
  let unacked = 0;
  for (let i = -50; i < COUNTS.redisOps; i++) {
    const t0 = process.hrtime.bigint();
    const set = await primary.call('SET', `k${String(i & 255)}`, value);
    const acks = await primary.call('WAIT', '1', '0');
    const t1 = process.hrtime.bigint();
    if (set !== 'OK' || acks !== 1) unacked++;
    if (i >= 0) ns.push(Number(t1 - t0));
  }
  primary.close();
  return { version, summary: summarize(ns), unacked };
}

// ---------------------------------------------------------------------------------------------- Hotpot cluster

type NodeProc = BenchNode;
type Cluster = BenchCluster;

/** `insecure`: plaintext gRPC and data-plane frames (--insecure), the baseline of the security section. */
async function startCluster(tag: string, durability: 'memory' | 'disk', insecure = false): Promise<Cluster> {
  log(`cluster ${tag}: dispatcher + 3 nodes, durability ${durability}${insecure ? ', --insecure' : ''}`);
  const env: NodeJS.ProcessEnv = insecure ? { ...hotpotEnv, HOTPOT_INSECURE: '1' } : hotpotEnv;
  return startBenchCluster(procs, { tag, work, shm, durability, env, ...(pinApart ? { cpus: PIN_APART } : {}) });
}

async function stopCluster(c: Cluster): Promise<void> {
  await stopBenchCluster(procs, c);
}

async function cli(c: Cluster, args: string[]): Promise<unknown> {
  const out = await procs.run(
    `hotpot ${args.join(' ')}`,
    process.execPath,
    [hotpotBin, '--dispatcher', c.dispatcher, '--json', ...args],
    {
      env: c.env,
    },
  );
  return JSON.parse(out) as unknown;
}

async function createDataset(c: Cluster, name: string, size: number, replicas: number): Promise<void> {
  await cli(c, ['create', name, '--size', String(size), '--replicas', String(replicas)]);
}

async function chunkSize(c: Cluster, name: string): Promise<number> {
  const st = (await cli(c, ['stat', name])) as { dataset: { chunkSizeBytes: number | string } };
  return Number(st.dataset.chunkSizeBytes);
}

async function app<T>(job: Record<string, unknown>): Promise<T> {
  const out = await procs.run(
    `app ${String(job.mode)}`,
    ...onCpus(pinApart ? PIN_APART.app : undefined, process.execPath, [
      '--import',
      'tsx',
      join(projectRoot, 'bench', 'app.ts'),
      JSON.stringify(job),
    ]),
  );
  const lines = out.trim().split('\n');
  return JSON.parse(lines[lines.length - 1] ?? 'null') as T;
}

function pagesOfChunks(owners: number[], owner: number, perChunk: number): number[] {
  const out: number[] = [];
  owners.forEach((o, i) => {
    if (o === owner) for (let p = 0; p < perChunk; p++) out.push(i * perChunk + p);
  });
  return out;
}

async function faultBench(c: Cluster, name = 'fault', pages = COUNTS.faultPages) {
  const [a, b] = c.nodes as [NodeProc, NodeProc, NodeProc];
  log(`fault: app on node ${a.name} (id ${a.id}) touches pages owned by node ${b.name} (id ${b.id})`);
  const chunks = 12;
  await createDataset(c, name, 4 * 1024 * 1024 * chunks, 1);
  const cs = await chunkSize(c, name);
  const owners = await chunkOwners(c, name);
  const remote = shuffle(pagesOfChunks(owners, b.id, cs / PAGE));
  const need = pages + COUNTS.faultWarmup;
  if (remote.length < need) throw new Error(`fault: only ${String(remote.length)} pages owned by node ${b.name}`);
  const chosen = remote.slice(0, need);
  const filled = await app<{ pages: number; copies: number }>({
    mode: 'fill',
    socket: b.socket,
    name,
    pages: chosen,
    replicas: 1,
  });
  // Node a installs every page it fetches: let it take them from memory the VM backs (lib/machine.ts).
  const warmNs = coldMemory ? 0 : warmFreshMemory(shm, FAULT_WARM_FACTOR * need * PAGE);
  const beforeA = await nodeCounters(c, a);
  const beforeB = await nodeCounters(c, b);
  const r = await app<{ cold: number[]; warm: number[]; badPages: number }>({
    mode: 'fault',
    socket: a.socket,
    name,
    warmup: chosen.slice(0, COUNTS.faultWarmup),
    pages: chosen.slice(COUNTS.faultWarmup),
  });
  const afterA = await nodeCounters(c, a);
  const afterB = await nodeCounters(c, b);
  const delta = (x: Record<string, number>, y: Record<string, number>, k: string): number => (y[k] ?? 0) - (x[k] ?? 0);
  return {
    coldNs: r.cold,
    cold: summarize(r.cold),
    warm: summarize(r.warm),
    badPages: r.badPages,
    filledPages: filled.pages,
    touched: need,
    warmNs,
    appNodeFaultsRemote: delta(beforeA, afterA, 'faultsRemote'),
    appNodeFaultsLocal: delta(beforeA, afterA, 'faultsLocal'),
    ownerFetchesServed: delta(beforeB, afterB, 'fetchesServed'),
  };
}

/** The owner node id of each chunk, from `hotpot --json stat`. */
async function chunkOwners(c: Cluster, name: string): Promise<number[]> {
  const st = (await cli(c, ['stat', name])) as {
    dataset: { chunks: { index: number | string; owner: number | string }[] };
  };
  const owners: number[] = [];
  for (const ch of st.dataset.chunks) owners[Number(ch.index)] = Number(ch.owner);
  return owners;
}

async function scanBench(c: Cluster) {
  const a = c.nodes[0] as NodeProc;
  log(`scan: ${String(COUNTS.scanBytes >> 20)} MiB dataset, app on node ${a.name}`);
  await createDataset(c, 'scan', COUNTS.scanBytes, 1);
  const r = await app<{
    bytes: number;
    firstScanNs: number;
    mapped64: number[];
    plain64: number[];
    mapped32: number[];
    plain32: number[];
    mismatches: number;
    plain8: number[];
    snapshot8: number[];
    validated8: number[];
    snapScan32: number[];
    mappedScan32: number[];
    snapRuns: number;
  }>({
    mode: 'scan',
    socket: a.socket,
    name: 'scan',
    scans32: COUNTS.scans32,
    scans64: COUNTS.scans64,
    reads: COUNTS.reads,
  });
  return {
    bytes: r.bytes,
    firstScanMs: r.firstScanNs / 1e6,
    mapped32: summarize(r.mapped32),
    plain32: summarize(r.plain32),
    mapped64: summarize(r.mapped64),
    plain64: summarize(r.plain64),
    mismatches: r.mismatches,
    plain8: summarize(r.plain8),
    snapshot8: summarize(r.snapshot8),
    validated8: summarize(r.validated8),
    snapScan32: summarize(r.snapScan32),
    mappedScan32: summarize(r.mappedScan32),
    snapRuns: r.snapRuns,
  };
}

// ---------------------------------------------------------------------------------------------- sequential read

/** The pipelined floor's windows (requests in flight); 1 is the unpipelined loop, shown for context. */
const SEQ_WINDOWS = [16, 64, 256] as const;

/** One run of the pipelined fetch floor: `pages` replies of 4 KiB with `window` requests in flight; elapsed ns. */
async function pipelinedFloorNs(pages: number, window: number): Promise<number> {
  // The client prints one number, the elapsed ns, so the floor's "summary" is that one sample (µs).
  const s = await cFloor(
    'tcp_fetch',
    [['server']],
    (p) => ['client-pipelined', p[0] ?? '', String(pages), String(window)],
    'no',
  );
  return s.p50 * 1000;
}

/** A node joining a running bench cluster, after its datasets were created, so it owns none of their chunks. */
async function joinNode(c: Cluster, tag: string, name: string): Promise<NodeProc> {
  return addBenchNode(procs, c, { tag, work, shm, durability: 'memory' }, name);
}

interface SeqReadRun {
  ns: number;
  /** The floor's elapsed ns for the same number of pages, by window, measured right before this run. */
  floorNs: Record<string, number>;
  badPages: number;
  fullyChecked: number;
  readerFaultsRemote: number;
  readerFaultsLocal: number;
  ownerFetchesServed: number;
  /** The warm-up right before the pass (warmFreshMemory; 0 with --cold-memory). */
  warmNs: number;
}

/**
 * Issue 13's sequential cold read: its own cluster, so every chunk has one owner — the datasets are created while the
 * owner is the only node, filled there (N=1), and read by a node that joins afterwards. Each run reads a dataset of
 * its own (a page fetched once is local afterwards; and the shim's prefetch stops at the end of a mapping, so no run
 * fetches pages of the next), after the floors for as many pages.
 */
async function seqReadBench() {
  const tag = 'seqread';
  const name = (run: number): string => `seqread-${String(run)}`;
  const pages = COUNTS.seqReadBytes / PAGE;
  log(`cluster ${tag}: dispatcher + 1 node (durability memory); a reader node joins after the datasets are filled`);
  const c = await startBenchCluster(procs, { tag, work, shm, durability: 'memory', env: hotpotEnv, nodes: 1 });
  try {
    const owner = c.nodes[0] as NodeProc;
    for (let run = 0; run < COUNTS.seqReadRuns; run++) {
      log(`seqread: create and fill ${name(run)} on the owner, commit N=1`);
      await createDataset(c, name(run), COUNTS.seqReadBytes, 1);
      const owners = await chunkOwners(c, name(run));
      if (owners.some((o) => o !== owner.id)) throw new Error(`seqread: a chunk is not owned by node ${owner.name}`);
      await app({
        mode: 'fill',
        socket: owner.socket,
        name: name(run),
        pages: { first: 0, count: pages },
        replicas: 1,
      });
    }
    const reader = await joinNode(c, tag, 'r');
    const runs: SeqReadRun[] = [];
    for (let run = 0; run < COUNTS.seqReadRuns; run++) {
      log(`seqread: run ${String(run + 1)}: floors (windows 1, ${SEQ_WINDOWS.join(', ')}), then the reader's pass`);
      const floorNs: Record<string, number> = {};
      for (const w of [1, ...SEQ_WINDOWS]) floorNs[String(w)] = await pipelinedFloorNs(pages, w);
      // Twice the pass's bytes: with the dataset's size alone, some passes still wrote part of the cache into memory
      // the VM had not backed (one pass of three at ~2× the time of the others).
      const warmNs = coldMemory ? 0 : warmFreshMemory(shm, SEQ_WARM_FACTOR * COUNTS.seqReadBytes);
      const [beforeR, beforeO] = [await nodeCounters(c, reader), await nodeCounters(c, owner)];
      const r = await app<{ ns: number; badPages: number; fullyChecked: number }>({
        mode: 'seqread',
        socket: reader.socket,
        name: name(run),
        range: { first: 0, count: pages },
        verifyEvery: 61,
      });
      const [afterR, afterO] = [await nodeCounters(c, reader), await nodeCounters(c, owner)];
      log(
        `seqread: run ${String(run + 1)}: the reader's pass took ${(r.ns / 1e6).toFixed(0)} ms` +
          (coldMemory
            ? ''
            : ` (after ${String((SEQ_WARM_FACTOR * COUNTS.seqReadBytes) >> 20)} MiB of memory warmed in ${(warmNs / 1e6).toFixed(0)} ms)`),
      );
      const delta = (x: Record<string, number>, y: Record<string, number>, k: string): number =>
        (y[k] ?? 0) - (x[k] ?? 0);
      runs.push({
        ns: r.ns,
        floorNs,
        badPages: r.badPages,
        fullyChecked: r.fullyChecked,
        warmNs,
        readerFaultsRemote: delta(beforeR, afterR, 'faultsRemote'),
        readerFaultsLocal: delta(beforeR, afterR, 'faultsLocal'),
        ownerFetchesServed: delta(beforeO, afterO, 'fetchesServed'),
      });
    }
    const bytes = pages * PAGE;
    const hotpot = summarize(runs.map((r) => r.ns));
    const floors: Record<string, Summary> = {};
    for (const w of [1, ...SEQ_WINDOWS]) floors[String(w)] = summarize(runs.map((r) => r.floorNs[String(w)] ?? 0));
    // The floor to beat: the window with the highest median throughput (the shortest median time).
    const best = SEQ_WINDOWS.map(String).reduce((x, y) =>
      (floors[y]?.p50 ?? Infinity) < (floors[x]?.p50 ?? Infinity) ? y : x,
    );
    const mbps = (s: Summary | undefined): number => (s ? bytes / s.p50 : 0); // bytes per µs = MB/s
    return {
      bytes,
      pages,
      runs,
      hotpot,
      floors,
      bestWindow: Number(best),
      mbPerSecond: { hotpot: mbps(hotpot), bestFloor: mbps(floors[best]), unpipelinedFloor: mbps(floors['1']) },
    };
  } finally {
    await stopCluster(c);
  }
}

interface CommitRow {
  label: string;
  pages: number;
  replicas: number;
  placement: string;
  summary: Summary;
  ns: number[];
  shortfalls: number;
  copies: number[];
}

/** `only`: the configurations (by placement kind and label suffix) to run; `iterations` each. */
async function commitBench(
  c: Cluster,
  name = 'commit',
  iterations = COUNTS.commitIterations,
  only?: (cfg: { k: number; replicas: number; placement: string }, nodes: NodeProc[]) => boolean,
): Promise<CommitRow[]> {
  const [a, b, cc] = c.nodes as [NodeProc, NodeProc, NodeProc];
  await createDataset(c, name, 12 * 4 * 1024 * 1024, 3);
  const cs = (await chunkSize(c, name)) / PAGE;
  const owners = await chunkOwners(c, name);
  const firstChunk = (id: number): number => {
    const i = owners.indexOf(id);
    if (i < 0) throw new Error(`commit: no chunk owned by node ${String(id)}`);
    return i;
  };
  // 8 distinct pages 16 pages apart inside one chunk (one owner: the one-shot fast path).
  const inChunk = (chunk: number, k: number): number[] => Array.from({ length: k }, (_, i) => chunk * cs + 1 + i * 16);
  const placements: { placement: string; pages: (k: number) => number[] }[] = [
    { placement: `owner local (node ${a.name})`, pages: (k) => inChunk(firstChunk(a.id), k) },
    { placement: `owner remote (node ${b.name})`, pages: (k) => inChunk(firstChunk(b.id), k) },
  ];
  let configs: (CommitConfig & { placement: string; k: number })[] = [];
  for (const pl of placements)
    for (const k of [1, 8])
      for (const n of [1, 2, 3])
        configs.push({
          label: `${String(k)} page${k > 1 ? 's' : ''}, ${pl.placement}, N=${String(n)}`,
          placement: pl.placement,
          k,
          pages: pl.pages(k),
          replicas: n,
          iterations,
          warmup: COUNTS.commitWarmup,
        });
  // 8 pages spread over the three owners (3 pages on a, 3 on b, 2 on c): the multi-owner prepare/apply/release.
  const spread = [...inChunk(firstChunk(a.id), 3), ...inChunk(firstChunk(b.id), 3), ...inChunk(firstChunk(cc.id), 2)];
  for (const n of [1, 2, 3])
    configs.push({
      label: `8 pages, 3 owners, N=${String(n)}`,
      placement: '3 owners',
      k: 8,
      pages: spread,
      replicas: n,
      iterations,
      warmup: COUNTS.commitWarmup,
    });
  if (only) configs = configs.filter((x) => only(x, c.nodes));
  log(`commit: ${String(configs.length)} configurations × ${String(iterations)} commits, app on node ${a.name}`);
  const r = await app<{ configs: { label: string; ns: number[]; shortfalls: number; copies: number[] }[] }>({
    mode: 'commit',
    socket: a.socket,
    name,
    configs: configs.map(({ label, pages, replicas, iterations, warmup }) => ({
      label,
      pages,
      replicas,
      iterations,
      warmup,
    })),
  });
  return r.configs.map((x, i) => {
    const cfg = configs[i];
    if (!cfg) throw new Error('commit: result count mismatch');
    return {
      label: x.label,
      pages: cfg.k,
      replicas: cfg.replicas,
      placement: cfg.placement,
      summary: summarize(x.ns),
      ns: x.ns,
      shortfalls: x.shortfalls,
      copies: x.copies,
    };
  });
}

/** One operation's samples on the secure and the --insecure cluster, and each round's p50 ratio. */
interface PairedRow {
  operation: string;
  secure: number[];
  insecure: number[];
  roundRatios: number[];
}

/** The configurations the security section commits: the common cases (one page, local and remote; multi-owner). */
function securityCommit(cfg: { k: number; replicas: number; placement: string }): boolean {
  if (cfg.k === 1 && cfg.replicas === 1 && cfg.placement.startsWith('owner local')) return true;
  if (cfg.k === 1 && cfg.replicas === 2 && cfg.placement.startsWith('owner remote')) return true;
  return cfg.placement === '3 owners' && cfg.replicas === 2;
}

/**
 * Security's cost, paired: a secure cluster (TLS, sealed data-plane frames: the default) and a --insecure one run side
 * by side, and each round measures a fault block and a commit block on both, alternating which goes first (ABBA), so
 * the machine's drift and noise fall on both alike. Samples of all rounds are pooled per operation and cluster.
 */
async function securityBench(): Promise<PairedRow[]> {
  const secure = await startCluster('secure', 'memory');
  const plain = await startCluster('insecure', 'memory', true);
  const rows = new Map<string, PairedRow>();
  const add = (op: string, on: number[], off: number[]): void => {
    let r = rows.get(op);
    if (!r) {
      r = { operation: op, secure: [], insecure: [], roundRatios: [] };
      rows.set(op, r);
    }
    r.secure.push(...on);
    r.insecure.push(...off);
    r.roundRatios.push(summarize(on).p50 / summarize(off).p50);
  };
  const strip = (label: string): string => label.replace(/ \(node [^)]*\)/, '');
  try {
    for (let round = 0; round < COUNTS.securityRounds; round++) {
      log(`security: round ${String(round + 1)} of ${String(COUNTS.securityRounds)}`);
      const order = round % 2 === 0 ? [secure, plain] : [plain, secure];
      const faults = new Map<Cluster, number[]>();
      const commits = new Map<Cluster, CommitRow[]>();
      for (const c of order) {
        faults.set(c, (await faultBench(c, `fault-${String(round)}`, COUNTS.securityFaultPages)).coldNs);
        commits.set(c, await commitBench(c, `commit-${String(round)}`, COUNTS.securityCommits, securityCommit));
      }
      add('cold remote page fault', faults.get(secure) ?? [], faults.get(plain) ?? []);
      for (const on of commits.get(secure) ?? []) {
        const off = (commits.get(plain) ?? []).find((x) => strip(x.label) === strip(on.label));
        if (off) add(`commit: ${strip(on.label)}`, on.ns, off.ns);
      }
    }
  } finally {
    await stopCluster(plain);
    await stopCluster(secure);
  }
  return [...rows.values()];
}

// ---------------------------------------------------------------------------------------------- report

function latRow(name: string, s: Summary, tput: string, floor?: Summary, peer?: Summary): string[] {
  const rr = (b?: Summary): string => (b ? `${ratio(s.p50, b.p50)} / ${ratio(s.p99, b.p99)}` : '-');
  return [name, us(s.p50), us(s.p90), us(s.p99), tput, rr(floor), rr(peer)];
}

const perSec = (s: Summary, unit: string): string => `${Math.round(s.perSecond).toLocaleString('en-US')} ${unit}/s`;
const LAT_HEAD = ['operation', 'p50', 'p90', 'p99', 'throughput', '× floor (p50 / p99)', '× peer (p50 / p99)'];

/** Section 4's heading and table. */
function securitySection(security: PairedRow[], load: number): string[] {
  const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] ?? 0;
  return [
    `## 4. The cost of security: a cluster with TLS and sealed data-plane frames (the default) and a --insecure one side by side (durability memory), ${String(COUNTS.securityRounds)} rounds alternating which goes first, samples pooled (load average ${String(load)})`,
    table(
      [
        'operation',
        'n',
        'p50 secure / insecure',
        'p99 secure / insecure',
        'secure ÷ insecure (p50 / p99)',
        'per-round p50 ratio: median (min–max)',
      ],
      security.map((r) => {
        const on = summarize(r.secure);
        const off = summarize(r.insecure);
        return [
          r.operation,
          `${String(on.n)} / ${String(off.n)}`,
          `${on.p50.toFixed(1)} / ${off.p50.toFixed(1)} us`,
          `${on.p99.toFixed(1)} / ${off.p99.toFixed(1)} us`,
          `${ratio(on.p50, off.p50)} / ${ratio(on.p99, off.p99)}`,
          `${median(r.roundRatios).toFixed(2)} (${Math.min(...r.roundRatios).toFixed(2)}–${Math.max(...r.roundRatios).toFixed(2)})`,
        ];
      }),
    ),
  ];
}

/** Section 1b's heading, table, checks and goal line. */
function seqReadSection(r: Awaited<ReturnType<typeof seqReadBench>>, load: number): string[] {
  const mb = (s: Summary): number => r.bytes / s.p50;
  const ms = (v: number): string => `${(v / 1000).toFixed(0)} ms`;
  const best = r.floors[String(r.bestWindow)];
  const unpiped = r.floors['1'];
  const row = (name: string, s: Summary | undefined): string[] =>
    s
      ? [
          name,
          ms(s.p50),
          ms(s.p90),
          ms(s.p99),
          `${mb(s).toFixed(0)} MB/s`,
          best ? `${(mb(s) / mb(best)).toFixed(2)}×` : '-',
          unpiped ? `${(mb(s) / mb(unpiped)).toFixed(2)}×` : '-',
        ]
      : [name, '-', '-', '-', '-', '-', '-'];
  const sum = (k: 'badPages' | 'fullyChecked'): number => r.runs.reduce((a, x) => a + x[k], 0);
  const each = (k: 'readerFaultsRemote' | 'readerFaultsLocal' | 'ownerFetchesServed'): string =>
    r.runs.map((x) => String(x[k])).join(' / ');
  const ratio = r.mbPerSecond.hotpot / r.mbPerSecond.bestFloor;
  return [
    `## 1b. Sequential cold read of a remote ${String(r.bytes >> 20)} MiB dataset (every chunk owned by one node, filled there with N=1; an app on a node that joined afterwards reads it first page to last, one byte per page; ${String(r.runs.length)} runs on fresh pages, the floors measured right before each; per-run time, throughput at p50; load average ${String(load)})`,
    table(
      [
        'operation',
        'p50',
        'p90',
        'p99',
        'throughput',
        '× pipelined floor (throughput)',
        '× 1-in-flight floor (throughput)',
      ],
      [
        row('hotpot sequential first touch (shim read-ahead, up to 1024 pages ahead)', r.hotpot),
        ...SEQ_WINDOWS.map((w) =>
          row(
            `floor: C TCP 16 B -> 4 KiB, ${String(w)} in flight${w === r.bestWindow ? ' (best)' : ''}`,
            r.floors[String(w)],
          ),
        ),
        row('floor: C TCP 16 B -> 4 KiB, 1 in flight (context)', unpiped),
      ],
    ),
    `checks: ${String(sum('badPages'))} pages with wrong bytes (${String(sum('fullyChecked'))} checked whole, every page's first word); reader remote faults per run +${each('readerFaultsRemote')}, local +${each('readerFaultsLocal')}; owner fetches served +${each('ownerFetchesServed')} (pages per run: ${String(r.pages)})`,
    coldMemory
      ? 'memory: not warmed (--cold-memory): the reader node may write its cache into memory the VM never backed'
      : `memory: right before each pass, ${String((SEQ_WARM_FACTOR * r.bytes) >> 20)} MiB written to a tmpfs file and deleted, so the reader's cache reuses memory the VM backs (docs/benchmarks.md "Fresh memory on this VM"): ${r.runs.map((x) => ms(x.warmNs / 1000)).join(' / ')}`,
    `goal: hotpot ≥ 0.5 × the pipelined floor's throughput (issue 13): ${ratio.toFixed(2)}× — ${ratio >= 0.5 ? 'holds' : 'does not hold'}`,
  ];
}

function faultSection(
  fault: Awaited<ReturnType<typeof faultBench>>,
  floor: Awaited<ReturnType<typeof fetchFloors>>,
): string[] {
  const where = pinApart ? ', the app and node a on vCPU 0, the dispatcher and nodes b and c on vCPU 1' : '';
  const floorName = pinApart
    ? 'floor: C TCP 16 B -> 4 KiB RTT, client on vCPU 0, server on vCPU 1'
    : 'floor: C TCP 16 B -> 4 KiB RTT, unpinned';
  return [
    `## 1. Cold remote page fault (app on node a, pages owned by node b, random order, n=${String(fault.cold.n)}${where})`,
    table(LAT_HEAD, [
      latRow('hotpot first touch (1-byte read)', fault.cold, perSec(fault.cold, 'faults'), floor.fetch),
      latRow('same pages, second touch (timer + load)', fault.warm, '-'),
      latRow(floorName, floor.fetch, perSec(floor.fetch, 'RTT')),
      latRow('floor, both on vCPU 0 (context)', floor.fetchPinned, perSec(floor.fetchPinned, 'RTT')),
    ]),
    `checks: ${String(fault.badPages)} pages with wrong bytes; node a remote faults +${String(fault.appNodeFaultsRemote)}, local +${String(fault.appNodeFaultsLocal)}; node b fetches served +${String(fault.ownerFetchesServed)} (pages touched: ${String(fault.touched)})`,
    coldMemory
      ? 'memory: not warmed (--cold-memory)'
      : `memory: right before the faults, ${String((FAULT_WARM_FACTOR * fault.touched * PAGE) >> 20)} MiB written to a tmpfs file and deleted (${(fault.warmNs / 1e6).toFixed(0)} ms), so node a installs the pages in memory the VM backs (docs/benchmarks.md "Fresh memory on this VM")`,
  ];
}

/** `--pin-apart`: section 1 alone, pinned (printed, not written to latest.json). */
async function pinApartMain(): Promise<void> {
  const load = Number((loadavg()[0] ?? 0).toFixed(2));
  const c = await startCluster('pinned', 'memory');
  let fetchFloor, fault;
  try {
    fetchFloor = await fetchFloors();
    fault = await faultBench(c);
  } finally {
    await stopCluster(c);
  }
  const out = [
    `command: bash bench/run.sh --pin-apart; load average (1 min) at start ${String(load)}`,
    ...faultSection(fault, fetchFloor),
  ];
  process.stdout.write(out.join('\n') + '\n');
}

/** `--seqread`: section 1b alone (printed, not written to latest.json). */
async function seqReadMain(): Promise<void> {
  const load = Number((loadavg()[0] ?? 0).toFixed(2));
  const seqRead = await seqReadBench();
  const out = [`command: bash bench/run.sh --seqread${quick ? ' --quick' : ''}`, ...seqReadSection(seqRead, load)];
  process.stdout.write(out.join('\n') + '\n');
}

/** `--security N`: section 4 alone (printed, not written to latest.json). */
async function securityMain(): Promise<void> {
  const load = Number((loadavg()[0] ?? 0).toFixed(2));
  const security = await securityBench();
  const out = [
    `command: bash bench/run.sh --security ${String(COUNTS.securityRounds)}`,
    ...securitySection(security, load),
    'goal: secure ≤ 1.10 × insecure (issue 12)',
  ];
  process.stdout.write(out.join('\n') + '\n');
}

async function main(): Promise<void> {
  const started = Date.now();
  const m = machine();
  log(`machine: ${String(m.nproc)} vCPU, ${m.cpuModel}, kernel ${m.kernel}`);
  const load: Record<string, number> = {};
  const mark = (what: string): void => {
    load[what] = Number((loadavg()[0] ?? 0).toFixed(2));
  };
  const mem = await startCluster('memory', 'memory');
  let fetchFloor, fault, scan, memoryRefs, commitMemory;
  try {
    mark('fault');
    fetchFloor = await fetchFloors();
    fault = await faultBench(mem);
    mark('scan');
    scan = await scanBench(mem);
    mark('commitMemory');
    memoryRefs = { ...(await persistFloors('memory')), redis: await redisPeer('memory') };
    commitMemory = await commitBench(mem);
  } finally {
    await stopCluster(mem);
  }
  mark('seqRead');
  const seqRead = await seqReadBench();
  mark('security');
  const security = await securityBench();
  const disk = await startCluster('disk', 'disk');
  let diskRefs, commitDisk;
  try {
    mark('commitDisk');
    diskRefs = { ...(await persistFloors('disk')), redis: await redisPeer('disk') };
    commitDisk = await commitBench(disk);
  } finally {
    await stopCluster(disk);
  }
  mark('end');

  const command = `bash bench/run.sh${quick ? ' --quick' : ''}   # as root, from the repository root (= npm run bench)`;
  const out: string[] = [];
  out.push(`# Hotpot benchmark (issue 3) — ${m.date}`);
  out.push(machineLine(m));
  out.push(`command: ${command}`);
  out.push('');
  out.push(...faultSection(fault, fetchFloor));
  out.push('');
  out.push(...seqReadSection(seqRead, load.seqRead ?? 0));
  out.push('');
  const gbs = (s: Summary): string => `${(scan.bytes / (s.p50 / 1e6) / 1e9).toFixed(2)} GB/s`;
  const ms = (v: number): string => `${(v / 1000).toFixed(1)} ms`;
  const scanRow = (name: string, s: Summary, floor?: Summary): string[] => [
    name,
    ms(s.p50),
    ms(s.p90),
    ms(s.p99),
    gbs(s),
    floor ? `${ratio(s.p50, floor.p50)} / ${ratio(s.p99, floor.p99)}` : '-',
    '-',
  ];
  out.push(
    `## 2. Full scan of a local ${String(scan.bytes >> 20)} MiB dataset vs a plain Buffer (per scan; first, faulting scan: ${scan.firstScanMs.toFixed(1)} ms)`,
  );
  out.push(
    table(LAT_HEAD, [
      scanRow('mapped dataset, u32 words (Uint32Array)', scan.mapped32, scan.plain32),
      scanRow('plain Buffer, u32 words', scan.plain32),
      scanRow('mapped dataset, u64 words (BigUint64Array)', scan.mapped64, scan.plain64),
      scanRow('plain Buffer, u64 words', scan.plain64),
    ]),
  );
  out.push(`checks: ${String(scan.mismatches)} sum mismatches between mapped and plain scans`);
  out.push('');
  out.push(
    `## 2b. Consistent reads of the same dataset (8 bytes at a page-spread offset, n=${String(COUNTS.reads)}; whole-dataset u32 scan inside one snapshot, n=${String(2 * COUNTS.scans32)})`,
  );
  out.push(
    table(LAT_HEAD, [
      latRow(
        'snapshot(): 8-byte read, local check',
        scan.snapshot8,
        perSec(scan.snapshot8, 'reads'),
        scan.plain8,
        scan.validated8,
      ),
      latRow('peer: commit({ reads }) validation at the owner', scan.validated8, perSec(scan.validated8, 'reads')),
      latRow('floor: plain 8-byte load (no guarantee)', scan.plain8, '-'),
      scanRow('snapshot(): whole-dataset u32 scan', scan.snapScan32, scan.mappedScan32),
      scanRow('floor: the same scan of the mapping, plain (alternated)', scan.mappedScan32),
    ]),
  );
  out.push(
    `checks: ${String(scan.snapRuns)} runs of the scan function for ${String(2 * COUNTS.scans32)} snapshot scans`,
  );
  out.push('');
  for (const [dur, rows, refs] of [
    ['memory', commitMemory, memoryRefs],
    ['disk', commitDisk, diskRefs],
  ] as const) {
    out.push(
      `## 3. Commit latency, durability ${dur} (3-node cluster, app on node a, every byte of each page changed, n=${String(COUNTS.commitIterations)} per row; floor and peer measured right before, load average ${String(load[dur === 'memory' ? 'commitMemory' : 'commitDisk'])})`,
    );
    // The fair floor for memory durability persists nothing: the same writes without fdatasync (issue 13); the
    // other floor is shown for context.
    const synced = { name: 'C 4 KiB to 2 peers, pwrite + fdatasync + ack', s: refs.persist };
    const unsynced = { name: 'C 4 KiB to 2 peers, pwrite + ack (no fdatasync)', s: refs.persistNoSync };
    const [floor, context] = dur === 'memory' ? [unsynced, synced] : [synced, unsynced];
    const floorRows = [
      latRow(`floor: ${floor.name}`, floor.s, perSec(floor.s, 'writes')),
      latRow(`floor: ${context.name} (context)`, context.s, perSec(context.s, 'writes')),
    ];
    out.push(
      table(LAT_HEAD, [
        ...rows.map((r) => latRow(r.label, r.summary, perSec(r.summary, 'commits'), floor.s, refs.redis.summary)),
        ...floorRows,
        latRow(
          `peer: Redis SET 4 KiB + WAIT 1 0 (Redis ${/v=(\S+)/.exec(refs.redis.version)?.[1] ?? '?'})`,
          refs.redis.summary,
          perSec(refs.redis.summary, 'ops'),
        ),
      ]),
    );
    const bad = rows.reduce((s, r) => s + r.shortfalls, 0);
    out.push(
      `checks: ${String(bad)} commits with fewer copies than N or a wrong page count; redis unacknowledged WAITs: ${String(refs.redis.unacked)}`,
    );
    out.push('');
  }
  out.push(...securitySection(security, load.security ?? 0));
  out.push('goal: secure ≤ 1.10 × insecure (issue 12)');
  out.push('');
  const elapsed = (Date.now() - started) / 1000;
  out.push(`total run time: ${elapsed.toFixed(0)} s`);
  process.stdout.write(out.join('\n') + '\n');

  mkdirSync(join(projectRoot, 'bench', 'results'), { recursive: true });
  const json = {
    schema: 1,
    machine: m,
    command,
    quick,
    counts: COUNTS,
    unit: 'microseconds (p50/p90/p99/min/max/mean); perSecond = closed-loop operations per second',
    loadAverage1mAtSectionStart: load,
    // memorySection/diskSection: the write floors and the Redis peer measured right before each commit section.
    floors: { fetch: fetchFloor, memorySection: memoryRefs, diskSection: diskRefs },
    // Summaries only: the raw samples (coldNs, ns) are for the paired section's pooling, not for the record.
    fault: { ...fault, coldNs: undefined },
    seqRead,
    scan,
    commit: {
      memory: commitMemory.map((r) => ({ ...r, ns: undefined })),
      disk: commitDisk.map((r) => ({ ...r, ns: undefined })),
    },
    security: security.map((r) => ({
      operation: r.operation,
      secure: summarize(r.secure),
      insecure: summarize(r.insecure),
      roundRatios: r.roundRatios,
    })),
    elapsedSeconds: elapsed,
    report: out.join('\n'),
  };
  writeFileSync(resultsFile + '.tmp', JSON.stringify(json, null, 2) + '\n');
  writeFileSync(resultsFile, readFileSync(resultsFile + '.tmp'));
  rmSync(resultsFile + '.tmp');
  log(`wrote ${resultsFile}`);
}

async function cleanup(): Promise<void> {
  await procs.stopAll();
  if (!process.env.HOTPOT_BENCH_KEEP) {
    rmSync(work, { recursive: true, force: true });
    rmSync(shm, { recursive: true, force: true });
  }
}

for (const sig of ['SIGINT', 'SIGTERM'] as const)
  process.once(sig, () => {
    log(`${sig}: tearing down`);
    void cleanup().finally(() => process.exit(130));
  });

let code = 0;
try {
  await (securityOnly !== null ? securityMain() : seqReadOnly ? seqReadMain() : pinApart ? pinApartMain() : main());
} catch (e) {
  log(`FAILED: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  code = 1;
} finally {
  await cleanup();
}
process.exit(code);

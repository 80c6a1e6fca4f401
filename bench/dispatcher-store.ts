// Dispatcher store benchmark (issue 14): latency of dispatcher operations (create, open, acquire/release, barrier,
// resize, delete) on the LMDB store vs the etcd store, beside a
// raw etcd put and a raw guarded txn in the same run (the floor of an etcd write), and the time a standby dispatcher
// takes to lead after `kill -9` of the leader; and, for large datasets (1 GiB, 64 GiB, 1 TiB of 4 MiB chunks), the time
// to create one, to load the state with it (a new leader's load; LMDB: opening the store), and to change 3 of its chunks
// (a failover). Starts its own etcd (Debian's etcd-server) on free loopback ports and temp dirs; stops everything it
// started.
//   node --import=tsx bench/dispatcher-store.ts [--ops N] [--kills N] [--ttl S] [--reps N]
// Prints a table and writes bench/results/dispatcher-store.json.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { createServer } from 'node:net';
import { randomBytes } from 'node:crypto';
import { Etcd3 } from 'etcd3';
import { pino } from 'pino';
import { hotpotBin } from '../services/common/paths.ts';
import { Cluster, PROTOCOL_VERSION } from '../services/dispatcher/cluster.ts';
import { MrswMaster } from '../services/dispatcher/mrsw.ts';
import { Barriers } from '../services/dispatcher/barrier.ts';
import { followLeader } from '../services/common/dispatcher-client.ts';
import { hotpotV1 } from '../services/common/proto.ts';
import { unary } from '../services/common/rpc.ts';
import * as grpc from '@grpc/grpc-js';
import type { DatasetRecord, DispatcherStore } from '../services/dispatcher/store.ts';
import { EtcdStore } from '../services/dispatcher/store-etcd.ts';
import { LmdbStore } from '../services/dispatcher/store-lmdb.ts';

const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const OPS = arg('--ops', 200);
const KILLS = arg('--kills', 20);
const TTL_S = arg('--ttl', 2);
/** Repetitions of each large-dataset measurement (the median is reported). */
const REPS = arg('--reps', 3);
const CHUNK = 4 * 1024 * 1024;
/** Dataset of call `i` (warm-up calls have i < 0). */
const nm = (i: number): string => (i < 0 ? `w${String(-i)}` : `d${String(i)}`);
const log = pino({ level: 'silent' });
const work = mkdtempSync(join(tmpdir(), 'hotpot-bench-store-'));
const children: ChildProcess[] = [];

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

async function startEtcd(): Promise<string> {
  const [c, p] = [await freePort(), await freePort()];
  const cu = `http://127.0.0.1:${String(c)}`;
  const pu = `http://127.0.0.1:${String(p)}`;
  const child = spawn(
    'etcd',
    [
      ...['--name', 'b1', '--data-dir', join(work, 'etcd'), '--listen-client-urls', cu, '--advertise-client-urls', cu],
      ...['--listen-peer-urls', pu, '--initial-advertise-peer-urls', pu, '--initial-cluster', `b1=${pu}`],
    ],
    { stdio: 'ignore' },
  );
  children.push(child);
  const client = new Etcd3({ hosts: cu });
  for (let i = 0; ; i++) {
    try {
      await client.get('x').string();
      break;
    } catch (e) {
      if (i > 300) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  client.close();
  return `127.0.0.1:${String(c)}`;
}

interface Row {
  store: string;
  op: string;
  p50: number;
  p90: number;
  p99: number;
  perSecond: number;
}

async function measure(store: string, op: string, n: number, fn: (i: number) => Promise<unknown>): Promise<Row> {
  for (let i = 0; i < Math.min(20, n); i++) await fn(-1 - i); // warm-up
  const ms: number[] = [];
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await fn(i);
    ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  const total = Number(process.hrtime.bigint() - start) / 1e9;
  ms.sort((a, b) => a - b);
  const q = (p: number): number => ms[Math.min(ms.length - 1, Math.floor(p * ms.length))] ?? 0;
  return { store, op, p50: q(0.5), p90: q(0.9), p99: q(0.99), perSecond: n / total };
}

async function dispatcherOps(name: string, store: DispatcherStore): Promise<Row[]> {
  const cluster = new Cluster(store, { chunkSizeBytes: CHUNK, leaseMs: 600_000, failover: true }, log);
  await cluster.init();
  const mrsw = new MrswMaster(store, cluster, 'bench-secret-0123456789abcdef', log);
  mrsw.init();
  const barriers = new Barriers(store);
  await barriers.init();
  for (const n of ['n1', 'n2', 'n3']) {
    await cluster.join({
      identity: n,
      protocolVersion: PROTOCOL_VERSION,
      chunkSizeBytes: CHUNK,
      controlAddress: '127.0.0.1:1',
      dataAddress: '127.0.0.1:2',
      storeId: randomBytes(16).toString('hex'),
      storeIncarnation: 1,
    });
  }
  const nodeId = cluster.members()[0]?.id ?? 1;
  const rows = [
    await measure(name, 'create (64 MiB, N=2)', OPS, (i) =>
      cluster.createDataset({ name: nm(i), sizeBytes: 64 << 20, mode: 'mrsw', replicas: 2 }),
    ),
    await measure(name, 'open (read)', OPS, (i) => Promise.resolve(cluster.getDataset(nm(i)))),
    await measure(name, 'acquire + release', OPS, async (i) => {
      const l = await mrsw.acquire({
        dataset: nm(i),
        ranges: [{ offset: 0, length: 4096 }],
        leaseMs: 10_000,
        waitMs: 0,
        nodeId,
        holder: 'bench',
      });
      await mrsw.release(l.id);
    }),
    // Each arrival is a store write, durable before anyone is answered; a round of two: two writes, then both answers.
    await measure(name, 'barrier (1 party)', OPS, (i) => barriers.arrive(`b1-${String(i)}`, 1, 10_000)),
    await measure(name, 'barrier (2 parties)', OPS, (i) =>
      Promise.all([barriers.arrive(`b2-${String(i)}`, 2, 10_000), barriers.arrive(`b2-${String(i)}`, 2, 10_000)]),
    ),
    await measure(name, 'resize (+4 MiB)', OPS, (i) => cluster.resizeDataset(nm(i), (64 << 20) + CHUNK)),
    await measure(name, 'delete', OPS, (i) => cluster.deleteDataset(nm(i))),
  ];
  cluster.stop();
  mrsw.stop();
  barriers.stop();
  await store.close();
  return rows;
}

interface LargeRow {
  store: string;
  size: string;
  chunks: number;
  createMs: number;
  loadMs: number;
  change3Ms: number;
}

/** A dataset of `chunks` chunks placed as the dispatcher places them (3 nodes, N = 2, owner stores). */
function placed(name: string, id: number, chunks: number): DatasetRecord {
  const store = (n: number): string => randomBytes(16).toString('hex') + String(n);
  const stores = [store(1), store(2), store(3)];
  return {
    name,
    id,
    sizeBytes: chunks * CHUNK,
    mode: 'mrmw',
    replicas: 2,
    chunkSizeBytes: CHUNK,
    createdUnixMs: Date.now(),
    generation: 1,
    chunks: Array.from({ length: chunks }, (_, i) => ({
      owner: 1 + (i % 3),
      replicas: [1 + (i % 3), 1 + ((i + 1) % 3)],
      ownerStore: stores[i % 3] ?? '',
    })),
  };
}

const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)] ?? 0;
const since = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6;

/** Create, load and 3-chunk change times of large datasets on one backend; `open` opens the store (again). */
async function largeMaps(name: string, open: (rep: number) => Promise<DispatcherStore>): Promise<LargeRow[]> {
  const rows: LargeRow[] = [];
  for (const [size, chunks] of [
    ['1 GiB', 256],
    ['64 GiB', 16_384],
    ['1 TiB', 262_144],
  ] as const) {
    const create: number[] = [];
    const load: number[] = [];
    const change: number[] = [];
    for (let rep = 0; rep < REPS; rep++) {
      let s = await open(rep);
      const d = placed(`big${String(rep)}`, 1000 + rep, chunks);
      let t0 = process.hrtime.bigint();
      await s.commit({ putDatasets: [d] });
      create.push(since(t0));
      await s.close();
      t0 = process.hrtime.bigint();
      s = await open(rep);
      const loaded = s.getDataset(d.name);
      load.push(since(t0));
      if (loaded?.chunks.length !== chunks) throw new Error(`${name}: the ${size} dataset did not load back`);
      const moved = new Set([0, Math.floor(chunks / 2), chunks - 1]);
      const after = {
        ...loaded,
        chunks: loaded.chunks.map((c, i) => (moved.has(i) ? { ...c, owner: 3, replicas: [3, 1], era: 1 } : c)),
        generation: loaded.generation + 1,
      };
      t0 = process.hrtime.bigint();
      await s.commit({ putDatasets: [after] });
      change.push(since(t0));
      await s.commit({ removeDatasets: [d.name] });
      await s.close();
    }
    rows.push({ store: name, size, chunks, createMs: median(create), loadMs: median(load), change3Ms: median(change) });
  }
  return rows;
}

function startDispatcher(endpoint: string, port: number): { child: ChildProcess; ready: Promise<number> } {
  const child = spawn(
    process.execPath,
    [
      hotpotBin,
      'dispatcher',
      '--insecure',
      ...['--listen', `127.0.0.1:${String(port)}`, '--state-dir', join(work, `d${String(port)}`)],
      ...['--store', `etcd://${endpoint}`, '--etcd-prefix', '/bench-takeover/', '--election-ttl', String(TTL_S)],
    ],
    { stdio: ['ignore', 'pipe', 'ignore'], env: { ...process.env, HOTPOT_INSECURE: '1' } },
  );
  children.push(child);
  const ready = new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (l) => {
      if (l.startsWith('READY ')) resolve(Date.now());
    });
    child.once('exit', (code) => reject(new Error(`dispatcher exited (${String(code)}) before it led`)));
  });
  ready.catch(() => undefined);
  return { child, ready };
}

/**
 * `kills` leader kills: per kill, ms from the kill to the standby's READY, and to the first answer a client given
 * both addresses gets (it asks every 20 ms; it follows a standby's redirect, common/dispatcher-client.ts).
 */
async function takeovers(endpoint: string): Promise<{ lead: number[]; client: number[] }> {
  const ports = [await freePort(), await freePort()];
  const client = followLeader(
    ports.map((p) => `127.0.0.1:${String(p)}`).join(','),
    (target) => new hotpotV1.Dispatcher(target, grpc.credentials.createInsecure(), {}),
  );
  let lastError = '';
  const answered = (): Promise<boolean> =>
    unary((o, cb) => client.ListDatasets({}, o, cb), 1000).then(
      () => true,
      (e: unknown) => {
        lastError = e instanceof Error ? e.message : String(e);
        return false;
      },
    );
  const untilAnswered = async (): Promise<void> => {
    for (const until = Date.now() + 60_000; !(await answered()); await new Promise((r) => setTimeout(r, 20))) {
      if (Date.now() > until) throw new Error(`no dispatcher answered within 60 s: ${lastError}`);
    }
  };
  let leader = startDispatcher(endpoint, ports[0] ?? 0);
  await leader.ready;
  let leaderPort = 0;
  const lead: number[] = [];
  const seen: number[] = [];
  for (let k = 0; k < KILLS; k++) {
    const standbyPort = ports[1 - leaderPort] ?? 0;
    const standby = startDispatcher(endpoint, standbyPort);
    // The standby is up and watching once it printed STANDBY; give it no head start beyond that.
    await new Promise<void>((resolve) => {
      createInterface({ input: standby.child.stdout ?? process.stdin }).on('line', (l) => {
        if (l.startsWith('STANDBY ')) resolve();
      });
    });
    await untilAnswered();
    leader.child.kill('SIGKILL');
    const killed = Date.now();
    await new Promise((r) => setTimeout(r, 20));
    await untilAnswered();
    seen.push(Date.now() - killed);
    lead.push((await standby.ready) - killed);
    leader = standby;
    leaderPort = 1 - leaderPort;
  }
  leader.child.kill('SIGKILL');
  client.close();
  return { lead, client: seen };
}

async function main(): Promise<void> {
  const endpoint = await startEtcd();
  const rows: Row[] = [];
  rows.push(...(await dispatcherOps('lmdb', new LmdbStore(join(work, 'lmdb')))));
  const etcdStore = await EtcdStore.open(
    {
      endpoints: [endpoint],
      prefix: '/bench-ops/',
      electionTtlS: 5,
      candidate: { instance: 'bench', address: 'bench' },
    },
    log,
  );
  rows.push(...(await dispatcherOps('etcd', etcdStore)));
  const raw = new Etcd3({ hosts: `http://${endpoint}` });
  rows.push(
    await measure('etcd', 'raw put (floor)', OPS, (i) =>
      raw
        .put(`/bench-raw/k${String(i)}`)
        .value('v'.repeat(200))
        .exec(),
    ),
  );
  const lease = raw.lease(10);
  await lease.put('/bench-raw/leader').value('x');
  const rev = (await raw.get('/bench-raw/leader').exec()).kvs[0]?.create_revision ?? '0';
  rows.push(
    await measure('etcd', 'raw guarded txn (floor)', OPS, (i) =>
      raw
        .if('/bench-raw/leader', 'Create', '==', rev)
        .then(raw.put(`/bench-raw/t${String(i)}`).value('v'.repeat(200)))
        .commit(),
    ),
  );
  await lease.revoke();
  raw.close();
  const large = [
    ...(await largeMaps('lmdb', () => Promise.resolve(new LmdbStore(join(work, 'lmdb-large'))))),
    ...(await largeMaps('etcd', (rep) =>
      EtcdStore.open(
        {
          endpoints: [endpoint],
          prefix: `/bench-large-${String(rep)}/`,
          electionTtlS: 10,
          candidate: { instance: 'bench', address: 'bench' },
        },
        log,
      ),
    )),
  ];
  const kills = KILLS > 0 ? await takeovers(endpoint) : { lead: [], client: [] };

  const f = (v: number): string => v.toFixed(2).padStart(8);
  console.log(
    `machine: ${String(cpus().length)} vCPU ${cpus()[0]?.model ?? ''}; node ${process.version}; ${String(OPS)} ops each`,
  );
  console.log('store  operation                    p50 ms   p90 ms   p99 ms    ops/s');
  for (const r of rows) {
    console.log(
      `${r.store.padEnd(6)} ${r.op.padEnd(26)} ${f(r.p50)} ${f(r.p90)} ${f(r.p99)} ${r.perSecond.toFixed(0).padStart(8)}`,
    );
  }
  const floor = rows.find((r) => r.op === 'raw guarded txn (floor)')?.p50 ?? 0;
  const byOp = new Map(rows.filter((r) => r.store === 'lmdb').map((r) => [r.op, r]));
  console.log('ratios (p50): etcd / lmdb, etcd / raw guarded txn');
  for (const r of rows.filter((x) => x.store === 'etcd' && !x.op.startsWith('raw'))) {
    const l = byOp.get(r.op);
    console.log(
      `  ${r.op.padEnd(26)} ${l ? (r.p50 / l.p50).toFixed(2) : '-'}x  ${floor ? (r.p50 / floor).toFixed(2) : '-'}x`,
    );
  }
  console.log(
    `large datasets (4 MiB chunks; median of ${String(REPS)}): create, load (open the state), change 3 chunks`,
  );
  console.log('store  size      chunks   create ms    load ms  change3 ms');
  for (const r of large) {
    console.log(
      `${r.store.padEnd(6)} ${r.size.padEnd(7)} ${String(r.chunks).padStart(8)} ${f(r.createMs)}   ${f(r.loadMs)}    ${f(r.change3Ms)}`,
    );
  }
  const quantiles = (v: number[]): { p50: number; p99: number; max: number } => {
    const s = [...v].sort((a, b) => a - b);
    const q = (p: number): number => s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? 0;
    return { p50: q(0.5), p99: q(0.99), max: s[s.length - 1] ?? 0 };
  };
  let takeover = null;
  if (kills.lead.length > 0) {
    const lead = quantiles(kills.lead);
    const seen = quantiles(kills.client);
    takeover = {
      ttlS: TTL_S,
      kills: kills.lead.length,
      ...lead,
      all: kills.lead,
      client: { ...seen, all: kills.client },
    };
    const line = (what: string, q: { p50: number; p99: number; max: number }): string =>
      `${what}: p50 ${String(q.p50)} ms, p99 ${String(q.p99)} ms, max ${String(q.max)} ms`;
    console.log(
      `takeover after kill -9 (election TTL ${String(TTL_S)} s, goal TTL + 1 s; ${String(kills.lead.length)} kills)`,
    );
    console.log(`  ${line('the standby leads (READY)', lead)}`);
    console.log(`  ${line('a client given both addresses is answered', seen)}`);
  }
  mkdirSync('bench/results', { recursive: true });
  writeFileSync(
    'bench/results/dispatcher-store.json',
    JSON.stringify({ date: new Date().toISOString(), cpus: cpus().length, ops: OPS, rows, large, takeover }, null, 2) +
      '\n',
  );
}

try {
  await main();
} finally {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  rmSync(work, { recursive: true, force: true });
}

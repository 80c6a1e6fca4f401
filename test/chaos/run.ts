// One chaos run: cluster, datasets, workers, the fault schedule, then quiescence, the final state from fresh
// processes on every node, and the checker's summary (printed, and written as JSON). Parameters come from a
// ChaosConfig; chaosConfigFromEnv reads the CHAOS_* variables (docs/testing.md) over the defaults of the CI run.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { waitFor } from '../helpers/cluster.ts';
import { check, format, saveRecord, type RunRecord, type Summary } from './checker.ts';
import { ChaosCluster } from './cluster.ts';
import { FailoverWatch } from './failovers.ts';
import { describe, makeSchedule, runSchedule, type Fault, type FaultPlan } from './faults.ts';
import { Rng, randomSeed } from './rng.ts';
import { WorkerPool, runOnce, type WorkerSpec } from './workers.ts';
import {
  DATASETS,
  bankTotal,
  maxSlots,
  type FinalState,
  type Layout,
  type Role,
  type WorkerConfig,
} from './workload.ts';

export interface ChaosConfig {
  seed: number;
  nodes: number;
  replicas: number;
  durationMs: number;
  plan: FaultPlan;
  /** Given instead of a generated schedule (CHAOS_SCHEDULE='[]' runs without faults). */
  schedule: Fault[] | null;
  chunkSize: number;
  accounts: number;
  leaseMs: number;
  requestTimeoutMs: number;
  durability: 'memory' | 'disk';
  /** Copies of the worker set (12 workers each). */
  workerSets: number;
  /** Only these roles of the worker set (default all), to isolate one workload. */
  roles: Role[] | null;
  /** Directory for summary.json and history.jsonl (default: a new temp dir, kept). */
  out: string | null;
}

function envInt(name: string, dflt: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  const v = Number(raw);
  if (!Number.isSafeInteger(v) || v < 0) throw new Error(`${name} must be a non-negative integer, got "${raw}"`);
  return v;
}

export function chaosConfigFromEnv(): ChaosConfig {
  const base: ChaosConfig = {
    seed: randomSeed(),
    nodes: 3,
    replicas: 2,
    durationMs: 120_000,
    plan: { nodeKills: 10, dispatcherKills: 2, pauses: 1, restarts: 2, partitions: 1 },
    schedule: null,
    chunkSize: 64 * 1024,
    accounts: 1000,
    leaseMs: 3000,
    requestTimeoutMs: 2000,
    durability: 'memory',
    workerSets: 1,
    roles: null,
    out: null,
  };
  const durability = process.env.CHAOS_DURABILITY ?? base.durability;
  if (durability !== 'memory' && durability !== 'disk') throw new Error('CHAOS_DURABILITY must be memory or disk');
  const schedule = process.env.CHAOS_SCHEDULE;
  return {
    ...base,
    seed: envInt('CHAOS_SEED', base.seed),
    nodes: envInt('CHAOS_NODES', base.nodes),
    replicas: envInt('CHAOS_REPLICAS', base.replicas),
    durationMs: envInt('CHAOS_DURATION_S', base.durationMs / 1000) * 1000,
    plan: {
      nodeKills: envInt('CHAOS_NODE_KILLS', base.plan.nodeKills),
      dispatcherKills: envInt('CHAOS_DISPATCHER_KILLS', base.plan.dispatcherKills),
      pauses: envInt('CHAOS_PAUSES', base.plan.pauses),
      restarts: envInt('CHAOS_RESTARTS', base.plan.restarts),
      partitions: envInt('CHAOS_PARTITIONS', base.plan.partitions),
    },
    schedule: schedule ? (JSON.parse(schedule) as Fault[]) : base.schedule,
    accounts: envInt('CHAOS_ACCOUNTS', base.accounts),
    durability,
    workerSets: envInt('CHAOS_WORKER_SETS', base.workerSets),
    roles: process.env.CHAOS_ROLES ? parseRoles(process.env.CHAOS_ROLES) : base.roles,
    out: process.env.CHAOS_OUT ?? base.out,
  };
}

// One worker set; worker i runs on node i % nodes, so every role but the gRPC counter has copies on several nodes
// and the counter roles sit on different nodes.
const WORKER_SET: Role[] = [
  'bank',
  'bank',
  'bank',
  'snap-sdk',
  'snap-grpc',
  'snap-sdk',
  'ctr-tx',
  'ctr-tx',
  'ctr-tx-reads',
  'ctr-grpc',
  'mrsw',
  'mrsw',
];
// Pauses between operations (ms, uniform up to this): the counter workers share one counter, and without a pause
// the one on the counter's owner node (local fast path) commits so often that the others only see conflicts.
const THINK_MS: Partial<Record<Role, number>> = {
  'snap-sdk': 20,
  'snap-grpc': 20,
  'ctr-tx': 30,
  'ctr-tx-reads': 30,
  'ctr-grpc': 30,
  mrsw: 10,
};

function parseRoles(list: string): Role[] {
  const roles = list.split(',').map((r) => r.trim());
  const bad = roles.filter((r) => !WORKER_SET.includes(r as Role));
  if (bad.length > 0)
    throw new Error(`CHAOS_ROLES: unknown ${bad.join(', ')} (roles: ${[...new Set(WORKER_SET)].join(', ')})`);
  return roles as Role[];
}

function workerSpecs(c: ChaosConfig): WorkerSpec[] {
  const slots = new Map<string, number>();
  const datasetOf = (r: Role): string => (r.startsWith('ctr-') ? 'ctr' : r);
  const wanted = (r: Role): boolean => c.roles === null || c.roles.includes(r);
  const roles = Array.from({ length: c.workerSets }, () => WORKER_SET.filter(wanted)).flat();
  return roles.map((role, i) => {
    const slot = slots.get(datasetOf(role)) ?? 0;
    slots.set(datasetOf(role), slot + 1);
    if (slot >= maxSlots(c.chunkSize)) throw new Error(`too many ${role} workers for the chunk size`);
    return { role, name: `${role}-${String(i)}`, node: i % c.nodes, slot };
  });
}

/**
 * The final state from fresh processes on every node (in parallel), read in rounds until two rounds in a row agree
 * (at most 4): with the workers stopped and no page locked nothing should change any more, so a change between
 * rounds is reported (finalRounds) rather than mistaken for nodes that disagree.
 */
async function readFinalState(
  t: ExecutionContext,
  cluster: ChaosCluster,
  configOf: (node: number) => WorkerConfig,
): Promise<{ finals: FinalState[]; finalRounds: string[] }> {
  const rounds: string[] = [];
  for (;;) {
    const finals = await Promise.all(
      cluster.nodes.map(async (n) => {
        const r = await runOnce(t, configOf(n.index), 90_000);
        if (!r.final) throw new Error(`no final state from ${n.name}`);
        return r.final;
      }),
    );
    const key = JSON.stringify(finals);
    if (rounds.at(-1) === key || rounds.length === 3) return { finals, finalRounds: [...rounds, key] };
    rounds.push(key);
  }
}

export async function runChaos(t: ExecutionContext, c: ChaosConfig): Promise<Summary> {
  const log = (line: string): void => {
    console.log(`[chaos] ${line}`);
  };
  const schedule =
    c.schedule ?? makeSchedule(c.seed, { durationMs: c.durationMs, nodes: c.nodes, leaseMs: c.leaseMs, plan: c.plan });
  const layout: Layout = { chunk: c.chunkSize, accounts: c.accounts };
  const specs = workerSpecs(c);
  const config = {
    nodes: c.nodes,
    replicas: c.replicas,
    durationS: c.durationMs / 1000,
    chunk: c.chunkSize,
    accounts: c.accounts,
    durability: c.durability,
    leaseMs: c.leaseMs,
    requestTimeoutMs: c.requestTimeoutMs,
    workers: specs.length,
    ...(c.roles ? { roles: c.roles.join(',') } : {}),
  };
  log(`seed ${String(c.seed)} (rerun: CHAOS_SEED=${String(c.seed)}), config ${JSON.stringify(config)}`);
  log(`schedule ${JSON.stringify(schedule)}`);
  log(
    `schedule: ${schedule.length === 0 ? 'no faults' : schedule.map((f) => `+${String(f.at)} ${describe(f)}`).join('; ')}`,
  );

  const cluster = await ChaosCluster.start(t, {
    nodes: c.nodes,
    chunkSize: c.chunkSize,
    leaseMs: c.leaseMs,
    requestTimeoutMs: c.requestTimeoutMs,
    durability: c.durability,
  });
  const count = (pred: (r: Role) => boolean): number => specs.filter((s) => pred(s.role)).length;
  const slots = {
    bank: count((r) => r === 'bank'),
    ctr: count((r) => r.startsWith('ctr-')),
    mrsw: count((r) => r === 'mrsw'),
  };
  const configFor = (role: Role, node: number, seed: number, slot = 0, name: string = role): WorkerConfig => ({
    role,
    name,
    slot,
    seed,
    socket: cluster.node(node).socket,
    grpc: cluster.node(node).grpc,
    layout,
    replicas: c.replicas,
    thinkMs: THINK_MS[role] ?? 5,
    slots,
  });
  await runOnce(t, configFor('init', 0, c.seed), 60_000);

  const pool = new WorkerPool(t, specs, (s, incarnation) =>
    configFor(s.role, s.node, Rng.derive(c.seed, 2, specs.indexOf(s), incarnation), s.slot, s.name),
  );
  const start = Date.now();
  const watch = new FailoverWatch(cluster.dispatcher, Object.values(DATASETS), start);
  watch.run();
  pool.start();
  const applied = await runSchedule(cluster, schedule, start, log);
  const rest = start + c.durationMs - Date.now();
  if (rest > 0) await new Promise((r) => setTimeout(r, rest));
  const failovers = await watch.stop(
    applied,
    Array.from({ length: c.nodes }, (_, i) => cluster.node(i).id),
  );
  log(`load over after ${String(Date.now() - start)} ms; stopping the workers`);
  // An operation returns within ~20 s by itself (worker.ts): one still running after 45 s is stuck.
  await pool.stop(45_000);

  // Quiescence: every node alive, every commit lock released (recovery done), then the final state.
  await cluster.waitAllAlive(30_000);
  const lockedPages = await waitFor(
    'no locked pages',
    async () => {
      const l = await cluster.lockedPages();
      return l.every((x) => x === 0) ? l : undefined;
    },
    30_000,
  ).catch(() => cluster.lockedPages());
  log(`quiescent after ${String(Date.now() - start)} ms; locked pages per node [${lockedPages.join(', ')}]`);
  const { finals, finalRounds } = await readFinalState(t, cluster, (node) => configFor('final', node, c.seed));
  log(`final state read ${String(finalRounds.length)} times on every node: ${JSON.stringify(finals)}`);
  const record: RunRecord = {
    seed: c.seed,
    config,
    total: bankTotal(layout),
    specs,
    schedule,
    applied,
    start,
    ops: pool.ops,
    deaths: pool.deaths,
    killedAtStop: pool.killedAtStop,
    notes: Object.fromEntries(pool.notes),
    lockedPages,
    finals,
    finalRounds,
  };
  const summary: Summary = {
    ...check(record),
    failover: {
      failovers: failovers.failovers,
      handoffs: failovers.handoffs,
      faultToTakenOver: failovers.faultToTakenOver,
      faultToNamed: failovers.faultToNamed,
      takeover: failovers.takeover,
    },
  };
  const violated = Object.values(summary.violations).some((x) => x !== 0);
  const out = c.out ?? mkdtempSync(join(tmpdir(), 'hotpot-chaos-out-'));
  mkdirSync(out, { recursive: true });
  writeFileSync(
    join(out, 'summary.json'),
    JSON.stringify({ ...summary, schedule, failoverEvents: failovers.events }, null, 2) + '\n',
  );
  // The whole history is large: kept when asked for, or when it shows a violation (check.ts rechecks it).
  const keep = c.out !== null || violated;
  if (keep) saveRecord(out, record);
  // The processes' logs too, for a violation or a run given its own directory (CHAOS_OUT: a run to look into).
  if (keep) cluster.saveLogs(join(out, 'logs'));
  log(`\n${format(summary)}\nsummary: ${join(out, 'summary.json')}${keep ? `, history and record: ${out}` : ''}`);
  return summary;
}

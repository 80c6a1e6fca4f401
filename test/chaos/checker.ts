// The checker: computes the violations from the recorded history and the final state alone. It trusts nothing the
// code under test says about itself: a commit counts as applied only when it returned OK, the final state is read by
// fresh processes on every node, and every number is recomputed from those.
//
// Commit outcomes (docs/design/consistency.md): OK = applied. ABORTED (conflict) and FAILED_PRECONDITION (not enough
// nodes, no or expired lease) apply nothing, nor does a failure before the commit was sent. Anything else after
// the commit was sent is IN DOUBT: UNAVAILABLE may mean "decided, applied later", an app that died mid-commit may
// have committed, and DEADLINE_EXCEEDED, which should mean "nothing applied", is counted in doubt too, for safety.
// So: lost = acked - final when the final value is below what was acknowledged; phantom = final - (acked + in
// doubt) when it is above anything that may have been applied.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, type AppliedFault, type Fault } from './faults.ts';
import type { AppDeath, OpRecord, WorkerSpec } from './workers.ts';
import type { FinalState, Role } from './workload.ts';

export interface RunRecord {
  seed: number;
  config: Record<string, string | number>;
  total: number;
  specs: WorkerSpec[];
  schedule: Fault[];
  applied: AppliedFault[];
  /** Date.now() when the load started. */
  start: number;
  ops: OpRecord[];
  deaths: AppDeath[];
  killedAtStop: string[];
  notes: Record<string, number>;
  /** Per node, after the quiescence wait. */
  lockedPages: number[];
  finals: FinalState[];
  /** Every round of final reads (JSON of all nodes' states); the last is `finals`. */
  finalRounds: string[];
}

export interface CommitCounts {
  ops: number;
  acked: number;
  aborted: number;
  /** Failed in a way that applies nothing (not sent, FAILED_PRECONDITION). */
  notApplied: number;
  inDoubt: number;
  /** Transfers that found too little money and wrote nothing. */
  noop: number;
}

export interface ReadCounts {
  ok: number;
  wrong: number;
  aborted: number;
  failed: number;
}

export interface CounterResult {
  acked: number;
  inDoubt: number;
  /** Per node. */
  final: number[];
  lost: number;
  phantom: number;
  /** Sum of the workers' own counts (written in the same commits), per node. */
  slotSum: number[];
  /**
   * Every commit bumps the counter and its worker's own count together, so both must agree on every node.
   * Own counts above the counter: increments overwritten by a read-modify-write on a stale value (lost updates);
   * below it: a worker's own count overwritten from a stale base, or a commit applied in part. The largest
   * difference over the nodes.
   */
  ownCountsMismatch: number;
  slotLost: number;
  slotPhantom: number;
  /** In-doubt commits that did apply, by the workers' own counts. */
  inDoubtApplied: number;
  /** Acknowledged increments based on a stale read of the worker's own count (t: ms after the load started). */
  staleReads: StaleRead[];
  /**
   * Acknowledged increments that read the same counter value as another acknowledged one: each wrote read + 1, so one
   * overwrote the other (a lost update, whatever the timing); the first few, with both operations.
   */
  sameReads: { value: number; ops: { worker: string; node: number; t0: number; t1: number }[] }[];
}

export interface StaleRead {
  t: number;
  worker: string;
  node: number;
  ownCount: number;
  ackedBefore: number;
}

export interface Summary {
  seed: number;
  /** Date.now() when the load started; every other time in the summary is ms after it. */
  start: number;
  config: Record<string, string | number>;
  faults: AppliedFault[];
  violations: Record<string, number>;
  bank: {
    total: number;
    transfers: CommitCounts;
    finalSums: { node: number; sdk: number; grpc: number }[];
    lost: number;
    phantom: number;
    inDoubtApplied: number;
    negativeBalances: number;
  };
  counter: CounterResult;
  mrsw: CounterResult;
  snapshots: { sdk: ReadCounts; grpc: ReadCounts };
  commits: CommitCounts;
  inDoubtByCode: Record<string, number>;
  workers: Record<string, { role: Role; node: number; commits?: CommitCounts; reads?: ReadCounts; deaths: number }>;
  wrongSums: {
    t: number;
    worker: string;
    node: number;
    sum: number;
    delta: number;
    after: string;
    differs?: [number, number, number, number][];
  }[];
  errors: { what: string; count: number }[];
  appDeaths: (Omit<AppDeath, 't'> & { t: number })[];
  killedAtStop: string[];
  lockedPages: number[];
  finalRounds: number;
  notes: Record<string, number>;
  availability: Availability;
  /** Chunk failovers seen at the dispatcher during the load (failovers.ts); set by the runner. */
  failover?: {
    failovers: number;
    handoffs?: number;
    faultToTakenOver: number[];
    faultToNamed?: number[];
    takeover: number[];
  };
}

/** How long clients went without a successful operation (figures, not violations; ms after the load started). */
export interface Availability {
  /** Per role: the longest gap between two successful operations of one worker, and the fault it overlapped. */
  longestStall: { role: Role; worker: string; ms: number; from: number; fault: string }[];
  /** Per fault: how long after it ended (READY again) until every worker had succeeded once more. */
  afterFault: { fault: string; ms: number | null }[];
  /**
   * Per fault: the longest gap between two answered operations of a worker on another node (any worker, for the
   * dispatcher) that overlaps the fault (from its start to its end), and whose it was (null: one never had an answer
   * again before the load ended). The stall a fault costs the clients it does not stop by itself: a killed node's apps
   * die with it, a paused or cut-off node's stop with it. Answered: succeeded, or aborted by a conflict with another
   * client's commit (see `conflictAbort`) — the cluster decided and answered at once; a client that keeps losing races
   * to faster ones is starved by contention (it is, with no fault at all), not stalled by the fault. An abort
   * because a page stays locked (a commit in doubt, perhaps at a dead node) is not an answer.
   */
  duringFault: { fault: string; ms: number | null; worker: string }[];
}

/**
 * An operation aborted because another client's commit won a race (read validation, a write-write conflict, a base
 * version that moved): the cluster answered and the client retries at once. Not a lock held by a commit still in
 * flight or in doubt, which a fault can keep for a long time.
 */
export function conflictAbort(o: Pick<OpRecord, 'st' | 'msg'>): boolean {
  return o.st === 'aborted' && !/locked/i.test(o.msg ?? '');
}

/**
 * Gaps between a worker's successful operations (by completion time), from the history alone. The longest per role,
 * and per fault the time from its end until every worker had an operation succeed again (null: one never did before
 * the load ended).
 */
export function availability(r: Pick<RunRecord, 'ops' | 'start' | 'applied'>, specs: WorkerSpec[]): Availability {
  const okTimes = new Map<string, number[]>();
  const answerTimes = new Map<string, number[]>();
  const add = (m: Map<string, number[]>, worker: string, t: number): void => {
    const list = m.get(worker);
    if (list) list.push(t);
    else m.set(worker, [t]);
  };
  for (const o of r.ops) {
    if (o.t1 === null) continue;
    if (o.st === 'ok') add(okTimes, o.worker, o.t1 - r.start);
    if (o.st === 'ok' || conflictAbort(o)) add(answerTimes, o.worker, o.t1 - r.start);
  }
  for (const list of [...okTimes.values(), ...answerTimes.values()]) list.sort((a, b) => a - b);
  const overlapping = (from: number, to: number): string => {
    const f = r.applied.find((x) => x.began <= to && x.recovered >= from);
    return f ? describe(f) : 'no fault';
  };
  const best = new Map<Role, Availability['longestStall'][number]>();
  for (const s of specs) {
    const times = okTimes.get(s.name) ?? [];
    for (let i = 1; i < times.length; i++) {
      const from = times[i - 1] ?? 0;
      const ms = (times[i] ?? 0) - from;
      const cur = best.get(s.role);
      if (!cur || ms > cur.ms)
        best.set(s.role, { role: s.role, worker: s.name, ms, from, fault: overlapping(from, from + ms) });
    }
  }
  const afterFault = r.applied.map((f) => {
    let worst = 0;
    for (const s of specs) {
      const next = (okTimes.get(s.name) ?? []).find((t) => t >= f.recovered);
      if (next === undefined) return { fault: describe(f), ms: null };
      worst = Math.max(worst, next - f.recovered);
    }
    return { fault: describe(f), ms: worst };
  });
  const duringFault = r.applied.map((f) => {
    let worst = 0;
    let who = '';
    for (const s of specs) {
      if (f.target !== 'dispatcher' && s.node === f.target) continue;
      const times = answerTimes.get(s.name) ?? [];
      const i = times.findIndex((t) => t >= f.began);
      if (i < 0) return { fault: describe(f), ms: null, worker: s.name };
      // A later fault on the worker's own node stops it by itself: time from its start is that fault's, not this one's.
      const ownFault = Math.min(
        ...r.applied.filter((g) => g.target === s.node && g.began > f.began).map((g) => g.began),
      );
      // Each gap that ends after the start and opens before the end, counted from the fault's start at the earliest
      // (a worker losing races to other workers before the fault is not stalled by it).
      for (let j = i; j < times.length && (j === 0 || (times[j - 1] ?? 0) <= f.recovered); j++) {
        const opened = Math.max(j === 0 ? 0 : (times[j - 1] ?? 0), f.began);
        if (opened >= ownFault) break;
        const gap = Math.min(times[j] ?? 0, ownFault) - opened;
        if (gap >= worst) {
          worst = gap;
          who = s.name;
        }
      }
    }
    return { fault: describe(f), ms: worst, worker: who };
  });
  return { longestStall: [...best.values()].sort((a, b) => b.ms - a.ms), afterFault, duringFault };
}

type Outcome = 'applied' | 'aborted' | 'notApplied' | 'inDoubt' | 'noop';

function outcome(o: OpRecord): Outcome {
  if (o.st === 'ok') return o.op === 'transfer' && o.v?.moved !== true ? 'noop' : 'applied';
  if (o.st === 'aborted') return 'aborted';
  if (!o.sent || o.code === 'FAILED_PRECONDITION') return 'notApplied';
  return 'inDoubt';
}

const COMMIT_OPS = new Set(['transfer', 'incr', 'mrsw-incr']);
const READ_OPS = new Set(['snap-sdk', 'snap-grpc']);

function countCommits(ops: OpRecord[]): CommitCounts {
  const c: CommitCounts = { ops: 0, acked: 0, aborted: 0, notApplied: 0, inDoubt: 0, noop: 0 };
  for (const o of ops) {
    c.ops++;
    const k = outcome(o);
    if (k === 'applied') c.acked++;
    else c[k]++;
  }
  return c;
}

function countReads(ops: OpRecord[], total: number): ReadCounts {
  const c: ReadCounts = { ok: 0, wrong: 0, aborted: 0, failed: 0 };
  for (const o of ops) {
    if (o.st === 'ok') {
      c.ok++;
      if (o.v?.sum !== total) c.wrong++;
    } else if (o.st === 'aborted') c.aborted++;
    else c.failed++;
  }
  return c;
}

const pos = (x: number): number => Math.max(0, x);
const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);

/**
 * Per-worker slots (single writer each) against the worker's own acknowledged and in-doubt commits: a slot below
 * the acked count lost an acknowledged commit, above acked + in doubt it holds one never sent. In between, the
 * excess over acked is how many of the worker's in-doubt commits did apply.
 */
function slotCheck(
  workers: { name: string; slot: number }[],
  perWorker: Map<string, CommitCounts>,
  slotsPerNode: number[][],
): { lost: number; phantom: number; inDoubtApplied: number } {
  let lost = 0;
  let phantom = 0;
  let inDoubtApplied = 0;
  for (const w of workers) {
    const c = perWorker.get(w.name) ?? countCommits([]);
    const seen = slotsPerNode.map((s) => s[w.slot] ?? 0);
    lost += pos(c.acked - Math.max(...seen));
    phantom += pos(Math.min(...seen) - c.acked - c.inDoubt);
    inDoubtApplied += Math.min(c.inDoubt, pos(Math.max(...seen) - c.acked));
  }
  return { lost, phantom, inDoubtApplied };
}

export function counterResult(
  ops: OpRecord[],
  workers: { name: string; slot: number }[],
  perWorker: Map<string, CommitCounts>,
  finals: { value: number; slots: number[] }[],
  start: number,
): CounterResult {
  const c = countCommits(ops);
  // An acknowledged increment that read its worker's own count below the worker's acknowledged increments so far
  // was based on a stale value (its own earlier commits are durable and visible after a sync point, a new
  // connection or acquire), whatever its in-doubt commits did.
  const staleReads: StaleRead[] = [];
  for (const w of workers) {
    let ackedBefore = 0;
    for (const o of ops) {
      if (o.worker !== w.name || outcome(o) !== 'applied') continue;
      const read = o.v?.read;
      if (read && read[1] < ackedBefore) {
        staleReads.push({ t: o.t0 - start, worker: o.worker, node: o.node, ownCount: read[1], ackedBefore });
      }
      ackedBefore++;
    }
  }
  const byRead = new Map<number, OpRecord[]>();
  for (const o of ops) {
    const read = o.v?.read;
    if (!read || outcome(o) !== 'applied' || o.st !== 'ok') continue;
    byRead.set(read[0], [...(byRead.get(read[0]) ?? []), o]);
  }
  const sameReads = [...byRead.entries()]
    .filter(([, os]) => os.length > 1)
    .map(([value, os]) => ({
      value,
      ops: os.map((o) => ({ worker: o.worker, node: o.node, t0: o.t0 - start, t1: (o.t1 ?? o.t0) - start })),
    }));
  const values = finals.map((f) => f.value);
  const slotSum = finals.map((f) => sum(f.slots));
  const slots = slotCheck(
    workers,
    perWorker,
    finals.map((f) => f.slots),
  );
  return {
    acked: c.acked,
    inDoubt: c.inDoubt,
    final: values,
    lost: pos(c.acked - Math.max(...values)),
    phantom: pos(Math.min(...values) - c.acked - c.inDoubt),
    slotSum,
    ownCountsMismatch: Math.max(0, ...finals.map((f, i) => Math.abs((slotSum[i] ?? 0) - f.value))),
    slotLost: slots.lost,
    slotPhantom: slots.phantom,
    inDoubtApplied: slots.inDoubtApplied,
    staleReads,
    sameReads,
  };
}

const normalize = (msg: string): string => msg.replace(/\d+/g, '#').replace(/\s+/g, ' ').slice(0, 140);

export function check(r: RunRecord): Summary {
  const rel = (t: number): number => t - r.start;
  const byWorker = new Map<string, OpRecord[]>();
  for (const o of r.ops) {
    const list = byWorker.get(o.worker);
    if (list) list.push(o);
    else byWorker.set(o.worker, [o]);
  }
  const commitOps = r.ops.filter((o) => COMMIT_OPS.has(o.op));
  const perWorker = new Map<string, CommitCounts>();
  for (const [name, ops] of byWorker) perWorker.set(name, countCommits(ops.filter((o) => COMMIT_OPS.has(o.op))));
  const of = (pred: (s: WorkerSpec) => boolean): WorkerSpec[] => r.specs.filter(pred);
  const isCounter = (s: WorkerSpec): boolean => s.role.startsWith('ctr-');

  const transfers = r.ops.filter((o) => o.op === 'transfer');
  const bankSlots = slotCheck(
    of((s) => s.role === 'bank'),
    perWorker,
    r.finals.map((f) => f.bankSlots),
  );
  const counter = counterResult(
    commitOps.filter((o) => o.role.startsWith('ctr-')),
    of(isCounter),
    perWorker,
    r.finals.map((f) => ({ value: f.counter, slots: f.counterSlots })),
    r.start,
  );
  const mrsw = counterResult(
    commitOps.filter((o) => o.role === 'mrsw'),
    of((s) => s.role === 'mrsw'),
    perWorker,
    r.finals.map((f) => ({ value: f.mrsw, slots: f.mrswSlots })),
    r.start,
  );
  const sdkReads = r.ops.filter((o) => o.op === 'snap-sdk');
  const grpcReads = r.ops.filter((o) => o.op === 'snap-grpc');
  const snapshots = { sdk: countReads(sdkReads, r.total), grpc: countReads(grpcReads, r.total) };
  const finalSums = r.finals.map((f, node) => ({ node, sdk: f.bankSum, grpc: f.bankSumGrpc }));
  const reference = JSON.stringify(r.finals[0]);

  const violations: Record<string, number> = {
    wrongSnapshotSumsSdk: snapshots.sdk.wrong,
    wrongSnapshotSumsGrpc: snapshots.grpc.wrong,
    bankTotalNotConserved: finalSums.filter((s) => s.sdk !== r.total || s.grpc !== r.total).length,
    bankTransfersLost: bankSlots.lost,
    bankTransfersPhantom: bankSlots.phantom,
    counterIncrementsLost: counter.lost,
    counterIncrementsPhantom: counter.phantom,
    counterOwnCountsMismatch: counter.ownCountsMismatch,
    counterSlotsLostOrPhantom: counter.slotLost + counter.slotPhantom,
    counterStaleReads: counter.staleReads.length,
    counterIncrementsOnTheSameRead: counter.sameReads.length,
    mrswIncrementsLost: mrsw.lost,
    mrswIncrementsPhantom: mrsw.phantom,
    mrswOwnCountsMismatch: mrsw.ownCountsMismatch,
    mrswSlotsLostOrPhantom: mrsw.slotLost + mrsw.slotPhantom,
    mrswStaleReads: mrsw.staleReads.length,
    mrswIncrementsOnTheSameRead: mrsw.sameReads.length,
    nodesDisagreeingOnFinalState: r.finals.filter((f) => JSON.stringify(f) !== reference).length,
    finalStateChangedAfterQuiescence: r.finalRounds.at(-1) === r.finalRounds.at(-2) ? 0 : 1,
    appDeaths: r.deaths.length,
    workersHungAtStop: r.killedAtStop.length,
    nodesWithLockedPagesAtEnd: r.lockedPages.filter((n) => n !== 0).length,
  };

  const inDoubtByCode: Record<string, number> = {};
  for (const o of commitOps) {
    if (outcome(o) === 'inDoubt') {
      const k = o.st === 'died' ? 'app died' : (o.code ?? o.st);
      inDoubtByCode[k] = (inDoubtByCode[k] ?? 0) + 1;
    }
  }
  const lastFaultBefore = (t: number): string => {
    const f = r.applied.filter((x) => x.began <= t).at(-1);
    if (!f) return 'before any fault';
    const when = t < f.recovered ? 'during it' : `READY again ${String(t - f.recovered)} ms before`;
    return `${describe(f)} (began ${String(t - f.began)} ms before, ${when})`;
  };
  const wrongSums = [...sdkReads, ...grpcReads]
    .filter((o) => o.st === 'ok' && o.v?.sum !== r.total)
    .sort((a, b) => a.t0 - b.t0)
    .slice(0, 20)
    .map((o) => {
      // When the wrong read returned, not when its op ended (an SDK read's op goes on with a diagnosis, seconds).
      const t = rel(o.v?.readAt ?? o.t1 ?? o.t0);
      const s = o.v?.sum ?? Number.NaN;
      const differs = o.v?.differs;
      return {
        t,
        worker: o.worker,
        node: o.node,
        sum: s,
        delta: s - r.total,
        after: lastFaultBefore(t),
        ...(differs ? { differs } : {}),
      };
    });
  const errorCounts = new Map<string, number>();
  for (const o of r.ops) {
    if (o.st === 'ok' || o.st === 'aborted') continue;
    const k = o.st === 'died' ? `${o.op}: app died` : `${o.op}: ${o.code ?? ''}: ${normalize(o.msg ?? '')}`;
    errorCounts.set(k, (errorCounts.get(k) ?? 0) + 1);
  }
  const workers: Summary['workers'] = {};
  for (const s of r.specs) {
    const ops = byWorker.get(s.name) ?? [];
    const reads = ops.filter((o) => READ_OPS.has(o.op));
    workers[s.name] = {
      role: s.role,
      node: s.node,
      ...(reads.length > 0
        ? { reads: countReads(reads, r.total) }
        : { commits: perWorker.get(s.name) ?? countCommits([]) }),
      deaths: r.deaths.filter((d) => d.worker === s.name).length,
    };
  }
  return {
    seed: r.seed,
    start: r.start,
    config: r.config,
    faults: r.applied,
    violations,
    bank: {
      total: r.total,
      transfers: countCommits(transfers),
      finalSums,
      lost: bankSlots.lost,
      phantom: bankSlots.phantom,
      inDoubtApplied: bankSlots.inDoubtApplied,
      negativeBalances: Math.max(0, ...r.finals.map((f) => f.negativeBalances)),
    },
    availability: availability(r, r.specs),
    counter,
    mrsw,
    snapshots,
    commits: countCommits(commitOps),
    inDoubtByCode,
    workers,
    wrongSums,
    errors: [...errorCounts.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 15)
      .map(([what, count]) => ({ what, count })),
    appDeaths: r.deaths.map((d) => ({ ...d, t: rel(d.t) })),
    killedAtStop: r.killedAtStop,
    lockedPages: r.lockedPages,
    finalRounds: r.finalRounds.length,
    notes: r.notes,
  };
}

const pad = (s: string | number, n: number): string => String(s).padEnd(n);
const lpad = (s: string | number, n: number): string => String(s).padStart(n);

/** Durations in ms as "p50 …, p99 …, max … (n=…)" in seconds. */
export function quantiles(xs: number[]): string {
  if (xs.length === 0) return 'none';
  const sorted = [...xs].sort((a, b) => a - b);
  const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
  return `p50 ${(at(0.5) / 1000).toFixed(1)} s, p99 ${(at(0.99) / 1000).toFixed(1)} s, max ${((sorted.at(-1) ?? 0) / 1000).toFixed(1)} s (n=${String(xs.length)})`;
}

function counterLine(name: string, c: CounterResult): string {
  return `  ${name}: acked ${String(c.acked)}, in doubt ${String(c.inDoubt)} (of which applied ${String(c.inDoubtApplied)}), final per node [${c.final.join(', ')}], workers' own counts summed [${c.slotSum.join(', ')}]`;
}

/** The summary block printed at the end of a run. */
export function format(s: Summary): string {
  const v = s.violations;
  const row = (label: string, key: string, detail = ''): string =>
    `  ${pad(label, 44)}${lpad(v[key] ?? 0, 6)}${detail ? `   ${detail}` : ''}`;
  const lines = [
    `==== chaos summary: seed ${String(s.seed)} ====`,
    `config: ${Object.entries(s.config)
      .map(([k, x]) => `${k}=${String(x)}`)
      .join(' ')}`,
    `faults: ${s.faults.length === 0 ? 'none' : s.faults.map((f) => `${describe(f)} @+${(f.began / 1000).toFixed(1)}s (ready +${(f.recovered / 1000).toFixed(1)}s)`).join('; ')}`,
    'violations (each must be 0):',
    row('wrong snapshot sums, SDK ds.snapshot()', 'wrongSnapshotSumsSdk', `of ${String(s.snapshots.sdk.ok)} ok reads`),
    row(
      'wrong snapshot sums, gRPC Read{snapshot}',
      'wrongSnapshotSumsGrpc',
      `of ${String(s.snapshots.grpc.ok)} ok reads`,
    ),
    row(
      'final bank total wrong (nodes)',
      'bankTotalNotConserved',
      `total ${String(s.bank.total)}; per node sdk/grpc ${s.bank.finalSums.map((f) => `${String(f.sdk)}/${String(f.grpc)}`).join(' ')}`,
    ),
    row('bank transfers lost (acked, not applied)', 'bankTransfersLost'),
    row('bank transfers phantom (applied, never sent)', 'bankTransfersPhantom'),
    row('counter increments lost (acked - final)', 'counterIncrementsLost'),
    row('counter increments phantom', 'counterIncrementsPhantom'),
    row('counter != sum of workers own counts', 'counterOwnCountsMismatch'),
    row('counter workers own counts lost/phantom', 'counterSlotsLostOrPhantom'),
    row('counter increments based on a stale read', 'counterStaleReads'),
    row('counter increments acked on the same read', 'counterIncrementsOnTheSameRead'),
    row('MRSW increments lost (acked - final)', 'mrswIncrementsLost'),
    row('MRSW increments phantom', 'mrswIncrementsPhantom'),
    row('MRSW counter != sum of workers own counts', 'mrswOwnCountsMismatch'),
    row('MRSW workers own counts lost/phantom', 'mrswSlotsLostOrPhantom'),
    row('MRSW increments based on a stale read', 'mrswStaleReads'),
    row('MRSW increments acked on the same read', 'mrswIncrementsOnTheSameRead'),
    row('nodes disagreeing on the final state', 'nodesDisagreeingOnFinalState'),
    row(
      'final state still changing after quiescence',
      'finalStateChangedAfterQuiescence',
      `${String(s.finalRounds)} rounds read`,
    ),
    row('app deaths', 'appDeaths'),
    row('workers hung at stop (killed)', 'workersHungAtStop'),
    row('nodes with locked pages at the end', 'nodesWithLockedPagesAtEnd', `[${s.lockedPages.join(', ')}]`),
    'counters:',
    counterLine('counter', s.counter),
    counterLine('mrsw   ', s.mrsw),
    `commits: ${JSON.stringify(s.commits)}; in doubt by code ${JSON.stringify(s.inDoubtByCode)}`,
    `transfers: ${JSON.stringify(s.bank.transfers)}; in doubt that applied ${String(s.bank.inDoubtApplied)}`,
    `snapshot reads: sdk ${JSON.stringify(s.snapshots.sdk)}, grpc ${JSON.stringify(s.snapshots.grpc)}`,
    'workers:',
    ...Object.entries(s.workers).map(
      ([name, w]) =>
        `  ${pad(name, 16)} n${String(w.node + 1)}  ${JSON.stringify(w.commits ?? w.reads)}${w.deaths > 0 ? `  deaths ${String(w.deaths)}` : ''}`,
    ),
  ];
  if (s.wrongSums.length > 0) {
    lines.push('first wrong snapshot sums:');
    for (const w of s.wrongSums.slice(0, 8)) {
      lines.push(
        `  +${String(w.t)} ms ${w.worker} (n${String(w.node + 1)}): ${String(w.sum)} (${w.delta > 0 ? '+' : ''}${String(w.delta)}), after ${w.after}`,
      );
      if (w.differs)
        lines.push(
          `    then a right read there: ${w.differs.map(([a, c, x, y]) => `account ${String(a)} (chunk ${String(c)}) ${String(x)} -> ${String(y)}`).join('; ')}`,
        );
    }
  }
  const stale = [...s.counter.staleReads, ...s.mrsw.staleReads];
  if (stale.length > 0) {
    lines.push('first increments based on a stale read (own count read < own increments acknowledged before):');
    for (const x of stale.slice(0, 6)) {
      lines.push(
        `  +${String(x.t)} ms ${x.worker} (n${String(x.node + 1)}): read ${String(x.ownCount)}, acknowledged before ${String(x.ackedBefore)}`,
      );
    }
  }
  const same = [
    ...s.counter.sameReads.map((x) => ['counter', x] as const),
    ...s.mrsw.sameReads.map((x) => ['mrsw', x] as const),
  ];
  if (same.length > 0) {
    lines.push('first increments acknowledged on the same read (one overwrote the other):');
    for (const [what, x] of same.slice(0, 6)) {
      lines.push(
        `  ${what} ${String(x.value)}: ${x.ops.map((o) => `${o.worker} (n${String(o.node + 1)}) +${String(o.t0)}..+${String(o.t1)} ms`).join(', ')}`,
      );
    }
  }
  if (s.appDeaths.length > 0) {
    lines.push('app deaths:');
    for (const d of s.appDeaths.slice(0, 10)) {
      lines.push(
        `  +${String(d.t)} ms ${d.worker} (n${String(d.node + 1)}) ${d.signal ?? `exit ${String(d.code)}`} during ${d.during ?? '-'}: ${d.stderr.slice(-2).join(' | ')}`,
      );
    }
  }
  if (s.errors.length > 0) {
    lines.push('errors (top):');
    for (const e of s.errors.slice(0, 10)) lines.push(`  ${lpad(e.count, 5)}  ${e.what}`);
  }
  lines.push('availability (longest time a worker went without a successful operation, per role):');
  for (const x of s.availability.longestStall)
    lines.push(
      `  ${pad(x.role, 13)} ${lpad((x.ms / 1000).toFixed(1), 6)} s  ${x.worker} from +${(x.from / 1000).toFixed(1)}s (${x.fault})`,
    );
  if (s.availability.afterFault.length > 0) {
    const worst = Math.max(...s.availability.afterFault.map((f) => f.ms ?? Number.POSITIVE_INFINITY));
    lines.push(
      `  every worker succeeded again after each fault ended within ${Number.isFinite(worst) ? `${(worst / 1000).toFixed(1)} s` : 'never (one did not before the load ended)'}: ` +
        s.availability.afterFault
          .map((f) => `${f.fault} ${f.ms === null ? '-' : `${(f.ms / 1000).toFixed(1)}s`}`)
          .join(', '),
    );
  }
  if (s.availability.duringFault.length > 0) {
    const during = s.availability.duringFault;
    const done = during.filter((f) => f.ms !== null).map((f) => f.ms ?? 0);
    const worst = [...during].sort((a, b) => (b.ms ?? Number.POSITIVE_INFINITY) - (a.ms ?? Number.POSITIVE_INFINITY));
    lines.push(
      `  longest stall of a client on another node during each fault (conflict aborts count as answers): ${quantiles(done)}` +
        (done.length < during.length
          ? `; after ${String(during.length - done.length)} fault(s) a client never succeeded again`
          : '') +
        `; slowest: ${worst
          .slice(0, 5)
          .map((f) => `${f.fault} ${f.ms === null ? '-' : `${(f.ms / 1000).toFixed(1)}s`} (${f.worker})`)
          .join(', ')}`,
    );
  }
  if (s.failover) {
    const f = s.failover;
    lines.push(
      `failover: ${String(f.failovers)} chunks failed over (${String(f.handoffs ?? 0)} more moved by a restart's handoff); fault on the old owner -> taken over: ${quantiles(f.faultToTakenOver)}; fault -> new owner named: ${quantiles(f.faultToNamed ?? [])}; new owner named -> taken over: ${quantiles(f.takeover)}`,
    );
  }
  lines.push(`notes: ${JSON.stringify(s.notes)}`);
  return lines.join('\n');
}

/** A run as files: history.jsonl (one operation a line) and record.json (everything else). */
export function saveRecord(dir: string, r: RunRecord): void {
  writeFileSync(join(dir, 'history.jsonl'), r.ops.map((o) => JSON.stringify(o)).join('\n') + '\n');
  writeFileSync(join(dir, 'record.json'), JSON.stringify({ ...r, ops: undefined }, null, 1) + '\n');
}

export function loadRecord(dir: string): RunRecord {
  const ops = readFileSync(join(dir, 'history.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as OpRecord);
  return { ...(JSON.parse(readFileSync(join(dir, 'record.json'), 'utf8')) as Omit<RunRecord, 'ops'>), ops };
}

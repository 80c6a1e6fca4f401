// The chaos checker's availability figures (test/chaos/checker.ts), from a made-up history: which stall a fault is
// charged with, and which clients it is not.
import test from 'ava';
import { availability, conflictAbort, counterResult, quantiles } from '../../test/chaos/checker.ts';
import type { AppliedFault } from '../../test/chaos/faults.ts';
import type { OpRecord, WorkerSpec } from '../../test/chaos/workers.ts';

const start = 1_000_000;
const specs: WorkerSpec[] = [
  { role: 'bank', name: 'bank-0', node: 0, slot: 0 },
  { role: 'bank', name: 'bank-1', node: 1, slot: 1 },
];

/** Successful operations of `worker` completing at each of `at` (ms after the start). */
function oks(worker: string, node: number, at: number[]): OpRecord[] {
  return at.map((t) => ({
    worker,
    role: 'bank',
    node,
    incarnation: 0,
    op: 'transfer',
    t0: start + t - 1,
    t1: start + t,
    sent: true,
    st: 'ok',
  }));
}

const every = (from: number, to: number, step: number): number[] => {
  const out: number[] = [];
  for (let t = from; t <= to; t += step) out.push(t);
  return out;
};

test('a fault is charged with the stall of a client on another node, counted from its start', (t) => {
  // Node 2 (index 1) killed at 10 s, back at 13 s. bank-0 (node 1) succeeds once just after the kill, then not for
  // 15 s; bank-1 runs on the killed node and is not counted.
  const kill: AppliedFault = { at: 10_000, kind: 'kill9-node', target: 1, ms: 2000, began: 10_000, recovered: 13_000 };
  const ops = [
    ...oks('bank-0', 0, [...every(0, 10_000, 100), 10_010, ...every(25_010, 40_000, 100)]),
    ...oks('bank-1', 1, [...every(0, 9_900, 100), ...every(40_000, 40_000, 100)]),
  ];
  const a = availability({ ops, start, applied: [kill] }, specs);
  t.is(a.duringFault.length, 1);
  t.is(a.duringFault[0]?.worker, 'bank-0');
  t.is(a.duringFault[0]?.ms, 15_000);
  // bank-1's 30 s without success (its node was down) is the longest stall of the role, but not the fault's charge.
  t.is(a.longestStall[0]?.worker, 'bank-1');
});

test('losing races before a fault is not charged to it; a dispatcher fault counts every client', (t) => {
  const fault: AppliedFault = {
    at: 10_000,
    kind: 'kill9-dispatcher',
    target: 'dispatcher',
    ms: 1000,
    began: 10_000,
    recovered: 12_000,
  };
  // bank-0: nothing from 2 s to 10.5 s (contention), then fine. bank-1: 4 s without success from 11 s.
  const ops = [
    ...oks('bank-0', 0, [...every(0, 2_000, 100), ...every(10_500, 30_000, 100)]),
    ...oks('bank-1', 1, [...every(0, 11_000, 100), ...every(15_000, 30_000, 100)]),
  ];
  const a = availability({ ops, start, applied: [fault] }, specs);
  t.is(a.duringFault[0]?.worker, 'bank-1');
  t.is(a.duringFault[0]?.ms, 4_000);
});

test('a client that never succeeds again is reported as such', (t) => {
  const kill: AppliedFault = { at: 10_000, kind: 'kill9-node', target: 1, ms: 2000, began: 10_000, recovered: 13_000 };
  const ops = [...oks('bank-0', 0, every(0, 9_000, 100)), ...oks('bank-1', 1, every(0, 30_000, 100))];
  const a = availability({ ops, start, applied: [kill] }, specs);
  t.deepEqual(a.duringFault[0], { fault: 'kill9-node n2 2000 ms', ms: null, worker: 'bank-0' });
});

test('conflict aborts during a fault are answers, not a stall; aborts on a locked page are not', (t) => {
  const kill: AppliedFault = { at: 10_000, kind: 'kill9-node', target: 1, ms: 2000, began: 10_000, recovered: 13_000 };
  const aborts = (worker: string, at: number[], msg: string): OpRecord[] =>
    oks(worker, 0, at).map((o) => ({ ...o, st: 'aborted' as const, code: 'ABORTED', msg }));
  // bank-0 loses every race from 9 s to 25 s (answered every 100 ms); the longest gap between answers is 0.1 s.
  const raced = [
    ...oks('bank-0', 0, [...every(0, 9_000, 100), ...every(25_000, 30_000, 100)]),
    ...aborts('bank-0', every(9_100, 24_900, 100), 'commit conflict: peer 2: ABORTED; conflicting ranges: 0+8'),
    ...oks('bank-1', 1, every(0, 30_000, 100)),
  ];
  let a = availability({ ops: raced, start, applied: [kill] }, specs);
  t.is(a.duringFault[0]?.ms, 100);
  t.is(a.longestStall.find((x) => x.worker === 'bank-0')?.ms, 16_000, 'the per-role figure still counts successes');
  // The same, but every abort says a page stays locked (a commit in doubt at the killed node): a 15 s stall.
  const locked = [
    ...oks('bank-0', 0, [...every(0, 9_000, 100), ...every(25_000, 30_000, 100)]),
    ...aborts('bank-0', every(9_100, 24_900, 100), 'commit conflict: page locked by commit; conflicting ranges: 0+8'),
    ...oks('bank-1', 1, every(0, 30_000, 100)),
  ];
  a = availability({ ops: locked, start, applied: [kill] }, specs);
  t.is(a.duringFault[0]?.ms, 15_000);
  t.false(conflictAbort({ st: 'unavailable', msg: 'conflict' }));
});

test('a later fault on the client’s own node ends the stall charged to an earlier fault', (t) => {
  // Node 2 killed at 10 s (back at 13 s); node 1 — bank-0's own — killed at 14 s (back at 17 s). bank-0 succeeds
  // last at 10.01 s and again at 25 s: ~4 s of it are the first fault's (until its own node died), the rest its own.
  const kill2: AppliedFault = { at: 10_000, kind: 'kill9-node', target: 1, ms: 2000, began: 10_000, recovered: 13_000 };
  const kill1: AppliedFault = { at: 14_000, kind: 'kill9-node', target: 0, ms: 2000, began: 14_000, recovered: 17_000 };
  const ops = [
    ...oks('bank-0', 0, [...every(0, 10_000, 100), 10_010, ...every(25_010, 40_000, 100)]),
    ...oks('bank-1', 1, [...every(0, 9_900, 100), ...every(13_000, 40_000, 100)]),
  ];
  const a = availability({ ops, start, applied: [kill2, kill1] }, specs);
  t.is(a.duringFault[0]?.worker, 'bank-0');
  t.is(a.duringFault[0]?.ms, 3_990); // from its last success at 10.01 s to its own node's kill at 14 s
});

test('quantiles print seconds', (t) => {
  t.is(quantiles([]), 'none');
  t.is(quantiles([1000, 2000, 3000]), 'p50 2.0 s, p99 3.0 s, max 3.0 s (n=3)');
});

/** An acknowledged counter increment by `worker` that read the counter at `counter` and its own count at `own`. */
function incr(worker: string, counter: number, own: number, t: number): OpRecord {
  return {
    worker,
    role: 'ctr-tx',
    node: 0,
    incarnation: 0,
    op: 'incr',
    t0: start + t,
    t1: start + t + 1,
    sent: true,
    st: 'ok',
    v: { read: [counter, own] },
  };
}

test('two acknowledged increments that read the same counter value are a lost update, whatever their timing', (t) => {
  const workers = [
    { name: 'a', slot: 0 },
    { name: 'b', slot: 1 },
  ];
  const perWorker = new Map([
    ['a', { ops: 2, acked: 2, aborted: 0, notApplied: 0, inDoubt: 0, noop: 0 }],
    ['b', { ops: 1, acked: 1, aborted: 0, notApplied: 0, inDoubt: 0, noop: 0 }],
  ]);
  // a reads 0, b reads 1, then a reads `third` (its own count 1); the counter ends at `final`, the slots at [2, 1].
  const run = (third: number, final: number) =>
    counterResult(
      [incr('a', 0, 0, 10), incr('b', 1, 0, 20), incr('a', third, 1, 21)],
      workers,
      perWorker,
      [{ value: final, slots: [2, 1] }],
      start,
    );
  const lost = run(1, 2);
  t.is(lost.sameReads.length, 1);
  t.is(lost.sameReads[0]?.value, 1);
  t.deepEqual(
    lost.sameReads[0]?.ops.map((o) => o.worker),
    ['b', 'a'],
  );
  t.is(lost.ownCountsMismatch, 1);
  const fine = run(2, 3);
  t.is(fine.sameReads.length, 0);
  t.is(fine.ownCountsMismatch, 0);
});

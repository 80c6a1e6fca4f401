import test from 'ava';
import {
  computeRates,
  mergeHistograms,
  percentileUs,
  type Histogram,
  type NodeCounters,
} from '../../services/dashboard/rates.ts';

const BOUNDS = [1, 2, 4, 8];
const hist = (counts: number[], sumUs: number): Histogram => ({
  count: counts.reduce((a, b) => a + b, 0),
  sumUs,
  boundsUs: BOUNDS,
  counts,
});
const node = (nodeId: number, commits: number, extra: Partial<NodeCounters> = {}): NodeCounters => ({
  nodeId,
  commits,
  aborts: 0,
  faults: 0,
  commitLatency: null,
  faultLatency: null,
  ...extra,
});

test('rates are counter growth over the interval, summed over nodes', (t) => {
  const r = computeRates(
    { atMs: 1000, nodes: [node(1, 10, { aborts: 1, faults: 100 }), node(2, 5)] },
    { atMs: 3000, nodes: [node(1, 30, { aborts: 3, faults: 100 }), node(2, 9)] },
  );
  t.is(r.intervalMs, 2000);
  t.is(r.commitsPerS, 12); // (20 + 4) / 2 s
  t.is(r.abortsPerS, 1);
  t.is(r.faultsPerS, 0);
  t.deepEqual(r.totals, { commits: 39, aborts: 3, faults: 100 });
});

test('the first sample has totals but no rates', (t) => {
  const r = computeRates(null, { atMs: 5000, nodes: [node(1, 7)] });
  t.is(r.intervalMs, 0);
  t.is(r.commitsPerS, 0);
  t.is(r.totals.commits, 7);
  t.is(r.commitLatency, null);
});

test('a node seen for the first time adds to the totals but not to the rates (its counters hold its life)', (t) => {
  const r = computeRates({ atMs: 0, nodes: [node(1, 10)] }, { atMs: 1000, nodes: [node(1, 11), node(2, 500)] });
  t.is(r.commitsPerS, 1);
  t.is(r.totals.commits, 511);
});

test('a node whose counters went down restarted: all it counts now is new', (t) => {
  const r = computeRates({ atMs: 0, nodes: [node(1, 1000)] }, { atMs: 1000, nodes: [node(1, 3)] });
  t.is(r.commitsPerS, 3);
});

test('latency is that of the commits between the samples, from the histogram growth', (t) => {
  const before = node(1, 2, { commitLatency: hist([2, 0, 0, 0, 0], 2) });
  // Since then: 1 commit <= 2 us, 98 <= 8 us, 1 above 8 us.
  const now = node(1, 102, { commitLatency: hist([2, 1, 0, 98, 1], 2 + 800) });
  const r = computeRates({ atMs: 0, nodes: [before] }, { atMs: 1000, nodes: [now] });
  t.deepEqual(r.commitLatency, { count: 100, meanUs: 8, p50Us: 8, p99Us: 8 });
  t.is(r.faultLatency, null);
});

test('latency histograms of several nodes are merged bucket by bucket', (t) => {
  const m = mergeHistograms([hist([1, 0, 0, 0, 0], 1), hist([0, 0, 3, 0, 0], 12)]);
  t.deepEqual(m, { count: 4, sumUs: 13, boundsUs: BOUNDS, counts: [1, 0, 3, 0, 0] });
  t.is(mergeHistograms([]), null);
  // Other bounds: counted in count and mean, left out of the buckets.
  const odd = { count: 2, sumUs: 10, boundsUs: [5], counts: [2, 0] };
  t.deepEqual(mergeHistograms([hist([1, 0, 0, 0, 0], 1), odd])?.counts, [1, 0, 0, 0, 0]);
  t.is(mergeHistograms([hist([1, 0, 0, 0, 0], 1), odd])?.count, 3);
});

test('a percentile is the bound of its bucket, the last bound for the unbounded bucket', (t) => {
  t.is(percentileUs(hist([0, 10, 0, 0, 0], 15), 0.5), 2);
  t.is(percentileUs(hist([50, 0, 0, 0, 50], 0), 0.99), 8);
  t.is(percentileUs(hist([0, 0, 0, 0, 0], 0), 0.5), 0);
});

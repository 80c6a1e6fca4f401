// Live rates from counter samples: the dashboard asks every node for its cumulative counters and latency histograms
// (node Stats) at each tick, and turns two consecutive samples into per-second rates and the latency of what
// happened in between.

/** One latency histogram as a node reports it: log2 microsecond buckets, the last one unbounded. */
export interface Histogram {
  count: number;
  sumUs: number;
  boundsUs: number[];
  counts: number[];
}

/** The cumulative counters of one node at one moment. */
export interface NodeCounters {
  nodeId: number;
  commits: number;
  aborts: number;
  faults: number;
  commitLatency: Histogram | null;
  faultLatency: Histogram | null;
}

export interface Sample {
  atMs: number;
  nodes: NodeCounters[];
}

export interface LatencySummary {
  count: number;
  meanUs: number;
  /** Upper bound of the bucket holding the percentile; the last bound when it falls in the unbounded bucket. */
  p50Us: number;
  p99Us: number;
}

export interface Rates {
  atMs: number;
  intervalMs: number;
  commitsPerS: number;
  abortsPerS: number;
  faultsPerS: number;
  /** Latency of the commits and faults between the two samples (null when there were none). */
  commitLatency: LatencySummary | null;
  faultLatency: LatencySummary | null;
  /** Cumulative totals of the nodes in the newer sample. */
  totals: { commits: number; aborts: number; faults: number };
}

/**
 * How much a counter grew. A node that restarted starts its counters again from 0, so a smaller value than before is
 * all new.
 */
function growth(before: number, now: number): number {
  return now >= before ? now - before : now;
}

function histogramGrowth(before: Histogram | null, now: Histogram | null): Histogram | null {
  if (!now) return null;
  if (!before || now.count < before.count || !sameBounds(before, now)) return now;
  return {
    count: now.count - before.count,
    sumUs: now.sumUs - before.sumUs,
    boundsUs: now.boundsUs,
    counts: now.counts.map((c, i) => growth(before.counts[i] ?? 0, c)),
  };
}

function sameBounds(a: Histogram, b: Histogram): boolean {
  return a.boundsUs.length === b.boundsUs.length && a.boundsUs.every((x, i) => x === b.boundsUs[i]);
}

/** Adds histograms bucket by bucket; ones with other bounds than the first count towards count and mean only. */
export function mergeHistograms(hs: Histogram[]): Histogram | null {
  const [first] = hs;
  if (!first) return null;
  const out: Histogram = { count: 0, sumUs: 0, boundsUs: first.boundsUs, counts: first.counts.map(() => 0) };
  for (const h of hs) {
    out.count += h.count;
    out.sumUs += h.sumUs;
    if (!sameBounds(first, h)) continue;
    h.counts.forEach((c, i) => (out.counts[i] = (out.counts[i] ?? 0) + c));
  }
  return out;
}

/** The bucket bound at or below which a fraction `q` of the bucketed observations fall. */
export function percentileUs(h: Histogram, q: number): number {
  const total = h.counts.reduce((a, b) => a + b, 0);
  if (total === 0) return 0;
  const target = q * total;
  let seen = 0;
  for (let i = 0; i < h.counts.length; i++) {
    seen += h.counts[i] ?? 0;
    if (seen >= target) return h.boundsUs[i] ?? h.boundsUs[h.boundsUs.length - 1] ?? 0;
  }
  return h.boundsUs[h.boundsUs.length - 1] ?? 0;
}

export function summarise(h: Histogram | null): LatencySummary | null {
  if (!h || h.count <= 0) return null;
  return { count: h.count, meanUs: h.sumUs / h.count, p50Us: percentileUs(h, 0.5), p99Us: percentileUs(h, 0.99) };
}

/**
 * Rates between two samples of the cluster. A node seen for the first time in `now` adds nothing to the rates (its
 * counters hold its whole life, not the interval); a node missing from `now` adds nothing either.
 */
export function computeRates(before: Sample | null, now: Sample): Rates {
  const intervalMs = before ? Math.max(1, now.atMs - before.atMs) : 0;
  const prev = new Map((before?.nodes ?? []).map((n) => [n.nodeId, n]));
  let commits = 0;
  let aborts = 0;
  let faults = 0;
  const commitHs: Histogram[] = [];
  const faultHs: Histogram[] = [];
  for (const n of now.nodes) {
    const p = prev.get(n.nodeId);
    if (!p) continue;
    commits += growth(p.commits, n.commits);
    aborts += growth(p.aborts, n.aborts);
    faults += growth(p.faults, n.faults);
    const ch = histogramGrowth(p.commitLatency, n.commitLatency);
    if (ch) commitHs.push(ch);
    const fh = histogramGrowth(p.faultLatency, n.faultLatency);
    if (fh) faultHs.push(fh);
  }
  const perS = (x: number): number => (intervalMs > 0 ? (x * 1000) / intervalMs : 0);
  const sum = (f: (n: NodeCounters) => number): number => now.nodes.reduce((a, n) => a + f(n), 0);
  return {
    atMs: now.atMs,
    intervalMs,
    commitsPerS: perS(commits),
    abortsPerS: perS(aborts),
    faultsPerS: perS(faults),
    commitLatency: summarise(mergeHistograms(commitHs)),
    faultLatency: summarise(mergeHistograms(faultHs)),
    totals: { commits: sum((n) => n.commits), aborts: sum((n) => n.aborts), faults: sum((n) => n.faults) },
  };
}

// Latency summaries and the plain-text tables every benchmark prints.

export interface Summary {
  n: number;
  /** Percentiles and mean in microseconds. */
  p50: number;
  p90: number;
  p99: number;
  min: number;
  max: number;
  mean: number;
  /** Operations per second of the closed loop (n / sum of latencies). */
  perSecond: number;
}

/** Summarises latencies given in nanoseconds. */
export function summarize(ns: readonly number[]): Summary {
  if (ns.length === 0) throw new Error('summarize: no samples');
  const s = [...ns].sort((a, b) => a - b);
  const at = (q: number): number => (s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? 0) / 1000;
  const total = s.reduce((a, b) => a + b, 0);
  return {
    n: s.length,
    p50: at(0.5),
    p90: at(0.9),
    p99: at(0.99),
    min: (s[0] ?? 0) / 1000,
    max: (s[s.length - 1] ?? 0) / 1000,
    mean: total / s.length / 1000,
    perSecond: total > 0 ? (s.length * 1e9) / total : 0,
  };
}

/** Parses "one integer nanosecond latency per line" output of the C floors. */
export function parseSamples(text: string): number[] {
  const out: number[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const v = Number(line);
    if (!Number.isFinite(v) || v < 0) throw new Error(`bad sample line: ${JSON.stringify(line)}`);
    out.push(v);
  }
  return out;
}

export function us(v: number): string {
  if (v >= 1000) return `${(v / 1000).toFixed(2)} ms`;
  if (v >= 100) return `${v.toFixed(0)} µs`;
  return `${v.toFixed(1)} µs`;
}

export function ratio(a: number, b: number | undefined): string {
  return b === undefined || b <= 0 ? '-' : `${(a / b).toFixed(2)}×`;
}

export function table(head: string[], rows: string[][]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string => `| ${r.map((c, i) => c.padEnd(w[i] ?? 0)).join(' | ')} |`;
  return [line(head), `|${w.map((x) => '-'.repeat(x + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

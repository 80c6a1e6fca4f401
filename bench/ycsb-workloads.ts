// What bench/ycsb.ts and its client processes (bench/ycsb-client.ts) share: the job, the workloads, the result.

export interface ClientJob {
  target: 'hotpot' | 'redis';
  /** hotpot: the node's socket and the dataset; redis: the primary's port. */
  socket?: string;
  name?: string;
  port?: number;
  records: number;
  valueBytes: number;
  seed: number;
  /** Samples kept per operation kind (reservoir), for the percentiles. */
  keepSamples: number;
  /** hotpot loader: create the store with this dataset size. */
  createSize?: number;
}

/** Operation mix of a workload: fractions of read, update and read-modify-write (YCSB core workloads). */
export const WORKLOADS: Record<string, { read: number; update: number; rmw: number; what: string }> = {
  A: { read: 0.5, update: 0.5, rmw: 0, what: '50% read, 50% update' },
  B: { read: 0.95, update: 0.05, rmw: 0, what: '95% read, 5% update' },
  C: { read: 1, update: 0, rmw: 0, what: '100% read' },
  F: { read: 0.5, update: 0, rmw: 0.5, what: '50% read, 50% read-modify-write' },
};

export interface PhaseResult {
  workload: string;
  ops: number;
  elapsedMs: number;
  /** Latency samples in ns by kind (a uniform sample when there were more than keepSamples). */
  samples: Record<'read' | 'update' | 'rmw', number[]>;
  errors: number;
  notFound: number;
  /** Hotpot: the store's commit, conflict and snapshot counters during the phase. */
  store?: { commits: number; conflicts: number; torn: number; snapshotRuns: number };
}

export const keyOf = (i: number): string => `user${String(i).padStart(10, '0')}`;

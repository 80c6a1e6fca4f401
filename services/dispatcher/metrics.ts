// The dispatcher's metrics: the cluster as the dispatcher sees it (members by state, datasets, chunks without a live
// owner or below their N, failovers) and the latency of every unary RPC it answers.
//
// Configuration (environment; its own variables so a dispatcher started with the nodes' environment, as under
// `hotpot up`, neither exports nor binds their port unless asked):
//   HOTPOT_DISPATCHER_METRICS_EXPORTER   none | otlp | prometheus | memory   (default none)
//   HOTPOT_DISPATCHER_PROMETHEUS_PORT    scrape endpoint port               (default 9463)
//   HOTPOT_DISPATCHER_PROMETHEUS_HOST    address it binds                   (default 127.0.0.1)
//   HOTPOT_DISPATCHER_METRICS_INTERVAL_MS  export interval for otlp/memory  (default 10000 / 200)
import type * as grpc from '@grpc/grpc-js';
import { status } from '@grpc/grpc-js';
import type { Logger } from '../common/logger.ts';
import { metricsConfig, startMeterPipeline, type MeterPipeline, type MetricsConfig } from '../common/telemetry.ts';
import type { Cluster } from './cluster.ts';
import type { DatasetRecord } from './store.ts';

export function dispatcherMetricsConfig(env: NodeJS.ProcessEnv = process.env): MetricsConfig {
  return metricsConfig(env, 'HOTPOT_DISPATCHER_', 9463);
}

/** RPC latency buckets in seconds: 100 µs to 10 s. */
const RPC_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Chunks whose owner is not alive, and chunks with fewer live holders than their dataset's N. */
export function chunkHealth(
  datasets: readonly DatasetRecord[],
  alive: ReadonlySet<number>,
): { withoutOwner: number; underReplicated: number } {
  let withoutOwner = 0;
  let underReplicated = 0;
  for (const ds of datasets) {
    for (const c of ds.chunks) {
      if (!alive.has(c.owner)) withoutOwner++;
      const holders = new Set([c.owner, ...c.replicas].filter((id) => alive.has(id)));
      if (holders.size < ds.replicas) underReplicated++;
    }
  }
  return { withoutOwner, underReplicated };
}

export interface DispatcherMetrics {
  pipeline: MeterPipeline;
  observeCall: (method: string, code: grpc.status, seconds: number) => void;
}

export async function startDispatcherMetrics(
  config: MetricsConfig,
  cluster: Cluster,
  log: Logger | null,
): Promise<DispatcherMetrics | null> {
  const pipeline = await startMeterPipeline(config, 'hotpot-dispatcher', log);
  if (!pipeline) return null;
  const meter = pipeline.provider.getMeter('hotpot-dispatcher');
  const gauge = (name: string, unit: string, description: string) =>
    meter.createObservableGauge(`hotpot.dispatcher.${name}`, { unit, description });
  const members = gauge('members', '{node}', 'cluster members by state (alive, dead, left)');
  const datasets = gauge('datasets', '{dataset}', 'datasets in the namespace');
  const withoutOwner = gauge(
    'chunks.without_owner',
    '{chunk}',
    'chunks whose owner is not alive (unavailable until failover or its return)',
  );
  const underReplicated = gauge(
    'chunks.under_replicated',
    '{chunk}',
    "chunks with fewer live holders in the directory than their dataset's N",
  );
  const failovers = meter.createObservableCounter('hotpot.dispatcher.chunk_failovers', {
    unit: '{chunk}',
    description: 'chunks failed over to a new owner since this dispatcher started',
  });
  meter.addBatchObservableCallback(
    (r) => {
      const all = cluster.members();
      for (const state of ['ALIVE', 'DEAD', 'LEFT'] as const) {
        r.observe(members, all.filter((n) => n.state === state).length, { state: state.toLowerCase() });
      }
      const list = cluster.listDatasets();
      r.observe(datasets, list.length);
      const health = chunkHealth(list, new Set(cluster.liveNodes().map((n) => n.id)));
      r.observe(withoutOwner, health.withoutOwner);
      r.observe(underReplicated, health.underReplicated);
      r.observe(failovers, cluster.chunkFailovers);
    },
    [members, datasets, withoutOwner, underReplicated, failovers],
  );
  const rpc = meter.createHistogram('hotpot.dispatcher.rpc.duration_seconds', {
    unit: 's',
    description: 'time to answer a unary RPC, by method and status code',
    advice: { explicitBucketBoundaries: RPC_BUCKETS },
  });
  return {
    pipeline,
    observeCall: (method, code, seconds) => {
      rpc.record(seconds, { method: method.replace(/^\/hotpot\.v1\.Dispatcher\//, ''), code: status[code] });
    },
  };
}

// The node daemon's observability: turns the engine's span records into OpenTelemetry spans (after the fact, with
// the recorded times and W3C parents), exports the engine's counters and latency histograms as OpenTelemetry
// metrics, and serves the operator views (Stats extras, the Events stream, the run-time debug mask).
//
// Configuration (environment, validated once at start):
//   HOTPOT_METRICS_EXPORTER   none | otlp | prometheus | memory          (default none)
//   HOTPOT_PROMETHEUS_PORT    port of the Prometheus scrape endpoint   (default 9464)
//   HOTPOT_PROMETHEUS_HOST    address it binds                         (default 127.0.0.1)
//   HOTPOT_METRICS_INTERVAL_MS  export interval for otlp/memory        (default 10000 / 200)
//   HOTPOT_FAULT_TRACE_SAMPLE one remote page fault in N becomes a span when tracing is on (0 = none, default 100)
import { DEBUG_MASK_ALL_BITS } from '../common/debug-mask.ts';
import type * as grpc from '@grpc/grpc-js';
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  trace,
  type Attributes,
  type Context,
  type HrTime,
  type Meter,
} from '@opentelemetry/api';
import type { InMemoryMetricExporter, MeterProvider } from '@opentelemetry/sdk-metrics';
import { invalidArgument, toServiceError } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import {
  intEnv,
  metricsConfig,
  startMeterPipeline,
  tracingEnabled,
  withIds,
  type MetricsConfig,
} from '../common/telemetry.ts';
import type { Event } from '../generated/hotpot/v1/Event.ts';
import type { EventsRequest__Output } from '../generated/hotpot/v1/EventsRequest.ts';
import type { LatencyHistogram } from '../generated/hotpot/v1/LatencyHistogram.ts';
import type { SetDebugMaskRequest__Output } from '../generated/hotpot/v1/SetDebugMaskRequest.ts';
import type { SetDebugMaskResponse } from '../generated/hotpot/v1/SetDebugMaskResponse.ts';
import {
  engineCounterTable,
  engineDrainEvents,
  engineDrainSpans,
  engineHistograms,
  engineInspect,
  engineSetDebugMask,
  engineSetTracing,
  engineStats,
  type EngineCounters,
  type EngineEvent,
  type EngineHandle,
  type EngineHistogram,
  type EngineHistograms,
  type EngineSpanRecord,
} from '../../native/index.ts';

export interface ObservabilityConfig extends MetricsConfig {
  faultTraceSample: number;
}

export function observabilityConfig(env: NodeJS.ProcessEnv = process.env): ObservabilityConfig {
  return {
    ...metricsConfig(env, 'HOTPOT_', 9464),
    faultTraceSample: intEnv(env, 'HOTPOT_FAULT_TRACE_SAMPLE', 100, 0, 2 ** 32 - 1),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Spans

function hrTime(unixNs: string): HrTime {
  const n = BigInt(unixNs);
  return [Number(n / 1_000_000_000n), Number(n % 1_000_000_000n)];
}

function spanKind(name: string): SpanKind {
  // The node's commit span serves the app's request; owner spans serve the committer's.
  return name === 'hotpot.node.commit' || name.startsWith('hotpot.owner.') ? SpanKind.SERVER : SpanKind.INTERNAL;
}

/** Creates one OTel span per engine span record, keeping the engine's ids so children on other nodes attach. */
export function exportSpanRecords(records: EngineSpanRecord[]): void {
  const tracer = trace.getTracer('hotpot-engine');
  for (const r of records) {
    const parent: Context = r.parentSpanId
      ? trace.setSpanContext(ROOT_CONTEXT, {
          traceId: r.traceId,
          spanId: r.parentSpanId,
          traceFlags: TraceFlags.SAMPLED,
          isRemote: true,
        })
      : ROOT_CONTEXT;
    const attributes: Attributes = { ...r.attributes };
    const span = withIds({ traceId: r.traceId, spanId: r.spanId }, () =>
      tracer.startSpan(r.name, { kind: spanKind(r.name), startTime: hrTime(r.startUnixNs), attributes }, parent),
    );
    if (r.status !== 'OK') span.setStatus({ code: SpanStatusCode.ERROR, message: r.status });
    span.end(hrTime(r.endUnixNs));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Metrics

/** What the metrics read: the engine's counters and histograms (a live engine, or a test's stand-in source). */
export interface EngineMetricsSource {
  counters(): EngineCounters;
  histograms(): EngineHistograms;
  /** Owned chunks with fewer live copies than their dataset's N (engineStats chunks, underReplicated). */
  underReplicatedChunks(): number;
  /** This node's id, the `node` label of every metric (0 until it joined: nothing is exported before). */
  nodeId(): number;
}

const HISTOGRAMS = ['fault', 'fetch', 'commit'] as const;

/**
 * The exported name of an engine counter: the engine's table names it (engineCounterTable), and a byte counter
 * gets its unit in the name, as Prometheus conventions ask (the exporter adds `_total` to every counter itself):
 * hotpot.network.bytes_in -> hotpot.network.received_bytes -> hotpot_network_received_bytes_total.
 */
export function counterMetricName(c: { metric: string; unit: string }): string {
  if (c.unit !== 'By') return c.metric;
  const m = /^(.*)\.bytes_(in|out)$/.exec(c.metric);
  if (m) return `${m[1] ?? ''}.${m[2] === 'in' ? 'received' : 'sent'}_bytes`;
  return c.metric.endsWith('_bytes') ? c.metric : `${c.metric}_bytes`;
}

/**
 * Registers the engine metrics on `meter` and returns a `sync` to call periodically. Counters: one observable counter
 * per line of the engine's table (engineCounterTable), read when metrics are collected. Durations: the engine
 * aggregates them in log2 µs buckets itself, so each sync records, per bucket, as many values as the bucket grew (at
 * the bucket's geometric middle) into an OTel histogram in seconds with the same boundaries
 * (hotpot.commit.duration_seconds, ...). Counts per bucket are exact; sums are approximate within a bucket. Every
 * data point carries the label node="<node id>".
 */
export function registerEngineMetrics(meter: Meter, source: EngineMetricsSource): { sync: () => void } {
  const table = engineCounterTable();
  const observables = table.map((c) =>
    meter.createObservableCounter(counterMetricName(c), { unit: c.unit, description: c.description }),
  );
  const label = (): Attributes | null => {
    const id = source.nodeId();
    return id > 0 ? { node: String(id) } : null;
  };
  meter
    .createObservableGauge('hotpot.chunks.under_replicated', {
      unit: '{chunk}',
      description: 'chunks owned by this node with fewer live copies than their dataset asks for',
    })
    .addCallback((r) => {
      const node = label();
      if (node) r.observe(source.underReplicatedChunks(), node);
    });
  meter.addBatchObservableCallback((r) => {
    const node = label();
    if (!node) return;
    const counters = source.counters();
    table.forEach((c, i) => {
      const o = observables[i];
      const value = counters[c.jsName];
      if (o && value !== undefined) r.observe(o, value, node);
    });
  }, observables);
  const first = source.histograms();
  const instruments = HISTOGRAMS.map((h) =>
    meter.createHistogram(`hotpot.${h}.duration_seconds`, {
      unit: 's',
      description: `${h} duration measured by the engine`,
      advice: { explicitBucketBoundaries: first[h].boundsUs.map((us) => us / 1e6) },
    }),
  );
  const seen = HISTOGRAMS.map(() => [] as number[]);
  const sync = (): void => {
    const node = label();
    if (!node) return;
    const now = source.histograms();
    HISTOGRAMS.forEach((h, i) => {
      const hist: EngineHistogram = now[h];
      const prev = seen[i] ?? [];
      const inst = instruments[i];
      if (!inst) return;
      hist.counts.forEach((count, b) => {
        const delta = count - (prev[b] ?? 0);
        if (delta <= 0) return;
        const upper = hist.boundsUs[b] ?? 2 * (hist.boundsUs[b - 1] ?? 1);
        const valueUs = b === 0 ? 0.5 : upper / Math.SQRT2;
        for (let k = 0; k < delta; k++) inst.record(valueUs / 1e6, node);
        prev[b] = count;
      });
      seen[i] = prev;
    });
  };
  return { sync };
}

export interface MetricsHandle {
  provider: MeterProvider;
  memory: InMemoryMetricExporter | null;
  sync: () => void;
  shutdown: () => Promise<void>;
}

export async function startMetrics(
  config: MetricsConfig,
  serviceName: string,
  source: EngineMetricsSource,
  log: Logger | null,
): Promise<MetricsHandle | null> {
  const pipeline = await startMeterPipeline(config, serviceName, log);
  if (!pipeline) return null;
  const { sync } = registerEngineMetrics(pipeline.provider.getMeter('hotpot-engine'), source);
  return { provider: pipeline.provider, memory: pipeline.memory, sync, shutdown: pipeline.shutdown };
}

// ---------------------------------------------------------------------------------------------------------------
// The node's observability hub

function histogramMessage(h: EngineHistogram): LatencyHistogram {
  return { count: h.count, sumUs: h.sumUs, boundsUs: h.boundsUs, counts: h.counts };
}

const EVENT_KIND_MASK: Record<EngineEvent['kind'], number> = {
  fault_local: 1,
  fault_remote: 1,
  fetch_served: 2,
  commit_start: 4,
  commit_end: 4,
  abort: 4,
  conflict: 4,
  owner: 8,
  coherence_push: 16,
  replica_sent: 32,
  replica_received: 32,
  membership: 64,
  fenced: 64,
  rereplicated: 32,
  chunk_owned: 64,
  chunk_handed_off: 64,
  pages_lost: 64,
};

export class NodeObservability {
  private spanTimer: NodeJS.Timeout | null = null;
  private metrics: MetricsHandle | null = null;
  private readonly followers = new Set<grpc.ServerWritableStream<EventsRequest__Output, Event>>();
  private stopped = false;

  constructor(
    private readonly handle: EngineHandle,
    private readonly config: ObservabilityConfig,
    private readonly nodeId: () => number,
    private readonly log: Logger,
  ) {}

  async start(serviceName: string): Promise<void> {
    const tracing = tracingEnabled();
    engineSetTracing(this.handle, tracing, tracing ? this.config.faultTraceSample : 0);
    this.metrics = await startMetrics(
      this.config,
      serviceName,
      {
        counters: () => engineStats(this.handle).counters,
        histograms: () => engineHistograms(this.handle),
        underReplicatedChunks: () => engineStats(this.handle).chunks.filter((c) => c.owned && c.underReplicated).length,
        nodeId: this.nodeId,
      },
      this.log,
    );
    if (tracing || this.metrics) {
      this.spanTimer = setInterval(() => {
        this.tick();
      }, 200);
      this.spanTimer.unref();
    }
  }

  /** Drains span records into OTel spans and brings the latency histograms up to date. */
  tick(): void {
    if (this.stopped) return;
    try {
      for (;;) {
        const batch = engineDrainSpans(this.handle, 1024);
        if (batch.length === 0) break;
        exportSpanRecords(batch);
        if (batch.length < 1024) break;
      }
      this.metrics?.sync();
    } catch (e) {
      this.log.warn({ err: e instanceof Error ? e.message : String(e) }, 'observability drain failed');
    }
  }

  /** Extra fields of the Stats response (redo in flight, sessions, pool usage, histograms, mask). */
  statsExtras(): {
    redo: ReturnType<typeof engineInspect>['redo'];
    sessions: ReturnType<typeof engineInspect>['sessions'];
    faultLatency: LatencyHistogram;
    fetchLatency: LatencyHistogram;
    commitLatency: LatencyHistogram;
    debugMask: number;
  } {
    const v = engineInspect(this.handle);
    const h = engineHistograms(this.handle);
    return {
      redo: v.redo,
      sessions: v.sessions,
      faultLatency: histogramMessage(h.fault),
      fetchLatency: histogramMessage(h.fetch),
      commitLatency: histogramMessage(h.commit),
      debugMask: engineDrainEvents(this.handle, Number.MAX_SAFE_INTEGER, 0).mask,
    };
  }

  setDebugMask(req: SetDebugMaskRequest__Output): SetDebugMaskResponse {
    if (!Number.isInteger(req.mask) || req.mask < 0 || req.mask > DEBUG_MASK_ALL_BITS) {
      throw invalidArgument(`mask must be an integer in 0..${String(DEBUG_MASK_ALL_BITS)}`);
    }
    const previous = engineSetDebugMask(this.handle, req.mask);
    this.log.info({ previous, mask: req.mask }, 'debug mask set');
    return { previous, mask: req.mask };
  }

  private toMessage(e: EngineEvent): Event {
    return {
      seq: e.seq,
      timeUnixNs: e.unixNs,
      kind: e.kind,
      nodeId: this.nodeId(),
      peerNodeId: e.node,
      datasetId: e.datasetId,
      page: e.page,
      count: e.count,
      latencyUs: e.latencyUs,
      txid: e.txid,
      status: e.status,
      detail: e.detail,
    };
  }

  /** The Events stream: the recent events kept in the engine ring, then (follow) new ones as they come. */
  serveEvents(call: grpc.ServerWritableStream<EventsRequest__Output, Event>): void {
    const req = call.request;
    if (!Number.isInteger(req.mask) || req.mask < 0 || req.mask > DEBUG_MASK_ALL_BITS) {
      call.emit(
        'error',
        toServiceError(invalidArgument(`mask must be an integer in 0..${String(DEBUG_MASK_ALL_BITS)}`)),
      );
      return;
    }
    const wanted = req.mask === 0 ? DEBUG_MASK_ALL_BITS : req.mask;
    const pass = (e: EngineEvent): boolean => (EVENT_KIND_MASK[e.kind] & wanted) !== 0;
    // Backlog: without follow every kept event (or the last `limit`); with follow only the last `limit`.
    let after = 0;
    const backlog: EngineEvent[] = [];
    for (;;) {
      const b = engineDrainEvents(this.handle, after, 4096);
      backlog.push(...b.events.filter(pass));
      if (b.events.length === 0 || b.nextSeq === after) break;
      after = b.nextSeq;
    }
    const keep = req.limit > 0 ? backlog.slice(-req.limit) : req.follow ? [] : backlog;
    for (const e of keep) call.write(this.toMessage(e));
    if (!req.follow) {
      call.end();
      return;
    }
    if (this.stopped) {
      call.end();
      return;
    }
    this.followers.add(call);
    const timer = setInterval(() => {
      try {
        for (;;) {
          const b = engineDrainEvents(this.handle, after, 1024);
          after = b.nextSeq;
          for (const e of b.events) if (pass(e)) call.write(this.toMessage(e));
          if (b.events.length < 1024) break;
        }
      } catch (e) {
        stop();
        call.emit('error', toServiceError(e));
      }
    }, 100);
    const stop = (): void => {
      clearInterval(timer);
      this.followers.delete(call);
    };
    call.on('cancelled', stop);
    call.on('close', stop);
    call.on('error', stop);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.tick();
    this.stopped = true;
    if (this.spanTimer) clearInterval(this.spanTimer);
    for (const f of this.followers) f.end();
    this.followers.clear();
    engineSetTracing(this.handle, false, 0);
    await this.metrics?.shutdown();
  }
}

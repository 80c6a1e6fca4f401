// OpenTelemetry setup. Must run before @grpc/grpc-js is imported (ESM hook), so entry points call
// initTelemetry() first and import the rest dynamically (bin/hotpot.mjs does this).
// Exporter by configuration: HOTPOT_TRACES_EXPORTER (or OTEL_TRACES_EXPORTER) = none | console | otlp | jsonl
//   otlp  -> OTLP/gRPC to OTEL_EXPORTER_OTLP_ENDPOINT (default http://127.0.0.1:4317)
//   jsonl -> one JSON object per finished span appended to HOTPOT_TRACES_FILE (tests, offline debugging)
// HOTPOT_TRACE_BACKGROUND=1 traces the background calls too (BACKGROUND_METHODS: heartbeats, watches, ...).
// Also the metrics pipeline both the node and the dispatcher export through (metricsConfig, startMeterPipeline).
import { appendFileSync } from 'node:fs';
import { register } from 'node:module';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { type InstrumentationBase, registerInstrumentations } from '@opentelemetry/instrumentation';
import { GrpcInstrumentation } from '@opentelemetry/instrumentation-grpc';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  BatchSpanProcessor,
  ConsoleSpanExporter,
  InMemorySpanExporter,
  RandomIdGenerator,
  type IdGenerator,
  SimpleSpanProcessor,
  type ReadableSpan,
  type SpanExporter,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
  type MetricReader,
} from '@opentelemetry/sdk-metrics';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';
import { ConfigError } from './config.ts';
import type { Logger } from './logger.ts';

export type TracesExporter = 'none' | 'console' | 'otlp' | 'jsonl' | 'memory';

/** Writes finished spans as JSON lines (used by tests to read spans of child processes). */
export class JsonLinesSpanExporter implements SpanExporter {
  constructor(private readonly path: string) {}
  export(spans: ReadableSpan[], done: (r: ExportResult) => void): void {
    try {
      const lines = spans.map((s) =>
        JSON.stringify({
          name: s.name,
          kind: s.kind,
          traceId: s.spanContext().traceId,
          spanId: s.spanContext().spanId,
          parentSpanId: s.parentSpanContext?.spanId ?? null,
          service: s.resource.attributes[ATTR_SERVICE_NAME] ?? null,
          attributes: s.attributes,
          status: s.status,
        }),
      );
      if (lines.length) appendFileSync(this.path, lines.join('\n') + '\n');
      done({ code: ExportResultCode.SUCCESS });
    } catch (e) {
      done({ code: ExportResultCode.FAILED, error: e instanceof Error ? e : new Error(String(e)) });
    }
  }
  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}

/**
 * Random ids, except that `withIds` can fix the ids of the next span started synchronously inside it: spans the
 * engine recorded (native/src/engine/observe.h) keep the span id their children on other nodes already point at.
 */
class ReplayableIdGenerator implements IdGenerator {
  private readonly random = new RandomIdGenerator();
  nextTraceId: string | null = null;
  nextSpanId: string | null = null;
  generateTraceId(): string {
    const id = this.nextTraceId;
    this.nextTraceId = null;
    return id ?? this.random.generateTraceId();
  }
  generateSpanId(): string {
    const id = this.nextSpanId;
    this.nextSpanId = null;
    return id ?? this.random.generateSpanId();
  }
}
const idGenerator = new ReplayableIdGenerator();

/** Runs `fn` (which starts one span synchronously) with that span's ids fixed. */
export function withIds<T>(ids: { traceId?: string; spanId: string }, fn: () => T): T {
  idGenerator.nextTraceId = ids.traceId ?? null;
  idGenerator.nextSpanId = ids.spanId;
  try {
    return fn();
  } finally {
    idGenerator.nextTraceId = null;
    idGenerator.nextSpanId = null;
  }
}

let provider: NodeTracerProvider | null = null;
let exporting = false;

/** True once initTelemetry installed a provider that exports spans somewhere. */
export function tracingEnabled(): boolean {
  return exporting;
}
export let memoryExporter: InMemorySpanExporter | null = null;

export function configuredExporter(): TracesExporter {
  const v = (process.env.HOTPOT_TRACES_EXPORTER ?? process.env.OTEL_TRACES_EXPORTER ?? 'none').toLowerCase();
  if (v === 'none' || v === 'console' || v === 'otlp' || v === 'jsonl' || v === 'memory') return v;
  throw new Error(`HOTPOT_TRACES_EXPORTER must be none, console, otlp, jsonl or memory (got "${v}")`);
}

async function makeProcessor(kind: TracesExporter): Promise<SpanProcessor | null> {
  switch (kind) {
    case 'none':
      return null;
    case 'console':
      return new SimpleSpanProcessor(new ConsoleSpanExporter());
    case 'memory':
      memoryExporter = new InMemorySpanExporter();
      return new SimpleSpanProcessor(memoryExporter);
    case 'jsonl': {
      const path = process.env.HOTPOT_TRACES_FILE;
      if (!path) throw new Error('HOTPOT_TRACES_EXPORTER=jsonl needs HOTPOT_TRACES_FILE');
      return new SimpleSpanProcessor(new JsonLinesSpanExporter(path));
    }
    case 'otlp': {
      const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-grpc');
      return new BatchSpanProcessor(new OTLPTraceExporter());
    }
  }
}

/** Installs the tracer provider and gRPC instrumentation. Idempotent. */
export async function initTelemetry(serviceName: string, kind: TracesExporter = configuredExporter()): Promise<void> {
  if (provider) return;
  const background = traceBackground();
  // Enabled below, once the loader hook is in place.
  const instrumentations = [
    new GrpcInstrumentation({ enabled: false, ...(background ? {} : { ignoreGrpcMethods: [isBackgroundMethod] }) }),
  ];
  // The loader hook wraps only the modules the instrumentations patch: wrapping every module the process imports cost
  // a daemon ~0.3 s of CPU at start (each import parsed and re-exported through the hook), time a restarted node
  // spends away from its peers.
  register('@opentelemetry/instrumentation/hook.mjs', import.meta.url, {
    data: { include: instrumentedModules(instrumentations) },
  });
  const processor = await makeProcessor(kind);
  exporting = processor !== null;
  provider = new NodeTracerProvider({
    idGenerator,
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: serviceName }),
    spanProcessors: processor ? [processor] : [],
  });
  provider.register();
  registerInstrumentations({ instrumentations });
}

/** The modules (package names) a set of instrumentations patches: the only ones the loader hook needs to wrap. */
export function instrumentedModules(instrumentations: readonly InstrumentationBase[]): string[] {
  return [...new Set(instrumentations.flatMap((i) => i.getModuleDefinitions().map((d) => d.name)))];
}

/**
 * Calls made in the background by every node (heartbeats, lease renewals, the membership and dataset watches, token
 * checks, health checks) are not traced, on either side: they buried the traces of real work (~150 background roots
 * per 20 commits in 10 s). HOTPOT_TRACE_BACKGROUND=1 traces them too (debugging the control plane itself).
 */
export const BACKGROUND_METHODS: readonly string[] = [
  'Heartbeat',
  'RenewLease',
  'WatchMembership',
  'WatchDatasets',
  'CheckToken',
  'ListRevokedCertificates',
  'Check',
  'Watch',
];

/** Whether a gRPC method (its bare name, as the instrumentation passes it) is a background call. */
export function isBackgroundMethod(method: string): boolean {
  return BACKGROUND_METHODS.includes(method);
}

/** HOTPOT_TRACE_BACKGROUND: 1/true traces background calls too; 0/false/unset does not. */
export function traceBackground(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = (env.HOTPOT_TRACE_BACKGROUND ?? '').toLowerCase();
  if (v === '' || v === '0' || v === 'false') return false;
  if (v === '1' || v === 'true') return true;
  throw new ConfigError(`HOTPOT_TRACE_BACKGROUND must be 0, 1, true or false (got "${v}")`);
}

// ---------------------------------------------------------------------------------------------------------------
// Metrics pipeline (the node's engine metrics and the dispatcher's cluster metrics both use it)

export type MetricsExporter = 'none' | 'otlp' | 'prometheus' | 'memory';

export interface MetricsConfig {
  metrics: MetricsExporter;
  prometheusHost: string;
  prometheusPort: number;
  metricsIntervalMs: number;
}

export function intEnv(env: NodeJS.ProcessEnv, name: string, def: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return def;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new ConfigError(`${name} must be an integer in ${String(min)}..${String(max)} (got "${raw}")`);
  }
  return v;
}

/**
 * The metrics configuration under a prefix: HOTPOT_ for nodes (HOTPOT_METRICS_EXPORTER, HOTPOT_PROMETHEUS_PORT, ...),
 * HOTPOT_DISPATCHER_ for the dispatcher, so that a dispatcher started beside nodes with the same environment (hotpot
 * up) neither binds their Prometheus port nor exports unless asked.
 */
export function metricsConfig(env: NodeJS.ProcessEnv, prefix: string, defaultPort: number): MetricsConfig {
  const kind = (env[`${prefix}METRICS_EXPORTER`] ?? 'none').toLowerCase();
  if (kind !== 'none' && kind !== 'otlp' && kind !== 'prometheus' && kind !== 'memory') {
    throw new ConfigError(`${prefix}METRICS_EXPORTER must be none, otlp, prometheus or memory (got "${kind}")`);
  }
  return {
    metrics: kind,
    prometheusHost: env[`${prefix}PROMETHEUS_HOST`] ?? '127.0.0.1',
    prometheusPort: intEnv(env, `${prefix}PROMETHEUS_PORT`, defaultPort, 0, 65535),
    metricsIntervalMs: intEnv(env, `${prefix}METRICS_INTERVAL_MS`, kind === 'memory' ? 200 : 10_000, 50, 3_600_000),
  };
}

export interface MeterPipeline {
  provider: MeterProvider;
  memory: InMemoryMetricExporter | null;
  shutdown: () => Promise<void>;
}

/** A meter provider exporting as configured, or null for `none`. */
export async function startMeterPipeline(
  config: MetricsConfig,
  serviceName: string,
  log: Logger | null,
): Promise<MeterPipeline | null> {
  let reader: MetricReader;
  let memory: InMemoryMetricExporter | null = null;
  switch (config.metrics) {
    case 'none':
      return null;
    case 'memory':
      memory = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
      reader = new PeriodicExportingMetricReader({ exporter: memory, exportIntervalMillis: config.metricsIntervalMs });
      break;
    case 'otlp': {
      const { OTLPMetricExporter } = await import('@opentelemetry/exporter-metrics-otlp-grpc');
      reader = new PeriodicExportingMetricReader({
        exporter: new OTLPMetricExporter(),
        exportIntervalMillis: config.metricsIntervalMs,
      });
      break;
    }
    case 'prometheus': {
      const { PrometheusExporter } = await import('@opentelemetry/exporter-prometheus');
      reader = await new Promise<MetricReader>((resolve, reject) => {
        const exporter = new PrometheusExporter({ host: config.prometheusHost, port: config.prometheusPort }, (err) => {
          if (err)
            reject(
              new Error(
                `prometheus endpoint ${config.prometheusHost}:${String(config.prometheusPort)}: ${String(err)}`,
              ),
            );
          else resolve(exporter);
        });
      });
      log?.info({ host: config.prometheusHost, port: config.prometheusPort }, 'prometheus metrics endpoint');
      break;
    }
  }
  const meterProvider = new MeterProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: serviceName }),
    readers: [reader],
  });
  return {
    provider: meterProvider,
    memory,
    shutdown: async () => {
      await meterProvider.shutdown().catch(() => undefined);
    },
  };
}

export async function shutdownTelemetry(): Promise<void> {
  if (!provider) return;
  await provider.forceFlush().catch(() => undefined);
  await provider.shutdown().catch(() => undefined);
}

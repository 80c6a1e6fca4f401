// OpenTelemetry setup. Must run before @grpc/grpc-js is imported (ESM hook), so entry points call
// initTelemetry() first and import the rest dynamically (bin/hotpot.mjs does this).
// Exporter by configuration: HOTPOT_TRACES_EXPORTER (or OTEL_TRACES_EXPORTER) = none | console | otlp | jsonl
//   otlp  -> OTLP/gRPC to OTEL_EXPORTER_OTLP_ENDPOINT (default http://127.0.0.1:4317)
//   jsonl -> one JSON object per finished span appended to HOTPOT_TRACES_FILE (tests, offline debugging)
import { appendFileSync } from 'node:fs';
import { register } from 'node:module';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
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
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';

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
  register('@opentelemetry/instrumentation/hook.mjs', import.meta.url);
  const processor = await makeProcessor(kind);
  exporting = processor !== null;
  provider = new NodeTracerProvider({
    idGenerator,
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: serviceName }),
    spanProcessors: processor ? [processor] : [],
  });
  provider.register();
  registerInstrumentations({
    instrumentations: [new GrpcInstrumentation({ ignoreGrpcMethods: [...UNTRACED_METHODS] })],
  });
}

/**
 * Calls made in the background many times a second by every node (lease renewal, the chunk-map poll, health checks)
 * are not traced, on either side: they buried the traces of real work (~150 background roots per 20 commits in 10 s).
 * `hotpot ls` (ListDatasets) is not traced either, for the same method name.
 */
export const UNTRACED_METHODS = ['Heartbeat', 'ListDatasets', 'Check', 'Watch'] as const;

export async function shutdownTelemetry(): Promise<void> {
  if (!provider) return;
  await provider.forceFlush().catch(() => undefined);
  await provider.shutdown().catch(() => undefined);
}

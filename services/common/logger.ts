// Structured logs (pino, JSON lines) on stderr, so stdout stays free for readiness lines and CLI output.
import { trace } from '@opentelemetry/api';
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(name: string, level = process.env.HOTPOT_LOG_LEVEL ?? 'info'): Logger {
  return pino(
    {
      name,
      level,
      mixin() {
        const s = trace.getActiveSpan()?.spanContext();
        return s ? { trace_id: s.traceId, span_id: s.spanId } : {};
      },
    },
    pino.destination(2),
  );
}

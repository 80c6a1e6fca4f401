// Logs on stderr, so stdout stays free for readiness lines and CLI output. One event per line, in one of two formats:
//   json    pino's JSON lines (pipes, files, systemd, log collectors) — the default when stderr is not a terminal
//   pretty  `12:00:01.234 INFO  [node-1] msg key=value`, coloured on a terminal — the default when it is one
// HOTPOT_LOG_FORMAT=json|pretty forces one. HOTPOT_LOG_PROCESS names the process (`hotpot up` sets node-1, ...):
// a `proc` field in JSON, the bracketed name in pretty lines.
import { hostname } from 'node:os';
import { trace } from '@opentelemetry/api';
import { pino, type Logger } from 'pino';
import { ConfigError } from './config.ts';

export type { Logger };

export type LogFormat = 'json' | 'pretty';

/** HOTPOT_LOG_FORMAT if set (validated), else pretty when `stream` is a terminal, else json. */
export function logFormat(
  env: NodeJS.ProcessEnv = process.env,
  stream: { isTTY?: boolean } = process.stderr,
): LogFormat {
  const v = env.HOTPOT_LOG_FORMAT;
  if (v === undefined || v === '') return stream.isTTY === true ? 'pretty' : 'json';
  if (v === 'json' || v === 'pretty') return v;
  throw new ConfigError(`HOTPOT_LOG_FORMAT must be json or pretty (got "${v}")`);
}

/** Colours on a terminal unless NO_COLOR is set (https://no-color.org). */
export function useColor(env: NodeJS.ProcessEnv = process.env, stream: { isTTY?: boolean } = process.stderr): boolean {
  return stream.isTTY === true && (env.NO_COLOR ?? '') === '';
}

const LEVELS: Record<number, { label: string; color: string }> = {
  10: { label: 'TRACE', color: '90' },
  20: { label: 'DEBUG', color: '36' },
  30: { label: 'INFO', color: '32' },
  40: { label: 'WARN', color: '33' },
  50: { label: 'ERROR', color: '31' },
  60: { label: 'FATAL', color: '35' },
};
/** Fields every line has (or that the prefix already shows): not repeated as key=value. */
const HIDDEN = new Set(['level', 'time', 'pid', 'hostname', 'name', 'msg', 'proc']);
/** Process names get a stable colour each, so interleaved lines of one process are easy to follow. */
const NAME_COLORS = ['36', '35', '34', '33', '32', '96', '95', '94', '93', '92'];

function paint(s: string, code: string, color: boolean): string {
  return color ? `\u001b[${code}m${s}\u001b[0m` : s;
}

function nameColor(name: string): string {
  let h = 0;
  for (const c of name) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return NAME_COLORS[h % NAME_COLORS.length] ?? '36';
}

function fieldValue(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  if (v instanceof Object && 'message' in v && typeof v.message === 'string' && 'stack' in v) {
    return JSON.stringify(v.message);
  }
  return JSON.stringify(v);
}

function clock(ms: number): string {
  const d = new Date(ms);
  const p = (n: number, w = 2): string => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/**
 * One pino JSON line as one human line: local time, level, [process], message, then the other fields as key=value
 * (an error's stack on the lines after it). `name` is the process name when the line does not carry one (`proc`,
 * else pino's `name`). A line that is not a JSON object (a crash's stack trace) comes back as it is, after the name.
 */
export function formatLogLine(line: string, opts: { name?: string; color?: boolean } = {}): string {
  const color = opts.color === true;
  let o: unknown;
  try {
    o = JSON.parse(line);
  } catch {
    o = undefined;
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) {
    return opts.name === undefined ? line : `${paint(`[${opts.name}]`, nameColor(opts.name), color)} ${line}`;
  }
  const rec = o as Record<string, unknown>;
  const level = typeof rec.level === 'number' ? LEVELS[rec.level] : undefined;
  const label = level?.label ?? (typeof rec.level === 'string' ? rec.level.toUpperCase() : 'LOG');
  const name =
    opts.name ?? (typeof rec.proc === 'string' ? rec.proc : typeof rec.name === 'string' ? rec.name : undefined);
  const parts = [
    typeof rec.time === 'number' ? paint(clock(rec.time), '90', color) : undefined,
    paint(label.padEnd(5), level?.color ?? '0', color),
    name === undefined ? undefined : paint(`[${name}]`, nameColor(name), color),
    typeof rec.msg === 'string' ? rec.msg : undefined,
  ];
  let stack = '';
  for (const [k, v] of Object.entries(rec)) {
    if (HIDDEN.has(k) || v === undefined) continue;
    parts.push(`${paint(k, '90', color)}=${fieldValue(v)}`);
    if (v instanceof Object && 'stack' in v && typeof v.stack === 'string') stack += `\n${paint(v.stack, '90', color)}`;
  }
  return parts.filter((p) => p !== undefined).join(' ') + stack;
}

/** How long one write may wait for a reader that does not read (a full pipe) before lines are kept in memory instead. */
export const LOG_STALL_MS = 1000;

/**
 * fd 2 as pino's destination, written synchronously: nothing is left to flush when the process exits. pino's default
 * destination writes asynchronously and flushes what is left at exit with sonic-boom's flushSync, which retries a
 * failed write forever — a reader that is gone (EPIPE: `hotpot up` killed -9) included — so a daemon stopping after
 * its parent died could hang for good in that loop (its main thread asleep in a futex). A reader gone ends logging (pino
 * stops writing on EPIPE). On a non-blocking fd 2 (a socket `hotpot up` reads), a reader that stops reading holds a
 * write for LOG_STALL_MS at most, then the lines are kept in memory and sent once it reads again (a bound that drops
 * lines would stop every later write attempt once reached, so nothing would flow again); on a blocking one the write
 * waits for the reader, as any writer's would.
 */
export function stderrDestination(fd = 2): ReturnType<typeof pino.destination> {
  let stalledSince = 0;
  const dest = pino.destination({
    dest: fd,
    sync: true,
    minLength: 0,
    retryEAGAIN: () => {
      const now = Date.now();
      if (stalledSince === 0) stalledSince = now;
      return now - stalledSince < LOG_STALL_MS;
    },
  });
  // (sonic-boom reports a retry after EAGAIN as a write of 0 bytes: only bytes written end a stall)
  dest.on('write', (n: number) => {
    if (n > 0) stalledSince = 0;
  });
  // A stalled reader's EAGAIN (after LOG_STALL_MS) must not become an uncaught error; EPIPE pino handles itself.
  dest.on('error', () => undefined);
  return dest;
}

export function createLogger(name: string, level = process.env.HOTPOT_LOG_LEVEL ?? 'info'): Logger {
  const proc = process.env.HOTPOT_LOG_PROCESS;
  const options = {
    name,
    level,
    ...(proc ? { base: { pid: process.pid, hostname: hostname(), proc } } : {}),
    mixin() {
      const s = trace.getActiveSpan()?.spanContext();
      return s ? { trace_id: s.traceId, span_id: s.spanId } : {};
    },
  };
  if (logFormat() === 'json') return pino(options, stderrDestination());
  const color = useColor();
  // pino writes each event as one JSON line (a whole string per write); it is reformatted before it reaches stderr.
  return pino(options, {
    write(s: string) {
      process.stderr.write(formatLogLine(s.trimEnd(), { color }) + '\n');
    },
  });
}

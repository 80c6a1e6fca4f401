// Client-side helpers: every call has a deadline; errors become HotpotError.
import type * as grpc from '@grpc/grpc-js';
import { fromServiceError, statusName } from './errors.ts';

export const DEFAULT_DEADLINE_MS = 5000;

/**
 * Runs one unary call: `start` receives the call options (with a deadline) and the callback to pass on.
 * Example: `await unary<Res>((o, cb) => client.Stats({}, o, cb))`.
 */
export function unary<T>(
  start: (options: grpc.CallOptions, callback: (err: grpc.ServiceError | null, value?: T) => void) => unknown,
  timeoutMs = DEFAULT_DEADLINE_MS,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    start({ deadline: Date.now() + timeoutMs }, (err, value) => {
      if (err) reject(fromServiceError(err));
      else if (value === undefined) reject(new Error('empty response'));
      else resolve(value);
    });
  });
}

/** Wraps a server handler so thrown errors (RpcError or not) become proper status responses. */
export type UnaryHandler<Req, Res> = (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>) => void;

/** Failures after which the answer may have been lost, not refused: a restarted server or a broken link. */
const LOST_ANSWER_CODES = new Set(['UNAVAILABLE', 'DEADLINE_EXCEEDED']);

/**
 * Runs an idempotent call (one the server answers the same when it comes again, e.g. an acquire with its request id)
 * again while it fails with UNAVAILABLE or DEADLINE_EXCEEDED, 100 ms doubling to 1 s apart, until `untilUnixMs`;
 * `attempt` gets the time left for its deadline. Any other failure, or the last one, is thrown.
 */
export async function retryLostAnswers<T>(
  attempt: (remainingMs: number) => Promise<T>,
  untilUnixMs: number,
  sleep: (ms: number) => Promise<void> = (ms) => new Promise((r) => setTimeout(r, ms)),
  now: () => number = Date.now,
): Promise<T> {
  for (let pause = 100; ; pause = Math.min(pause * 2, 1000)) {
    try {
      return await attempt(Math.max(1, untilUnixMs - now()));
    } catch (e) {
      const code = (e as { code?: unknown }).code;
      const name = typeof code === 'number' ? statusName(code) : code; // RpcError: a number; HotpotError: a name
      if (typeof name !== 'string' || !LOST_ANSWER_CODES.has(name) || now() + pause >= untilUnixMs) throw e;
    }
    await sleep(pause);
  }
}

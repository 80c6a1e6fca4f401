// Client-side helpers: every call has a deadline; errors become HotpotError.
import type * as grpc from '@grpc/grpc-js';
import { fromServiceError } from './errors.ts';

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

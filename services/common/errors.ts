// One place for gRPC status errors: servers throw RpcError; clients get HotpotError with a `code` name.
// `toServiceError` is the one mapping from anything a handler throws to the status grpc-js sends.
import * as grpc from '@grpc/grpc-js';

export type StatusName = keyof typeof grpc.status;

export class RpcError extends Error {
  override readonly name = 'RpcError';
  constructor(
    readonly code: grpc.status,
    message: string,
    /** Trailing metadata sent with the status (e.g. the conflicting ranges of an ABORTED commit). */
    readonly metadata: grpc.Metadata | null = null,
  ) {
    super(message);
  }
}

export const invalidArgument = (m: string): RpcError => new RpcError(grpc.status.INVALID_ARGUMENT, m);
export const notFound = (m: string): RpcError => new RpcError(grpc.status.NOT_FOUND, m);
export const alreadyExists = (m: string): RpcError => new RpcError(grpc.status.ALREADY_EXISTS, m);
export const failedPrecondition = (m: string): RpcError => new RpcError(grpc.status.FAILED_PRECONDITION, m);
export const unavailable = (m: string): RpcError => new RpcError(grpc.status.UNAVAILABLE, m);
export const resourceExhausted = (m: string): RpcError => new RpcError(grpc.status.RESOURCE_EXHAUSTED, m);

/** Status codes by name ('ABORTED' -> 10), OK left out: an error never carries it. */
const STATUS_BY_NAME = new Map<string, grpc.status>(
  Object.values(grpc.status)
    .filter((v): v is grpc.status => typeof v === 'number' && v !== grpc.status.OK)
    .map((v) => [grpc.status[v], v]),
);

/**
 * The status an error carries, as an RpcError: an RpcError itself, or an Error whose string `code` names a gRPC
 * status — the engine's NativeError (native/index.ts; services/common must not import native/, so it maps by
 * name) and HotpotError from a call to another Hotpot service. Null for anything else (a bug: INTERNAL).
 */
export function asRpcError(e: unknown): RpcError | null {
  if (e instanceof RpcError) return e;
  if (!(e instanceof Error)) return null;
  const name = (e as Error & { code?: unknown }).code;
  const code = typeof name === 'string' ? STATUS_BY_NAME.get(name) : undefined;
  return code === undefined ? null : new RpcError(code, e.message);
}

/** Converts anything thrown inside a handler into the status object grpc-js sends (unary callback or stream). */
export function toServiceError(e: unknown): Partial<grpc.StatusObject> {
  const r = asRpcError(e);
  if (r)
    return r.metadata
      ? { code: r.code, details: r.message, metadata: r.metadata }
      : { code: r.code, details: r.message };
  const msg = e instanceof Error ? e.message : String(e);
  return { code: grpc.status.INTERNAL, details: `internal error: ${msg}` };
}

/** Error seen by clients of Hotpot's gRPC services. */
export class HotpotError extends Error {
  override readonly name = 'HotpotError';
  constructor(
    readonly code: StatusName,
    message: string,
  ) {
    super(message);
  }
}

export function statusName(code: number): StatusName {
  const entry = Object.entries(grpc.status).find(([, v]) => (v as number) === code);
  return (entry?.[0] ?? 'UNKNOWN') as StatusName;
}

/**
 * grpc-js's text for a channel that could not connect, made readable: "No connection established. Last error:
 * connect ECONNREFUSED 127.0.0.1:1 (2026-12-03T18:15:25.474Z). Resolution note: " becomes "no connection: connect
 * ECONNREFUSED 127.0.0.1:1" (the timestamp and an empty resolution note dropped; a note with text is kept).
 */
export function readableDetails(details: string): string {
  let d = details.trim();
  d = d.replace(/\s*Resolution note:\s*$/, '');
  d = d.replace(/\s*\(\d{4}-\d{2}-\d{2}T[0-9:.]+Z\)/g, '');
  d = d.replace(/^No connection established\. Last error: (?:Error: )?/, 'no connection: ');
  return d.replace(/\.$/, '');
}

export function fromServiceError(e: grpc.ServiceError): HotpotError {
  return new HotpotError(statusName(e.code), readableDetails(e.details || e.message));
}

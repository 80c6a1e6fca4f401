// One place for gRPC status errors: servers throw RpcError; clients get HotpotError with a `code` name.
import * as grpc from '@grpc/grpc-js';

export type StatusName = keyof typeof grpc.status;

export class RpcError extends Error {
  override readonly name = 'RpcError';
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

export const invalidArgument = (m: string): RpcError => new RpcError(grpc.status.INVALID_ARGUMENT, m);
export const notFound = (m: string): RpcError => new RpcError(grpc.status.NOT_FOUND, m);
export const alreadyExists = (m: string): RpcError => new RpcError(grpc.status.ALREADY_EXISTS, m);
export const failedPrecondition = (m: string): RpcError => new RpcError(grpc.status.FAILED_PRECONDITION, m);
export const unavailable = (m: string): RpcError => new RpcError(grpc.status.UNAVAILABLE, m);

/** Converts anything thrown inside a handler into the object grpc-js expects in a callback. */
export function toServiceError(e: unknown): Partial<grpc.StatusObject> {
  if (e instanceof RpcError) return { code: e.code, details: e.message };
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

export function fromServiceError(e: grpc.ServiceError): HotpotError {
  return new HotpotError(statusName(e.code), e.details || e.message);
}

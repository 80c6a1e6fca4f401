// One place for gRPC status errors: servers throw RpcError; clients get HotpotError with a `code` name.
// `toServiceError` is the one mapping from anything a handler throws to the status grpc-js sends.
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { projectRoot } from './paths.ts';

export type StatusName = keyof typeof grpc.status;

/** The `domain` of every google.rpc.ErrorInfo Hotpot sends. */
export const ERROR_DOMAIN = 'hotpot.dev';
/** The trailer of gRPC's rich error model: a serialized google.rpc.Status. */
export const STATUS_DETAILS_KEY = 'grpc-status-details-bin';
const ERROR_INFO_TYPE_URL = 'type.googleapis.com/google.rpc.ErrorInfo';

/** google.rpc.ErrorInfo (proto/google/rpc/error_details.proto). */
export interface ErrorInfo {
  reason: string;
  domain: string;
  metadata: Record<string, string>;
}

/** What an error says beyond its code and message: a reason (UPPER_SNAKE_CASE) and structured details. */
export interface ErrorReason {
  reason: string;
  metadata?: Record<string, string>;
}

export class RpcError extends Error {
  override readonly name = 'RpcError';
  constructor(
    readonly code: grpc.status,
    message: string,
    /** Trailing metadata sent with the status (e.g. the conflicting ranges of an ABORTED commit). */
    readonly metadata: grpc.Metadata | null = null,
    /** The google.rpc.ErrorInfo sent in grpc-status-details-bin (by default the reason is the code's name). */
    readonly reason: ErrorReason | null = null,
  ) {
    super(message);
  }
}

let rpcTypes: { status: protobuf.Type; errorInfo: protobuf.Type } | null = null;
/** google.rpc.Status and ErrorInfo, loaded from proto/google/rpc on first use (protobufjs, as proto-loader uses). */
function googleRpc(): { status: protobuf.Type; errorInfo: protobuf.Type } {
  if (!rpcTypes) {
    const dir = join(projectRoot, 'proto', 'google', 'rpc');
    const root = protobuf.loadSync([join(dir, 'status.proto'), join(dir, 'error_details.proto')]);
    rpcTypes = { status: root.lookupType('google.rpc.Status'), errorInfo: root.lookupType('google.rpc.ErrorInfo') };
  }
  return rpcTypes;
}

/** A serialized google.rpc.Status with one google.rpc.ErrorInfo, as grpc-status-details-bin carries it. */
export function encodeStatusDetails(code: grpc.status, message: string, info: ErrorInfo): Buffer {
  const { status, errorInfo } = googleRpc();
  const value = errorInfo.encode(errorInfo.fromObject(info)).finish();
  return Buffer.from(
    status.encode(status.fromObject({ code, message, details: [{ type_url: ERROR_INFO_TYPE_URL, value }] })).finish(),
  );
}

/**
 * The google.rpc.Status in a call's trailers (grpc-status-details-bin) and its ErrorInfo, or null when there is
 * none. Throws on bytes that are not a Status.
 */
export function decodeStatusDetails(
  metadata: grpc.Metadata | undefined,
): { code: number; message: string; info: ErrorInfo | null } | null {
  const raw = metadata?.get(STATUS_DETAILS_KEY)[0];
  if (!Buffer.isBuffer(raw)) return null;
  const { status, errorInfo } = googleRpc();
  const s = status.toObject(status.decode(raw), { defaults: true }) as {
    code: number;
    message: string;
    details: { type_url: string; value: Uint8Array }[];
  };
  const any = s.details.find((d) => d.type_url === ERROR_INFO_TYPE_URL);
  const info = any ? (errorInfo.toObject(errorInfo.decode(any.value), { defaults: true }) as ErrorInfo) : null;
  return { code: s.code, message: s.message, info };
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
  if (r) {
    // Beside any trailer of its own, every typed error carries gRPC's rich error model: a google.rpc.Status with an
    // ErrorInfo (its reason, domain hotpot.dev, structured details).
    const metadata = r.metadata ? r.metadata.clone() : new grpc.Metadata();
    const info: ErrorInfo = {
      reason: r.reason?.reason ?? grpc.status[r.code],
      domain: ERROR_DOMAIN,
      metadata: r.reason?.metadata ?? {},
    };
    metadata.set(STATUS_DETAILS_KEY, encodeStatusDetails(r.code, r.message, info));
    return { code: r.code, details: r.message, metadata };
  }
  const msg = e instanceof Error ? e.message : String(e);
  return { code: grpc.status.INTERNAL, details: `internal error: ${msg}` };
}

/** Error seen by clients of Hotpot's gRPC services. */
export class HotpotError extends Error {
  override readonly name = 'HotpotError';
  constructor(
    readonly code: StatusName,
    message: string,
    /** The google.rpc.ErrorInfo the server sent in grpc-status-details-bin, if any. */
    readonly info: ErrorInfo | null = null,
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
  let info: ErrorInfo | null = null;
  try {
    info = decodeStatusDetails(e.metadata)?.info ?? null;
  } catch {
    // Not a google.rpc.Status (another server's trailer): the code and message still say what happened.
  }
  return new HotpotError(statusName(e.code), readableDetails(e.details || e.message), info);
}

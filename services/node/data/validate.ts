// Input checks of hotpot.v1.Data requests, as plain functions: each returns the checked value or throws an
// RpcError (INVALID_ARGUMENT for a malformed field, OUT_OF_RANGE for a range past the dataset's end) whose message
// names the field. The wording is part of the API (docs/api.md, test/integration/data-api.test.ts).
import * as grpc from '@grpc/grpc-js';
import { invalidArgument, RpcError } from '../../common/errors.ts';
import type { ConsistencyMode__Output } from '../../generated/hotpot/v1/ConsistencyMode.ts';
import type { DatasetMode } from '../../../native/index.ts';

/** Largest Read, and largest data of one Write / WriteStream / ReadStream message. */
export const MAX_MESSAGE_BYTES = 1024 * 1024;
const MAX_REPLICAS = 64;
/** Read ranges one commit may validate. */
const MAX_READS = 4096;
/** Ranges one Acquire may name (as the MRSW master). */
const MAX_ACQUIRE_RANGES = 4096;
const NAME_RE = /^[A-Za-z0-9._-]{1,128}$/;

/** What a byte range is checked against. */
export interface Extent {
  name: string;
  sizeBytes: number;
}

export interface ByteRange {
  offset: number;
  length: number;
}

/** A uint64 field as a JS number: above 2^53 it could not be exact. */
export function u64(v: number, field: string): number {
  if (!Number.isSafeInteger(v) || v < 0) throw invalidArgument(`${field} must be an integer in 0..2^53-1`);
  return v;
}

export function checkName(name: string): string {
  if (!NAME_RE.test(name)) throw invalidArgument('name must match [A-Za-z0-9._-]{1,128}');
  return name;
}

function modeOf(m: ConsistencyMode__Output): DatasetMode {
  // An enum value this proto version does not know arrives as a number: widen before comparing.
  const v: string | number = m;
  if (v === 'CONSISTENCY_MODE_UNSPECIFIED' || v === 'CONSISTENCY_MODE_MRMW') return 'mrmw';
  if (v === 'CONSISTENCY_MODE_MRSW') return 'mrsw';
  throw invalidArgument(`mode: unknown consistency mode ${JSON.stringify(m)}`);
}

function inReplicaRange(v: number): boolean {
  return Number.isInteger(v) && v >= 0 && v <= MAX_REPLICAS;
}

/** The `create` fields of an Open (only looked at with `create`). */
export function checkCreate(req: { sizeBytes: number; mode: ConsistencyMode__Output; replicas: number }): {
  sizeBytes: number;
  mode: DatasetMode;
  replicas: number;
} {
  u64(req.sizeBytes, 'size_bytes');
  if (req.sizeBytes === 0) throw invalidArgument('size_bytes must be > 0 with create');
  if (!inReplicaRange(req.replicas)) throw invalidArgument(`replicas must be 1..${String(MAX_REPLICAS)} (0 = 1)`);
  return { sizeBytes: req.sizeBytes, mode: modeOf(req.mode), replicas: req.replicas || 1 };
}

/** A commit's `replicas`: 0 means the dataset's default. */
export function checkCommitReplicas(replicas: number): number {
  if (!inReplicaRange(replicas)) {
    throw invalidArgument(`replicas must be 0..${String(MAX_REPLICAS)} (0 = dataset default)`);
  }
  return replicas;
}

/**
 * `offset`/`length` of a request on dataset `ds`: integers, `length` 1..`max`, inside the dataset. `label` prefixes
 * the message when the range is one of a list (`reads[2]: `).
 */
export function checkRange(ds: Extent, offset: number, length: number, max: number, label = ''): void {
  u64(offset, `${label}offset`);
  u64(length, `${label}length`);
  if (length === 0 || length > max) {
    throw invalidArgument(`${label}length must be 1..${String(max)} bytes (got ${String(length)})`);
  }
  if (offset > ds.sizeBytes || length > ds.sizeBytes - offset) {
    throw new RpcError(
      grpc.status.OUT_OF_RANGE,
      `${label}range ${String(offset)}+${String(length)} passes the end of dataset '${ds.name}' (${String(ds.sizeBytes)} bytes)`,
    );
  }
}

/** A list of at most `max` ranges inside the dataset; `field` names the list in messages. */
function checkRanges(ds: Extent, ranges: ByteRange[], field: string): ByteRange[] {
  return ranges.map((r, i) => {
    checkRange(ds, r.offset, r.length, ds.sizeBytes, `${field}[${String(i)}]: `);
    return { offset: r.offset, length: r.length };
  });
}

/** A commit's read-validation ranges (up to 4096), in the engine's shape. */
export function checkReads(ds: Extent, reads: ByteRange[]): { offset: number; len: number }[] {
  if (reads.length > MAX_READS) throw invalidArgument(`at most ${String(MAX_READS)} read ranges per commit`);
  return checkRanges(ds, reads, 'reads').map((r) => ({ offset: r.offset, len: r.length }));
}

/** An Acquire's ranges: 1..4096, each inside the dataset. */
export function checkAcquireRanges(ds: Extent, ranges: ByteRange[]): ByteRange[] {
  if (ranges.length === 0 || ranges.length > MAX_ACQUIRE_RANGES) {
    throw invalidArgument(`acquire takes 1..${String(MAX_ACQUIRE_RANGES)} ranges`);
  }
  return checkRanges(ds, ranges, 'ranges');
}

/**
 * The session a WriteStream message belongs to: the first message must name one (`current` is '' until then),
 * later ones may leave it empty or repeat it.
 */
export function streamSession(current: string, named: string): string {
  if (current === '') {
    if (named === '') throw invalidArgument('session is required in the first message');
    return named;
  }
  if (named !== '' && named !== current) {
    throw invalidArgument('every message of a WriteStream must name the same session');
  }
  return current;
}

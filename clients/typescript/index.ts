// The Hotpot TypeScript SDK: connect to the local node, open a dataset, map it as a Buffer, commit.
//
//   const hp = await connect();
//   const ds = await hp.open('kv', { create: { size: 64 << 20, mode: 'mrmw', replicas: 2 } });
//   const mem = ds.map();            // pages arrive on first touch; writes stay private
//   mem.writeUInt32LE(42, 0);
//   await ds.commit();               // atomic, visible on every node, durable on N nodes
//
// Page faults are resolved by the node daemon's engine threads (the uffd is handed over at map time), never by
// this process's JavaScript thread, so touching the mapping from JS (or passing it to a syscall) is safe.
import { existsSync, readFileSync } from 'node:fs';
import { SpanKind, SpanStatusCode, TraceFlags, isSpanContextValid, trace } from '@opentelemetry/api';
import { join } from 'node:path';
import {
  NativeError,
  shimClose,
  shimCommit,
  shimConnect,
  shimDisconnect,
  shimMap,
  shimOpen,
  shimRefresh,
  shimRollback,
  type NativeCode,
  type ShimCommitConflicts,
  type ShimConnection,
  type ShimDataset,
} from '../../native/index.ts';
import { ControlChannel, grpcSocketFor, type Range } from './consistency.ts';
import { runSnapshot, type SnapshotErrors, type SnapshotOptions } from './snapshot.ts';

export type { Range } from './consistency.ts';
export type { SnapshotOptions } from './snapshot.ts';

export type Mode = 'mrmw' | 'mrsw';

/** Errors from Hotpot carry a gRPC-style `code` (e.g. 'ABORTED', 'NOT_FOUND', 'UNAVAILABLE'). */
export class HotpotError extends Error {
  override readonly name: string = 'HotpotError';
  constructor(
    readonly code: NativeCode,
    message: string,
  ) {
    super(message);
  }
}

/** A commit overlapped a newer commit: nothing was applied; roll back (or keep) and retry. Also raised, with no
 * conflicts, for changes made before the node daemon restarted (they cannot be committed: roll back and redo). */
export class CommitConflictError extends HotpotError {
  override readonly name = 'CommitConflictError';
  constructor(
    message: string,
    readonly conflicts: { offset: number; length: number }[],
    readonly totalConflicts: number,
  ) {
    super('ABORTED', message);
  }
}

/** snapshot() saw the dataset change on this node during every attempt (code ABORTED): nothing to roll back;
 * read again later or allow more attempts. */
export class SnapshotChangedError extends HotpotError {
  override readonly name = 'SnapshotChangedError';
  constructor(
    message: string,
    readonly attempts: number,
  ) {
    super('ABORTED', message);
  }
}

function convert(e: unknown): HotpotError {
  if (e instanceof NativeError) {
    if (e.code === 'ABORTED') {
      const d = (e.details ?? { conflicts: [], totalConflicts: 0 }) as ShimCommitConflicts;
      return new CommitConflictError(
        e.message,
        d.conflicts.map((c) => ({ offset: c.offset, length: c.len })),
        d.totalConflicts,
      );
    }
    return new HotpotError(e.code, e.message);
  }
  if (e instanceof HotpotError) return e;
  return new HotpotError('INTERNAL', e instanceof Error ? e.message : String(e));
}

async function guard<T>(fn: () => Promise<T> | T): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw convert(e);
  }
}

function guardSync<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw convert(e);
  }
}

export interface ConnectOptions {
  /** Unix socket of the local node. Default: $HOTPOT_SOCKET, ./.hotpot/cluster.json (hotpot up), /run/hotpot/node.sock */
  socketPath?: string;
}

export interface OpenOptions {
  /** Create the dataset if it does not exist. */
  create?: { size: number; mode?: Mode; replicas?: number };
  /**
   * Open for reading only: read permission on the dataset suffices; `commit()` fails with PERMISSION_DENIED (writes
   * to the mapping stay private to this process). Not with `create`.
   */
  readOnly?: boolean;
}

export interface DatasetInfo {
  name: string;
  id: number;
  size: number;
  mode: Mode;
  replicas: number;
  chunkSize: number;
}

export interface CommitOptions {
  /** N for this commit (default: the dataset's). */
  replicas?: number;
  /** Read validation: ABORTED if a page holding these bytes changed since this process last synced. */
  reads?: Range[];
}

export interface TransactionOptions {
  /** Runs of `fn` before the last CommitConflictError is thrown (default 10). */
  attempts?: number;
  /** Read set validated at commit (serializable read-modify-write). */
  reads?: Range[];
  replicas?: number;
  /** First backoff in ms, doubled per attempt with full jitter (default 2). */
  backoffMs?: number;
}

export interface AcquireOptions {
  /** Lease length (100 ms .. 10 min); renew() before it ends. A holder whose lease expired cannot commit. */
  leaseMs: number;
  /** Wait up to this long for held pages to free (default 0: fail at once with ABORTED). */
  waitMs?: number;
}

/** Write ownership of pages of an MRSW dataset (from acquire). */
export class Lease {
  constructor(
    private readonly ds: Dataset,
    readonly id: string,
    readonly fencingEpoch: number,
    public expiresAt: number,
    readonly pages: { firstPage: number; count: number }[],
    /** @internal the signed certificate commits carry */
    public certificate: Buffer,
  ) {}

  /** Extends the lease by `leaseMs` from now; FAILED_PRECONDITION if it already expired. */
  async renew(leaseMs: number): Promise<void> {
    await this.ds.renewLease(this, leaseMs);
  }

  /** Frees the pages (commit first: uncommitted changes are not written by release). */
  async release(): Promise<void> {
    await this.ds.release();
  }
}

export interface CommitResult {
  /** Distinct nodes durably holding every committed byte: at least `replicas` unless `underReplicated`. */
  copies: number;
  /** N the commit asked for. */
  replicas: number;
  /**
   * Applied and visible, but a push failed after the commit point, so fewer than N nodes hold it now; the owners
   * copy the pages to more live nodes in the background. Not an error: the commit happened.
   */
  underReplicated: boolean;
  pages: number;
  ranges: number;
  bytes: number;
}

function defaultSocket(): string | null {
  if (process.env.HOTPOT_SOCKET) return process.env.HOTPOT_SOCKET;
  const f = join(process.cwd(), '.hotpot', 'cluster.json');
  if (existsSync(f)) {
    try {
      const c = JSON.parse(readFileSync(f, 'utf8')) as { nodes?: { socket?: string }[] };
      const s = c.nodes?.[0]?.socket;
      if (s) return s;
    } catch {
      // fall through to the built-in default
    }
  }
  return null;
}

function checkRanges(what: string, ranges: Range[], size: number): void {
  if (!Array.isArray(ranges)) throw new HotpotError('INVALID_ARGUMENT', `${what} must be an array of {offset, length}`);
  for (const r of ranges) {
    if (!Number.isSafeInteger(r.offset) || !Number.isSafeInteger(r.length) || r.offset < 0 || r.length <= 0) {
      throw new HotpotError('INVALID_ARGUMENT', `${what}: offset must be >= 0 and length > 0`);
    }
    if (r.offset + r.length > size) {
      throw new HotpotError(
        'INVALID_ARGUMENT',
        `${what}: ${String(r.offset)}+${String(r.length)} ends beyond the dataset`,
      );
    }
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const snapshotErrors: SnapshotErrors = {
  convert,
  invalid: (message) => new HotpotError('INVALID_ARGUMENT', message),
  changed: (message, attempts) => new SnapshotChangedError(message, attempts),
  stuck: (message) => new HotpotError('UNAVAILABLE', message),
};

export class Dataset {
  private closed = false;
  private whole: Buffer | null = null;
  private lease: Lease | null = null;
  private declared: Range[] | null = null;
  private prefaultChecksum = 0;
  constructor(
    private readonly handle: ShimDataset,
    readonly info: DatasetInfo,
    private readonly control: ControlChannel | null = null,
  ) {}

  /** A Buffer over [offset, offset + length) of the dataset (offset a multiple of 4096; default: everything;
   * the whole-dataset Buffer is made once and returned again). */
  map(offset = 0, length = 0): Buffer {
    this.check();
    if (offset === 0 && length === 0 && this.whole) return this.whole;
    const ab = guardSync(() => shimMap(this.handle, offset, length));
    const b = Buffer.from(ab);
    if (offset === 0 && length === 0) this.whole = b;
    return b;
  }

  /** Makes this process's changes atomic, visible and durable on `replicas` nodes (default: the dataset's N).
   * With `reads`, also fails with ABORTED if those bytes' pages changed since this process last synced; with
   * no changes that is a read-only validation. After begin(), the declared ranges are the write set and the
   * read set. In an MRSW dataset the pages written must be held (acquire). While the node daemon is down:
   * UNAVAILABLE; after it restarted, changes made before are refused with CommitConflictError (docs/api.md). */
  async commit(opts: CommitOptions = {}): Promise<CommitResult> {
    this.check();
    const n = opts.replicas ?? 0;
    if (!Number.isInteger(n) || n < 0 || n > 64) throw new HotpotError('INVALID_ARGUMENT', 'replicas must be 0..64');
    const reads = [...(opts.reads ?? []), ...(this.declared ?? [])];
    checkRanges('reads', reads, this.info.size);
    // One commit is one trace: this span -> the node's commit span -> the owners' prepare/apply/release spans
    // (the context travels in the data-path frame header).
    return trace.getTracer('hotpot-sdk').startActiveSpan('hotpot.commit', { kind: SpanKind.CLIENT }, async (span) => {
      const sc = span.spanContext();
      const traced = isSpanContextValid(sc) && (sc.traceFlags & TraceFlags.SAMPLED) !== 0;
      span.setAttributes({ 'hotpot.dataset': this.info.name, 'hotpot.replicas': n });
      const extras = {
        ...(reads.length > 0 ? { reads } : {}),
        ...(this.lease ? { lease: this.lease.certificate } : {}),
        ...(this.declared ? { writeSet: this.declared } : {}),
        ...(traced ? { traceparent: `00-${sc.traceId}-${sc.spanId}-01` } : {}),
      };
      try {
        const r = await guard(() => shimCommit(this.handle, n, extras));
        span.setAttributes({
          'hotpot.copies': r.copies,
          'hotpot.pages': r.pages,
          'hotpot.bytes': r.bytes,
          'hotpot.under_replicated': r.underReplicated,
        });
        return r;
      } catch (e) {
        span.setStatus({ code: SpanStatusCode.ERROR, message: e instanceof Error ? e.message : String(e) });
        throw e;
      } finally {
        this.declared = null;
        span.end();
      }
    });
  }

  /**
   * begin(ranges) / commit() as in the original Hotpot: declares the write set, prefaults its pages and syncs.
   * The next commit() fails with FAILED_PRECONDITION if it touches pages outside the set and with ABORTED (the
   * retry status: rollback() and begin again) if another commit changed the declared ranges meanwhile.
   */
  async begin(ranges: Range[]): Promise<void> {
    this.check();
    checkRanges('begin ranges', ranges, this.info.size);
    if (ranges.length === 0) throw new HotpotError('INVALID_ARGUMENT', 'begin needs at least one range');
    await this.refresh();
    const mem = this.map();
    let sum = 0;
    for (const r of ranges) {
      for (let p = Math.floor(r.offset / 4096); p * 4096 < r.offset + r.length; p++) sum += mem[p * 4096] ?? 0;
    }
    this.declared = ranges.map((r) => ({ offset: r.offset, length: r.length }));
    this.prefaultChecksum = sum; // keeps the touching loads observable
  }

  /**
   * Runs `fn` and commits, retrying on conflict: on ABORTED it rolls back (dropping the attempt's changes and
   * syncing to the latest commits), waits a jittered, growing backoff and runs `fn` again, up to `attempts`
   * times; then throws the last CommitConflictError. `fn` must do all its writes through `mem` and may run
   * more than once.
   */
  async transaction<T>(fn: (mem: Buffer) => Promise<T> | T, opts: TransactionOptions = {}): Promise<T> {
    this.check();
    const attempts = opts.attempts ?? 10;
    if (!Number.isInteger(attempts) || attempts < 1) throw new HotpotError('INVALID_ARGUMENT', 'attempts must be >= 1');
    const base = opts.backoffMs ?? 2;
    const mem = this.map();
    let last: CommitConflictError | null = null;
    for (let i = 0; i < attempts; i++) {
      if (i > 0) await sleep(Math.random() * base * 2 ** Math.min(i, 10));
      const value = await fn(mem);
      try {
        await this.commit({
          ...(opts.reads ? { reads: opts.reads } : {}),
          ...(opts.replicas ? { replicas: opts.replicas } : {}),
        });
        return value;
      } catch (e) {
        if (!(e instanceof CommitConflictError)) throw e;
        last = e;
        await this.rollback();
      }
    }
    throw last ?? new HotpotError('INTERNAL', 'transaction made no attempt');
  }

  /**
   * Snapshot read: runs the read-only `fn(mem)` so that it sees every commit whole, even a commit spanning
   * chunks with different owners (plain loads between sync points can see such a commit land page by page).
   * It brackets `fn` with the node's publication state of the dataset and runs it again (after a short jittered
   * pause, up to `attempts` times) while that state changed or a commit was partly published; then throws
   * SnapshotChangedError (code ABORTED). Returns the result of the run that saw a stable state. Local: each
   * probe is a load of the node's shared publication word, no round trip. This process's own uncommitted writes
   * are not part of the check. `fn` may run more than once and should only read.
   */
  async snapshot<T>(fn: (mem: Buffer) => T | Promise<T>, opts: SnapshotOptions = {}): Promise<T> {
    this.check();
    return runSnapshot(this.handle, this.map(), fn, opts, snapshotErrors);
  }

  /**
   * MRSW: takes write ownership of the pages covering `ranges` from the dispatcher, all-or-nothing (ABORTED if
   * any is held, after waiting up to `waitMs`). Then syncs, so the mapping shows the latest committed bytes.
   * One lease per Dataset at a time.
   */
  async acquire(ranges: Range[], opts: AcquireOptions): Promise<Lease> {
    this.check();
    if (this.info.mode !== 'mrsw') {
      throw new HotpotError('FAILED_PRECONDITION', `dataset "${this.info.name}" is MRMW: acquire is for MRSW datasets`);
    }
    if (this.lease)
      throw new HotpotError('FAILED_PRECONDITION', 'this dataset already holds a lease: release it first');
    checkRanges('acquire ranges', ranges, this.info.size);
    const control = this.controlChannel();
    const l = await control.acquire(this.info.name, ranges, opts.leaseMs, opts.waitMs ?? 0);
    this.lease = new Lease(this, l.leaseId, l.fencingEpoch, l.expiresUnixMs, l.pages, l.certificate);
    await this.refresh();
    return this.lease;
  }

  /** Frees the pages held by acquire (no-op without a lease). */
  async release(): Promise<void> {
    const l = this.lease;
    if (!l) return;
    this.lease = null;
    await this.controlChannel().release(l.id);
  }

  /** @internal */
  async renewLease(l: Lease, leaseMs: number): Promise<void> {
    const r = await this.controlChannel().renew(l.id, leaseMs);
    l.expiresAt = r.expiresUnixMs;
    l.certificate = r.certificate;
  }

  /**
   * Waits until `parties` callers (on any nodes, mmap or gRPC) reached this dataset's barrier `name`;
   * DEADLINE_EXCEEDED after timeoutMs. Reusable: returns the round's generation and this caller's arrival order.
   * Barrier names are per dataset; arriving needs read permission on it.
   */
  async barrier(
    name: string,
    parties: number,
    opts: { timeoutMs: number },
  ): Promise<{ generation: number; arrival: number }> {
    this.check();
    const r = await this.controlChannel().barrier(this.info.name, name, parties, opts.timeoutMs);
    return { generation: r.generation, arrival: r.arrival };
  }

  private controlChannel(): ControlChannel {
    if (!this.control) throw new HotpotError('FAILED_PRECONDITION', 'no control channel to the node');
    return this.control;
  }

  /** Discards every uncommitted change of this process. */
  async rollback(): Promise<void> {
    this.check();
    await guard(() => shimRollback(this.handle));
  }

  /** Drops private pages that hold no change, so newer commits become visible. */
  async refresh(): Promise<void> {
    this.check();
    await guard(() => shimRefresh(this.handle));
  }

  /** Unmaps every Buffer of this dataset (they become empty) and closes it; uncommitted changes are dropped. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.whole = null;
    guardSync(() => {
      shimClose(this.handle);
    });
  }

  private check(): void {
    if (this.closed) throw new HotpotError('FAILED_PRECONDITION', `dataset "${this.info.name}" is closed`);
  }
}

export class Hotpot {
  private readonly datasets = new Set<Dataset>();
  private closed = false;
  private readonly control: ControlChannel;
  constructor(
    private readonly conn: ShimConnection,
    socketPath: string | null = null,
  ) {
    this.control = new ControlChannel(grpcSocketFor(socketPath), (code, message) =>
      code === 'ABORTED' ? new CommitConflictError(message, [], 0) : new HotpotError(code as NativeCode, message),
    );
  }

  async open(name: string, opts: OpenOptions = {}): Promise<Dataset> {
    if (this.closed) throw new HotpotError('FAILED_PRECONDITION', 'connection closed');
    const create = opts.create
      ? {
          size: opts.create.size,
          mode: (opts.create.mode ?? 'mrmw') === 'mrsw' ? ('MRSW' as const) : ('MRMW' as const),
          replicas: opts.create.replicas ?? 1,
        }
      : null;
    const r = await guard(() => shimOpen(this.conn, name, create, opts.readOnly ?? false));
    const ds = new Dataset(
      r.dataset,
      {
        name,
        id: r.info.id,
        size: r.info.size,
        mode: r.info.mode === 'MRSW' ? 'mrsw' : 'mrmw',
        replicas: r.info.replicas,
        chunkSize: r.info.chunkSize,
      },
      this.control,
    );
    this.datasets.add(ds);
    return ds;
  }

  /** Closes every dataset opened through this connection and the connection itself. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const d of this.datasets) d.close();
    this.datasets.clear();
    this.control.close();
    guardSync(() => {
      shimDisconnect(this.conn);
    });
  }
}

export async function connect(opts: ConnectOptions = {}): Promise<Hotpot> {
  const path = opts.socketPath ?? defaultSocket();
  return guard(() => new Hotpot(shimConnect(path), path));
}

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

/** A commit overlapped a newer commit: nothing was applied; roll back (or keep) and retry. */
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
}

export interface DatasetInfo {
  name: string;
  id: number;
  size: number;
  mode: Mode;
  replicas: number;
  chunkSize: number;
}

export interface CommitResult {
  /** Distinct nodes durably holding every committed byte (at least the requested N). */
  copies: number;
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

export class Dataset {
  private closed = false;
  constructor(
    private readonly handle: ShimDataset,
    readonly info: DatasetInfo,
  ) {}

  /** A Buffer over [offset, offset + length) of the dataset (offset a multiple of 4096; default: everything). */
  map(offset = 0, length = 0): Buffer {
    this.check();
    const ab = guardSync(() => shimMap(this.handle, offset, length));
    return Buffer.from(ab);
  }

  /** Makes this process's changes atomic, visible and durable on `replicas` nodes (default: the dataset's N). */
  async commit(opts: { replicas?: number } = {}): Promise<CommitResult> {
    this.check();
    const n = opts.replicas ?? 0;
    if (!Number.isInteger(n) || n < 0 || n > 64) throw new HotpotError('INVALID_ARGUMENT', 'replicas must be 0..64');
    return guard(() => shimCommit(this.handle, n));
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
  constructor(private readonly conn: ShimConnection) {}

  async open(name: string, opts: OpenOptions = {}): Promise<Dataset> {
    if (this.closed) throw new HotpotError('FAILED_PRECONDITION', 'connection closed');
    const create = opts.create
      ? {
          size: opts.create.size,
          mode: (opts.create.mode ?? 'mrmw') === 'mrsw' ? ('MRSW' as const) : ('MRMW' as const),
          replicas: opts.create.replicas ?? 1,
        }
      : null;
    const r = await guard(() => shimOpen(this.conn, name, create));
    const ds = new Dataset(r.dataset, {
      name,
      id: r.info.id,
      size: r.info.size,
      mode: r.info.mode === 'MRSW' ? 'mrsw' : 'mrmw',
      replicas: r.info.replicas,
      chunkSize: r.info.chunkSize,
    });
    this.datasets.add(ds);
    return ds;
  }

  /** Closes every dataset opened through this connection and the connection itself. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const d of this.datasets) d.close();
    this.datasets.clear();
    guardSync(() => {
      shimDisconnect(this.conn);
    });
  }
}

export async function connect(opts: ConnectOptions = {}): Promise<Hotpot> {
  const path = opts.socketPath ?? defaultSocket();
  return guard(() => new Hotpot(shimConnect(path)));
}

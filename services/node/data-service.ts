// hotpot.v1.Data: read/write/commit by offset for clients in any language (proto/hotpot/v1/data.proto).
//
// A gRPC session is what a mapped process is on the mmap path: one engine session (its sync point decides the
// base images) plus private pages. Here the private pages live in this daemon (whole 4 KiB copies made from the
// base image on first write) instead of in the app's COW mapping, and commit hands them to the same
// engine Commit the shim server uses — one commit protocol. Reads return private pages where the session has
// them and base images elsewhere (committed data as of the sync point, or newer for pages fetched since) — or,
// with `snapshot`, the latest committed state of the node (engine ReadCommitted: every commit whole) elsewhere.
//
// MRSW and the barrier go through the node's NodeConsistency (consistency-service.ts), the same calls the Node
// service proxies for mmap apps: a session holds at most one lease, and its certificate rides on every commit
// exactly as the shim path passes it to the engine's CommitWith.
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { RpcError, toServiceError } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import type { DataHandlers } from '../generated/hotpot/v1/Data.ts';
import type { DataReadRequest__Output } from '../generated/hotpot/v1/DataReadRequest.ts';
import type { DataReadResponse } from '../generated/hotpot/v1/DataReadResponse.ts';
import type { DataWriteRequest__Output } from '../generated/hotpot/v1/DataWriteRequest.ts';
import type { DataWriteResponse } from '../generated/hotpot/v1/DataWriteResponse.ts';
import type { ConsistencyMode__Output } from '../generated/hotpot/v1/ConsistencyMode.ts';
import type { DataAcquireResponse } from '../generated/hotpot/v1/DataAcquireResponse.ts';
import type { NodeConsistency } from './consistency-service.ts';
import {
  NativeError,
  engineBaseImage,
  engineCloseSession,
  engineCommitSession,
  engineEnsurePages,
  engineOpen,
  engineOpenSession,
  engineReadCommitted,
  engineResyncSession,
  type DatasetMode,
  type EngineCommitConflicts,
  type EngineHandle,
} from '../../native/index.ts';

export const PAGE = 4096;
/** Largest Read, and largest data of one Write / WriteStream / ReadStream message. */
export const MAX_MESSAGE_BYTES = 1024 * 1024;
const MAX_REPLICAS = 64;
/** Read ranges one commit may validate. */
const MAX_READS = 4096;
/** Ranges one Acquire may name (as the MRSW master). */
const MAX_ACQUIRE_RANGES = 4096;
const NAME_RE = /^[A-Za-z0-9._-]{1,128}$/;
/** Pages per EnsurePages/BaseImage step of a read or a first write (bounded memory per step). */
const STEP_PAGES = 256;

export interface DataServiceOptions {
  engine: EngineHandle;
  /** MRSW leases and barriers: the dispatcher, reached as the Node service reaches it. */
  consistency: NodeConsistency;
  log: Logger;
  /** A session with no request for this long is closed and its private pages dropped. */
  idleTimeoutMs: number;
  /** Open sessions per node. */
  maxSessions: number;
  /** Private (uncommitted) bytes per session. */
  maxPrivateBytes: number;
}

interface Session {
  token: string;
  engineSession: number;
  datasetId: number;
  name: string;
  sizeBytes: number;
  mode: DatasetMode;
  peer: string;
  /** The MRSW lease this session holds (its certificate goes with every commit), or null. */
  lease: { id: string; certificate: Buffer } | null;
  /** page index -> the session's private copy (4096 bytes). */
  pages: Map<number, Buffer>;
  lastUsed: number;
  busy: number;
  closed: boolean;
  /** Operations of one session run one at a time, in arrival order. */
  queue: Promise<unknown>;
}

const status = (code: grpc.status, message: string): RpcError => new RpcError(code, message);

function modeOf(m: ConsistencyMode__Output): DatasetMode {
  // An enum value this proto version does not know arrives as a number: widen before comparing.
  const v: string | number = m;
  if (v === 'CONSISTENCY_MODE_UNSPECIFIED' || v === 'CONSISTENCY_MODE_MRMW') return 'mrmw';
  if (v === 'CONSISTENCY_MODE_MRSW') return 'mrsw';
  throw status(grpc.status.INVALID_ARGUMENT, `mode: unknown consistency mode ${JSON.stringify(m)}`);
}

function u64(v: number, field: string): number {
  if (!Number.isSafeInteger(v) || v < 0)
    throw status(grpc.status.INVALID_ARGUMENT, `${field} must be an integer in 0..2^53-1`);
  return v;
}

/** Resolves when the stream can take more, or when the client cancelled (the loop then sees call.cancelled). */
function drainOrCancel(call: grpc.ServerWritableStream<unknown, unknown>): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      call.off('drain', done);
      call.off('cancelled', done);
      resolve();
    };
    call.on('drain', done);
    call.on('cancelled', done);
  });
}

async function* typed<T>(s: AsyncIterable<unknown>): AsyncGenerator<T> {
  for await (const m of s) yield m as T;
}

export class DataService {
  private readonly sessions = new Map<string, Session>();
  private readonly sweeper: NodeJS.Timeout;
  private stopped = false;

  constructor(private readonly opts: DataServiceOptions) {
    this.sweeper = setInterval(
      () => {
        this.sweep();
      },
      Math.max(50, Math.min(30_000, Math.floor(opts.idleTimeoutMs / 4))),
    );
    this.sweeper.unref();
  }

  isStopped(): boolean {
    return this.stopped;
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  /** Closes every session (node shutdown) and waits for their leases to be released (bounded by a deadline). */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.sweeper);
    for (const s of [...this.sessions.values()]) this.closeSession(s, 'node shutting down');
    await Promise.all(this.releasing);
  }

  private sweep(): void {
    const now = Date.now();
    for (const s of [...this.sessions.values()]) {
      if (s.busy === 0 && now - s.lastUsed > this.opts.idleTimeoutMs) {
        this.closeSession(s, 'idle timeout');
      }
    }
  }

  private readonly releasing = new Set<Promise<void>>();

  /** Gives the session's lease back to the MRSW master; never rejects (a lease not released ends at expiry). */
  private releaseLease(s: Session, why: string): Promise<void> {
    const l = s.lease;
    if (!l) return Promise.resolve();
    s.lease = null;
    const p = this.opts.consistency.release({ leaseId: l.id }).then(
      () => {
        this.opts.log.info({ dataset: s.name, lease: l.id, why }, 'data session lease released');
      },
      (e: unknown) => {
        this.opts.log.warn(
          { dataset: s.name, lease: l.id, why, err: e instanceof Error ? e.message : String(e) },
          'data session lease not released; it frees at its expiry',
        );
      },
    );
    this.releasing.add(p);
    void p.finally(() => this.releasing.delete(p));
    return p;
  }

  private closeSession(s: Session, why: string): number {
    if (s.closed) return 0;
    s.closed = true;
    void this.releaseLease(s, why);
    this.sessions.delete(s.token);
    const dropped = s.pages.size;
    s.pages.clear();
    engineCloseSession(this.opts.engine, s.engineSession);
    this.opts.log.info({ dataset: s.name, peer: s.peer, dropped, why }, 'data session closed');
    return dropped;
  }

  private lookup(token: string): Session {
    if (typeof token !== 'string' || token === '') throw status(grpc.status.INVALID_ARGUMENT, 'session is required');
    const s = this.sessions.get(token);
    if (!s) throw status(grpc.status.NOT_FOUND, 'unknown session (closed, timed out, or never opened)');
    return s;
  }

  /** Runs `fn` on the session named by `token` after its earlier operations (NOT_FOUND if unknown/closed). */
  private async withSession<T>(token: string, fn: (s: Session) => Promise<T> | T): Promise<T> {
    const s = this.lookup(token);
    s.busy++;
    s.lastUsed = Date.now();
    const run = s.queue.then(async () => {
      if (s.closed) throw status(grpc.status.NOT_FOUND, 'session closed');
      return fn(s);
    });
    s.queue = run.catch(() => undefined);
    try {
      return await run;
    } finally {
      s.busy--;
      s.lastUsed = Date.now();
    }
  }

  private checkRange(s: Session, offset: number, length: number, max: number): void {
    u64(offset, 'offset');
    u64(length, 'length');
    if (length === 0 || length > max) {
      throw status(grpc.status.INVALID_ARGUMENT, `length must be 1..${String(max)} bytes (got ${String(length)})`);
    }
    if (offset > s.sizeBytes || length > s.sizeBytes - offset) {
      throw status(
        grpc.status.OUT_OF_RANGE,
        `range ${String(offset)}+${String(length)} passes the end of dataset '${s.name}' (${String(s.sizeBytes)} bytes)`,
      );
    }
  }

  /** Base images of pages [first, first + count) that the session has no private copy of, fetched if absent. */
  private async baseRun(s: Session, first: number, count: number): Promise<Buffer> {
    await engineEnsurePages(this.opts.engine, s.datasetId, first, count);
    return engineBaseImage(this.opts.engine, s.engineSession, first, count);
  }

  /** Calls `each(page, bytes)` for every page in [first, last] in order: private copy or base image. */
  private async forPages(
    s: Session,
    first: number,
    last: number,
    each: (page: number, bytes: Buffer, isPrivate: boolean) => void,
  ): Promise<void> {
    let p = first;
    while (p <= last) {
      const own = s.pages.get(p);
      if (own) {
        each(p, own, true);
        p++;
        continue;
      }
      let q = p + 1;
      while (q <= last && q - p < STEP_PAGES && !s.pages.has(q)) q++;
      const buf = await this.baseRun(s, p, q - p);
      for (let i = 0; i < q - p; i++) each(p + i, buf.subarray(i * PAGE, (i + 1) * PAGE), false);
      p = q;
    }
  }

  private async readRange(s: Session, offset: number, length: number): Promise<Buffer> {
    const out = Buffer.allocUnsafe(length);
    const first = Math.floor(offset / PAGE);
    const last = Math.floor((offset + length - 1) / PAGE);
    await this.forPages(s, first, last, (page, bytes) => {
      const from = Math.max(offset, page * PAGE);
      const to = Math.min(offset + length, (page + 1) * PAGE);
      bytes.copy(out, from - offset, from - page * PAGE, to - page * PAGE);
    });
    return out;
  }

  /**
   * Snapshot read (DataReadRequest.snapshot): the session's private pages, and every other page of the span from
   * ONE engineReadCommitted — the latest committed state this node shows, every commit whole, even one spanning
   * several owners. Reading the whole span in one call (private pages included, then overlaid) is what makes the
   * non-private pages one state; per-run calls could straddle a commit. The span is at most 257 pages (1 MiB at
   * any offset), well inside the engine's 4096.
   */
  private async readSnapshot(s: Session, offset: number, length: number): Promise<Buffer> {
    const first = Math.floor(offset / PAGE);
    const last = Math.floor((offset + length - 1) / PAGE);
    let committed: Buffer | null = null;
    for (let p = first; p <= last; p++) {
      if (!s.pages.has(p)) {
        committed = await engineReadCommitted(this.opts.engine, s.engineSession, first, last - first + 1);
        break;
      }
    }
    const out = Buffer.allocUnsafe(length);
    for (let p = first; p <= last; p++) {
      const from = Math.max(offset, p * PAGE);
      const to = Math.min(offset + length, (p + 1) * PAGE);
      const own = s.pages.get(p);
      if (own) own.copy(out, from - offset, from - p * PAGE, to - p * PAGE);
      else if (committed) committed.copy(out, from - offset, from - first * PAGE, to - first * PAGE);
    }
    return out;
  }

  private async writeRange(s: Session, offset: number, data: Buffer): Promise<void> {
    const first = Math.floor(offset / PAGE);
    const last = Math.floor((offset + data.length - 1) / PAGE);
    let fresh = 0;
    for (let p = first; p <= last; p++) if (!s.pages.has(p)) fresh++;
    if ((s.pages.size + fresh) * PAGE > this.opts.maxPrivateBytes) {
      throw status(
        grpc.status.RESOURCE_EXHAUSTED,
        `the session would hold more than ${String(this.opts.maxPrivateBytes)} private bytes: commit or roll back first`,
      );
    }
    // Private copies are made from the base image, so the commit's diff against it ships only this session's bytes.
    await this.forPages(s, first, last, (page, bytes, isPrivate) => {
      const copy = isPrivate ? bytes : Buffer.from(bytes);
      const from = Math.max(offset, page * PAGE);
      const to = Math.min(offset + data.length, (page + 1) * PAGE);
      data.copy(copy, from - page * PAGE, from - offset, to - offset);
      if (!isPrivate) s.pages.set(page, copy);
    });
  }

  private checkWrite(s: Session, req: DataWriteRequest__Output): Buffer {
    const data = req.data;
    this.checkRange(s, req.offset, data.length, MAX_MESSAGE_BYTES);
    return data;
  }

  /** Drops private pages equal to their base image; with none left, moves the sync point to now. */
  private refreshSession(s: Session): { pagesKept: number; pagesDropped: number } {
    let dropped = 0;
    for (const [page, bytes] of [...s.pages]) {
      const base = engineBaseImage(this.opts.engine, s.engineSession, page, 1);
      if (base.equals(bytes)) {
        s.pages.delete(page);
        dropped++;
      }
    }
    // Like the mmap path: the sync point moves only when no private change is left to be diffed against it.
    if (s.pages.size === 0) engineResyncSession(this.opts.engine, s.engineSession);
    return { pagesKept: s.pages.size, pagesDropped: dropped };
  }

  private async acquire(
    s: Session,
    req: { ranges: { offset: number; length: number }[]; leaseMs: number; waitMs: number },
  ): Promise<DataAcquireResponse> {
    if (s.mode !== 'mrsw') {
      throw status(grpc.status.FAILED_PRECONDITION, `dataset '${s.name}' is MRMW: acquire is for MRSW datasets`);
    }
    if (s.lease) {
      throw status(
        grpc.status.FAILED_PRECONDITION,
        `this session already holds lease ${s.lease.id}: release it first (one lease per session)`,
      );
    }
    if (req.ranges.length === 0 || req.ranges.length > MAX_ACQUIRE_RANGES) {
      throw status(grpc.status.INVALID_ARGUMENT, `acquire takes 1..${String(MAX_ACQUIRE_RANGES)} ranges`);
    }
    const ranges = req.ranges.map((r, i) => {
      try {
        this.checkRange(s, r.offset, r.length, s.sizeBytes);
      } catch (e) {
        throw e instanceof RpcError ? status(e.code, `ranges[${String(i)}]: ${e.message}`) : e;
      }
      return { offset: r.offset, length: r.length };
    });
    // lease_ms and wait_ms are checked by the master (one set of limits for both paths).
    const r = await this.opts.consistency.acquire({
      dataset: s.name,
      ranges,
      leaseMs: req.leaseMs,
      waitMs: req.waitMs,
      holder: `data session from ${s.peer}`,
    });
    const l = r.lease;
    if (!l) throw status(grpc.status.INTERNAL, 'the MRSW master answered acquire without a lease');
    s.lease = { id: l.leaseId, certificate: l.certificate };
    if (s.closed) {
      // The node closed the session (idle sweep or shutdown) while the master was answering.
      await this.releaseLease(s, 'session closed during acquire');
      throw status(grpc.status.NOT_FOUND, 'session closed');
    }
    // As the SDK's acquire: sync so reads show the latest committed bytes of the pages now owned.
    this.refreshSession(s);
    this.opts.log.info({ dataset: s.name, lease: l.leaseId, epoch: l.fencingEpoch }, 'data session acquired');
    return {
      leaseId: l.leaseId,
      fencingEpoch: l.fencingEpoch,
      expiresUnixMs: l.expiresUnixMs,
      ranges: l.pages.map((p) => ({ offset: p.firstPage * PAGE, length: p.count * PAGE })),
    };
  }

  readonly handlers: DataHandlers = {
    Open: (call, cb) => {
      this.open(call.request, call.getPeer()).then(
        (r) => {
          cb(null, r);
        },
        (e: unknown) => {
          cb(toServiceError(e));
        },
      );
    },
    Read: (call, cb) => {
      const req = call.request;
      this.withSession(req.session, async (s) => {
        this.checkRange(s, req.offset, req.length, MAX_MESSAGE_BYTES);
        const data = req.snapshot
          ? await this.readSnapshot(s, req.offset, req.length)
          : await this.readRange(s, req.offset, req.length);
        return { offset: req.offset, data };
      }).then(
        (r) => {
          cb(null, r);
        },
        (e: unknown) => {
          cb(toServiceError(e));
        },
      );
    },
    ReadStream: (call) => {
      call.on('error', () => undefined);
      const req: DataReadRequest__Output = call.request;
      this.withSession(req.session, async (s) => {
        this.checkRange(s, req.offset, req.length, Number.MAX_SAFE_INTEGER);
        for (let at = req.offset; at < req.offset + req.length; at += MAX_MESSAGE_BYTES) {
          if (call.cancelled) return;
          const n = Math.min(MAX_MESSAGE_BYTES, req.offset + req.length - at);
          // With snapshot, each message is one consistent state (one engineReadCommitted per message).
          const data = req.snapshot ? await this.readSnapshot(s, at, n) : await this.readRange(s, at, n);
          const msg: DataReadResponse = { offset: at, data };
          if (!call.write(msg)) await drainOrCancel(call);
        }
      }).then(
        () => {
          call.end();
        },
        (e: unknown) => {
          call.emit('error', toServiceError(e));
        },
      );
    },
    Write: (call, cb) => {
      const req = call.request;
      this.withSession(req.session, async (s): Promise<DataWriteResponse> => {
        const data = this.checkWrite(s, req);
        await this.writeRange(s, req.offset, data);
        return { bytesWritten: data.length, privatePages: s.pages.size };
      }).then(
        (r) => {
          cb(null, r);
        },
        (e: unknown) => {
          cb(toServiceError(e));
        },
      );
    },
    WriteStream: (call, cb) => {
      call.on('error', () => undefined);
      const run = async (): Promise<DataWriteResponse> => {
        let token = '';
        let written = 0;
        let pages = 0;
        for await (const req of typed<DataWriteRequest__Output>(call)) {
          if (token === '') {
            if (req.session === '')
              throw status(grpc.status.INVALID_ARGUMENT, 'session is required in the first message');
            token = req.session;
          } else if (req.session !== '' && req.session !== token) {
            throw status(grpc.status.INVALID_ARGUMENT, 'every message of a WriteStream must name the same session');
          }
          await this.withSession(token, async (s) => {
            const data = this.checkWrite(s, req);
            await this.writeRange(s, req.offset, data);
            written += data.length;
            pages = s.pages.size;
          });
        }
        if (token === '') throw status(grpc.status.INVALID_ARGUMENT, 'empty WriteStream: no session named');
        return { bytesWritten: written, privatePages: pages };
      };
      run().then(
        (r) => {
          cb(null, r);
        },
        (e: unknown) => {
          cb(toServiceError(e));
        },
      );
    },
    Commit: (call, cb) => {
      const req = call.request;
      this.withSession(req.session, async (s) => {
        if (req.reads.length > MAX_READS) {
          throw status(grpc.status.INVALID_ARGUMENT, `at most ${String(MAX_READS)} read ranges per commit`);
        }
        const reads = req.reads.map((r, i) => {
          try {
            this.checkRange(s, r.offset, r.length, s.sizeBytes);
          } catch (e) {
            throw e instanceof RpcError ? status(e.code, `reads[${String(i)}]: ${e.message}`) : e;
          }
          return { offset: r.offset, len: r.length };
        });
        if (!Number.isInteger(req.replicas) || req.replicas < 0 || req.replicas > MAX_REPLICAS) {
          throw status(
            grpc.status.INVALID_ARGUMENT,
            `replicas must be 0..${String(MAX_REPLICAS)} (0 = dataset default)`,
          );
        }
        const dirty = [...s.pages].sort((a, b) => a[0] - b[0]).map(([page, data]) => ({ page, data }));
        try {
          const lease = s.lease?.certificate ?? null;
          const r = await engineCommitSession(this.opts.engine, s.engineSession, dirty, req.replicas, reads, lease);
          // The node cache holds the new bytes and the engine moved the sync point: drop the private copies.
          s.pages.clear();
          return r;
        } catch (e) {
          if (e instanceof NativeError && e.code === 'ABORTED') throw conflictError(e);
          throw e;
        }
      }).then(
        (r) => {
          cb(null, r);
        },
        (e: unknown) => {
          cb(toServiceError(e));
        },
      );
    },
    Rollback: (call, cb) => {
      this.withSession(call.request.session, (s) => {
        const dropped = s.pages.size;
        s.pages.clear();
        engineResyncSession(this.opts.engine, s.engineSession);
        return { pagesDropped: dropped };
      }).then(
        (r) => {
          cb(null, r);
        },
        (e: unknown) => {
          cb(toServiceError(e));
        },
      );
    },
    Refresh: (call, cb) => {
      this.withSession(call.request.session, (s) => this.refreshSession(s)).then(
        (r) => {
          cb(null, r);
        },
        (e: unknown) => {
          cb(toServiceError(e));
        },
      );
    },
    Close: (call, cb) => {
      this.withSession(call.request.session, async (s) => {
        // Wait for the lease to be back at the master, so its pages are free when Close returns.
        const released = this.releaseLease(s, 'closed by client');
        const pagesDropped = this.closeSession(s, 'closed by client');
        await released;
        return { pagesDropped };
      }).then(
        (r) => {
          cb(null, r);
        },
        (e: unknown) => {
          cb(toServiceError(e));
        },
      );
    },
    Acquire: (call, cb) => {
      const req = call.request;
      this.withSession(req.session, (s) => this.acquire(s, req)).then(
        (r) => {
          cb(null, r);
        },
        (e: unknown) => {
          cb(toServiceError(e));
        },
      );
    },
    Release: (call, cb) => {
      this.withSession(call.request.session, async (s) => {
        const l = s.lease;
        if (!l) return { released: false };
        s.lease = null;
        try {
          await this.opts.consistency.release({ leaseId: l.id });
        } catch (e) {
          // Still held at the master as far as we know: keep it, so a retry (or Close) can release it.
          if (!s.closed) s.lease = l;
          throw e;
        }
        this.opts.log.info({ dataset: s.name, lease: l.id }, 'data session lease released');
        return { released: true };
      }).then(
        (r) => {
          cb(null, r);
        },
        (e: unknown) => {
          cb(toServiceError(e));
        },
      );
    },
    Barrier: (call, cb) => {
      const req = call.request;
      const run = async (): Promise<{ generation: number; arrival: number }> => {
        // Not queued behind the session's other operations (a barrier may wait minutes), but the session must be
        // open, and it is kept from the idle sweep while its caller waits.
        const s = this.lookup(req.session);
        s.busy++;
        try {
          return await this.opts.consistency.barrier({
            name: req.name,
            parties: req.parties,
            timeoutMs: req.timeoutMs,
          });
        } finally {
          s.busy--;
          s.lastUsed = Date.now();
        }
      };
      run().then(
        (r) => {
          cb(null, r);
        },
        (e: unknown) => {
          cb(toServiceError(e));
        },
      );
    },
  };

  private async open(
    req: {
      name: string;
      create: boolean;
      sizeBytes: number;
      mode: ConsistencyMode__Output;
      replicas: number;
    },
    peer: string,
  ): Promise<{
    session: string;
    datasetId: number;
    sizeBytes: number;
    mode: ConsistencyMode__Output;
    replicas: number;
    chunkSizeBytes: number;
    idleTimeoutMs: number;
    maxMessageBytes: number;
  }> {
    if (this.stopped) throw status(grpc.status.UNAVAILABLE, 'the node is shutting down');
    if (!NAME_RE.test(req.name)) {
      throw status(grpc.status.INVALID_ARGUMENT, 'name must match [A-Za-z0-9._-]{1,128}');
    }
    let create: null | { sizeBytes: number; mode: DatasetMode; replicas: number } = null;
    if (req.create) {
      u64(req.sizeBytes, 'size_bytes');
      if (req.sizeBytes === 0) throw status(grpc.status.INVALID_ARGUMENT, 'size_bytes must be > 0 with create');
      if (!Number.isInteger(req.replicas) || req.replicas < 0 || req.replicas > MAX_REPLICAS) {
        throw status(grpc.status.INVALID_ARGUMENT, `replicas must be 1..${String(MAX_REPLICAS)} (0 = 1)`);
      }
      create = { sizeBytes: req.sizeBytes, mode: modeOf(req.mode), replicas: req.replicas || 1 };
    }
    if (this.sessions.size >= this.opts.maxSessions) {
      throw status(
        grpc.status.RESOURCE_EXHAUSTED,
        `this node already has ${String(this.opts.maxSessions)} open data sessions`,
      );
    }
    const d = await engineOpen(this.opts.engine, req.name, create);
    const token = randomBytes(18).toString('base64url');
    const s: Session = {
      token,
      engineSession: engineOpenSession(this.opts.engine, d.datasetId),
      datasetId: d.datasetId,
      name: req.name,
      sizeBytes: d.sizeBytes,
      mode: d.mode,
      peer,
      lease: null,
      pages: new Map(),
      lastUsed: Date.now(),
      busy: 0,
      closed: false,
      queue: Promise.resolve(),
    };
    this.sessions.set(token, s);
    // stop() may have run while the open waited on the control plane.
    if (this.isStopped()) this.closeSession(s, 'node shutting down');
    this.opts.log.info({ dataset: req.name, id: d.datasetId, peer }, 'data session opened');
    return {
      session: token,
      datasetId: d.datasetId,
      sizeBytes: d.sizeBytes,
      mode: d.mode === 'mrsw' ? 'CONSISTENCY_MODE_MRSW' : 'CONSISTENCY_MODE_MRMW',
      replicas: d.replicas,
      chunkSizeBytes: d.chunkSizeBytes,
      idleTimeoutMs: this.opts.idleTimeoutMs,
      maxMessageBytes: MAX_MESSAGE_BYTES,
    };
  }
}

/** ABORTED with the conflicting ranges in the message and in the `hotpot-conflicts` trailer. */
function conflictError(e: NativeError): RpcError {
  const d = e.details as Partial<EngineCommitConflicts> | null;
  const ranges = (d?.conflicts ?? []).map((c) => `${String(c.offset)}+${String(c.len)}`);
  const md = new grpc.Metadata();
  md.set('hotpot-conflicts', ranges.join(','));
  const shown = ranges.slice(0, 16).join(', ') + (ranges.length > 16 ? `, … (${String(ranges.length)} in all)` : '');
  return new RpcError(
    grpc.status.ABORTED,
    `commit conflict: ${e.message}; conflicting ranges (offset+length): ${shown}; nothing was applied, roll back and retry`,
    md,
  );
}

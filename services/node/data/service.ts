// hotpot.v1.Data's handlers: each checks its request (validate.ts), runs on its session (sessions.ts) and reads,
// writes or commits through the session's private pages (overlay.ts); MRSW leases and barriers go through the
// node's NodeConsistency (leases.ts). Errors become statuses in one place (toServiceError, by handle()).
import * as grpc from '@grpc/grpc-js';
import { invalidArgument, RpcError, toServiceError } from '../../common/errors.ts';
import { posixOf, principalKey, type Principal } from '../../common/authz.ts';
import { handle, principal } from '../../common/grpc-server.ts';
import type { Logger } from '../../common/logger.ts';
import type { DataHandlers } from '../../generated/hotpot/v1/Data.ts';
import type { DataOpenRequest__Output } from '../../generated/hotpot/v1/DataOpenRequest.ts';
import type { DataOpenResponse } from '../../generated/hotpot/v1/DataOpenResponse.ts';
import type { DataReadResponse } from '../../generated/hotpot/v1/DataReadResponse.ts';
import type { DataWriteRequest__Output } from '../../generated/hotpot/v1/DataWriteRequest.ts';
import type { DataWriteResponse } from '../../generated/hotpot/v1/DataWriteResponse.ts';
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
  type EngineCommitConflicts,
  type EngineHandle,
} from '../../../native/index.ts';
import type { NodeConsistency } from '../consistency-service.ts';
import { acquireLease, releaseLease, type LeaseContext } from './leases.ts';
import { Overlay, type OverlayEngine, PrivateBudget } from './overlay.ts';
import { SessionTable, type Session } from './sessions.ts';
import {
  MAX_MESSAGE_BYTES,
  checkCommitReplicas,
  checkCreate,
  checkName,
  checkRange,
  checkReads,
  streamSession,
} from './validate.ts';

export interface DataServiceOptions {
  engine: EngineHandle;
  /** MRSW leases and barriers: the dispatcher, reached as the Node service reaches it. */
  consistency: NodeConsistency;
  log: Logger;
  /** A session with no request for this long is closed and its private pages dropped. */
  idleTimeoutMs: number;
  /** Open sessions per node. */
  maxSessions: number;
  /** Open sessions per caller (principal). */
  maxSessionsPerCaller: number;
  /** Private (uncommitted) bytes per session. */
  maxPrivateBytes: number;
  /** Private bytes of every session of the node together. */
  maxNodePrivateBytes: number;
  /** Private bytes of one caller's sessions together (default: half the node's). */
  maxCallerPrivateBytes?: number;
  /** ReadStream / WriteStream calls one caller may have open at once (default 16). */
  maxStreamsPerCaller?: number;
}

/** What a caller holds on this node across its sessions: private bytes and open streams. */
interface CallerUse {
  sessions: number;
  streams: number;
  budget: PrivateBudget;
}

/** A read-only session takes no private pages and writes nothing (its Commit only checks its reads). */
function checkWritable(s: Session, what: string): void {
  if (s.readOnly) {
    throw new RpcError(grpc.status.PERMISSION_DENIED, `${what} in a session opened read-only (open without read_only)`);
  }
}

/** One engine session's calls, as the overlay needs them. */
function engineSession(engine: EngineHandle, datasetId: number, session: number): OverlayEngine {
  return {
    ensurePages: (first, count) => engineEnsurePages(engine, datasetId, first, count),
    baseImage: (first, count) => engineBaseImage(engine, session, first, count),
    readCommitted: (first, count) => engineReadCommitted(engine, session, first, count),
    commit: (pages, replicas, reads, lease) => engineCommitSession(engine, session, pages, replicas, reads, lease),
    resync: () => {
      engineResyncSession(engine, session);
    },
  };
}

/** The key of a call's principal: a session answers only the caller that opened it. */
const caller = (call: { metadata: grpc.Metadata }): string => principalKey(principal(call));

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
    { reason: 'COMMIT_CONFLICT', metadata: { ranges: ranges.join(','), count: String(ranges.length) } },
  );
}

/** How long a ReadStream waits for its client to take more data before it gives up on it. */
export const STREAM_STALL_MS = 30_000;

/**
 * Resolves when the stream can take more, or when the client cancelled (the loop then sees call.cancelled); rejects
 * once the client took nothing for `stallMs` (a client gone without a cancel that reached the node: the stream must
 * not wait for a drain that never comes).
 */
function drainOrCancel(call: grpc.ServerWritableStream<unknown, unknown>, stallMs: number): Promise<void> {
  if (call.cancelled) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const done = (): void => {
      clearTimeout(timer);
      call.off('drain', done);
      call.off('cancelled', done);
      resolve();
    };
    const timer = setTimeout(() => {
      call.off('drain', done);
      call.off('cancelled', done);
      reject(
        new RpcError(grpc.status.DEADLINE_EXCEEDED, `the client took no data for ${String(stallMs)} ms: stream ended`),
      );
    }, stallMs);
    call.on('drain', done);
    call.on('cancelled', done);
  });
}

async function* typed<T>(s: AsyncIterable<unknown>): AsyncGenerator<T> {
  for await (const m of s) yield m as T;
}

export class DataService {
  private readonly daemonUid = process.geteuid?.() ?? 0;
  private readonly sessions: SessionTable;
  private readonly leases: LeaseContext;
  private readonly privateBudget: PrivateBudget;
  /** Per caller (principalKey) with an open session or stream. */
  private readonly callers = new Map<string, CallerUse>();
  private readonly maxCallerPrivateBytes: number;
  private readonly maxStreamsPerCaller: number;

  constructor(private readonly opts: DataServiceOptions) {
    this.privateBudget = new PrivateBudget(opts.maxNodePrivateBytes);
    this.maxCallerPrivateBytes = opts.maxCallerPrivateBytes ?? Math.floor(opts.maxNodePrivateBytes / 2);
    this.maxStreamsPerCaller = opts.maxStreamsPerCaller ?? 16;
    this.sessions = new SessionTable({
      log: opts.log,
      idleTimeoutMs: opts.idleTimeoutMs,
      maxSessions: opts.maxSessions,
      maxSessionsPerCaller: opts.maxSessionsPerCaller,
      release: (leaseId) => opts.consistency.release({ leaseId }),
    });
    this.leases = { consistency: opts.consistency, sessions: this.sessions, log: opts.log };
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  /** Closes every session (node shutdown) and waits for their leases to be released (bounded by a deadline). */
  stop(): Promise<void> {
    return this.sessions.stop();
  }

  readonly handlers: DataHandlers = {
    Open: handle((req, call) => this.open(req, call.getPeer(), principal(call))),
    Read: handle((req, call) =>
      this.sessions.run(req.session, caller(call), async (s) => {
        checkRange(s, req.offset, req.length, MAX_MESSAGE_BYTES);
        const data = req.snapshot
          ? await s.pages.readSnapshot(req.offset, req.length)
          : await s.pages.read(req.offset, req.length);
        return { offset: req.offset, data };
      }),
    ),
    ReadStream: (call) => {
      call.on('error', () => undefined);
      const req = call.request;
      // The session is held for each message's read only, never while the stream waits for its client: a client that
      // stops reading (or went away without its cancel reaching the node) must not block the session's other calls.
      const stream = async (): Promise<void> => {
        await this.sessions.run(req.session, caller(call), (s) => {
          checkRange(s, req.offset, req.length, Number.MAX_SAFE_INTEGER);
        });
        const done = this.openStream(caller(call));
        try {
          for (let at = req.offset; at < req.offset + req.length; at += MAX_MESSAGE_BYTES) {
            if (call.cancelled) return;
            const n = Math.min(MAX_MESSAGE_BYTES, req.offset + req.length - at);
            // With snapshot, each message is one consistent state (one readCommitted per message).
            const data = await this.sessions.run(req.session, caller(call), (s) =>
              req.snapshot ? s.pages.readSnapshot(at, n) : s.pages.read(at, n),
            );
            const msg: DataReadResponse = { offset: at, data };
            if (!call.write(msg)) await drainOrCancel(call, STREAM_STALL_MS);
          }
        } finally {
          done();
        }
      };
      stream().then(
        () => {
          call.end();
        },
        (e: unknown) => {
          call.emit('error', toServiceError(e));
        },
      );
    },
    Write: handle((req, call) =>
      this.sessions.run(req.session, caller(call), async (s): Promise<DataWriteResponse> => {
        checkWritable(s, 'Write');
        const bytesWritten = await this.write(s, req);
        return { bytesWritten, privatePages: s.pages.size };
      }),
    ),
    WriteStream: (call, cb) => {
      call.on('error', () => undefined);
      const run = async (): Promise<DataWriteResponse> => {
        const done = this.openStream(caller(call));
        try {
          let token = '';
          let written = 0;
          let pages = 0;
          for await (const req of typed<DataWriteRequest__Output>(call)) {
            token = streamSession(token, req.session);
            await this.sessions.run(token, caller(call), async (s) => {
              checkWritable(s, 'WriteStream');
              written += await this.write(s, req);
              pages = s.pages.size;
            });
          }
          if (token === '') throw invalidArgument('empty WriteStream: no session named');
          return { bytesWritten: written, privatePages: pages };
        } finally {
          done();
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
    Commit: handle((req, call) =>
      this.sessions.run(req.session, caller(call), async (s) => {
        // A read-only session has no private pages: its commit writes nothing and checks that what it read is still
        // current (one consistent view of several reads, as `hotpot dump` and `backup` take).
        const reads = checkReads(s, req.reads);
        const replicas = checkCommitReplicas(req.replicas);
        try {
          return await s.pages.commit({ replicas, reads, lease: s.lease?.certificate ?? null });
        } catch (e) {
          if (e instanceof NativeError && e.code === 'ABORTED') throw conflictError(e);
          throw e;
        }
      }),
    ),
    Rollback: handle((req, call) =>
      this.sessions.run(req.session, caller(call), (s) => ({ pagesDropped: s.pages.rollback() })),
    ),
    Refresh: handle((req, call) => this.sessions.run(req.session, caller(call), (s) => s.pages.refresh())),
    Close: handle((req, call) =>
      this.sessions.run(req.session, caller(call), async (s) => {
        // Wait for the lease to be back at the master, so its pages are free when Close returns.
        const released = this.sessions.releaseLease(s, 'closed by client');
        const pagesDropped = this.sessions.close(s, 'closed by client');
        await released;
        return { pagesDropped };
      }),
    ),
    Acquire: handle((req, call) =>
      this.sessions.run(req.session, caller(call), (s) => {
        checkWritable(s, 'Acquire');
        return acquireLease(this.leases, s, req);
      }),
    ),
    Release: handle((req, call) => this.sessions.run(req.session, caller(call), (s) => releaseLease(this.leases, s))),
    // Not queued behind the session's other operations (a barrier may wait minutes), but the session must be open.
    Barrier: handle((req, call) =>
      this.sessions.hold(req.session, caller(call), (s) =>
        // The session's dataset: its barriers are the ones a session on it may reach (read access, checked at open).
        this.opts.consistency.barrier({
          name: req.name,
          parties: req.parties,
          timeoutMs: req.timeoutMs,
          dataset: s.name,
        }),
      ),
    ),
  };

  /** Checks a Write (or WriteStream message) and writes its data into the private pages; returns its length. */
  private async write(s: Session, req: DataWriteRequest__Output): Promise<number> {
    checkRange(s, req.offset, req.data.length, MAX_MESSAGE_BYTES);
    await s.pages.write(req.offset, req.data);
    return req.data.length;
  }

  /** What `key` holds on this node (made on first use; forgotten when it holds nothing). */
  private callerUse(key: string): CallerUse {
    let u = this.callers.get(key);
    if (!u) {
      u = {
        sessions: 0,
        streams: 0,
        budget: new PrivateBudget(
          this.maxCallerPrivateBytes,
          "this caller's sessions on this node",
          this.privateBudget,
        ),
      };
      this.callers.set(key, u);
    }
    return u;
  }

  private forgetIfIdle(key: string, u: CallerUse): void {
    if (u.sessions === 0 && u.streams === 0) this.callers.delete(key);
  }

  /** Counts an open stream of `key` until the returned function is called; RESOURCE_EXHAUSTED past the cap. */
  private openStream(key: string): () => void {
    const u = this.callerUse(key);
    if (u.streams >= this.maxStreamsPerCaller) {
      this.forgetIfIdle(key, u);
      throw new RpcError(
        grpc.status.RESOURCE_EXHAUSTED,
        `this caller already has ${String(this.maxStreamsPerCaller)} open streams on this node (the per-caller cap)`,
      );
    }
    u.streams++;
    let open = true;
    return () => {
      if (!open) return;
      open = false;
      u.streams--;
      this.forgetIfIdle(key, u);
    };
  }

  /**
   * Opens (or creates) as `caller`: the dataset's owner and permission bits are checked against its uid:gid (read
   * for a read-only session, read and write otherwise).
   */
  private async open(req: DataOpenRequest__Output, peer: string, who: Principal): Promise<DataOpenResponse> {
    const caller = { ...posixOf(who, this.daemonUid), readOnly: req.readOnly };
    this.sessions.checkRunning();
    checkName(req.name);
    const create = req.create ? checkCreate(req) : null;
    const key = principalKey(who);
    this.sessions.checkRoom(key);
    const { engine } = this.opts;
    const d = await engineOpen(engine, req.name, create, caller);
    const engineSessionId = engineOpenSession(engine, d.datasetId);
    const use = this.callerUse(key);
    use.sessions++;
    const s = this.sessions.add(
      {
        datasetId: d.datasetId,
        name: req.name,
        sizeBytes: d.sizeBytes,
        mode: d.mode,
        peer,
        owner: key,
        readOnly: req.readOnly,
        pages: new Overlay(engineSession(engine, d.datasetId, engineSessionId), this.opts.maxPrivateBytes, use.budget),
      },
      () => {
        engineCloseSession(engine, engineSessionId);
        use.sessions--;
        this.forgetIfIdle(key, use);
      },
    );
    this.opts.log.info(
      { dataset: req.name, id: d.datasetId, peer, uid: caller.uid, readOnly: req.readOnly },
      'data session opened',
    );
    return {
      session: s.token,
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

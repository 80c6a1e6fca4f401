// The node's table of gRPC Data sessions: secret tokens, the per-node limit, one-at-a-time operations per session,
// the idle sweep, and giving a session's MRSW lease back when it ends (close, idle timeout, node shutdown).
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { invalidArgument, notFound, RpcError, unavailable } from '../../common/errors.ts';
import type { Logger } from '../../common/logger.ts';
import type { DatasetMode } from '../../../native/index.ts';
import type { Overlay } from './overlay.ts';

/** How long a stopping node waits for its sessions' leases to be released (SessionTableOptions.stopReleaseWaitMs). */
const STOP_RELEASE_WAIT_MS = 5000;

/** An MRSW lease a session holds; its certificate goes with every commit. */
export interface SessionLease {
  id: string;
  certificate: Buffer;
}

/** What the opener of a session knows about it. */
export interface SessionInit {
  datasetId: number;
  name: string;
  sizeBytes: number;
  mode: DatasetMode;
  /** The client's address, for logs and as the lease holder's name. */
  peer: string;
  /** Who opened it (authz.ts principalKey): only that caller may use it. */
  owner: string;
  /** Opened read-only: Write, Commit and Acquire are refused. */
  readOnly: boolean;
  pages: Overlay;
}

export interface Session extends Readonly<SessionInit> {
  readonly token: string;
  lease: SessionLease | null;
  closed: boolean;
}

interface Entry extends Session {
  /** Ends the engine session (called once, when the session closes). */
  end: () => void;
  lastUsed: number;
  /** Operations running or waiting: a busy session is never swept. */
  busy: number;
  /** Operations of one session run one at a time, in arrival order. */
  queue: Promise<unknown>;
}

export interface SessionTableOptions {
  log: Logger;
  /** A session with no request for this long is closed and its private pages dropped. */
  idleTimeoutMs: number;
  /** Open sessions per node. */
  maxSessions: number;
  /** Open sessions per caller (principalKey), so one caller cannot take the whole node's. */
  maxSessionsPerCaller: number;
  /** Gives a lease back to the MRSW master. */
  release: (leaseId: string) => Promise<unknown>;
  /** How long stop() waits for the leases to be released [STOP_RELEASE_WAIT_MS]. */
  stopReleaseWaitMs?: number;
}

export class SessionTable {
  private readonly sessions = new Map<string, Entry>();
  private readonly releasing = new Set<Promise<void>>();
  private readonly sweeper: NodeJS.Timeout;
  private stopped = false;

  constructor(private readonly opts: SessionTableOptions) {
    this.sweeper = setInterval(
      () => {
        this.sweep();
      },
      Math.max(50, Math.min(30_000, Math.floor(opts.idleTimeoutMs / 4))),
    );
    this.sweeper.unref();
  }

  get size(): number {
    return this.sessions.size;
  }

  /** Throws UNAVAILABLE once the node is shutting down. */
  checkRunning(): void {
    if (this.stopped) throw unavailable('the node is shutting down');
  }

  /** Throws RESOURCE_EXHAUSTED when the node, or this caller, has its limit of open sessions. */
  checkRoom(owner: string): void {
    if (this.sessions.size >= this.opts.maxSessions) {
      throw new RpcError(
        grpc.status.RESOURCE_EXHAUSTED,
        `this node already has ${String(this.opts.maxSessions)} open data sessions`,
      );
    }
    let mine = 0;
    for (const e of this.sessions.values()) if (e.owner === owner) mine++;
    if (mine >= this.opts.maxSessionsPerCaller) {
      throw new RpcError(
        grpc.status.RESOURCE_EXHAUSTED,
        `this caller already has ${String(this.opts.maxSessionsPerCaller)} open data sessions on this node (the ` +
          'per-caller cap): close some',
      );
    }
  }

  /** Registers a session under a new secret token; `end` ends its engine session when it closes. */
  add(init: SessionInit, end: () => void): Session {
    const s: Entry = {
      ...init,
      end,
      token: randomBytes(18).toString('base64url'),
      lease: null,
      closed: false,
      lastUsed: Date.now(),
      busy: 0,
      queue: Promise.resolve(),
    };
    this.sessions.set(s.token, s);
    // stop() may have run while the opener waited on the control plane.
    if (this.stopped) this.close(s, 'node shutting down');
    return s;
  }

  /**
   * Runs `fn` on the session named by `token` after its earlier operations (NOT_FOUND if unknown or closed,
   * PERMISSION_DENIED if `caller` did not open it).
   */
  async run<T>(token: string, caller: string, fn: (s: Session) => Promise<T> | T): Promise<T> {
    const s = this.lookup(token, caller);
    s.busy++;
    s.lastUsed = Date.now();
    const run = s.queue.then(async () => {
      if (s.closed) throw notFound('session closed');
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

  /** Runs `fn` beside the session's queued operations (a barrier may wait minutes), kept from the idle sweep. */
  async hold<T>(token: string, caller: string, fn: (s: Session) => Promise<T>): Promise<T> {
    const s = this.lookup(token, caller);
    s.busy++;
    try {
      return await fn(s);
    } finally {
      s.busy--;
      s.lastUsed = Date.now();
    }
  }

  /** Ends a session: its lease goes back (not awaited), its private pages are dropped; returns how many. */
  close(s: Session, why: string): number {
    const e = this.sessions.get(s.token);
    if (s.closed || !e) return 0;
    s.closed = true;
    void this.releaseLease(s, why);
    this.sessions.delete(s.token);
    const dropped = s.pages.drop();
    e.end();
    this.opts.log.info({ dataset: s.name, peer: s.peer, dropped, why }, 'data session closed');
    return dropped;
  }

  /** Gives the session's lease back to the MRSW master; never rejects (a lease not released ends at expiry). */
  releaseLease(s: Session, why: string): Promise<void> {
    const l = s.lease;
    if (!l) return Promise.resolve();
    s.lease = null;
    const p = this.opts.release(l.id).then(
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

  /**
   * Closes every session (node shutdown) and waits for their leases to be released, stopReleaseWaitMs at most: a
   * release is sent again until its lease's expiry while the dispatcher is away, and a stop does not wait for that
   * (a lease not released ends at expiry).
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.sweeper);
    for (const s of [...this.sessions.values()]) this.close(s, 'node shutting down');
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(this.releasing),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, this.opts.stopReleaseWaitMs ?? STOP_RELEASE_WAIT_MS);
      }),
    ]);
    clearTimeout(timer);
  }

  private lookup(token: string, caller: string): Entry {
    if (typeof token !== 'string' || token === '') throw invalidArgument('session is required');
    const s = this.sessions.get(token);
    if (!s) throw notFound('unknown session (closed, timed out, or never opened)');
    if (s.owner !== caller) {
      throw new RpcError(grpc.status.PERMISSION_DENIED, 'this session was opened by another caller: open your own');
    }
    return s;
  }

  private sweep(): void {
    const now = Date.now();
    for (const s of [...this.sessions.values()]) {
      if (s.busy === 0 && now - s.lastUsed > this.opts.idleTimeoutMs) this.close(s, 'idle timeout');
    }
  }
}

// hotpot.v1.Node Acquire/Release/RenewLease/Barrier: the node proxies local apps' MRSW and barrier calls to
// the dispatcher, filling in its own node id (the lease certificate names the node whose engine commits) and the
// app it asks for (the dispatcher checks the dataset's bits against it). A lease handed out here answers only the
// caller that acquired it. The gRPC Data service (data/) takes leases and waits at barriers through the same
// NodeConsistency, for sessions it checked at open.
import { randomUUID } from 'node:crypto';
import { posixOf, principalKey, standing, type Principal } from '../common/authz.ts';
import * as grpc from '@grpc/grpc-js';
import { asRpcError, HotpotError, RpcError, toServiceError, unavailable } from '../common/errors.ts';
import { handle, principal } from '../common/grpc-server.ts';
import type { DispatcherClient } from '../common/proto.ts';
import { DEFAULT_DEADLINE_MS, retryLostAnswers, unary } from '../common/rpc.ts';
import type { NodeHandlers } from '../generated/hotpot/v1/Node.ts';
import type { AcquireRequest } from '../generated/hotpot/v1/AcquireRequest.ts';
import type { AcquireResponse__Output } from '../generated/hotpot/v1/AcquireResponse.ts';
import type { BarrierRequest } from '../generated/hotpot/v1/BarrierRequest.ts';
import type { BarrierResponse__Output } from '../generated/hotpot/v1/BarrierResponse.ts';
import type { ReleaseRequest } from '../generated/hotpot/v1/ReleaseRequest.ts';
import type { ReleaseResponse__Output } from '../generated/hotpot/v1/ReleaseResponse.ts';
import type { RenewLeaseRequest } from '../generated/hotpot/v1/RenewLeaseRequest.ts';
import type { RenewLeaseResponse__Output } from '../generated/hotpot/v1/RenewLeaseResponse.ts';

/** Extra time past the caller's own wait for the dispatcher round trip. */
const SLACK_MS = 5000;
/** Leases whose expiry a node keeps for its releases (see `release`). */
const MAX_TRACKED_LEASES = 65_536;

type ConsistencyHandlers = Pick<NodeHandlers, 'Acquire' | 'Release' | 'RenewLease' | 'Barrier'>;

/** The dispatcher's error keeps its status code on the way back to the app; a failed call is UNAVAILABLE. */
function passThrough(e: unknown): RpcError {
  return asRpcError(e) ?? unavailable(`dispatcher: ${e instanceof Error ? e.message : String(e)}`);
}

/**
 * The node's one path to the dispatcher's MRSW master and barrier, used by both the Node service (mmap SDK
 * apps on this node) and the Data service (gRPC sessions on this node). `acquire` fills in this node's id: the
 * lease certificate names the node whose engine commits. Errors are RpcErrors with the dispatcher's status.
 */
export interface NodeConsistency {
  acquire(req: AcquireRequest): Promise<AcquireResponse__Output>;
  release(req: ReleaseRequest): Promise<ReleaseResponse__Output>;
  renew(req: RenewLeaseRequest): Promise<RenewLeaseResponse__Output>;
  barrier(req: BarrierRequest): Promise<BarrierResponse__Output>;
}

/**
 * Brings this node's cached copies of a granted lease's pages up to the owners' versions before the holder reads
 * them (a copy that missed a commit, e.g. one its owner applied but could not push before it crashed, must not be
 * the base of the holder's next commit). Rejects when an owner cannot be asked.
 */
export type RefreshLeasePages = (datasetId: number, pages: { firstPage: number; count: number }[]) => Promise<void>;

export function nodeConsistency(
  link: () => { client: DispatcherClient; nodeId: number } | null,
  refreshPages: RefreshLeasePages,
): NodeConsistency {
  const dispatcher = (): { client: DispatcherClient; nodeId: number } => {
    const l = link();
    if (!l || l.nodeId === 0) throw unavailable('this node has not joined the dispatcher yet');
    return l;
  };
  // Until when each lease granted through this node runs (renewals move it): a release whose answer may have been
  // lost is sent again until then. Bounded like LeaseHolders: expired entries go when it is full.
  const expiries = new Map<string, number>();
  const track = (leaseId: string, expiresUnixMs: number): void => {
    makeRoom(expiries, MAX_TRACKED_LEASES, (until) => until);
    expiries.set(leaseId, expiresUnixMs);
  };
  const call = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (e) {
      throw passThrough(e);
    }
  };
  return {
    acquire: async (req) => {
      let d = dispatcher();
      // Sent again with the same request id while the answer may have been lost (the dispatcher restarted, the link
      // broke): the dispatcher answers a retry with the lease it granted, so a lost answer does not hold the pages
      // for a whole lease (nor make this holder wait for itself).
      const requestId = req.requestId || randomUUID();
      const granted = await retryLostAnswers(
        async (remainingMs) => {
          d = dispatcher();
          return call(() =>
            unary<AcquireResponse__Output>(
              (o, cb) => d.client.Acquire({ ...req, nodeId: d.nodeId, requestId }, o, cb),
              remainingMs,
            ),
          );
        },
        Date.now() + (req.waitMs ?? 0) + SLACK_MS,
      );
      const lease = granted.lease;
      if (!lease) throw unavailable('dispatcher: Acquire answered without a lease');
      const giveBack = (): Promise<unknown> =>
        unary<ReleaseResponse__Output>((o, cb) => d.client.Release({ leaseId: lease.leaseId }, o, cb)).catch(
          () => undefined,
        );
      try {
        // Waits (within the node's owner wait) for a page whose owner is down to be failed over.
        await refreshPages(lease.datasetId, lease.pages);
      } catch (e) {
        // The holder could not be given the newest bytes: give the pages back rather than hand out a stale view.
        await giveBack();
        throw unavailable(
          `acquired ${lease.dataset} but could not check this node's copies with their owners (released again): ${
            e instanceof Error ? e.message : String(e)
          }`,
        );
      }
      if (lease.expiresUnixMs <= Date.now()) {
        await giveBack();
        throw unavailable(
          `acquired ${lease.dataset} but the lease ran out while this node's copies were checked with their owners ` +
            '(a failover was under way); acquire again',
        );
      }
      track(lease.leaseId, lease.expiresUnixMs);
      return granted;
    },
    release: async (req) => {
      // Sent again while the answer may have been lost (the dispatcher restarting, a takeover, a broken link), until
      // the lease would have ended anyway: a release is idempotent, and one given up on kept the pages from everyone
      // waiting for them for the rest of the lease (chaos: MRSW workers after a dispatcher kill).
      const id = req.leaseId ?? '';
      const until = Math.max(expiries.get(id) ?? 0, Date.now() + 1);
      const r = await retryLostAnswers((remainingMs) => {
        const d = dispatcher();
        return call(() =>
          unary<ReleaseResponse__Output>(
            (o, cb) => d.client.Release(req, o, cb),
            Math.max(remainingMs, DEFAULT_DEADLINE_MS),
          ),
        );
      }, until);
      expiries.delete(id);
      return r;
    },
    renew: async (req) => {
      const d = dispatcher();
      const r = await call(() => unary<RenewLeaseResponse__Output>((o, cb) => d.client.RenewLease(req, o, cb)));
      const id = req.leaseId ?? '';
      if (r.lease && expiries.has(id)) expiries.set(id, r.lease.expiresUnixMs);
      return r;
    },
    barrier: async (req) => {
      dispatcher();
      // Sent again with the same request id while the answer may have been lost (a dispatcher takeover or restart, a
      // broken link), within the caller's timeout: the dispatcher keeps the arrival (it is durable) and answers the
      // retry with its round, so the caller is neither counted twice nor left at the next round.
      const requestId = req.requestId || randomUUID();
      const timeoutMs = req.timeoutMs ?? 0;
      return retryLostAnswers(async (remainingMs) => {
        const d = dispatcher();
        // A retry that arrives anew (its first attempt never reached a dispatcher) waits only the time left.
        const wait = Math.min(timeoutMs, remainingMs);
        return call(() =>
          unary<BarrierResponse__Output>(
            (o, cb) => d.client.Barrier({ ...req, requestId, timeoutMs: wait }, o, cb),
            wait + SLACK_MS,
          ),
        );
      }, Date.now() + timeoutMs);
    },
  };
}

/** A bounded map of leases about to take one more: when full, expired entries go first, then the oldest. */
function makeRoom<V>(m: Map<string, V>, max: number, expiresUnixMs: (v: V) => number): void {
  if (m.size < max) return;
  const now = Date.now();
  for (const [id, v] of m) if (expiresUnixMs(v) <= now) m.delete(id);
  for (const id of m.keys()) {
    if (m.size < max) break;
    m.delete(id);
  }
}

/**
 * Who holds each lease the Node service handed out (principalKey), until it is released or expires: Release and
 * RenewLease answer only that caller (or an admin). Bounded: expired entries go first, then the oldest.
 */
export class LeaseHolders {
  private readonly holders = new Map<string, { key: string; expiresUnixMs: number }>();

  constructor(private readonly max = 65_536) {}

  get size(): number {
    return this.holders.size;
  }

  add(leaseId: string, key: string, expiresUnixMs: number): void {
    makeRoom(this.holders, this.max, (h) => h.expiresUnixMs);
    this.holders.set(leaseId, { key, expiresUnixMs });
  }

  /** Throws PERMISSION_DENIED unless `p` acquired `leaseId` here (admins may act on any). */
  check(leaseId: string, p: Principal, daemonUid: number): void {
    if (standing(p, daemonUid) === 'admin') return;
    const h = this.holders.get(leaseId);
    if (h?.key !== principalKey(p)) {
      throw new HotpotError(
        'PERMISSION_DENIED',
        `lease ${leaseId.slice(0, 64)} was not acquired through this node by this caller (a lease answers its holder only)`,
      );
    }
  }

  renewed(leaseId: string, expiresUnixMs: number): void {
    const h = this.holders.get(leaseId);
    if (h) h.expiresUnixMs = expiresUnixMs;
  }

  remove(leaseId: string): void {
    this.holders.delete(leaseId);
  }
}

export function consistencyHandlers(
  c: NodeConsistency,
  daemonUid = process.geteuid?.() ?? 0,
  holders = new LeaseHolders(),
): ConsistencyHandlers {
  return {
    Acquire: handle(async (req, call) => {
      const p = principal(call);
      const r = await c.acquire({ ...req, caller: posixOf(p, daemonUid) });
      // The app stopped waiting (its deadline passed, it exited) while the dispatcher granted the lease: nobody
      // would release it, and it would keep the pages — even from that app's next acquire — for the whole lease.
      if (r.lease && call.cancelled) {
        await c.release({ leaseId: r.lease.leaseId }).catch(() => undefined);
        throw new RpcError(grpc.status.CANCELLED, 'the acquire was cancelled by its caller: its lease was released');
      }
      if (r.lease) holders.add(r.lease.leaseId, principalKey(p), r.lease.expiresUnixMs);
      return r;
    }, toServiceError),
    Release: handle(async (req, call) => {
      holders.check(req.leaseId, principal(call), daemonUid);
      const r = await c.release(req);
      holders.remove(req.leaseId);
      return r;
    }, toServiceError),
    RenewLease: handle(async (req, call) => {
      holders.check(req.leaseId, principal(call), daemonUid);
      const r = await c.renew(req);
      if (r.lease) holders.renewed(req.leaseId, r.lease.expiresUnixMs);
      return r;
    }, toServiceError),
    Barrier: handle((req, call) => c.barrier({ ...req, caller: posixOf(principal(call), daemonUid) }), toServiceError),
  };
}

// hotpot.v1.Node Acquire/Release/RenewLease/Barrier: the node proxies local apps' MRSW and barrier calls to
// the dispatcher, filling in its own node id (the lease certificate names the node whose engine commits).
// The gRPC Data service (data/) takes leases and waits at barriers through the same NodeConsistency.
import { asRpcError, type RpcError, toServiceError, unavailable } from '../common/errors.ts';
import { handle } from '../common/grpc-server.ts';
import type { DispatcherClient } from '../common/proto.ts';
import { unary } from '../common/rpc.ts';
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
  const call = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (e) {
      throw passThrough(e);
    }
  };
  return {
    acquire: async (req) => {
      const d = dispatcher();
      const granted = await call(() =>
        unary<AcquireResponse__Output>(
          (o, cb) => d.client.Acquire({ ...req, nodeId: d.nodeId }, o, cb),
          (req.waitMs ?? 0) + SLACK_MS,
        ),
      );
      const lease = granted.lease;
      if (!lease) throw unavailable('dispatcher: Acquire answered without a lease');
      try {
        await refreshPages(lease.datasetId, lease.pages);
      } catch (e) {
        // The holder could not be given the newest bytes: give the pages back rather than hand out a stale view.
        await unary<ReleaseResponse__Output>((o, cb) => d.client.Release({ leaseId: lease.leaseId }, o, cb)).catch(
          () => undefined,
        );
        throw unavailable(
          `acquired ${lease.dataset} but could not check this node's copies with their owners (released again): ${
            e instanceof Error ? e.message : String(e)
          }`,
        );
      }
      return granted;
    },
    release: async (req) => {
      const d = dispatcher();
      return call(() => unary<ReleaseResponse__Output>((o, cb) => d.client.Release(req, o, cb)));
    },
    renew: async (req) => {
      const d = dispatcher();
      return call(() => unary<RenewLeaseResponse__Output>((o, cb) => d.client.RenewLease(req, o, cb)));
    },
    barrier: async (req) => {
      const d = dispatcher();
      return call(() =>
        unary<BarrierResponse__Output>((o, cb) => d.client.Barrier(req, o, cb), (req.timeoutMs ?? 0) + SLACK_MS),
      );
    },
  };
}

export function consistencyHandlers(c: NodeConsistency): ConsistencyHandlers {
  return {
    Acquire: handle((req) => c.acquire(req), toServiceError),
    Release: handle((req) => c.release(req), toServiceError),
    RenewLease: handle((req) => c.renew(req), toServiceError),
    Barrier: handle((req) => c.barrier(req), toServiceError),
  };
}

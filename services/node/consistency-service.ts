// hotpot.v1.Node Acquire/Release/RenewLease/Barrier: the node proxies local apps' MRSW and barrier calls to
// the dispatcher, filling in its own node id (the lease certificate names the node whose engine commits).
import * as grpc from '@grpc/grpc-js';
import { HotpotError, RpcError, toServiceError, unavailable } from '../common/errors.ts';
import { handle } from '../common/grpc-server.ts';
import type { DispatcherClient } from '../common/proto.ts';
import { unary } from '../common/rpc.ts';
import type { NodeHandlers } from '../generated/hotpot/v1/Node.ts';
import type { AcquireResponse__Output } from '../generated/hotpot/v1/AcquireResponse.ts';
import type { BarrierResponse__Output } from '../generated/hotpot/v1/BarrierResponse.ts';
import type { ReleaseResponse__Output } from '../generated/hotpot/v1/ReleaseResponse.ts';
import type { RenewLeaseResponse__Output } from '../generated/hotpot/v1/RenewLeaseResponse.ts';

/** Extra time past the caller's own wait for the dispatcher round trip. */
const SLACK_MS = 5000;

type ConsistencyHandlers = Pick<NodeHandlers, 'Acquire' | 'Release' | 'RenewLease' | 'Barrier'>;

/** The dispatcher's error keeps its status code on the way back to the app. */
function passThrough(e: unknown): RpcError {
  if (e instanceof HotpotError) return new RpcError(grpc.status[e.code], e.message);
  if (e instanceof RpcError) return e;
  return unavailable(`dispatcher: ${e instanceof Error ? e.message : String(e)}`);
}

export function consistencyHandlers(
  link: () => { client: DispatcherClient; nodeId: number } | null,
): ConsistencyHandlers {
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
    Acquire: handle(async (req) => {
      const d = dispatcher();
      return call(() =>
        unary<AcquireResponse__Output>(
          (o, cb) => d.client.Acquire({ ...req, nodeId: d.nodeId }, o, cb),
          req.waitMs + SLACK_MS,
        ),
      );
    }, toServiceError),
    Release: handle(async (req) => {
      const d = dispatcher();
      return call(() => unary<ReleaseResponse__Output>((o, cb) => d.client.Release(req, o, cb)));
    }, toServiceError),
    RenewLease: handle(async (req) => {
      const d = dispatcher();
      return call(() => unary<RenewLeaseResponse__Output>((o, cb) => d.client.RenewLease(req, o, cb)));
    }, toServiceError),
    Barrier: handle(async (req) => {
      const d = dispatcher();
      return call(() =>
        unary<BarrierResponse__Output>((o, cb) => d.client.Barrier(req, o, cb), req.timeoutMs + SLACK_MS),
      );
    }, toServiceError),
  };
}

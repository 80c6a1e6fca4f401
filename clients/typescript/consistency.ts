// The SDK's control calls for consistency (docs/design/consistency.md): MRSW acquire/release/renew and the
// cluster barrier. They go to the local node's gRPC server on the unix socket `grpc.sock` beside the shim
// socket `node.sock`; the node proxies them to the dispatcher.
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { HotpotError as RpcHotpotError } from '../../services/common/errors.ts';
import { hotpotV1, type NodeClient } from '../../services/common/proto.ts';
import { unary } from '../../services/common/rpc.ts';
import type { AcquireResponse__Output } from '../../services/generated/hotpot/v1/AcquireResponse.ts';
import type { BarrierResponse__Output } from '../../services/generated/hotpot/v1/BarrierResponse.ts';
import type { Lease__Output } from '../../services/generated/hotpot/v1/Lease.ts';
import type { ReleaseResponse__Output } from '../../services/generated/hotpot/v1/ReleaseResponse.ts';
import type { RenewLeaseResponse__Output } from '../../services/generated/hotpot/v1/RenewLeaseResponse.ts';

/** A byte range of a dataset. */
export interface Range {
  offset: number;
  length: number;
}

/** Raised for a failed control call; `code` is the gRPC status name. */
export type ControlErrorFactory = (code: string, message: string) => Error;

const CONTROL_SLACK_MS = 5000;

/** The node's gRPC unix socket for a shim socket path (null: the default /run/hotpot/node.sock). */
export function grpcSocketFor(shimSocket: string | null): string {
  return join(dirname(shimSocket ?? '/run/hotpot/node.sock'), 'grpc.sock');
}

export class ControlChannel {
  private client: NodeClient | null = null;
  constructor(
    private readonly socket: string,
    private readonly toError: ControlErrorFactory,
  ) {}

  private node(): NodeClient {
    this.client ??= new hotpotV1.Node(`unix:${this.socket}`, grpc.credentials.createInsecure());
    return this.client;
  }

  async call<T>(
    start: (c: NodeClient, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, v?: T) => void) => unknown,
    timeoutMs: number,
  ): Promise<T> {
    const c = this.node();
    try {
      return await unary<T>((o, cb) => start(c, o, cb), timeoutMs);
    } catch (e) {
      if (e instanceof RpcHotpotError) throw this.toError(e.code, e.message);
      throw this.toError('UNAVAILABLE', e instanceof Error ? e.message : String(e));
    }
  }

  acquire(dataset: string, ranges: Range[], leaseMs: number, waitMs: number): Promise<Lease__Output> {
    return this.call<AcquireResponse__Output>(
      (c, o, cb) => c.Acquire({ dataset, ranges, leaseMs, waitMs, holder: `pid ${String(process.pid)}` }, o, cb),
      waitMs + 2 * CONTROL_SLACK_MS,
    ).then((r) => {
      if (!r.lease) throw this.toError('INTERNAL', 'acquire answered without a lease');
      return r.lease;
    });
  }

  async release(leaseId: string): Promise<void> {
    await this.call<ReleaseResponse__Output>((c, o, cb) => c.Release({ leaseId }, o, cb), CONTROL_SLACK_MS);
  }

  renew(leaseId: string, leaseMs: number): Promise<Lease__Output> {
    return this.call<RenewLeaseResponse__Output>(
      (c, o, cb) => c.RenewLease({ leaseId, leaseMs }, o, cb),
      CONTROL_SLACK_MS,
    ).then((r) => {
      if (!r.lease) throw this.toError('INTERNAL', 'renew answered without a lease');
      return r.lease;
    });
  }

  barrier(dataset: string, name: string, parties: number, timeoutMs: number): Promise<BarrierResponse__Output> {
    return this.call<BarrierResponse__Output>(
      (c, o, cb) => c.Barrier({ dataset, name, parties, timeoutMs }, o, cb),
      timeoutMs + 2 * CONTROL_SLACK_MS,
    );
  }

  close(): void {
    this.client?.close();
    this.client = null;
  }
}

// The node's side of membership: join, heartbeat to renew the lease, rejoin after the lease expired or the
// dispatcher restarted, and a watch stream that keeps the membership view current.
import { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import { HotpotError } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import { hotpotV1, type DispatcherClient } from '../common/proto.ts';
import { unary } from '../common/rpc.ts';
import { followLeader } from '../common/dispatcher-client.ts';
import { channelSecurity, type Security } from '../common/tls.ts';
import type { JoinResponse__Output } from '../generated/hotpot/v1/JoinResponse.ts';
import type { MembershipEvent__Output } from '../generated/hotpot/v1/MembershipEvent.ts';
import type { NodeInfo__Output } from '../generated/hotpot/v1/NodeInfo.ts';
import type { HeartbeatResponse__Output } from '../generated/hotpot/v1/HeartbeatResponse.ts';

export interface MembershipOptions {
  /** The dispatcher, or several ("a:p,b:p": the one that leads is followed; common/endpoints.ts). */
  dispatcher: string;
  identity: string;
  protocolVersion: number;
  chunkSizeBytes: number;
  controlAddress: string;
  dataAddress: string;
  /** This node's store identity (engineStore), sent with every join. */
  store: { id: string; incarnation: number };
  /** engineReplicatedThrough, sent with every heartbeat (0 when absent). */
  replicatedThrough?: () => number;
  /** TLS with this node's certificate (its identity), or --insecure. */
  security: Security;
  log: Logger;
}

export class DispatcherLink extends EventEmitter<{
  members: [number, NodeInfo__Output[]];
  /** Node id, and the fencing epoch below which its MRSW leases ended (JoinResponse.mrsw_lease_floor). */
  joined: [number, number];
  /** Until when the lease is surely valid: the time a successful join or heartbeat was sent + the lease length. */
  lease: [number];
  /** The generation of the dispatcher's certificate revocation list, with every heartbeat. */
  revocations: [number];
}> {
  readonly client: DispatcherClient;
  nodeId = 0;
  epoch = 0;
  joined = false;
  members: NodeInfo__Output[] = [];
  private instance = '';
  private heartbeatMs = 1000;
  private leaseMs = 3000;
  private stopped = false;
  private hbTimer: NodeJS.Timeout | null = null;
  private watch: grpc.ClientReadableStream<MembershipEvent__Output> | null = null;

  constructor(private readonly opts: MembershipOptions) {
    super();
    const { credentials, options } = channelSecurity(opts.security, 'dispatcher');
    // A standby answers with the leader's address; the client follows it (common/dispatcher-client.ts).
    this.client = followLeader(
      opts.dispatcher,
      (target) =>
        new hotpotV1.Dispatcher(target, credentials, {
          ...options,
          'grpc.keepalive_time_ms': 10_000,
          'grpc.keepalive_timeout_ms': 5_000,
          'grpc.initial_reconnect_backoff_ms': 100,
          'grpc.max_reconnect_backoff_ms': 1000,
        }),
    );
  }

  /** Joins, retrying until the dispatcher answers; a refusal (FAILED_PRECONDITION etc.) is fatal. */
  async start(): Promise<void> {
    await this.joinWithRetry();
    this.scheduleHeartbeat();
    this.startWatch();
  }

  private async joinOnce(): Promise<JoinResponse__Output> {
    return unary<JoinResponse__Output>((o, cb) =>
      this.client.Join(
        {
          identity: this.opts.identity,
          protocolVersion: this.opts.protocolVersion,
          chunkSizeBytes: this.opts.chunkSizeBytes,
          controlAddress: this.opts.controlAddress,
          dataAddress: this.opts.dataAddress,
          storeId: this.opts.store.id,
          storeIncarnation: this.opts.store.incarnation,
        },
        o,
        cb,
      ),
    );
  }

  private async joinWithRetry(): Promise<void> {
    let delay = 100;
    for (;;) {
      if (this.stopped) return;
      try {
        const sentAt = Date.now();
        const r = await this.joinOnce();
        this.nodeId = r.nodeId;
        this.epoch = r.epoch;
        this.instance = r.dispatcherInstance;
        this.heartbeatMs = r.heartbeatIntervalMs;
        this.leaseMs = r.leaseMs;
        this.joined = true;
        this.setMembers(r.epoch, r.members);
        this.opts.log.info({ node: r.nodeId, epoch: r.epoch, store: this.opts.store.id }, 'joined the cluster');
        if (r.storeState === 'STORE_STATE_REPLACED') {
          this.opts.log.warn(
            { node: r.nodeId, store: this.opts.store.id },
            'this node rejoined with a replaced store: its chunks are served again once recovered from their holders',
          );
        }
        // 'joined' before 'lease': the engine host keeps the lease back until it has read the chunk maps again.
        this.emit('joined', r.nodeId, r.mrswLeaseFloor);
        this.emit('lease', sentAt + r.leaseMs);
        return;
      } catch (e) {
        if (e instanceof HotpotError && (e.code === 'UNAVAILABLE' || e.code === 'DEADLINE_EXCEEDED')) {
          this.opts.log.warn({ dispatcher: this.opts.dispatcher, err: e.message }, 'dispatcher unreachable; retrying');
          await sleep(delay);
          delay = Math.min(delay * 2, 1000);
          continue;
        }
        throw e;
      }
    }
  }

  private setMembers(epoch: number, members: NodeInfo__Output[]): void {
    this.epoch = Math.max(this.epoch, epoch);
    this.members = members;
    this.emit('members', this.epoch, members);
  }

  /**
   * The next heartbeat: a heartbeat interval after one that was answered; sooner after one that failed (250 ms,
   * doubling up to the interval), so a node renews its lease as soon as a new dispatcher leads instead of up to a
   * whole interval later (a takeover then needs a shorter node lease to keep every node a member).
   */
  private scheduleHeartbeat(failedInARow = 0): void {
    if (this.stopped) return;
    const delay = failedInARow === 0 ? this.heartbeatMs : Math.min(this.heartbeatMs, 250 * 2 ** (failedInARow - 1));
    this.hbTimer = setTimeout(() => void this.beat(failedInARow), delay);
  }

  private async beat(failedBefore: number): Promise<void> {
    let failed = 0;
    try {
      const sentAt = Date.now();
      const r = await unary<HeartbeatResponse__Output>(
        (o, cb) =>
          this.client.Heartbeat(
            {
              nodeId: this.nodeId,
              identity: this.opts.identity,
              replicatedThroughEpoch: this.opts.replicatedThrough?.() ?? 0,
            },
            o,
            cb,
          ),
        Math.max(500, this.heartbeatMs),
      );
      this.joined = true;
      this.emit('lease', sentAt + this.leaseMs);
      if (r.dispatcherInstance !== this.instance) {
        // The dispatcher restarted: our watch stream broke with it; refresh the view.
        this.instance = r.dispatcherInstance;
        this.opts.log.info({ epoch: r.epoch }, 'dispatcher restarted; refreshing membership');
        this.restartWatch();
      }
      this.epoch = Math.max(this.epoch, r.epoch);
      this.emit('revocations', r.revocations);
    } catch (e) {
      if (this.stopped) return;
      if (e instanceof HotpotError && e.code === 'FAILED_PRECONDITION') {
        this.joined = false;
        this.opts.log.warn({ err: e.message }, 'lease lost; rejoining');
        try {
          await this.joinWithRetry();
          this.restartWatch();
        } catch (err) {
          this.opts.log.error({ err }, 'rejoin refused');
        }
      } else {
        failed = Math.min(failedBefore + 1, 16);
        // Once per heartbeat interval while they fail, not at every quick retry.
        if (failedBefore === 0 || 250 * 2 ** (failedBefore - 1) >= this.heartbeatMs) {
          this.opts.log.warn({ err: e instanceof Error ? e.message : String(e) }, 'heartbeat failed');
        }
      }
    }
    this.scheduleHeartbeat(failed);
  }

  private startWatch(): void {
    if (this.stopped) return;
    const call = this.client.WatchMembership({});
    this.watch = call;
    call.on('data', (ev: MembershipEvent__Output) => {
      this.setMembers(ev.epoch, ev.members);
    });
    call.on('error', (err: grpc.ServiceError) => {
      if (this.stopped || err.code === grpc.status.CANCELLED) return;
      if (this.watch === call) setTimeout(() => this.restartWatch(), 300).unref();
    });
    call.on('end', () => {
      if (!this.stopped && this.watch === call) setTimeout(() => this.restartWatch(), 300).unref();
    });
  }

  private restartWatch(): void {
    if (this.stopped) return;
    const old = this.watch;
    this.watch = null;
    old?.cancel();
    this.startWatch();
  }

  async stop(leave: boolean): Promise<void> {
    this.stopped = true;
    if (this.hbTimer) clearTimeout(this.hbTimer);
    const w = this.watch;
    this.watch = null;
    w?.cancel();
    if (leave && this.joined) {
      await unary(
        (o, cb) => this.client.Leave({ nodeId: this.nodeId, identity: this.opts.identity }, o, cb),
        1000,
      ).catch(() => undefined);
    }
    this.client.close();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

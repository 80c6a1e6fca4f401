// A standby dispatcher's server (state in etcd, another dispatcher leads): it listens on the dispatcher's address
// while it waits, and answers every Dispatcher call UNAVAILABLE, naming the leader in the `hotpot-leader` trailer,
// so clients given its address, or a list it comes first in, find the leader (common/dispatcher-client.ts). It runs
// no operation and holds no state. Callers are authenticated as on the leader: a certificate of the cluster CA, or a
// bearer token checked with the leader (the tokens are its state). Health reports NOT_SERVING until it leads.
// When it is elected the same server becomes the leader's (`promote`): its calls go to the leader's handlers and
// checks from then on, and clients connected to it keep their connections (no reconnect, no backoff).
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { followLeader, LEADER_TRAILER, validLeaderAddress } from '../common/dispatcher-client.ts';
import { startServer, type CallObserver, type HotpotServer, type TokenCheck } from '../common/grpc-server.ts';
import { DISPATCHER_SERVICE, hotpotV1, type DispatcherClient } from '../common/proto.ts';
import { channelFor, type Security } from '../common/tls.ts';
import { TokenChecker } from '../common/token-check.ts';

/** The leader as a standby knows it: its announced address and its instance id. */
export interface KnownLeader {
  address: string;
  instance: string;
}

/** What a leader's server answers with: its handlers and its checks of callers. */
export interface DispatcherDoor {
  handlers: grpc.UntypedServiceImplementation;
  checkToken: TokenCheck;
  isRevoked: (fingerprint256: string) => boolean;
  observeCall?: CallObserver;
}

export interface StandbyServer {
  /** Where it listens ("host:port"). */
  readonly address: string;
  readonly port: number;
  /** The leader seen in etcd (null: none, or not known yet). */
  setLeader(leader: KnownLeader | null): void;
  /** Elected: from now on the server answers as the leader (`door`), and is the leader's server. */
  promote(door: DispatcherDoor): HotpotServer;
  close(): Promise<void>;
}

export async function startStandbyServer(opts: {
  host: string;
  port: number;
  security: Security;
  /** This dispatcher's instance id: a leader record naming its address but another instance is a dead one's. */
  instance: string;
  log: Logger;
}): Promise<StandbyServer> {
  let leader: KnownLeader | null = null;
  /** A leader record whose address no client can dial (a wildcard listen address without --advertise). */
  let undialable = '';
  let leaderClient: { address: string; client: DispatcherClient } | null = null;
  let address = '';
  const status = (): Partial<grpc.StatusObject> => {
    const metadata = new grpc.Metadata();
    if (leader === null) {
      if (undialable !== '') {
        return {
          code: grpc.status.UNAVAILABLE,
          details:
            `dispatcher ${address} is a standby; the leader announced ${undialable}, which clients cannot dial: ` +
            'start the dispatchers with --advertise host:port',
          metadata,
        };
      }
      return {
        code: grpc.status.UNAVAILABLE,
        details: `dispatcher ${address} is a standby and knows no leader yet (a takeover is under way)`,
        metadata,
      };
    }
    metadata.set(LEADER_TRAILER, leader.address);
    return {
      code: grpc.status.UNAVAILABLE,
      details: `dispatcher ${address} is a standby; the leader is at ${leader.address}`,
      metadata,
    };
  };
  // Bearer tokens are checked with the leader, as a node checks them (with this dispatcher's certificate).
  const tokens = new TokenChecker(() => leaderClient?.client ?? null);
  const service = (hotpotV1.Dispatcher as unknown as { service: grpc.ServiceDefinition }).service;
  const standbyHandlers: grpc.UntypedServiceImplementation = {};
  for (const [name, def] of Object.entries(service)) {
    standbyHandlers[name] =
      !def.requestStream && !def.responseStream
        ? (_call: unknown, cb: grpc.sendUnaryData<unknown>) => {
            cb(status());
          }
        : (call: grpc.ServerWritableStream<unknown, unknown>) => {
            call.emit('error', status());
          };
  }
  let door: DispatcherDoor = {
    handlers: standbyHandlers,
    checkToken: (token) => tokens.check(token),
    isRevoked: () => false,
  };
  // Every handler and check asks `door` at the call: the standby's now, the leader's once promoted.
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const name of Object.keys(service)) {
    handlers[name] = ((...args: unknown[]) => {
      (door.handlers[name] as (...a: unknown[]) => void)(...args);
    }) as grpc.UntypedHandleCall;
  }
  const server: HotpotServer = await startServer({
    host: opts.host,
    port: opts.port,
    serviceNames: [DISPATCHER_SERVICE],
    add: (s) => {
      s.addService(service, handlers);
    },
    log: opts.log,
    security: opts.security,
    checkToken: (token) => door.checkToken(token),
    isRevoked: (fp) => door.isRevoked(fp),
    observeCall: (method, code, seconds) => door.observeCall?.(method, code, seconds),
  });
  address = server.address;
  opts.log.info({ address }, 'standby: listening; callers are sent to the leader');
  return {
    address,
    port: server.port,
    setLeader(l) {
      // A record of this address but another instance: this dispatcher's own previous run, dead (its lease has not
      // run out yet). Naming it would send callers back here.
      leader = l !== null && l.address === address && l.instance !== opts.instance ? null : l;
      undialable = leader !== null && !validLeaderAddress(leader.address) ? leader.address.slice(0, 255) : '';
      if (undialable !== '') leader = null;
      if (leader?.address === leaderClient?.address) return;
      leaderClient?.client.close();
      leaderClient = null;
      if (leader !== null) {
        const target = leader.address;
        const { credentials, options } = channelFor(target, opts.security, 'dispatcher');
        leaderClient = {
          address: target,
          client: followLeader(target, (t) => new hotpotV1.Dispatcher(t, credentials, options)),
        };
      }
    },
    promote(leaderDoor) {
      door = leaderDoor;
      leaderClient?.client.close();
      leaderClient = null;
      return server;
    },
    async close() {
      leaderClient?.client.close();
      leaderClient = null;
      await server.shutdown(0);
    },
  };
}

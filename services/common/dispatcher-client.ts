// A dispatcher client that follows the leader. Dispatchers with their state in etcd run as one leader and standbys;
// a standby listens on its address and answers every call UNAVAILABLE with the leader's address in the trailer
// `hotpot-leader` (dispatcher/standby.ts). This client starts on the channel over the whole list (endpoints.ts),
// and on such an answer opens a channel to the leader named and sends the same call there at once, once: the
// standby ran nothing, so any call may be sent again. Later calls use that channel until a call on it fails
// UNAVAILABLE without a redirect (the leader is gone): then the list again, where the caller's own retries apply.
// So a client given the list, or only one standby's address, reaches whichever dispatcher leads.
import * as grpc from '@grpc/grpc-js';
import { isIP } from 'node:net';
import { dispatcherTarget } from './endpoints.ts';
import { hotpotV1, type DispatcherClient } from './proto.ts';

/** The trailer in which a standby names the leader. */
export const LEADER_TRAILER = 'hotpot-leader';

/**
 * The leader a standby's answer names: the `hotpot-leader` trailer of an UNAVAILABLE status, when it is an address
 * this client may dial (`host:port` or `[v6]:port`, ≤ 255 characters, port 1–65535); else null.
 */
export function redirectOf(status: { code?: number; metadata?: grpc.Metadata } | null | undefined): string | null {
  if (status?.code !== grpc.status.UNAVAILABLE || !status.metadata) return null;
  const v = status.metadata.get(LEADER_TRAILER)[0];
  return typeof v === 'string' && validLeaderAddress(v) ? v : null;
}

/**
 * `host:port` (a name or an IPv4 address) or `[v6]:port`, at most 255 characters, port 1–65535, not a wildcard
 * (0.0.0.0, [::]: a listen address, which no client can dial).
 */
export function validLeaderAddress(a: string): boolean {
  if (a.length > 255) return false;
  const m = /^\[([0-9A-Fa-f:.]+)\]:(\d{1,5})$/.exec(a) ?? /^([A-Za-z0-9.-]+):(\d{1,5})$/.exec(a);
  if (!m?.[1] || !m[2]) return false;
  const port = Number(m[2]);
  if (port < 1 || port > 65535 || m[1] === '0.0.0.0' || /^[0:]+$/.test(m[1])) return false;
  return a.startsWith('[') ? isIP(m[1]) === 6 : /^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(m[1]);
}

type Callback = (err: grpc.ServiceError | null, res?: unknown) => void;
type Method = (...args: unknown[]) => unknown;

/** Closes a channel no longer used once the calls still on it are surely over. */
function retire(client: grpc.Client): void {
  setTimeout(() => {
    client.close();
  }, RETIRE_MS).unref();
}
const RETIRE_MS = 60_000;

interface Current {
  address: string | null;
  client: DispatcherClient;
}

/**
 * A DispatcherClient over `list` (one address or several, "a:p,b:p") that follows standbys' redirects to the leader.
 * `make(target)` builds a plain client for a gRPC target with the caller's credentials and options.
 */
export function followLeader(list: string, make: (target: string) => DispatcherClient): DispatcherClient {
  const onList: Current = { address: null, client: make(dispatcherTarget(list)) };
  let current: Current = onList;
  /** After a call on `from` ended with `status`: switches channel if it says to; true if the call may be resent. */
  const steer = (from: Current, status: { code?: number; metadata?: grpc.Metadata }): boolean => {
    const leader = redirectOf(status);
    // A redirect to the channel it came on (a stale record) counts as none.
    if (leader !== null && !(leader === current.address && from === current)) {
      if (leader === current.address) return true;
      if (current !== onList) retire(current.client);
      current = { address: leader, client: make(leader) };
      return true;
    }
    if (status.code === grpc.status.UNAVAILABLE && from === current && current !== onList) {
      retire(current.client);
      current = onList;
    }
    return false;
  };
  const service = (hotpotV1.Dispatcher as unknown as { service: grpc.ServiceDefinition }).service;
  const kinds = new Map<string, 'unary' | 'stream'>();
  for (const [name, def] of Object.entries(service)) {
    const kind = !def.requestStream && !def.responseStream ? 'unary' : 'stream';
    kinds.set(name, kind);
    if (def.originalName !== undefined) kinds.set(def.originalName, kind);
  }

  const unaryCall = (name: string, args: unknown[]): unknown => {
    const cb = args.at(-1) as Callback;
    const rest = args.slice(0, -1);
    let attempt: grpc.ClientUnaryCall;
    const send = (resent: boolean): grpc.ClientUnaryCall => {
      const on = current;
      const method = (on.client as unknown as Record<string, Method>)[name];
      return method?.call(on.client, ...rest, (err: grpc.ServiceError | null, res?: unknown) => {
        if (err && steer(on, err) && !resent) {
          attempt = send(true);
          return;
        }
        cb(err, res);
      }) as grpc.ClientUnaryCall;
    };
    attempt = send(false);
    // The caller holds this handle; cancel reaches whichever attempt runs.
    return new Proxy(attempt, {
      get: (_t, p) => {
        const v = (attempt as unknown as Record<string | symbol, unknown>)[p];
        return typeof v === 'function' ? (v as Method).bind(attempt) : v;
      },
    });
  };

  const streamCall = (name: string, args: unknown[]): unknown => {
    const on = current;
    const method = (on.client as unknown as Record<string, Method>)[name];
    const call = method?.call(on.client, ...args) as grpc.ClientReadableStream<unknown>;
    // A stream is not resent (its caller reconnects on the error): its end only steers the next one.
    call.on('status', (s: grpc.StatusObject) => {
      steer(on, s);
    });
    return call;
  };

  return new Proxy(onList.client, {
    get(_t, p) {
      if (typeof p === 'string') {
        const kind = kinds.get(p);
        if (kind === 'unary') return (...args: unknown[]) => unaryCall(p, args);
        if (kind === 'stream') return (...args: unknown[]) => streamCall(p, args);
        if (p === 'close') {
          return () => {
            if (current !== onList) current.client.close();
            onList.client.close();
          };
        }
      }
      const v = (current.client as unknown as Record<string | symbol, unknown>)[p];
      return typeof v === 'function' ? (v as Method).bind(current.client) : v;
    },
  });
}

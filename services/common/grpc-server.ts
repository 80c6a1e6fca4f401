// A gRPC server with health checking, server reflection and graceful shutdown (conventions.md).
import * as grpc from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import { TLSSocket } from 'node:tls';
import { authorize, type Principal } from './authz.ts';
import { HotpotError, toServiceError } from './errors.ts';
import { packageDefinition } from './proto.ts';
import type { Logger } from './logger.ts';
import { certHolder, serverCredentials, type Security } from './tls.ts';

/** The metadata key the server's interceptor puts the caller's principal under (any sent by a client is removed). */
const PRINCIPAL_KEY = 'x-hotpot-principal';

/** Reads a unix socket peer's credentials (the node passes the native one; the dispatcher has no unix socket). */
export type PeerCredentials = (fd: number) => { pid: number; uid: number; gid: number; groups: number[] };

/** The transport under a call (grpc-js keeps it on the base call a first interceptor receives). */
function transportSocket(call: grpc.ServerInterceptingCallInterface): unknown {
  // Under other interceptors (the timing one) the call is a ServerInterceptingCall around the next one: go down.
  type Layer = { stream?: { session?: { socket?: unknown } }; nextCall?: Layer };
  let c = call as unknown as Layer | undefined;
  for (let depth = 0; c && c.stream === undefined && depth < 8; depth++) c = c.nextCall;
  return c?.stream?.session?.socket;
}

/**
 * Who is calling: the verified client certificate (TLS), the unix socket's peer credentials, anyone (a plaintext
 * TCP server, --insecure only), or null (no credential).
 */
function principalOf(
  call: grpc.ServerInterceptingCallInterface,
  insecure: boolean,
  peerCredentials: PeerCredentials | undefined,
): Principal | null {
  const cert = call.getAuthContext().sslPeerCertificate;
  if (cert) {
    const h = certHolder(cert);
    return h ? { kind: 'cert', ...h } : null;
  }
  const socket = transportSocket(call) as { remoteAddress?: string; _handle?: { fd?: number } } | undefined;
  if (!socket || socket instanceof TLSSocket) return null;
  if (socket.remoteAddress === undefined) {
    const fd = socket._handle?.fd;
    if (!peerCredentials || fd === undefined || fd < 0) return null;
    try {
      return { kind: 'local', ...peerCredentials(fd) };
    } catch {
      return null;
    }
  }
  return insecure ? { kind: 'insecure' } : null;
}

/** Whether a client certificate (by its SHA-256 fingerprint, "AB:CD:…") was revoked (`hotpot certs revoke`). */
export type RevocationCheck = (fingerprint256: string) => boolean;

/** Checks a bearer token: its holder, or null when it is not valid (throws when it cannot be checked now). */
export type TokenCheck = (token: string) => Promise<Principal | null>;

/** The token of an "authorization: Bearer <token>" header (bounded), else null. */
function bearerOf(metadata: grpc.Metadata): string | null {
  const v = metadata.get('authorization')[0];
  if (typeof v !== 'string' || v.length > 512) return null;
  const m = /^Bearer ([!-~]+)$/.exec(v);
  return m?.[1] ?? null;
}

/** Refuses every call its caller may not make (authz.ts) and hands the others their principal. */
function authInterceptor(opts: {
  insecure: boolean;
  peerCredentials: PeerCredentials | undefined;
  checkToken: TokenCheck | undefined;
  isRevoked: RevocationCheck | undefined;
  log: Logger;
}): grpc.ServerInterceptor {
  const daemonUid = process.geteuid?.() ?? 0;
  // Refusals are logged at most once a second (with how many were not), so a flood of them cannot flood the log.
  let lastLog = 0;
  let unlogged = 0;
  const logRefusal = (fields: Record<string, unknown>, message: string): void => {
    const now = Date.now();
    if (now - lastLog < 1000) {
      unlogged++;
      return;
    }
    opts.log.warn({ ...fields, ...(unlogged > 0 ? { refusedSinceLastLine: unlogged } : {}) }, message);
    lastLog = now;
    unlogged = 0;
  };
  return (method, call) =>
    new grpc.ServerInterceptingCall(
      call,
      new grpc.ResponderBuilder()
        .withStart((next) => {
          next(
            new grpc.ServerListenerBuilder()
              .withOnReceiveMetadata((metadata, mdNext) => {
                metadata.remove(PRINCIPAL_KEY);
                const decide = (p: Principal | null): void => {
                  const d = authorize(method.path, p, daemonUid);
                  if (!d.ok) {
                    logRefusal({ method: method.path, peer: call.getPeer(), code: d.code }, d.message);
                    call.sendStatus({ code: grpc.status[d.code], details: d.message });
                    return;
                  }
                  if (p) metadata.set(PRINCIPAL_KEY, JSON.stringify(p));
                  mdNext(metadata);
                };
                const cert = call.getAuthContext().sslPeerCertificate;
                if (cert && opts.isRevoked?.(cert.fingerprint256) === true && !authorize(method.path, null, 0).ok) {
                  const message = `the client certificate (${String(cert.subject.CN ?? '?').slice(0, 128)}, SHA-256 ${cert.fingerprint256}) was revoked`;
                  logRefusal({ method: method.path, peer: call.getPeer(), code: 'UNAUTHENTICATED' }, message);
                  call.sendStatus({ code: grpc.status.UNAUTHENTICATED, details: message });
                  return;
                }
                const p = principalOf(call, opts.insecure, opts.peerCredentials);
                const bearer = p === null && opts.checkToken ? bearerOf(metadata) : null;
                if (bearer === null || !opts.checkToken) {
                  decide(p);
                  return;
                }
                opts.checkToken(bearer).then(decide, (e: unknown) => {
                  // The token could not be checked (the dispatcher unreachable): retryable, not a refusal.
                  const message = `cannot check the bearer token now: ${e instanceof Error ? e.message : String(e)}`;
                  call.sendStatus({ code: grpc.status.UNAVAILABLE, details: message.slice(0, 500) });
                });
              })
              .build(),
          );
        })
        .build(),
    );
}

/** The caller of a call that passed the interceptor (authz.ts). */
export function principal(call: { metadata: grpc.Metadata }): Principal {
  const v = call.metadata.get(PRINCIPAL_KEY)[0];
  if (typeof v !== 'string') throw new HotpotError('UNAUTHENTICATED', 'no authenticated caller');
  return JSON.parse(v) as Principal;
}

/** Told of every finished unary call: its method path, status code and duration (RPC latency metrics). */
export type CallObserver = (method: string, code: grpc.status, seconds: number) => void;

/** Times unary calls from their start to the status sent (streams live as long as their caller: not timed). */
function timingInterceptor(observe: CallObserver): grpc.ServerInterceptor {
  return (method, call) => {
    if (method.requestStream || method.responseStream) return new grpc.ServerInterceptingCall(call);
    const start = process.hrtime.bigint();
    return new grpc.ServerInterceptingCall(
      call,
      new grpc.ResponderBuilder()
        .withSendStatus((status, next) => {
          observe(method.path, status.code, Number(process.hrtime.bigint() - start) / 1e9);
          next(status);
        })
        .build(),
    );
  };
}

export interface HotpotServer {
  server: grpc.Server;
  health: HealthImplementation;
  port: number;
  address: string;
  serving(): void;
  shutdown(graceMs?: number): Promise<void>;
}

export async function startServer(opts: {
  host: string;
  port: number;
  serviceNames: string[];
  add: (server: grpc.Server) => void;
  log: Logger;
  /** TLS with client certificates for the TCP address, or plaintext (--insecure). */
  security: Security;
  /** Unix socket addresses ("unix:/path"): callers are identified by their peer credentials. */
  extraAddresses?: string[];
  peerCredentials?: PeerCredentials;
  /** Bearer tokens (TLS callers without a certificate). */
  checkToken?: TokenCheck;
  /** Revoked client certificates: refused (UNAUTHENTICATED) on every call but health checks. */
  isRevoked?: RevocationCheck;
  /** Told of every finished unary call (RPC latency metrics). */
  observeCall?: CallObserver;
}): Promise<HotpotServer> {
  const insecure = 'insecure' in opts.security;
  if (insecure)
    opts.log.warn('--insecure: gRPC is plaintext and unauthenticated; anyone who reaches the port is admin');
  const server = new grpc.Server({
    'grpc.max_receive_message_length': 8 * 1024 * 1024,
    interceptors: [
      ...(opts.observeCall ? [timingInterceptor(opts.observeCall)] : []),
      authInterceptor({
        insecure,
        peerCredentials: opts.peerCredentials,
        checkToken: opts.checkToken,
        isRevoked: opts.isRevoked,
        log: opts.log,
      }),
    ],
  });
  const statusMap: Record<string, 'SERVING' | 'NOT_SERVING'> = { '': 'NOT_SERVING' };
  for (const s of opts.serviceNames) statusMap[s] = 'NOT_SERVING';
  const health = new HealthImplementation(statusMap);
  health.addToServer(server);
  // Reflection lists only what this server runs (the package defines every service; the others answer UNIMPLEMENTED).
  new ReflectionService(packageDefinition, { services: opts.serviceNames }).addToServer(server);
  opts.add(server);
  const bind = (addr: string, creds: grpc.ServerCredentials): Promise<number> =>
    new Promise((resolve, reject) => {
      server.bindAsync(addr, creds, (err, port) => {
        if (err) reject(new Error(`cannot listen on ${addr}: ${err.message}`));
        else resolve(port);
      });
    });
  const port = await bind(`${opts.host}:${String(opts.port)}`, serverCredentials(opts.security));
  // The unix sockets are local: file permissions let callers in, SO_PEERCRED says who they are.
  for (const a of opts.extraAddresses ?? []) await bind(a, grpc.ServerCredentials.createInsecure());
  const address = `${opts.host}:${String(port)}`;
  let closed = false;
  return {
    server,
    health,
    port,
    address,
    serving() {
      for (const s of Object.keys(statusMap)) health.setStatus(s, 'SERVING');
    },
    async shutdown(graceMs = 3000) {
      if (closed) return;
      closed = true;
      for (const s of Object.keys(statusMap)) health.setStatus(s, 'NOT_SERVING');
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          opts.log.warn('graceful shutdown timed out; forcing');
          server.forceShutdown();
          resolve();
        }, graceMs);
        t.unref();
        server.tryShutdown(() => {
          clearTimeout(t);
          resolve();
        });
      });
    },
  };
}

/**
 * Calls `stop` once on SIGTERM/SIGINT (or the returned trigger), with the signal's name (or the trigger's reason),
 * then exits 0 (1 if stop throws). A process started by `hotpot up` (HOTPOT_STOP_WITH_PARENT=1, stdin a pipe from
 * it) also stops, as on SIGINT, when that pipe closes: when `hotpot up` is gone, however it went (even kill -9).
 */
export function onShutdownSignal(stop: (reason: string) => Promise<void>, log: Logger): (reason: string) => void {
  let stopping = false;
  const handler = (sig: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal: sig }, 'shutting down');
    stop(sig).then(
      () => process.exit(0),
      (e: unknown) => {
        log.error({ err: e }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
  if (process.env.HOTPOT_STOP_WITH_PARENT === '1') {
    process.stdin.on('end', () => handler('SIGINT'));
    process.stdin.on('error', () => handler('SIGINT'));
    process.stdin.resume();
  }
  return handler;
}

/**
 * Adapts an async function to a grpc-js unary handler, converting thrown errors to statuses (by default the one
 * mapping, toServiceError: an RpcError's trailing metadata goes out with its status).
 */
export function handle<Req, Res>(
  fn: (req: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res> | Res,
  toError: (e: unknown) => Partial<grpc.StatusObject> = toServiceError,
): grpc.handleUnaryCall<Req, Res> {
  return (call, cb) => {
    Promise.resolve()
      .then(() => fn(call.request, call))
      .then(
        (res) => {
          cb(null, res);
        },
        (e: unknown) => {
          cb(toError(e));
        },
      );
  };
}

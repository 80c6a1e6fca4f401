// A gRPC server with health checking, server reflection and graceful shutdown (conventions.md).
import * as grpc from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import { toServiceError } from './errors.ts';
import { packageDefinition } from './proto.ts';
import type { Logger } from './logger.ts';

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
  extraAddresses?: string[];
}): Promise<HotpotServer> {
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 8 * 1024 * 1024 });
  const statusMap: Record<string, 'SERVING' | 'NOT_SERVING'> = { '': 'NOT_SERVING' };
  for (const s of opts.serviceNames) statusMap[s] = 'NOT_SERVING';
  const health = new HealthImplementation(statusMap);
  health.addToServer(server);
  // Reflection lists only what this server runs (the package defines every service; the others answer UNIMPLEMENTED).
  new ReflectionService(packageDefinition, { services: opts.serviceNames }).addToServer(server);
  opts.add(server);
  const bind = (addr: string): Promise<number> =>
    new Promise((resolve, reject) => {
      server.bindAsync(addr, grpc.ServerCredentials.createInsecure(), (err, port) => {
        if (err) reject(new Error(`cannot listen on ${addr}: ${err.message}`));
        else resolve(port);
      });
    });
  const port = await bind(`${opts.host}:${String(opts.port)}`);
  for (const a of opts.extraAddresses ?? []) await bind(a);
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

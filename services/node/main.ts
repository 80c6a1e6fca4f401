// `hotpot node`: the node daemon — joins the dispatcher, serves hotpot.v1.Node, runs the native engine.
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { parseHostPort } from '../common/config.ts';
import { onShutdownSignal, startServer, handle } from '../common/grpc-server.ts';
import { toServiceError } from '../common/errors.ts';
import { createLogger } from '../common/logger.ts';
import { NODE_SERVICE, hotpotV1 } from '../common/proto.ts';
import type { NodeHandlers } from '../generated/hotpot/v1/Node.ts';
import { engineInfo } from '../../native/index.ts';
import { DispatcherLink } from './membership.ts';

export const PROTOCOL_VERSION = 1;

export const NodeConfig = z.object({
  dispatcher: z.string().min(1).default('127.0.0.1:18500'),
  listen: z.string().default('127.0.0.1:0'),
  name: z.string().min(1).max(256).optional(),
  stateDir: z.string().min(1).default('.hotpot/node'),
  chunkSizeBytes: z
    .number()
    .int()
    .default(4 * 1024 * 1024),
});
export type NodeConfig = z.infer<typeof NodeConfig>;

function loadIdentity(stateDir: string, name: string | undefined): string {
  if (name) return name;
  const file = join(stateDir, 'identity');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const id = `node-${randomUUID()}`;
  writeFileSync(file, id + '\n', { mode: 0o600 });
  return id;
}

export async function runNode(config: NodeConfig): Promise<void> {
  const log = createLogger('node');
  const started = Date.now();
  const stateDir = resolve(config.stateDir);
  mkdirSync(stateDir, { recursive: true });
  const identity = loadIdentity(stateDir, config.name);
  const engine = engineInfo();
  const { host, port } = parseHostPort(config.listen, 'listen');

  let link: DispatcherLink | null = null;
  const handlers: NodeHandlers = {
    Stats: handle(() => {
      const l = link;
      return {
        nodeId: l?.nodeId ?? 0,
        identity,
        epoch: l?.epoch ?? 0,
        members: l?.members ?? [],
        dispatcherAddress: config.dispatcher,
        joined: l?.joined ?? false,
        engine,
        controlAddress: server.address,
        dataAddress: '',
        uptimeMs: Date.now() - started,
        chunkSizeBytes: config.chunkSizeBytes,
      };
    }, toServiceError),
  };
  const server = await startServer({
    host,
    port,
    serviceNames: [NODE_SERVICE],
    log,
    add: (s) => {
      s.addService(hotpotV1.Node.service, handlers);
    },
  });
  link = new DispatcherLink({
    dispatcher: config.dispatcher,
    identity,
    protocolVersion: PROTOCOL_VERSION,
    chunkSizeBytes: config.chunkSizeBytes,
    controlAddress: server.address,
    dataAddress: '',
    log,
  });
  await link.start();
  server.serving();
  process.stdout.write(
    `READY node id=${String(link.nodeId)} address=${server.address} identity=${identity} epoch=${String(link.epoch)}\n`,
  );
  const l = link;
  onShutdownSignal(async () => {
    await l.stop(true);
    await server.shutdown();
  }, log);
}

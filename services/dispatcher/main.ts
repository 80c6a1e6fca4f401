// `hotpot dispatcher`: the central dispatcher process.
import { resolve } from 'node:path';
import { z } from 'zod';
import { createLogger } from '../common/logger.ts';
import { onShutdownSignal } from '../common/grpc-server.ts';
import { parseHostPort } from '../common/config.ts';
import { DEFAULT_TLS_DIR } from '../common/paths.ts';
import { securityFrom } from '../common/tls.ts';
import { Cluster } from './cluster.ts';
import { startDispatcherServer } from './server.ts';
import { MetadataStore } from './store.ts';
import { MrswMaster } from './mrsw.ts';
import { Barriers } from './barrier.ts';
import { Tokens } from './tokens.ts';
import { Revocations } from './revocations.ts';

export const DEFAULT_DISPATCHER_PORT = 18500;

export const DispatcherConfig = z.object({
  listen: z.string().default(`127.0.0.1:${String(DEFAULT_DISPATCHER_PORT)}`),
  stateDir: z.string().min(1).default('.hotpot/dispatcher'),
  leaseMs: z.number().int().min(100).max(600_000).default(3000),
  chunkSizeBytes: z
    .number()
    .int()
    .refine((v) => v >= 4096 && (v & (v - 1)) === 0, 'chunk size must be a power of two of at least 4096 bytes')
    .default(4 * 1024 * 1024),
  /** Signs MRSW lease certificates (the same secret as the nodes'); without it acquire is refused. */
  clusterSecret: z.string().min(16, 'the cluster secret must be at least 16 characters').optional(),
  /** Owner failover (docs/design/availability.md "Failover"); on unless turned off (`--no-failover`). */
  failover: z.boolean().default(true),
  /** The cluster CA and this dispatcher's certificate (dispatcher.crt/.key; issued here when ca.key is present). */
  tlsDir: z.string().min(1).default(DEFAULT_TLS_DIR),
  /** Plaintext, unauthenticated gRPC (development only; logs a warning). */
  insecure: z.boolean().default(false),
});
export type DispatcherConfig = z.infer<typeof DispatcherConfig>;

export async function runDispatcher(config: DispatcherConfig): Promise<void> {
  const log = createLogger('dispatcher');
  const { host, port } = parseHostPort(config.listen, 'listen');
  const security = securityFrom({
    insecure: config.insecure,
    tlsDir: config.tlsDir,
    defaultDir: DEFAULT_TLS_DIR,
    role: 'dispatcher',
    name: 'dispatcher',
    issue: true,
  });
  const store = new MetadataStore(resolve(config.stateDir));
  const cluster = new Cluster(
    store,
    { chunkSizeBytes: config.chunkSizeBytes, leaseMs: config.leaseMs, failover: config.failover },
    log,
  );
  await cluster.init();
  const mrsw = new MrswMaster(store, cluster, config.clusterSecret, log);
  mrsw.init();
  const barriers = new Barriers();
  const tokens = new Tokens(store);
  const revocations = new Revocations(store);
  const server = await startDispatcherServer({
    cluster,
    host,
    port,
    log,
    mrsw,
    barriers,
    tokens,
    revocations,
    security,
  });
  server.serving();
  log.info({ address: server.address, epoch: cluster.epoch, stateDir: config.stateDir }, 'dispatcher serving');
  process.stdout.write(`READY dispatcher address=${server.address} epoch=${String(cluster.epoch)}\n`);
  onShutdownSignal(async () => {
    barriers.stop();
    mrsw.stop();
    await server.shutdown();
    cluster.stop();
    await store.close();
  }, log);
}

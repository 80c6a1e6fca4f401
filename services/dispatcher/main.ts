// `hotpot dispatcher`: the central dispatcher process.
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { createLogger } from '../common/logger.ts';
import { onShutdownSignal } from '../common/grpc-server.ts';
import { parseHostPort } from '../common/config.ts';
import { DEFAULT_TLS_DIR } from '../common/paths.ts';
import { securityFrom } from '../common/tls.ts';
import { validLeaderAddress } from '../common/dispatcher-client.ts';
import { startStandbyServer, type StandbyServer } from './standby.ts';
import { Cluster } from './cluster.ts';
import { startDispatcherServer } from './server.ts';
import { openStore, parseStoreSpec } from './store-open.ts';
import { MrswMaster } from './mrsw.ts';
import { Barriers } from './barrier.ts';
import { Tokens } from './tokens.ts';
import { Revocations } from './revocations.ts';

export const DEFAULT_DISPATCHER_PORT = 18500;

export const DispatcherConfig = z.object({
  listen: z.string().default(`127.0.0.1:${String(DEFAULT_DISPATCHER_PORT)}`),
  /** The address clients reach it at, which standbys name to them (default: the listen address). */
  advertise: z
    .string()
    .refine(validLeaderAddress, 'advertise must be host:port ([v6]:port), port 1-65535, not a wildcard address')
    .optional(),
  stateDir: z.string().min(1).default('.hotpot/dispatcher'),
  /** Where the state is: `lmdb:DIR` (default: `lmdb:<stateDir>`) or `etcd://host:port[,host:port…]`. */
  store: z
    .string()
    .min(1)
    .refine((s) => {
      try {
        parseStoreSpec(s);
        return true;
      } catch {
        return false;
      }
    }, 'store must be lmdb:DIR or etcd://host:port[,host:port…]')
    .optional(),
  /** etcd TLS: the CA of etcd's server certificate, and a client certificate and key for mutual TLS. */
  etcdCa: z.string().min(1).optional(),
  etcdCert: z.string().min(1).optional(),
  etcdKey: z.string().min(1).optional(),
  /** etcd authentication (user and password). */
  etcdUser: z.string().min(1).optional(),
  etcdPassword: z.string().min(1).optional(),
  /** Key prefix of this cluster's state in etcd. */
  etcdPrefix: z
    .string()
    .regex(/^\/[A-Za-z0-9._/-]*\/$/, 'the etcd prefix starts and ends with "/"')
    .default('/hotpot/'),
  /** TTL of the etcd election lease in seconds: a standby takes over this long after the leader dies. */
  electionTtlS: z.number().int().min(1).max(60).default(3),
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
  const spec = parseStoreSpec(config.store ?? `lmdb:${config.stateDir}`);
  // A standby (etcd) waits here until it leads.
  const waiting = new AbortController();
  const stopWaiting = (): void => {
    waiting.abort();
  };
  process.once('SIGTERM', stopWaiting);
  process.once('SIGINT', stopWaiting);
  // Started by `hotpot up`: a standby stops with it too (onShutdownSignal does so once it serves).
  const watchParent = process.env.HOTPOT_STOP_WITH_PARENT === '1';
  if (watchParent) {
    process.stdin.once('end', stopWaiting);
    process.stdin.once('error', stopWaiting);
    process.stdin.resume();
  }
  const instance = randomUUID();
  // A standby listens while it waits and sends callers to the leader (standby.ts); elected, its server becomes the
  // leader's.
  let standby: StandbyServer | null = null;
  if (spec.kind === 'etcd') {
    standby = await startStandbyServer({ host, port, security, instance, log });
  }
  const advertised = config.advertise ?? (standby ? `${host}:${String(standby.port)}` : config.listen);
  if (standby && !validLeaderAddress(advertised)) {
    log.warn(
      { listen: config.listen },
      'listening on a wildcard address without --advertise: standbys cannot tell clients where this dispatcher is',
    );
  }
  let store;
  try {
    store = await openStore(
      spec,
      {
        caFile: config.etcdCa,
        certFile: config.etcdCert,
        keyFile: config.etcdKey,
        user: config.etcdUser,
        password: config.etcdPassword,
        prefix: config.etcdPrefix,
        electionTtlS: config.electionTtlS,
      },
      { instance, address: advertised },
      log,
      {
        onStandby: (leader) => {
          standby?.setLeader(leader);
          process.stdout.write(`STANDBY dispatcher leader=${leader?.address ?? 'unknown'}\n`);
        },
        signal: waiting.signal,
      },
    );
  } catch (e) {
    await standby?.close();
    if (waiting.signal.aborted) process.exit(0);
    throw e;
  } finally {
    process.off('SIGTERM', stopWaiting);
    process.off('SIGINT', stopWaiting);
    if (watchParent) {
      process.stdin.off('end', stopWaiting);
      process.stdin.off('error', stopWaiting);
    }
  }
  // Elected: until it serves, its server says a takeover is under way rather than name the dead leader.
  standby?.setLeader(null);
  // Stopped while it was being elected or loading the state: step down (a standby takes over at once) and exit.
  if (waiting.signal.aborted) {
    await standby?.close();
    await store.close();
    process.exit(0);
  }
  if (spec.kind === 'etcd' && config.leaseMs < config.electionTtlS * 1000 + 3000) {
    // A takeover takes up to the TTL plus a start-up: nodes whose lease is shorter are declared dead by the new leader.
    log.warn(
      { leaseMs: config.leaseMs, electionTtlS: config.electionTtlS },
      'the node lease is shorter than a takeover (election TTL + ~3 s): nodes may be declared dead when a standby ' +
        'takes over; use --lease-ms of at least that',
    );
  }
  // Deposed (etcd lease lost, another dispatcher leads): every write is refused from now on, and the state in memory
  // may be stale; exit so a supervisor starts this dispatcher again as a standby.
  store.on('deposed', (why) => {
    log.error({ err: why.message }, 'this dispatcher is no longer the leader: exiting');
    process.exit(1);
  });
  const cluster = new Cluster(
    store,
    { chunkSizeBytes: config.chunkSizeBytes, leaseMs: config.leaseMs, failover: config.failover },
    log,
  );
  await cluster.init();
  const mrsw = new MrswMaster(store, cluster, config.clusterSecret, log);
  mrsw.init();
  const barriers = new Barriers(store);
  await barriers.init();
  const tokens = new Tokens(store);
  const revocations = new Revocations(store);
  const server = await startDispatcherServer({
    cluster,
    host,
    port,
    ...(standby ? { standby } : {}),
    log,
    mrsw,
    barriers,
    tokens,
    revocations,
    security,
  });
  server.serving();
  await store.announce(config.advertise ?? server.address);
  log.info({ address: server.address, epoch: cluster.epoch, store: store.description }, 'dispatcher serving');
  process.stdout.write(`READY dispatcher address=${server.address} epoch=${String(cluster.epoch)}\n`);
  onShutdownSignal(async () => {
    barriers.stop();
    mrsw.stop();
    await server.shutdown();
    cluster.stop();
    await store.close();
  }, log);
}

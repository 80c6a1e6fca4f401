// `hotpot node`: the node daemon — runs the native engine, joins the dispatcher, serves hotpot.v1.Node.
import { createHash, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { z } from 'zod';
import { ConfigError, parseHostPort } from '../common/config.ts';
import { onShutdownSignal, startServer, handle } from '../common/grpc-server.ts';
import { invalidArgument, toServiceError } from '../common/errors.ts';
import { createLogger } from '../common/logger.ts';
import { DATA_SERVICE, NODE_SERVICE, hotpotV1 } from '../common/proto.ts';
import type { NodeHandlers } from '../generated/hotpot/v1/Node.ts';
import {
  engineDumpPage,
  engineInfo,
  engineRefreshPages,
  engineReplicatedThrough,
  engineStats,
  engineStore,
  socketPeerCredentials,
} from '../../native/index.ts';
import { EngineHost } from './engine-host.ts';
import { handOffOwnedChunks, type HandOffSummary } from './handoff.ts';
import { DataService } from './data/index.ts';
import { DispatcherLink } from './membership.ts';
import { NodeObservability, observabilityConfig } from './observability.ts';
import { consistencyHandlers, nodeConsistency } from './consistency-service.ts';
import { shareSockets } from './socket-group.ts';
import { TokenChecker } from '../common/token-check.ts';
import { RevocationList } from './revocation-list.ts';
import { DEFAULT_TLS_DIR, POOL_DIR_FILE } from '../common/paths.ts';
import { dispatcherTarget } from '../common/endpoints.ts';
import { securityFrom } from '../common/tls.ts';

export const PROTOCOL_VERSION = 1;

export const NodeConfig = z.object({
  /** The dispatcher, or several standbys and their leader ("a:p,b:p"): the node follows the one that leads. */
  dispatcher: z
    .string()
    .min(1)
    .superRefine((v, ctx) => {
      try {
        dispatcherTarget(v);
      } catch (e) {
        ctx.addIssue({ code: 'custom', message: e instanceof Error ? e.message : String(e) });
      }
    })
    .default('127.0.0.1:18500'),
  listen: z.string().default('127.0.0.1:0'),
  name: z.string().min(1).max(256).optional(),
  stateDir: z.string().min(1).default('.hotpot/node'),
  poolDir: z.string().min(1).optional(),
  durability: z.enum(['memory', 'disk']).default('disk'),
  socket: z.string().min(1).max(100).optional(),
  /** Group (name or number) given the app sockets (node.sock, grpc.sock, mode 0660): its members may connect. */
  socketGroup: z.string().min(1).max(64).optional(),
  clusterSecret: z.string().min(16, 'the cluster secret must be at least 16 characters').optional(),
  chunkSizeBytes: z
    .number()
    .int()
    .default(4 * 1024 * 1024),
  /** gRPC Data sessions idle for this long are closed (their uncommitted changes dropped). */
  dataIdleTimeoutMs: z.number().int().min(100).max(86_400_000).default(300_000),
  /** Deadline of each data-plane request (fetch, prepare, apply…); commit locks are broken after 4x this. */
  requestTimeoutMs: z.number().int().min(100).max(600_000).default(15_000),
  /** How long a page fault (or a gRPC Data read) on a page whose owner is down waits for an owner (0: fail at once). */
  ownerWaitMs: z.number().int().min(0).max(600_000).default(10_000),
  /** The data plane between nodes: tcp, or rdma through the kernel module (kmod/, /dev/hotpot-rdma). */
  transport: z.enum(['tcp', 'rdma']).default('tcp'),
  /** The cluster CA and this node's certificate (node.<identity>.crt/.key; issued here when ca.key is present). */
  tlsDir: z.string().min(1).default(DEFAULT_TLS_DIR),
  /** Plaintext, unauthenticated gRPC (development only; logs a warning). */
  insecure: z.boolean().default(false),
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
  // Its certificate names its identity: the dispatcher accepts it as that node only.
  const security = securityFrom({
    insecure: config.insecure,
    tlsDir: config.tlsDir,
    defaultDir: DEFAULT_TLS_DIR,
    role: 'node',
    name: identity,
    issue: true,
  });
  if (!config.clusterSecret) {
    throw new ConfigError(
      'a cluster secret is required (it signs MRSW lease certificates; with --insecure it also authenticates the data plane): ' +
        'set HOTPOT_CLUSTER_SECRET or --secret-file (hotpot up generates one)',
    );
  }
  const info = engineInfo();
  const { host, port } = parseHostPort(config.listen, 'listen');
  const socketPath = resolve(config.socket ?? join(stateDir, 'node.sock'));
  // Local apps also reach the node's gRPC services over a unix socket next to the shim socket.
  const grpcSocketPath = join(dirname(socketPath), 'grpc.sock');
  rmSync(grpcSocketPath, { force: true });
  // The default pool lives in /dev/shm (survives daemon crashes, not reboots; the data dir covers those),
  // keyed by the state dir so several local clusters never share a pool. Its path is kept in the state dir, so
  // `hotpot clean` finds it.
  const poolDir = resolve(
    config.poolDir ??
      join(
        '/dev/shm/hotpot',
        `${identity.replace(/[^A-Za-z0-9._-]/g, '_')}-${createHash('sha256').update(stateDir).digest('hex').slice(0, 12)}`,
      ),
  );
  writeFileSync(join(stateDir, POOL_DIR_FILE), poolDir + '\n', { mode: 0o600 });
  if (config.insecure)
    log.warn('--insecure: data-plane frames between nodes are plaintext (still HMAC-authenticated at connect)');
  const engine = new EngineHost({
    clusterSecret: config.clusterSecret,
    protectFrames: !config.insecure,
    // The data plane authenticates peers with the same certificates as gRPC (each node proves its identity).
    ...('tls' in security
      ? {
          tls: {
            certPem: security.tls.cert.toString('utf8'),
            keyPem: security.tls.key.toString('utf8'),
            caPem: security.tls.ca.toString('utf8'),
          },
        }
      : {}),
    dataPortFile: join(stateDir, 'data-port'),
    poolDir,
    dataDir: join(stateDir, 'data'),
    durability: config.durability,
    dataHost: host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host,
    socketPath,
    chunkSizeBytes: config.chunkSizeBytes,
    requestTimeoutMs: config.requestTimeoutMs,
    ownerWaitMs: config.ownerWaitMs,
    transport: config.transport,
    log,
  });

  let link: DispatcherLink | null = null;
  const tokens = new TokenChecker(() => link?.client ?? null);
  const revoked = new RevocationList(
    () => link?.client ?? null,
    log,
    (fps) => {
      engine.setRevokedCertificates(fps);
    },
  );
  const consistency = nodeConsistency(
    () => (link ? { client: link.client, nodeId: link.nodeId } : null),
    async (datasetId, pages) => {
      for (const p of pages) await engineRefreshPages(engine.handle, datasetId, p.firstPage, p.count);
    },
  );
  const data = new DataService({
    engine: engine.handle,
    consistency,
    log,
    idleTimeoutMs: config.dataIdleTimeoutMs,
    maxSessions: 1024,
    maxSessionsPerCaller: 256,
    maxPrivateBytes: 256 * 1024 * 1024,
    maxNodePrivateBytes: 1024 * 1024 * 1024,
  });
  const observability = new NodeObservability(engine.handle, observabilityConfig(), () => link?.nodeId ?? 0, log);
  await observability.start('hotpot-node');
  // The planned stop's handoffs run once, whether SIGTERM or a Drain call asked first.
  let draining: Promise<HandOffSummary> | null = null;
  let stopNow: (reason: string) => void = () => undefined;
  const drainOnce = (): Promise<HandOffSummary> => {
    draining ??= (async () => {
      engine.hideSnapshots(); // as in the stop below: a node handing its chunks off serves no snapshot read
      const ctx = engine.handOffContext();
      if (!ctx.dispatcher || !link) return { moved: 0, failed: 0, pages: 0, longestMs: 0 };
      const started = Date.now();
      const s = await handOffOwnedChunks({
        engine: engine.handle,
        dispatcher: ctx.dispatcher,
        nodeId: ctx.nodeId,
        identity,
        storeId: engineStore(engine.handle).id,
        views: ctx.views,
        alive: ctx.alive,
        load: (view) => engine.loadDataset(view),
        log,
        chunkTimeoutMs: Math.max(2000, config.requestTimeoutMs),
      });
      log.info({ ...s, ms: Date.now() - started }, 'owned chunks handed off before stopping');
      return s;
    })();
    return draining;
  };
  const handlers: NodeHandlers = {
    Stats: handle(() => {
      const l = link;
      const s = engineStats(engine.handle);
      return {
        nodeId: l?.nodeId ?? 0,
        identity,
        epoch: l?.epoch ?? 0,
        members: l?.members ?? [],
        dispatcherAddress: config.dispatcher,
        joined: l?.joined ?? false,
        engine: info,
        controlAddress: server.address,
        dataAddress: engine.dataAddress,
        uptimeMs: Date.now() - started,
        chunkSizeBytes: config.chunkSizeBytes,
        counters: s.counters,
        chunks: s.chunks,
        poolBytesResident: s.pool.bytesResident,
        openSessions: s.openSessions,
        lockedPages: s.lockedPages,
        socketPath,
        redoInFlight: s.pool.redoInFlight,
        poolDatasets: s.pool.datasets,
        ...observability.statsExtras(),
      };
    }, toServiceError),
    DumpPage: handle((req) => {
      if (!Number.isSafeInteger(req.datasetId) || !Number.isSafeInteger(req.page) || req.page < 0) {
        throw invalidArgument('dataset_id and page must be non-negative integers');
      }
      // Engine errors (NOT_FOUND for a dataset this node does not know, OUT_OF_RANGE past its end) keep their code.
      const p = engineDumpPage(engine.handle, req.datasetId, req.page);
      return { state: p.state, version: p.version, data: p.data };
    }, toServiceError),
    Events: (call) => {
      observability.serveEvents(call);
    },
    SetDebugMask: handle((req) => observability.setDebugMask(req), toServiceError),
    Drain: handle(async () => {
      const s = await drainOnce();
      // Answer first; then stop as on SIGTERM (the handoffs are done: the stop path finds them done).
      setImmediate(() => {
        stopNow('drain');
      });
      return { chunksMoved: s.moved, chunksFailed: s.failed, pagesCopied: s.pages, longestHandoffMs: s.longestMs };
    }, toServiceError),
    ...consistencyHandlers(consistency),
  };
  const server = await startServer({
    host,
    port,
    extraAddresses: [`unix:${grpcSocketPath}`],
    serviceNames: [NODE_SERVICE, DATA_SERVICE],
    log,
    security,
    peerCredentials: socketPeerCredentials,
    // Bearer tokens are the dispatcher's: asked of it (through this node's link, once joined), cached briefly.
    checkToken: (t) => tokens.check(t),
    // So is the certificate revocation list: listed again when a heartbeat shows it changed.
    isRevoked: (fp) => revoked.has(fp),
    add: (s) => {
      s.addService(hotpotV1.Node.service, handlers);
      s.addService(hotpotV1.Data.service, data.handlers);
    },
  });
  shareSockets([socketPath, grpcSocketPath], config.socketGroup, log);
  link = new DispatcherLink({
    dispatcher: config.dispatcher,
    identity,
    protocolVersion: PROTOCOL_VERSION,
    chunkSizeBytes: config.chunkSizeBytes,
    controlAddress: server.address,
    dataAddress: engine.dataAddress,
    store: engineStore(engine.handle),
    replicatedThrough: () => engineReplicatedThrough(engine.handle),
    security,
    log,
  });
  const l = link;
  l.on('joined', (id, mrswLeaseFloor) => {
    engine.attach(l.client, id, mrswLeaseFloor);
  });
  l.on('members', (epoch, members) => {
    engine.setMembers(epoch, members);
  });
  l.on('lease', (until) => {
    engine.setLeaseDeadline(until);
  });
  l.on('revocations', (generation) => void revoked.seen(generation));
  await l.start();
  await revoked.refresh();
  // Know every dataset's chunk map before saying READY: a restarted owner serves (and dumps) its pages at once.
  await engine.syncDatasets();
  server.serving();
  process.stdout.write(
    `READY node id=${String(l.nodeId)} address=${server.address} data=${engine.dataAddress} socket=${socketPath} grpc=unix:${grpcSocketPath} identity=${identity} epoch=${String(l.epoch)}\n`,
  );
  stopNow = onShutdownSignal(async (reason) => {
    // Data sessions first, while the dispatcher link is up, so their MRSW leases are released, not left to expire.
    await data.stop();
    // Then every owned chunk to another live node, so commits on them continue while this node is away — for a
    // planned stop of this node (SIGTERM, Drain). SIGINT (Ctrl-C of a whole local cluster) stops without handoff.
    // From the first handoff on this node's copies may miss commits (a new owner's pushes to pages still owned here
    // are dropped; a check between two handoffs cannot vouch for the next): a stopping node serves no snapshot read
    // (a chaos run summed a torn snapshot here mid-handoffs, after the per-handoff mark was in place).
    engine.hideSnapshots();
    if (reason !== 'SIGINT') await drainOnce();
    // Leaving: from the Leave on the others stop pushing to this node, but its apps are served until the engine
    // stops, so its cached copies stop counting for snapshot reads first (a snapshot in that gap read a stale copy
    // of a handed-off page next to current ones: a torn sum in the chaos test).
    engine.endLease();
    await l.stop(true);
    await observability.stop();
    await server.shutdown();
    engine.stop();
  }, log);
}

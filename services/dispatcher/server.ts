// gRPC hotpot.v1.Dispatcher over the Cluster state machine.
import type * as grpc from '@grpc/grpc-js';
import { describe, standing, tokenPrincipal } from '../common/authz.ts';
import { HotpotError, invalidArgument, toServiceError } from '../common/errors.ts';
import { handle, principal, startServer, type HotpotServer } from '../common/grpc-server.ts';
import type { DispatcherDoor, StandbyServer } from './standby.ts';
import type { Security } from '../common/tls.ts';
import type { Logger } from '../common/logger.ts';
import { DISPATCHER_SERVICE, hotpotV1 } from '../common/proto.ts';
import type { DispatcherHandlers } from '../../services/generated/hotpot/v1/Dispatcher.ts';
import type { Chunk } from '../generated/hotpot/v1/Chunk.ts';
import type { Dataset } from '../generated/hotpot/v1/Dataset.ts';
import type { DatasetsEvent } from '../generated/hotpot/v1/DatasetsEvent.ts';
import type { MembershipEvent } from '../generated/hotpot/v1/MembershipEvent.ts';
import type { NodeInfo } from '../generated/hotpot/v1/NodeInfo.ts';
import { type Cluster, type ChunkView, type LiveNode, type MembershipEventData, validateName } from './cluster.ts';
import { datasetAccess, type DatasetRecord } from './store.ts';
import { accessRefusal, type AccessKind } from '../common/access.ts';
import type { Caller__Output } from '../generated/hotpot/v1/Caller.ts';
import type { Barriers } from './barrier.ts';
import type { Tokens } from './tokens.ts';
import type { Revocations } from './revocations.ts';
import type { GrantedLease, MrswMaster } from './mrsw.ts';
import type { Lease } from '../generated/hotpot/v1/Lease.ts';
import type { MetricsConfig } from '../common/telemetry.ts';
import { dispatcherMetricsConfig, startDispatcherMetrics } from './metrics.ts';

export function leaseMsg(l: GrantedLease): Lease {
  return {
    leaseId: l.id,
    dataset: l.dataset,
    datasetId: l.datasetId,
    nodeId: l.nodeId,
    fencingEpoch: l.epoch,
    expiresUnixMs: l.expiresUnixMs,
    pages: l.pages.map((p) => ({ firstPage: p.firstPage, count: p.count })),
    certificate: l.certificate,
    holder: l.holder,
  };
}

export function nodeInfo(n: LiveNode): NodeInfo {
  return {
    id: n.id,
    identity: n.identity,
    state: `NODE_STATE_${n.state}`,
    controlAddress: n.controlAddress,
    dataAddress: n.dataAddress,
    leaseExpiresUnixMs: n.leaseExpiresUnixMs,
    joinedUnixMs: n.joinedUnixMs,
    stateEpoch: n.stateEpoch,
    storeId: n.storeId ?? '',
    storeIncarnation: n.storeIncarnation ?? 0,
    storeReplacedEpoch: n.storeReplacedEpoch ?? 0,
    replicatedThroughEpoch: n.replicatedThroughEpoch ?? 0,
  };
}

function datasetMsg(d: DatasetRecord): Dataset {
  return {
    name: d.name,
    id: d.id,
    sizeBytes: d.sizeBytes,
    mode: d.mode === 'mrmw' ? 'CONSISTENCY_MODE_MRMW' : 'CONSISTENCY_MODE_MRSW',
    replicas: d.replicas,
    chunkSizeBytes: d.chunkSizeBytes,
    chunkCount: d.chunks.length,
    createdUnixMs: d.createdUnixMs,
    generation: d.generation,
    ownerUid: datasetAccess(d).uid,
    ownerGid: datasetAccess(d).gid,
    permissions: datasetAccess(d).perm,
  };
}

function chunkMsg(c: ChunkView): Chunk {
  return {
    index: c.index,
    ownerNodeId: c.owner,
    replicaNodeIds: c.replicas,
    ownerAlive: c.ownerAlive,
    ownerRecovering: c.ownerRecovering,
    era: c.era,
    lostPages: c.lost.map(([firstPage, count]) => ({ firstPage, count })),
  };
}

/** The most supplementary groups a Caller may list (NGROUPS_MAX). */
const MAX_CALLER_GROUPS = 65536;

/**
 * Refuses the app a node asks for when the dataset's owner and bits do not let it `kind`. No caller: the node asks
 * for a session it checked at open (nodes are trusted to name their apps, as they are to create datasets for them).
 */
export function checkCaller(ds: DatasetRecord, caller: Caller__Output | null, kind: AccessKind): void {
  if (!caller) return;
  if (caller.groups.length > MAX_CALLER_GROUPS) {
    throw invalidArgument(`caller.groups: at most ${String(MAX_CALLER_GROUPS)}`);
  }
  const refusal = accessRefusal(ds.name, datasetAccess(ds), caller, kind);
  if (refusal !== null) throw new HotpotError('PERMISSION_DENIED', refusal);
}

export async function startDispatcherServer(opts: {
  cluster: Cluster;
  host: string;
  port: number;
  log: Logger;
  mrsw: MrswMaster;
  barriers: Barriers;
  tokens: Tokens;
  revocations: Revocations;
  security: Security;
  /** Metrics (metrics.ts); by default from the environment (HOTPOT_DISPATCHER_METRICS_EXPORTER, ...). */
  metrics?: MetricsConfig;
  /** The server this dispatcher listened on as a standby: it serves as the leader's (host and port unused). */
  standby?: StandbyServer;
}): Promise<HotpotServer> {
  const { cluster, log, mrsw, barriers, tokens, revocations } = opts;
  const metrics = await startDispatcherMetrics(opts.metrics ?? dispatcherMetricsConfig(), cluster, log);
  const daemonUid = process.geteuid?.() ?? 0;
  /**
   * A node acts only as itself: the identity in its certificate (admins, and every caller of an --insecure
   * dispatcher, may name any). So no one can join, heartbeat, leave or move chunks as another node.
   */
  const asNode = (call: { metadata: grpc.Metadata }, identity: string): void => {
    const p = principal(call);
    if (standing(p, daemonUid) === 'admin') return;
    if (p.kind === 'cert' && p.role === 'node' && p.name === identity) return;
    throw new HotpotError('PERMISSION_DENIED', `${describe(p)} may not act as node "${identity.slice(0, 256)}"`);
  };
  /** As asNode, for requests that name the node by id. */
  const asNodeId = (call: { metadata: grpc.Metadata }, nodeId: number): void => {
    asNode(call, cluster.members().find((n) => n.id === nodeId)?.identity ?? '');
  };
  const h = <Req, Res>(fn: (req: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res> | Res) =>
    handle(fn, toServiceError);
  const watchers = new Set<grpc.ServerWritableStream<unknown, MembershipEvent>>();
  const onMembership = (e: MembershipEventData): void => {
    const msg: MembershipEvent = {
      kind: `KIND_${e.kind}`,
      epoch: e.epoch,
      node: nodeInfo(e.node),
      members: cluster.members().map(nodeInfo),
    };
    for (const w of watchers) w.write(msg);
  };
  cluster.on('membership', onMembership);
  // The dataset watch: every stream gets the whole namespace, now and after each change. Changes committed in one
  // turn of the event loop go out as one event.
  const datasetWatchers = new Map<grpc.ServerWritableStream<unknown, DatasetsEvent>, { revision: number }>();
  const sendDatasets = (call: grpc.ServerWritableStream<unknown, DatasetsEvent>, state: { revision: number }): void => {
    state.revision++;
    call.write({ revision: state.revision, datasets: cluster.listDatasets().map(datasetMsg) });
  };
  let datasetsPending = false;
  const offDatasets = cluster.onDatasetsChanged(() => {
    if (datasetsPending) return;
    datasetsPending = true;
    setImmediate(() => {
      datasetsPending = false;
      for (const [w, state] of datasetWatchers) sendDatasets(w, state);
    });
  });

  const withChunks = (ds: DatasetRecord): { dataset: Dataset; chunks: Chunk[] } => ({
    dataset: datasetMsg(ds),
    chunks: cluster.chunkView(ds).map(chunkMsg),
  });

  const asLeaseHolder = (call: { metadata: grpc.Metadata }, leaseId: string): void => {
    const holder = mrsw.holderOf(leaseId);
    // An unknown lease: the call answers NOT_FOUND as before.
    if (holder !== undefined) asNodeId(call, holder);
  };

  const handlers: DispatcherHandlers = {
    Join: h(async (req, call) => {
      asNode(call, req.identity);
      const node = await cluster.join({
        identity: req.identity,
        protocolVersion: req.protocolVersion,
        chunkSizeBytes: req.chunkSizeBytes,
        controlAddress: req.controlAddress,
        dataAddress: req.dataAddress,
        storeId: req.storeId,
        storeIncarnation: req.storeIncarnation,
      });
      return {
        nodeId: node.id,
        epoch: cluster.epoch,
        leaseMs: cluster.leaseMs,
        heartbeatIntervalMs: Math.max(50, Math.floor(cluster.leaseMs / 3)),
        members: cluster.members().map(nodeInfo),
        dispatcherInstance: cluster.instance,
        storeState: `STORE_STATE_${node.storeState}`,
        mrswLeaseFloor: mrsw.leaseFloor(node.id),
      };
    }),
    ChunkRecovered: h(async (req, call) => {
      asNodeId(call, req.nodeId);
      await cluster.chunkRecovered({
        nodeId: req.nodeId,
        storeId: req.storeId,
        datasetId: req.datasetId,
        chunk: req.chunk,
        lost: req.lostPages,
      });
      return {};
    }),
    ForgetLostPages: h(async (req) => {
      validateName(req.name);
      const r = await cluster.forgetLostPages(req.name);
      return { pages: r.pages, dataset: datasetMsg(r.dataset) };
    }),
    MoveChunk: h(async (req, call) => {
      asNode(call, req.identity);
      const moved = await cluster.moveChunk({
        nodeId: req.nodeId,
        identity: req.identity,
        storeId: req.storeId,
        datasetId: req.datasetId,
        chunk: req.chunk,
        toNodeId: req.toNodeId,
      });
      return { chunk: chunkMsg(moved.chunk), generation: moved.dataset.generation };
    }),
    Heartbeat: h((req, call) => {
      asNode(call, req.identity);
      const n = cluster.heartbeat(req.nodeId, req.identity, req.replicatedThroughEpoch);
      return {
        epoch: cluster.epoch,
        leaseExpiresUnixMs: n.leaseExpiresUnixMs,
        dispatcherInstance: cluster.instance,
        revocations: revocations.generation,
      };
    }),
    Leave: h(async (req, call) => {
      asNode(call, req.identity);
      return { epoch: await cluster.leave(req.nodeId, req.identity) };
    }),
    ForgetNode: h(async (req) => {
      if (req.nodeId === 0) throw invalidArgument('node_id is required');
      return { epoch: await cluster.forget(req.nodeId) };
    }),
    ListNodes: h(() => ({ epoch: cluster.epoch, nodes: cluster.members().map(nodeInfo) })),
    WatchMembership: (call) => {
      call.on('error', () => watchers.delete(call));
      call.on('cancelled', () => watchers.delete(call));
      call.on('close', () => watchers.delete(call));
      watchers.add(call);
      call.write({ kind: 'KIND_SNAPSHOT', epoch: cluster.epoch, members: cluster.members().map(nodeInfo) });
    },
    WatchDatasets: (call) => {
      const forget = (): void => {
        datasetWatchers.delete(call);
      };
      call.on('error', forget);
      call.on('cancelled', forget);
      call.on('close', forget);
      const state = { revision: 0 };
      datasetWatchers.set(call, state);
      sendDatasets(call, state);
    },
    CreateDataset: h(async (req) => {
      const ds = await cluster.createDataset({
        name: req.name,
        sizeBytes: req.sizeBytes,
        mode: req.mode,
        replicas: req.replicas,
        access: { uid: req.ownerUid, gid: req.ownerGid, perm: req.permissions === 0 ? 0o600 : req.permissions },
      });
      return withChunks(ds);
    }),
    SetDatasetAccess: h(async (req) => {
      validateName(req.name);
      if (!req.setOwner && !req.setPermissions) throw invalidArgument('set_owner or set_permissions is required');
      const ds = await cluster.setDatasetAccess(req.name, {
        ...(req.setOwner ? { uid: req.ownerUid, gid: req.ownerGid } : {}),
        ...(req.setPermissions ? { perm: req.permissions } : {}),
      });
      return { dataset: datasetMsg(ds) };
    }),
    OpenDataset: h((req) => {
      const ds = cluster.getDataset(req.name);
      return { ...withChunks(ds), epoch: cluster.epoch, members: cluster.members().map(nodeInfo) };
    }),
    StatDataset: h((req) => {
      const ds = cluster.getDataset(req.name);
      return { ...withChunks(ds), epoch: cluster.epoch };
    }),
    ListDatasets: h(() => ({ datasets: cluster.listDatasets().map(datasetMsg) })),
    ResizeDataset: h(async (req) => {
      const ds = await cluster.resizeDataset(req.name, req.sizeBytes);
      return withChunks(ds);
    }),
    DeleteDataset: h(async (req) => {
      await cluster.deleteDataset(req.name);
      return {};
    }),
    Acquire: h(async (req, call) => {
      asNodeId(call, req.nodeId);
      checkCaller(cluster.getDataset(req.dataset), req.caller, 'write');
      return {
        lease: leaseMsg(
          await mrsw.acquire({
            dataset: req.dataset,
            ranges: req.ranges,
            leaseMs: req.leaseMs,
            waitMs: req.waitMs,
            nodeId: req.nodeId,
            holder: req.holder,
            requestId: req.requestId,
            cancelled: () => call.cancelled,
          }),
        ),
      };
    }),
    // A lease is released or renewed only by the node that holds it (or an admin).
    Release: h(async (req, call) => {
      asLeaseHolder(call, req.leaseId);
      await mrsw.release(req.leaseId);
      return {};
    }),
    RenewLease: h(async (req, call) => {
      asLeaseHolder(call, req.leaseId);
      return { lease: leaseMsg(await mrsw.renew(req.leaseId, req.leaseMs)) };
    }),
    ListLeases: h((req) => ({ leases: mrsw.list(req.dataset).map(leaseMsg) })),
    Barrier: h(async (req) => {
      if (req.dataset === '') throw invalidArgument('a barrier belongs to a dataset: name it');
      const ds = cluster.getDataset(req.dataset);
      checkCaller(ds, req.caller, 'read');
      return barriers.arrive(req.name, req.parties, req.timeoutMs, { id: ds.id, name: ds.name }, req.requestId);
    }),
    CreateToken: h(async (req, call) => {
      const r = await tokens.create({
        user: req.user,
        role: req.role,
        uid: req.uid,
        gid: req.gid,
        ttlMs: req.ttlMs,
      });
      log.info(
        { token: r.info.id, user: r.info.user, role: r.info.role, by: describe(principal(call)) },
        'token created',
      );
      return { token: r.token, info: r.info };
    }),
    ListTokens: h(() => ({ tokens: tokens.list() })),
    RevokeToken: h(async (req, call) => {
      await tokens.revoke(req.id);
      log.info({ token: req.id, by: describe(principal(call)) }, 'token revoked');
      return {};
    }),
    CheckToken: h((req) => {
      const info = typeof req.token === 'string' && req.token.length <= 512 ? tokens.check(req.token) : null;
      if (!info) throw new HotpotError('UNAUTHENTICATED', 'unknown, revoked or expired token');
      return { info };
    }),
    RevokeCertificate: h(async (req, call) => {
      const r = await revocations.revoke({
        fingerprint: req.fingerprint,
        subject: req.subject,
        expiresUnixMs: req.expiresUnixMs,
      });
      log.warn(
        { fingerprint: r.fingerprint, subject: r.subject, by: describe(principal(call)) },
        'certificate revoked',
      );
      return { revoked: r, generation: revocations.generation };
    }),
    ListRevokedCertificates: h(() => ({
      certificates: revocations.list(),
      generation: revocations.generation,
    })),
  };

  const door: DispatcherDoor = {
    handlers: handlers,
    checkToken: (t) => Promise.resolve(tokenPrincipal(tokens.check(t))),
    isRevoked: (fp) => revocations.has(fp),
    ...(metrics ? { observeCall: metrics.observeCall } : {}),
  };
  // Elected from standby: its server, with its connections, becomes this one (standby.ts).
  const server =
    opts.standby?.promote(door) ??
    (await startServer({
      host: opts.host,
      port: opts.port,
      serviceNames: [DISPATCHER_SERVICE],
      log,
      security: opts.security,
      checkToken: door.checkToken,
      isRevoked: door.isRevoked,
      ...(metrics ? { observeCall: metrics.observeCall } : {}),
      add: (s) => {
        s.addService(hotpotV1.Dispatcher.service, handlers);
      },
    }));
  const shutdown = server.shutdown.bind(server);
  server.shutdown = async (graceMs?: number) => {
    cluster.off('membership', onMembership);
    for (const w of watchers) w.end();
    watchers.clear();
    offDatasets();
    for (const w of datasetWatchers.keys()) w.end();
    datasetWatchers.clear();
    await shutdown(graceMs);
    await metrics?.pipeline.shutdown();
  };
  return server;
}

// The node daemon's hold on the native engine: starts it, feeds it membership and chunk maps, and answers the
// engine's "an app wants to open dataset X" requests by asking the dispatcher (the control path).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import type { Logger } from '../common/logger.ts';
import { HotpotError } from '../common/errors.ts';
import { unary } from '../common/rpc.ts';
import type { DispatcherClient } from '../common/proto.ts';
import type { OpenDatasetResponse__Output } from '../generated/hotpot/v1/OpenDatasetResponse.ts';
import type { CreateDatasetResponse__Output } from '../generated/hotpot/v1/CreateDatasetResponse.ts';
import type { NodeInfo__Output } from '../generated/hotpot/v1/NodeInfo.ts';
import type { ListDatasetsResponse__Output } from '../generated/hotpot/v1/ListDatasetsResponse.ts';
import type { Dataset__Output } from '../generated/hotpot/v1/Dataset.ts';
import type { DatasetsEvent__Output } from '../generated/hotpot/v1/DatasetsEvent.ts';
import type { ClientReadableStream, ServiceError } from '@grpc/grpc-js';
import { accessRefusal } from '../common/access.ts';
import { LeaseGate } from './lease-gate.ts';
import {
  createEngine,
  engineCompleteOpen,
  engineDataPort,
  engineOpenDataset,
  engineRecoveredChunks,
  engineSetLeaseDeadline,
  engineEndLease,
  engineHideSnapshots,
  engineSetMrswLeaseFloor,
  engineSetRevokedCertificates,
  engineSetMembers,
  engineStore,
  engineSetNodeId,
  engineShutdown,
  toNativeError,
  type EngineHandle,
  type EngineOpenRequest,
  type EngineTls,
  type NativeCode,
} from '../../native/index.ts';

/**
 * Backoff of a broken dataset watch and of a failed sync. Capped at 1 s: while the watch is down this node loads
 * no new chunk map, so a failover decided right after the dispatcher came back (a restart takes seconds) would
 * reach it only at the next attempt — with a 5 s cap, faults and commits on the failed-over chunks stalled up to
 * 5 s longer than the failover. One small request a second per node while the dispatcher is down is cheap.
 */
const WATCH_RETRY_MIN_MS = 250;
const WATCH_RETRY_MAX_MS = 1000;

export interface EngineHostOptions {
  clusterSecret: string;
  /** Encrypted, authenticated data-plane frames (false only with --insecure). */
  protectFrames: boolean;
  /** The node's certificate, key and CA: the data plane authenticates peers by certificate (absent: --insecure). */
  tls?: EngineTls;
  /** Where the data-plane port is kept, so a restarted node listens where its peers last saw it. */
  dataPortFile: string;
  poolDir: string;
  dataDir: string;
  durability: 'memory' | 'disk';
  dataHost: string;
  socketPath: string;
  chunkSizeBytes: number;
  log: Logger;
  /** Deadline of each data-plane request; commit locks are broken after 4x this. */
  requestTimeoutMs?: number;
  /** How long a page fault on a page whose owner is down waits for an owner to be alive again. */
  ownerWaitMs?: number;
  /** The data plane: tcp (default) or rdma (kmod/hotpot_rdma.ko). */
  transport?: 'tcp' | 'rdma';
}

export type DatasetView = OpenDatasetResponse__Output | CreateDatasetResponse__Output;

export class EngineHost {
  readonly handle: EngineHandle;
  readonly dataAddress: string;
  private dispatcher: DispatcherClient | null = null;
  private stopped = false;
  /** dataset id -> generation loaded into the engine (owners must know every dataset, not just opened ones). */
  private readonly loaded = new Map<number, string>();
  /** Checks (locally, no RPC) for chunks recovered after a store replacement, which a sync reports. */
  private recoveredTimer: NodeJS.Timeout | null = null;
  /** The dataset watch (WatchDatasets) and the namespace it last streamed (null until its first event and while it
   * is broken: a sync then lists the datasets itself). */
  private watch: ClientReadableStream<DatasetsEvent__Output> | null = null;
  private listed: Dataset__Output[] | null = null;
  private watchDelayMs = WATCH_RETRY_MIN_MS;
  /** A failed sync is retried (with backoff) until one succeeds: nothing else would run it again on an idle cluster. */
  private retryTimer: NodeJS.Timeout | null = null;
  private retryDelayMs = WATCH_RETRY_MIN_MS;
  private nodeId = 0;
  private syncing: Promise<void> | null = null;
  /** dataset id -> the chunk map last loaded into the engine (handoff walks the chunks this node owns). */
  private readonly views = new Map<number, DatasetView>();
  /** Members the dispatcher last said are alive (handoff targets). */
  private alive: number[] = [];
  /** Keeps a (re)join's lease from the engine until the chunk maps were read again after it (lease-gate.ts). */
  private readonly leaseGate = new LeaseGate();

  constructor(private readonly opts: EngineHostOptions) {
    const start = (dataPort: number): EngineHandle =>
      createEngine({
        clusterSecret: opts.clusterSecret,
        protectFrames: opts.protectFrames,
        ...(opts.tls ? { tls: opts.tls } : {}),
        poolDir: opts.poolDir,
        dataDir: opts.dataDir,
        durability: opts.durability,
        dataHost: opts.dataHost,
        dataPort,
        shimSocketPath: opts.socketPath,
        chunkSizeBytes: opts.chunkSizeBytes,
        requestTimeoutMs: opts.requestTimeoutMs ?? 15_000,
        ownerWaitMs: opts.ownerWaitMs ?? 10_000,
        transport: opts.transport ?? 'tcp',
        onOpenRequest: (req) => void this.onOpen(req),
        onLog: (line) => opts.log.info({ engine: true }, line),
      });
    // The same data port across restarts: peers that still have this node's old address (until the dispatcher's
    // membership update reaches them) reach this node again, not whichever process took a released port.
    const previous = readPort(opts.dataPortFile);
    let handle: EngineHandle | null = null;
    if (previous !== null) {
      try {
        handle = start(previous);
      } catch (e) {
        opts.log.warn(
          { port: previous, err: e instanceof Error ? e.message : String(e) },
          'previous data port not available; using a new one',
        );
      }
    }
    this.handle = handle ?? start(0);
    const port = engineDataPort(this.handle);
    if (port !== previous) writeFileSync(opts.dataPortFile, `${String(port)}\n`, { mode: 0o600 });
    this.dataAddress = `${opts.dataHost}:${String(port)}`;
  }

  /**
   * On every join and rejoin (before its lease is passed on): the chunk maps are read again before the lease, and the
   * MRSW lease floor the join answered is passed to the engine. From then on the dataset watch streams every change of
   * the namespace (no polling): each event reloads the maps whose generation changed. A broken watch is reopened (its
   * first event is the whole namespace again, so nothing changed meanwhile is missed).
   */
  attach(dispatcher: DispatcherClient, nodeId: number, mrswLeaseFloor = 0): void {
    const reconnect = this.dispatcher !== dispatcher;
    this.dispatcher = dispatcher;
    this.nodeId = nodeId;
    this.leaseGate.joined();
    engineSetNodeId(this.handle, nodeId);
    engineSetMrswLeaseFloor(this.handle, mrswLeaseFloor);
    if (reconnect || !this.watch) this.startWatch();
    if (!this.recoveredTimer) {
      this.recoveredTimer = setInterval(() => {
        if (!this.stopped && engineRecoveredChunks(this.handle).length > 0) this.syncAfterInFlight(false);
      }, 250);
      this.recoveredTimer.unref();
    }
    this.syncAfterInFlight(true);
  }

  private startWatch(): void {
    const c = this.dispatcher;
    if (!c || this.stopped) return;
    const old = this.watch;
    this.watch = null;
    old?.cancel();
    const call = c.WatchDatasets({});
    this.watch = call;
    call.on('data', (ev: DatasetsEvent__Output) => {
      if (this.watch !== call) return;
      this.watchDelayMs = WATCH_RETRY_MIN_MS;
      this.listed = ev.datasets;
      this.syncAfterInFlight(false);
    });
    const broken = (why: string): void => {
      if (this.watch !== call) return;
      this.watch = null;
      this.listed = null;
      if (this.stopped) return;
      this.opts.log.warn({ err: why, retryMs: this.watchDelayMs }, 'dataset watch broken; reopening');
      setTimeout(() => {
        if (!this.watch) this.startWatch();
      }, this.watchDelayMs).unref();
      this.watchDelayMs = Math.min(this.watchDelayMs * 2, WATCH_RETRY_MAX_MS);
    };
    call.on('error', (e: ServiceError) => {
      broken(e.details || e.message);
    });
    call.on('end', () => {
      broken('the dispatcher ended the stream');
    });
  }

  /** A sync that begins after the one in flight (if any): that one may have read the maps before the change. */
  private syncAfterInFlight(force: boolean): void {
    void (this.syncing ?? Promise.resolve()).then(() => this.syncDatasets(force));
  }

  /**
   * Keeps the engine's chunk maps current for every dataset: a node serves pages of chunks it owns even when no
   * local app opened the dataset. Reloads a dataset when its generation or the liveness of its owners changes.
   */
  syncDatasets(force = false): Promise<void> {
    const c = this.dispatcher;
    if (!c || this.stopped) return Promise.resolve();
    // One sync at a time; callers that need the result (startup) wait for the one in flight.
    if (this.syncing) return this.syncing;
    const token = this.leaseGate.syncBegins();
    const run = async (): Promise<void> => {
      try {
        await this.reportRecovered(c);
        if (force) this.loaded.clear();
        // A forced sync (a join) reads the namespace itself: the watch's last list may predate the join.
        const datasets =
          !force && this.listed
            ? this.listed
            : (await unary<ListDatasetsResponse__Output>((o, cb) => c.ListDatasets({}, o, cb), 2000)).datasets;
        const ids = new Set(datasets.map((d) => d.id));
        for (const id of [...this.views.keys()]) {
          if (ids.has(id)) continue;
          // Deleted: no handoff, no reload of it (the engine keeps what it mapped until it stops).
          this.views.delete(id);
          this.loaded.delete(id);
        }
        for (const d of datasets) {
          if (this.loaded.has(d.id) && this.loaded.get(d.id) === String(d.generation)) continue;
          const view = await unary<OpenDatasetResponse__Output>(
            (o, cb) => c.OpenDataset({ name: d.name }, o, cb),
            2000,
          );
          this.loadDataset(view);
        }
        const lease = this.leaseGate.synced(token);
        if (lease !== null && !this.stopped) engineSetLeaseDeadline(this.handle, lease);
        this.retryDelayMs = WATCH_RETRY_MIN_MS;
      } catch (e) {
        this.opts.log.warn(
          { err: e instanceof Error ? e.message : String(e), retryMs: this.retryDelayMs },
          'dataset sync failed',
        );
        this.scheduleRetry(force);
      } finally {
        this.syncing = null;
      }
    };
    this.syncing = run();
    return this.syncing;
  }

  private scheduleRetry(force: boolean): void {
    if (this.retryTimer || this.stopped) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.syncAfterInFlight(force);
    }, this.retryDelayMs);
    this.retryTimer.unref();
    this.retryDelayMs = Math.min(this.retryDelayMs * 2, WATCH_RETRY_MAX_MS);
  }

  /** Chunks this node recovered from their holders after its store was replaced: told to the dispatcher, which then
   * shows them served again (a new generation of the dataset, reloaded by the sync). A report the dispatcher refuses
   * (the chunk moved to another node meanwhile, the dataset was deleted, this node was declared dead) does not stop
   * the sync: the maps it then loads clear the engine's list. Before, one refused report failed every sync — no new
   * chunk map was loaded and the lease was not passed on — until the node restarted. */
  private async reportRecovered(c: DispatcherClient): Promise<void> {
    const store = engineStore(this.handle);
    for (const r of engineRecoveredChunks(this.handle)) {
      const lost = r.lostPages.reduce((n, x) => n + x.count, 0);
      try {
        await unary((o, cb) =>
          c.ChunkRecovered(
            { nodeId: this.nodeId, storeId: store.id, datasetId: r.datasetId, chunk: r.chunk, lostPages: r.lostPages },
            o,
            cb,
          ),
        );
      } catch (e) {
        if (!(e instanceof HotpotError) || (e.code !== 'FAILED_PRECONDITION' && e.code !== 'NOT_FOUND')) throw e;
        this.opts.log.warn(
          { dataset: r.datasetId, chunk: r.chunk, err: e instanceof Error ? e.message : String(e) },
          'recovered chunk not recorded by the dispatcher (the chunk map changed meanwhile): reloading the maps',
        );
        this.loaded.delete(r.datasetId);
        continue;
      }
      this.loaded.delete(r.datasetId);
      this.opts.log.info(
        { dataset: r.datasetId, chunk: r.chunk, lostPages: lost },
        'recovered chunk reported to the dispatcher',
      );
    }
  }

  /** The certificates the data plane refuses (the dispatcher's revocation list). */
  setRevokedCertificates(fingerprints: string[]): void {
    if (this.stopped) return;
    engineSetRevokedCertificates(this.handle, fingerprints);
  }

  /** Until when this node's membership lease is surely valid (engineSetLeaseDeadline). */
  setLeaseDeadline(unixMs: number): void {
    if (this.stopped) return;
    const lease = this.leaseGate.lease(unixMs);
    if (lease !== null) engineSetLeaseDeadline(this.handle, lease);
  }

  /**
   * This node is about to leave the cluster (a planned stop, before its Leave): the others stop pushing to it from
   * then on while its apps are still served, so its lease ends now and for good (engineEndLease): snapshot reads here
   * fail from this call on, and no later deadline (a heartbeat answered late) lifts that.
   */
  endLease(): void {
    if (this.stopped) return;
    engineEndLease(this.handle);
  }

  /** A planned stop begins: this node serves no snapshot read from now on (engineHideSnapshots). */
  hideSnapshots(): void {
    if (this.stopped) return;
    engineHideSnapshots(this.handle);
  }

  setMembers(epoch: number, members: NodeInfo__Output[]): void {
    if (this.stopped) return;
    this.alive = members.filter((m) => m.state === 'NODE_STATE_ALIVE').map((m) => m.id);
    // Owner liveness is part of each chunk map: reload them after a membership change.
    this.loaded.clear();
    engineSetMembers(
      this.handle,
      epoch,
      members
        .filter((m) => m.dataAddress !== '')
        .map((m) => ({
          id: m.id,
          dataAddress: m.dataAddress,
          identity: m.identity,
          alive: m.state === 'NODE_STATE_ALIVE',
          stateEpoch: m.stateEpoch,
          storeId: m.storeId,
          storeReplacedEpoch: m.storeReplacedEpoch,
          replicatedThroughEpoch: m.replicatedThroughEpoch,
        })),
    );
    // A death is when chunks fail over: read the maps now rather than at the next tick (a new owner takes its
    // chunks over sooner, a fetcher finds it sooner).
    if (this.dispatcher) this.syncAfterInFlight(false);
  }

  /** The chunk maps last loaded, the members alive, this node's id and its dispatcher (for handoff). */
  handOffContext(): { views: DatasetView[]; alive: number[]; nodeId: number; dispatcher: DispatcherClient | null } {
    return {
      views: [...this.views.values()],
      alive: [...this.alive],
      nodeId: this.nodeId,
      dispatcher: this.dispatcher,
    };
  }

  loadDataset(view: DatasetView): number {
    const d = view.dataset;
    if (!d) throw new Error('dispatcher returned no dataset');
    engineOpenDataset(this.handle, {
      id: d.id,
      name: d.name,
      sizeBytes: d.sizeBytes,
      mode: d.mode === 'CONSISTENCY_MODE_MRSW' ? 'mrsw' : 'mrmw',
      replicas: d.replicas,
      chunkSizeBytes: d.chunkSizeBytes,
      generation: d.generation,
      chunks: view.chunks.map((c) => ({
        index: c.index,
        owner: c.ownerNodeId,
        replicas: c.replicaNodeIds,
        ownerAlive: c.ownerAlive,
        ownerRecovering: c.ownerRecovering,
        era: c.era,
        lostPages: c.lostPages,
      })),
    });
    this.loaded.set(d.id, String(d.generation));
    this.views.set(d.id, view);
    return d.id;
  }

  private async onOpen(req: EngineOpenRequest): Promise<void> {
    const c = this.dispatcher;
    try {
      if (!c) throw new HotpotError('UNAVAILABLE', 'the node has not joined the cluster yet');
      let view: DatasetView;
      try {
        view = await unary<OpenDatasetResponse__Output>((o, cb) => c.OpenDataset({ name: req.name }, o, cb));
      } catch (e) {
        if (!(e instanceof HotpotError && e.code === 'NOT_FOUND' && req.create)) throw e;
        const create = req.create;
        try {
          view = await unary<CreateDatasetResponse__Output>((o, cb) =>
            c.CreateDataset(
              {
                name: req.name,
                sizeBytes: create.sizeBytes,
                mode: create.mode === 'mrsw' ? 'CONSISTENCY_MODE_MRSW' : 'CONSISTENCY_MODE_MRMW',
                replicas: create.replicas,
                // The creating app owns it; only it (and uid 0) may open it until `hotpot chmod` says otherwise.
                ownerUid: req.uid,
                ownerGid: req.gid,
                permissions: 0o600,
              },
              o,
              cb,
            ),
          );
        } catch (e2) {
          // Another app created it first: open what exists.
          if (!(e2 instanceof HotpotError && e2.code === 'ALREADY_EXISTS')) throw e2;
          view = await unary<OpenDatasetResponse__Output>((o, cb) => c.OpenDataset({ name: req.name }, o, cb));
        }
      }
      const d = view.dataset;
      const refusal = d
        ? accessRefusal(
            req.name,
            { uid: d.ownerUid, gid: d.ownerGid, perm: d.permissions },
            { uid: req.uid, gid: req.gid, groups: req.groups },
            req.readOnly ? 'read' : 'write',
          )
        : null;
      if (refusal !== null) throw new HotpotError('PERMISSION_DENIED', refusal);
      const id = this.loadDataset(view);
      this.opts.log.info(
        { dataset: req.name, id, pid: req.pid, uid: req.uid, readOnly: req.readOnly },
        'app opened dataset',
      );
      engineCompleteOpen(this.handle, req.requestId, { ok: true, datasetId: id });
    } catch (e) {
      const code: NativeCode = e instanceof HotpotError && e.code !== 'OK' ? e.code : toNativeError(e).code;
      const message = e instanceof Error ? e.message : String(e);
      this.opts.log.warn({ dataset: req.name, code, err: message }, 'app open failed');
      if (!this.stopped) engineCompleteOpen(this.handle, req.requestId, { ok: false, code, message });
    }
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.recoveredTimer) clearInterval(this.recoveredTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    const w = this.watch;
    this.watch = null;
    w?.cancel();
    engineShutdown(this.handle);
  }
}

/** The port in a data-port file, or null when there is none (or it holds something else). */
function readPort(file: string): number | null {
  if (!existsSync(file)) return null;
  const n = Number(readFileSync(file, 'utf8').trim());
  return Number.isInteger(n) && n > 0 && n < 65536 ? n : null;
}

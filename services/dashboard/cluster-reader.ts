// Reads the cluster for the dashboard with the CLI's authenticated clients: the dispatcher's members, datasets and
// chunk maps, every alive node's Stats, and the nodes' event streams. Channels stay open between samples; a part
// that fails is reported in the snapshot's errors and the rest is still shown.
import * as grpc from '@grpc/grpc-js';
import { formatDebugMask } from '../common/debug-mask.ts';
import { fromServiceError } from '../common/errors.ts';
import type { DispatcherClient, NodeClient } from '../common/proto.ts';
import { unary } from '../common/rpc.ts';
import type { Security } from '../common/tls.ts';
import type { Event__Output } from '../generated/hotpot/v1/Event.ts';
import type { ListDatasetsResponse__Output } from '../generated/hotpot/v1/ListDatasetsResponse.ts';
import type { ListNodesResponse__Output } from '../generated/hotpot/v1/ListNodesResponse.ts';
import type { StatDatasetResponse__Output } from '../generated/hotpot/v1/StatDatasetResponse.ts';
import type { StatsResponse__Output } from '../generated/hotpot/v1/StatsResponse.ts';
import { dispatcherClient, nodeClient } from '../cli/client.ts';
import {
  ownerReports,
  summariseChunkMap,
  type ChunkCell,
  type ChunkMapSummary,
  type OwnerReport,
} from './chunk-map.ts';
import type { NodeCounters, Sample } from './rates.ts';

/** Chunk cells sent per dataset; a bigger map is summarised (the summary covers every chunk). */
export const MAX_CHUNK_CELLS = 4096;
const CALL_TIMEOUT_MS = 3000;

export interface NodeView {
  id: number;
  identity: string;
  state: string;
  controlAddress: string;
  dataAddress: string;
  leaseExpiresUnixMs: number;
  joinedUnixMs: number;
  stateEpoch: number;
  /** The node's own view (Stats); null when it is not alive or did not answer (see statsError). */
  stats: {
    joined: boolean;
    epoch: number;
    uptimeMs: number;
    poolBytesResident: number;
    sessions: number;
    lockedPages: number;
    redoInFlight: number;
    chunksOwned: number;
    commits: number;
    aborts: number;
    faults: number;
    eventMask: string;
  } | null;
  statsError?: string;
}

export interface DatasetView {
  name: string;
  id: number;
  sizeBytes: number;
  mode: string;
  replicas: number;
  chunkCount: number;
  chunkSizeBytes: number;
  cells: ChunkCell[];
  summary: ChunkMapSummary | null;
  error?: string;
}

export interface ClusterSnapshot {
  atMs: number;
  dispatcher: string;
  epoch: number;
  nodes: NodeView[];
  datasets: DatasetView[];
  errors: string[];
}

export interface DashboardEvent {
  seq: number;
  timeMs: number;
  nodeId: number;
  kind: string;
  datasetId: number;
  page: number;
  count: number;
  peerNodeId: number;
  txid: number;
  latencyUs: number;
  status: string;
  detail: string;
}

const message = (e: unknown): string => (e instanceof Error ? e.message : String(e));
const short = (s: string, prefix: string): string => s.replace(prefix, '').toLowerCase();

function counters(s: StatsResponse__Output): NodeCounters {
  const c = s.counters;
  return {
    nodeId: s.nodeId,
    commits: c?.commits ?? 0,
    aborts: c?.commitAborts ?? 0,
    faults: (c?.faultsLocal ?? 0) + (c?.faultsRemote ?? 0),
    commitLatency: s.commitLatency,
    faultLatency: s.faultLatency,
  };
}

export function eventView(e: Event__Output): DashboardEvent {
  return {
    seq: e.seq,
    timeMs: Number(BigInt(e.timeUnixNs || '0') / 1_000_000n),
    nodeId: e.nodeId,
    kind: e.kind,
    datasetId: e.datasetId,
    page: e.page,
    count: e.count,
    peerNodeId: e.peerNodeId,
    txid: e.txid,
    latencyUs: e.latencyUs,
    status: e.status,
    detail: e.detail,
  };
}

export class ClusterReader {
  private readonly dispatcher: DispatcherClient;
  private readonly nodes = new Map<string, NodeClient>();
  private readonly streams = new Map<string, grpc.ClientReadableStream<Event__Output>>();
  /** Nodes whose events were followed before (their backlog was shown). */
  private readonly followed = new Set<string>();

  constructor(
    readonly dispatcherAddress: string,
    private readonly security: Security,
    /** Receives the nodes' events as they come, and a line when a node's stream fails (reopened next sample). */
    private readonly onEvent: (e: DashboardEvent) => void,
    private readonly onStreamError: (line: string) => void,
  ) {
    this.dispatcher = dispatcherClient(dispatcherAddress, security);
  }

  private node(address: string): NodeClient {
    let c = this.nodes.get(address);
    if (!c) this.nodes.set(address, (c = nodeClient(address, this.security)));
    return c;
  }

  /** One look at the whole cluster, and the counters sample it gave. */
  async read(): Promise<{ snapshot: ClusterSnapshot; sample: Sample }> {
    const atMs = Date.now();
    const errors: string[] = [];
    const d = this.dispatcher;
    const [members, list] = await Promise.all([
      unary<ListNodesResponse__Output>((o, cb) => d.ListNodes({}, o, cb), CALL_TIMEOUT_MS).catch((e: unknown) => {
        errors.push(`dispatcher ${this.dispatcherAddress}: ListNodes: ${message(e)}`);
        return null;
      }),
      unary<ListDatasetsResponse__Output>((o, cb) => d.ListDatasets({}, o, cb), CALL_TIMEOUT_MS).catch((e: unknown) => {
        errors.push(`dispatcher ${this.dispatcherAddress}: ListDatasets: ${message(e)}`);
        return null;
      }),
    ]);
    const alive = (members?.nodes ?? []).filter((n) => n.state === 'NODE_STATE_ALIVE');
    const stats = await Promise.all(
      alive.map((n) => {
        const c = this.node(n.controlAddress);
        return unary<StatsResponse__Output>((o, cb) => c.Stats({}, o, cb), CALL_TIMEOUT_MS).then(
          (s) => ({ id: n.id, s, error: undefined }),
          (e: unknown) => ({ id: n.id, s: null, error: message(e) }),
        );
      }),
    );
    this.followEvents(alive.map((n) => n.controlAddress));
    this.closeGone(new Set((members?.nodes ?? []).map((n) => n.controlAddress)), members !== null);
    const statsById = new Map(stats.map((x) => [x.id, x]));
    const answered = stats.flatMap((x) => (x.s ? [x.s] : []));
    const reports = ownerReports(answered);
    const datasets = await Promise.all(
      (list?.datasets ?? []).map(async (ds): Promise<DatasetView> => {
        const view: DatasetView = {
          name: ds.name,
          id: ds.id,
          sizeBytes: ds.sizeBytes,
          mode: short(ds.mode, 'CONSISTENCY_MODE_'),
          replicas: ds.replicas,
          chunkCount: ds.chunkCount,
          chunkSizeBytes: ds.chunkSizeBytes,
          cells: [],
          summary: null,
        };
        try {
          const r = await unary<StatDatasetResponse__Output>(
            (o, cb) => d.StatDataset({ name: ds.name }, o, cb),
            CALL_TIMEOUT_MS,
          );
          const map = summariseChunkMap(
            r.chunks,
            reports.get(ds.id) ?? new Map<number, OwnerReport>(),
            MAX_CHUNK_CELLS,
          );
          view.cells = map.cells;
          view.summary = map.summary;
        } catch (e) {
          view.error = `StatDataset ${ds.name}: ${message(e)}`;
        }
        return view;
      }),
    );
    const nodes = (members?.nodes ?? []).map((n): NodeView => {
      const st = statsById.get(n.id);
      const s = st?.s;
      const c = s ? counters(s) : null;
      return {
        id: n.id,
        identity: n.identity,
        state: short(n.state, 'NODE_STATE_'),
        controlAddress: n.controlAddress,
        dataAddress: n.dataAddress,
        leaseExpiresUnixMs: n.leaseExpiresUnixMs,
        joinedUnixMs: n.joinedUnixMs,
        stateEpoch: n.stateEpoch,
        stats:
          s && c
            ? {
                joined: s.joined,
                epoch: s.epoch,
                uptimeMs: s.uptimeMs,
                poolBytesResident: s.poolBytesResident,
                sessions: s.sessions.length,
                lockedPages: s.lockedPages,
                redoInFlight: s.redoInFlight,
                chunksOwned: s.chunks.filter((x) => x.owned).length,
                commits: c.commits,
                aborts: c.aborts,
                faults: c.faults,
                eventMask: formatDebugMask(s.debugMask),
              }
            : null,
        ...(st?.error !== undefined ? { statsError: st.error } : {}),
      };
    });
    for (const n of nodes) if (n.statsError !== undefined) errors.push(`node ${n.id} Stats: ${n.statsError}`);
    return {
      snapshot: { atMs, dispatcher: this.dispatcherAddress, epoch: members?.epoch ?? 0, nodes, datasets, errors },
      sample: { atMs, nodes: answered.map(counters) },
    };
  }

  /** Keeps one following Events stream open per alive node (a failed one is opened again on the next read). */
  private followEvents(addresses: string[]): void {
    for (const address of addresses) {
      if (this.streams.has(address)) continue;
      // The recent backlog on the first stream only: a reopened one would repeat it.
      const limit = this.followed.has(address) ? 0 : 50;
      this.followed.add(address);
      const call = this.node(address).Events({ follow: true, mask: 0, limit });
      this.streams.set(address, call);
      call.on('data', (e: Event__Output) => this.onEvent(eventView(e)));
      call.on('error', (err: grpc.ServiceError) => {
        if (this.streams.get(address) === call) this.streams.delete(address);
        if (err.code !== grpc.status.CANCELLED /* we closed it */) {
          this.onStreamError(`events of ${address}: ${fromServiceError(err).message}`);
        }
      });
      call.on('end', () => {
        if (this.streams.get(address) === call) this.streams.delete(address);
      });
    }
  }

  /** Drops the channels and streams of nodes no longer members (only when the member list could be read). */
  private closeGone(members: Set<string>, known: boolean): void {
    if (!known) return;
    for (const [address, call] of this.streams) {
      if (!members.has(address)) {
        this.streams.delete(address);
        call.cancel();
      }
    }
    for (const [address, c] of this.nodes) {
      if (!members.has(address)) {
        this.nodes.delete(address);
        c.close();
      }
    }
  }

  close(): void {
    for (const call of this.streams.values()) call.cancel();
    this.streams.clear();
    for (const c of this.nodes.values()) c.close();
    this.nodes.clear();
    this.dispatcher.close();
  }
}

// `hotpot stat` (node view), `hotpot events` and `hotpot debug-mask`: the operator's window into node daemons
// (the original's /proc/dsnvm and /proc/dsnvm-event). Nodes are found through the dispatcher's ListNodes.
import type * as grpc from '@grpc/grpc-js';
import { formatDebugMask } from '../common/debug-mask.ts';
import { HotpotError, fromServiceError } from '../common/errors.ts';
import { unary } from '../common/rpc.ts';
import { formatSize } from '../common/sizes.ts';
import type { NodeClient } from '../common/proto.ts';
import type { DrainResponse__Output } from '../generated/hotpot/v1/DrainResponse.ts';
import type { Event__Output } from '../generated/hotpot/v1/Event.ts';
import type { ForgetNodeResponse__Output } from '../generated/hotpot/v1/ForgetNodeResponse.ts';
import type { LatencyHistogram__Output } from '../generated/hotpot/v1/LatencyHistogram.ts';
import type { ListDatasetsResponse__Output } from '../generated/hotpot/v1/ListDatasetsResponse.ts';
import type { ListNodesResponse__Output } from '../generated/hotpot/v1/ListNodesResponse.ts';
import type { NodeInfo__Output } from '../generated/hotpot/v1/NodeInfo.ts';
import type { SetDebugMaskResponse__Output } from '../generated/hotpot/v1/SetDebugMaskResponse.ts';
import type { StatsResponse__Output } from '../generated/hotpot/v1/StatsResponse.ts';
import { dispatcherClient, nodeClient } from './client.ts';
import { printJson, table } from './output.ts';

export interface NodeTarget {
  id: number;
  address: string;
}

/** The alive nodes (or the one with `nodeId`), from the dispatcher. */
export async function resolveNodes(dispatcher: string, nodeId: number | undefined): Promise<NodeTarget[]> {
  const c = dispatcherClient(dispatcher);
  try {
    const r = await unary<ListNodesResponse__Output>((o, cb) => c.ListNodes({}, o, cb));
    const pick = (n: NodeInfo__Output): boolean =>
      nodeId === undefined ? n.state === 'NODE_STATE_ALIVE' : n.id === nodeId;
    const nodes = r.nodes.filter(pick).map((n) => ({ id: n.id, address: n.controlAddress }));
    if (nodeId !== undefined && nodes.length === 0) {
      throw new HotpotError('NOT_FOUND', `node ${String(nodeId)} is not a member of the cluster`);
    }
    if (nodes.length === 0) throw new HotpotError('UNAVAILABLE', 'no alive nodes');
    return nodes;
  } finally {
    c.close();
  }
}

function percentile(h: LatencyHistogram__Output | null, q: number): string {
  if (!h || h.count === 0) return '-';
  const target = q * h.count;
  let seen = 0;
  for (let i = 0; i < h.counts.length; i++) {
    seen += h.counts[i] ?? 0;
    if (seen >= target) {
      const bound = h.boundsUs[i];
      return bound === undefined ? `>${String(h.boundsUs[h.boundsUs.length - 1] ?? 0)}us` : `<=${String(bound)}us`;
    }
  }
  return '-';
}

function histJson(h: LatencyHistogram__Output | null): unknown {
  if (!h) return null;
  return { count: h.count, meanUs: h.count ? h.sumUs / h.count : 0, p50: percentile(h, 0.5), p99: percentile(h, 0.99) };
}

export function nodeStatJson(s: StatsResponse__Output): unknown {
  return {
    nodeId: s.nodeId,
    identity: s.identity,
    epoch: s.epoch,
    joined: s.joined,
    controlAddress: s.controlAddress,
    dataAddress: s.dataAddress,
    socketPath: s.socketPath,
    uptimeMs: s.uptimeMs,
    members: s.members.map((m) => ({
      id: m.id,
      identity: m.identity,
      state: m.state.replace('NODE_STATE_', '').toLowerCase(),
    })),
    pool: {
      bytesResident: s.poolBytesResident,
      datasets: s.poolDatasets,
    },
    chunks: s.chunks,
    redo: s.redo,
    redoInFlight: s.redoInFlight,
    lockedPages: s.lockedPages,
    sessions: s.sessions,
    counters: s.counters,
    latency: { fault: histJson(s.faultLatency), fetch: histJson(s.fetchLatency), commit: histJson(s.commitLatency) },
    debugMask: formatDebugMask(s.debugMask),
  };
}

function printNodeStat(s: StatsResponse__Output): void {
  const out: string[] = [];
  out.push(
    `node ${String(s.nodeId)} (${s.identity})  epoch ${String(s.epoch)}  ${s.joined ? 'joined' : 'NOT joined'}  up ${String(Math.round(s.uptimeMs / 1000))}s`,
  );
  out.push(`  control ${s.controlAddress}  data ${s.dataAddress}  socket ${s.socketPath}`);
  out.push(
    `  members: ${s.members.map((m) => `${String(m.id)}:${m.state.replace('NODE_STATE_', '').toLowerCase()}`).join(' ') || '-'}`,
  );
  out.push(`  pool: ${formatSize(s.poolBytesResident)} resident, ${String(s.poolDatasets.length)} datasets`);
  process.stdout.write(out.join('\n') + '\n');
  if (s.chunks.length) {
    process.stdout.write(
      table(
        ['DATASET', 'CHUNK', 'ROLE', 'OWNED', 'COMMITTED', 'REPLICA'],
        s.chunks
          .filter((c) => c.owned || c.pagesCommitted + c.pagesRedundant + c.pagesOwned > 0)
          .map((c) => [
            c.datasetId,
            c.chunk,
            c.owned ? 'owner' : c.pagesRedundant > 0 ? 'replica' : 'cache',
            c.pagesOwned,
            c.pagesCommitted,
            c.pagesRedundant,
          ]),
      ),
    );
  }
  process.stdout.write(`  redo in flight: ${String(s.redo.length)}\n`);
  if (s.redo.length) {
    process.stdout.write(
      table(
        ['SLOT', 'TXID', 'DATASET', 'COMMITTER', 'PHASE', 'RANGES', 'BYTES'],
        s.redo.map((r) => [r.slot, r.txid, r.datasetId, r.committerNodeId, r.phase, r.ranges, r.bytes]),
      ),
    );
  }
  process.stdout.write(`  open datasets / mapped processes: ${String(s.sessions.length)}\n`);
  if (s.sessions.length) {
    process.stdout.write(
      table(
        ['DATASET', 'ID', 'PID', 'UID', 'SESSION'],
        s.sessions.map((x) => [x.datasetName, x.datasetId, x.pid, x.uid, x.sessionId]),
      ),
    );
  }
  const c = s.counters;
  if (c) {
    process.stdout.write(
      `  faults local ${String(c.faultsLocal)} remote ${String(c.faultsRemote)}  fetches served ${String(c.fetchesServed)} retries ${String(c.fetchRetries)}\n` +
        `  commits ${String(c.commits)} (under-replicated ${String(c.commitsUnderReplicated)}) aborts ${String(c.commitAborts)} conflicts ${String(c.conflicts)}  coherence pushes ${String(c.coherencePushes)} pages ${String(c.coherencePages)}\n` +
        `  replicas sent ${String(c.replicasSent)} received ${String(c.replicasReceived)}  bytes in ${formatSize(c.bytesIn)} out ${formatSize(c.bytesOut)}\n` +
        `  prepare copies sent ${String(c.prepareCopiesSent)} kept ${String(c.prepareCopiesKept)}  copy checks ${String(c.copyChecks)}  pages lost ${String(c.pagesLost)}\n` +
        `  rdma page reads ${String(c.rdmaPageReads)} fallbacks ${String(c.rdmaReadFallbacks)}  pages served located ${String(c.fetchesLocated)}\n` +
        `  fdatasyncs ${String(c.fdatasyncs)}\n`,
    );
  }
  for (const [name, h] of [
    ['fault', s.faultLatency],
    ['fetch', s.fetchLatency],
    ['commit', s.commitLatency],
  ] as const) {
    process.stdout.write(
      `  ${name} latency: n=${String(h?.count ?? 0)} p50 ${percentile(h, 0.5)} p99 ${percentile(h, 0.99)}\n`,
    );
  }
  process.stdout.write(`  debug mask: ${formatDebugMask(s.debugMask)}\n`);
}

async function withNode<T>(t: NodeTarget, fn: (c: NodeClient) => Promise<T>): Promise<T> {
  const c = nodeClient(t.address);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

/** An owner's view of one of its chunks: live copies (owner included) against the dataset's N. */
export interface OwnerCopies {
  live: number;
  wanted: number;
  underReplicated: boolean;
  /** Nodes recorded as holding pages of the chunk that are not alive (their copies do not count). */
  down: number[];
}

/** Stats of every alive node but `except` (3 s each); a node that does not answer gives null. */
async function statsOfAliveNodes(dispatcher: string, except?: number): Promise<(StatsResponse__Output | null)[]> {
  const targets = (await resolveNodes(dispatcher, undefined).catch(() => [] as NodeTarget[])).filter(
    (t) => t.id !== except,
  );
  return Promise.all(
    targets.map((t) =>
      withNode(t, (c) => unary<StatsResponse__Output>((o, cb) => c.Stats({}, o, cb), 3000)).catch(() => null),
    ),
  );
}

/**
 * Asks every alive node for the chunks of `datasetId` it owns (node Stats): chunk index -> copies. A node that does
 * not answer contributes nothing (its chunks show as unknown).
 */
export async function ownerCopies(dispatcher: string, datasetId: number): Promise<Map<number, OwnerCopies>> {
  const out = new Map<number, OwnerCopies>();
  for (const s of await statsOfAliveNodes(dispatcher)) {
    for (const ch of s?.chunks ?? []) {
      if (ch.datasetId !== datasetId || !ch.owned) continue;
      out.set(ch.chunk, {
        live: ch.replicaCount,
        wanted: ch.replicasWanted,
        underReplicated: ch.underReplicated,
        down: ch.downHolders,
      });
    }
  }
  return out;
}

export async function statNodes(targets: NodeTarget[], json: boolean): Promise<void> {
  const stats = await Promise.all(
    targets.map((t) => withNode(t, (c) => unary<StatsResponse__Output>((o, cb) => c.Stats({}, o, cb)))),
  );
  if (json) {
    printJson(targets.length === 1 && stats[0] ? nodeStatJson(stats[0]) : stats.map(nodeStatJson));
    return;
  }
  stats.forEach((s, i) => {
    if (i > 0) process.stdout.write('\n');
    printNodeStat(s);
  });
}

export async function setDebugMask(targets: NodeTarget[], mask: number, json: boolean): Promise<void> {
  for (const t of targets) {
    const r = await withNode(t, (c) => unary<SetDebugMaskResponse__Output>((o, cb) => c.SetDebugMask({ mask }, o, cb)));
    if (json) process.stdout.write(JSON.stringify({ nodeId: t.id, previous: r.previous, mask: r.mask }) + '\n');
    else
      process.stdout.write(
        `node ${String(t.id)}: debug mask ${formatDebugMask(r.previous)} -> ${formatDebugMask(r.mask)}\n`,
      );
  }
}

/**
 * The chunks that may still need a copy only node `id` holds: every chunk of every dataset must be owned by a live
 * node that reports it holding N live copies (node Stats; copies on down members do not count), else it is listed.
 * A chunk whose owner is down or did not answer is listed too: nobody can say where its copies are.
 */
export async function chunksNeedingNode(dispatcher: string, id: number): Promise<string[]> {
  const c = dispatcherClient(dispatcher);
  let datasets: { name: string; id: number; chunks: number; replicas: number }[];
  try {
    const list = await unary<ListDatasetsResponse__Output>((o, cb) => c.ListDatasets({}, o, cb));
    datasets = list.datasets.map((d) => ({
      name: d.name,
      id: d.id,
      replicas: d.replicas,
      chunks: Math.ceil(d.sizeBytes / d.chunkSizeBytes),
    }));
  } finally {
    c.close();
  }
  const full = new Set<string>();
  for (const st of await statsOfAliveNodes(dispatcher, id)) {
    // An owner counts live copies by its own view of the membership: one that still sees the node alive counts its
    // copies, so its word is taken only once it sees the node down.
    if (st?.members.some((m) => m.id === id && m.state === 'NODE_STATE_ALIVE') !== false) continue;
    for (const ch of st.chunks) {
      if (ch.owned && !ch.underReplicated) full.add(`${String(ch.datasetId)}/${String(ch.chunk)}`);
    }
  }
  const out: string[] = [];
  for (const d of datasets) {
    for (let i = 0; i < d.chunks; i++) {
      if (!full.has(`${String(d.id)}/${String(i)}`))
        out.push(`chunk ${String(i)} of "${d.name}" (N=${String(d.replicas)})`);
    }
  }
  return out;
}

/**
 * `hotpot forget NODE`: a member that is down and will never return leaves the membership. Refused (unless
 * `force`) while some chunk may still need a copy only that node holds (re-replication not done, or an owner down).
 */
export async function forgetNode(dispatcher: string, id: number, force: boolean, json: boolean): Promise<void> {
  // The dispatcher refuses these too; asked first so that the answer names the real reason.
  const d = dispatcherClient(dispatcher);
  try {
    const r = await unary<ListNodesResponse__Output>((o, cb) => d.ListNodes({}, o, cb));
    const n = r.nodes.find((x) => x.id === id);
    if (!n) throw new HotpotError('NOT_FOUND', `node ${String(id)} is not a member of the cluster`);
    if (n.state === 'NODE_STATE_ALIVE') {
      throw new HotpotError(
        'FAILED_PRECONDITION',
        `node ${String(id)} is alive: only a member that is down can be forgotten (drain or stop it first)`,
      );
    }
  } finally {
    d.close();
  }
  const needing = await chunksNeedingNode(dispatcher, id);
  if (needing.length > 0 && !force) {
    throw new HotpotError(
      'FAILED_PRECONDITION',
      `not forgetting node ${String(id)}: ${String(needing.length)} chunk(s) are not known to have N live copies ` +
        `without it (${needing.slice(0, 5).join(', ')}${needing.length > 5 ? ', …' : ''}); wait until ` +
        '`hotpot stat NAME` shows every chunk with its N copies, or pass --force to accept losing what only it holds',
    );
  }
  const c = dispatcherClient(dispatcher);
  try {
    const r = await unary<ForgetNodeResponse__Output>((o, cb) => c.ForgetNode({ nodeId: id }, o, cb));
    if (json) printJson({ nodeId: id, forgotten: true, epoch: r.epoch, forced: needing.length > 0 });
    else process.stdout.write(`node ${String(id)} forgotten (membership epoch ${String(r.epoch)})\n`);
  } finally {
    c.close();
  }
}

/** `hotpot drain NODE`: the node hands its chunks off, leaves and exits (answers once the handoffs are done). */
export async function drainNode(t: NodeTarget, json: boolean): Promise<void> {
  // Each chunk may take up to the request timeout to drain: allow minutes for a node with many chunks.
  const r = await withNode(t, (c) => unary<DrainResponse__Output>((o, cb) => c.Drain({}, o, cb), 10 * 60_000));
  if (json) {
    printJson({
      nodeId: t.id,
      chunksMoved: r.chunksMoved,
      chunksFailed: r.chunksFailed,
      pagesCopied: r.pagesCopied,
      longestHandoffMs: r.longestHandoffMs,
    });
    return;
  }
  process.stdout.write(
    `node ${String(t.id)}: ${String(r.chunksMoved)} chunks handed off (${String(r.pagesCopied)} pages copied, ` +
      `longest ${String(r.longestHandoffMs)} ms)` +
      (r.chunksFailed > 0 ? `, ${String(r.chunksFailed)} stayed (no live node took them)` : '') +
      '; the node is leaving the cluster and exiting\n',
  );
}

function eventLine(e: Event__Output): string {
  const ms = Number(BigInt(e.timeUnixNs) / 1_000_000n);
  const parts = [new Date(ms).toISOString(), `node ${String(e.nodeId)}`, e.kind];
  if (e.datasetId) parts.push(`ds ${String(e.datasetId)}`);
  if (
    e.kind.startsWith('fault') ||
    e.kind === 'fetch_served' ||
    e.kind.startsWith('replica') ||
    e.kind === 'rereplicated' ||
    e.kind.startsWith('chunk_') ||
    e.kind === 'coherence_push'
  )
    parts.push(`page ${String(e.page)}+${String(e.count)}`);
  if (e.peerNodeId) parts.push(`peer ${String(e.peerNodeId)}`);
  if (e.txid) {
    const epoch = e.kind === 'membership' || e.kind === 'fenced';
    parts.push(epoch ? `epoch ${String(e.txid)}` : `tx ${String(e.txid)}`);
  }
  if (e.latencyUs) parts.push(`${e.latencyUs.toFixed(1)}us`);
  if (e.status && e.status !== 'OK') parts.push(e.status);
  if (e.detail) parts.push(e.detail);
  return parts.join('  ');
}

/**
 * Prints events of the target nodes (one line each; --json: one JSON object per line). Without follow, prints
 * what each node's ring holds and returns; with follow, streams until interrupted or the nodes go away.
 */
export async function streamEvents(
  targets: NodeTarget[],
  opts: { follow: boolean; mask: number; limit: number; json: boolean },
): Promise<void> {
  const runs = targets.map(
    (t) =>
      new Promise<void>((resolve, reject) => {
        const c = nodeClient(t.address);
        const callOpts: grpc.CallOptions = opts.follow ? {} : { deadline: Date.now() + 10_000 };
        const call = c.Events({ follow: opts.follow, mask: opts.mask, limit: opts.limit }, callOpts);
        call.on('data', (e: Event__Output) => {
          process.stdout.write((opts.json ? JSON.stringify(e) : eventLine(e)) + '\n');
        });
        call.on('error', (err: grpc.ServiceError) => {
          c.close();
          reject(fromServiceError(err));
        });
        call.on('end', () => {
          c.close();
          resolve();
        });
      }),
  );
  await Promise.all(runs);
}

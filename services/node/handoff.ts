// Planned handoff (docs/design/availability.md "Handoff"): before a node stops (SIGTERM, `hotpot drain`) it gives
// every chunk it owns to another live node, one at a time, so a planned restart stops no commit for longer than one
// chunk's handoff. Per chunk: the engine refuses the chunk (senders retry), lets its commits drain and copies every
// written page to the target (topping copies up to N without this node); the dispatcher then moves the chunk in one
// durable step (MoveChunk) and the node loads the new map, which turns its pages into cached copies. At no time do
// two nodes accept commits for the chunk: this node stops before the move, the target starts after it.
import type { Logger } from '../common/logger.ts';
import { unary } from '../common/rpc.ts';
import type { DispatcherClient } from '../common/proto.ts';
import type { OpenDatasetResponse__Output } from '../generated/hotpot/v1/OpenDatasetResponse.ts';
import type { MoveChunkResponse__Output } from '../generated/hotpot/v1/MoveChunkResponse.ts';
import { engineAbandonHandOff, engineHandOffChunk, type EngineHandle } from '../../native/index.ts';
import type { DatasetView } from './engine-host.ts';

export interface HandOffDeps {
  engine: EngineHandle;
  dispatcher: DispatcherClient;
  nodeId: number;
  identity: string;
  storeId: string;
  views: DatasetView[];
  alive: number[];
  /** Loads a chunk map into the engine (demotes this node's pages of chunks it no longer owns). */
  load: (view: DatasetView) => void;
  log: Logger;
  /** Per chunk: how long its commits may take to drain and its pages to copy. */
  chunkTimeoutMs: number;
}

export interface HandOffSummary {
  moved: number;
  failed: number;
  pages: number;
  /** Longest single chunk handoff (the longest any commit on a chunk waited). */
  longestMs: number;
}

/**
 * The target for a chunk: a live node other than this one, preferring ones that do not hold the chunk's copies yet
 * (so N copies remain once this node leaves) and spreading the chunks (fewest given so far).
 */
export function pickTarget(
  self: number,
  alive: readonly number[],
  replicas: readonly number[],
  given: ReadonlyMap<number, number>,
): number | null {
  const candidates = alive.filter((n) => n !== self);
  if (candidates.length === 0) return null;
  const score = (n: number): number => (replicas.includes(n) ? 1_000_000 : 0) + (given.get(n) ?? 0);
  return [...candidates].sort((a, b) => score(a) - score(b) || a - b)[0] ?? null;
}

/** Hands off every chunk this node owns (skipping ones it is still recovering). */
export async function handOffOwnedChunks(deps: HandOffDeps): Promise<HandOffSummary> {
  const summary: HandOffSummary = { moved: 0, failed: 0, pages: 0, longestMs: 0 };
  const given = new Map<number, number>();
  for (const view of deps.views) {
    const ds = view.dataset;
    if (!ds) continue;
    for (const chunk of view.chunks) {
      if (chunk.ownerNodeId !== deps.nodeId || chunk.ownerRecovering) continue;
      const target = pickTarget(deps.nodeId, deps.alive, chunk.replicaNodeIds, given);
      if (target === null) {
        deps.log.warn({ dataset: ds.name, chunk: chunk.index }, 'no live node to hand the chunk to: it stays here');
        summary.failed++;
        continue;
      }
      const started = Date.now();
      const ok = await handOffChunk(deps, ds.name, ds.id, chunk.index, target, summary);
      const ms = Date.now() - started;
      summary.longestMs = Math.max(summary.longestMs, ms);
      if (ok) {
        summary.moved++;
        given.set(target, (given.get(target) ?? 0) + 1);
      } else {
        summary.failed++;
      }
    }
  }
  return summary;
}

async function handOffChunk(
  deps: HandOffDeps,
  name: string,
  datasetId: number,
  chunk: number,
  target: number,
  summary: HandOffSummary,
): Promise<boolean> {
  const started = Date.now();
  const where = { dataset: name, chunk, to: target };
  try {
    const r = await engineHandOffChunk(deps.engine, datasetId, chunk, target, deps.chunkTimeoutMs);
    summary.pages += r.pagesSent;
  } catch (e) {
    // Nothing changed: the engine serves the chunk again.
    deps.log.warn({ ...where, err: e instanceof Error ? e.message : String(e) }, 'chunk handoff failed: it stays here');
    return false;
  }
  let moveError: unknown = null;
  try {
    await unary<MoveChunkResponse__Output>((o, cb) =>
      deps.dispatcher.MoveChunk(
        { nodeId: deps.nodeId, identity: deps.identity, storeId: deps.storeId, datasetId, chunk, toNodeId: target },
        o,
        cb,
      ),
    );
  } catch (e) {
    moveError = e;
  }
  // The map as the dispatcher has it decides: moved (load it: this node's pages become cached copies) or not (serve
  // the chunk again). If it cannot be read, the chunk stays refused here: never two owners.
  let view: OpenDatasetResponse__Output;
  try {
    view = await unary<OpenDatasetResponse__Output>((o, cb) => deps.dispatcher.OpenDataset({ name }, o, cb));
  } catch (e) {
    deps.log.error(
      { ...where, err: e instanceof Error ? e.message : String(e) },
      'chunk handoff: the dispatcher cannot say who owns the chunk; it stays refused here until the map is loaded',
    );
    return false;
  }
  const owner = view.chunks.find((c) => c.index === chunk)?.ownerNodeId;
  if (owner === deps.nodeId) {
    engineAbandonHandOff(deps.engine, datasetId, chunk);
    deps.log.warn(
      { ...where, err: moveError instanceof Error ? moveError.message : String(moveError) },
      'chunk handoff: the dispatcher did not move the chunk; it is served here again',
    );
    return false;
  }
  deps.load(view);
  deps.log.info({ ...where, owner, ms: Date.now() - started }, 'chunk handed off');
  return owner === target;
}

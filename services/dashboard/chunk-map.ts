// A dataset's chunk map as the dashboard draws it: the dispatcher's map (owner, owner alive, lost pages) joined with
// each owner's own count of live copies (node Stats), one cell per chunk, and a summary.

/** One chunk of the dispatcher's map (StatDataset). */
export interface MapChunk {
  index: number;
  ownerNodeId: number;
  ownerAlive: boolean;
  ownerRecovering: boolean;
  lostPages: { count: number }[];
}

/** What an owner says of one chunk it owns: live copies (itself included) and the dataset's N. */
export interface OwnerReport {
  live: number;
  wanted: number;
  underReplicated: boolean;
}

/**
 * ok: N live copies; under: fewer (being topped up); unknown: the owner is alive but did not report the chunk;
 * owner-down: no live owner until failover; lost: some pages have no surviving copy.
 */
export type ChunkState = 'ok' | 'under' | 'unknown' | 'owner-down' | 'lost';

export interface ChunkCell {
  index: number;
  owner: number;
  /** Live copies per the owner, null when unknown. */
  copies: number | null;
  state: ChunkState;
}

export interface ChunkMapSummary {
  chunks: number;
  /** Cells sent (the first `shown` chunks): a huge map is summarised, not drawn whole. */
  shown: number;
  byOwner: { owner: number; chunks: number }[];
  byState: Record<ChunkState, number>;
}

export function chunkState(c: MapChunk, report: OwnerReport | undefined): ChunkState {
  if (c.lostPages.some((r) => r.count > 0)) return 'lost';
  if (!c.ownerAlive) return 'owner-down';
  if (!report) return 'unknown';
  return report.underReplicated || report.live < report.wanted ? 'under' : 'ok';
}

/** Cells for the first `limit` chunks and a summary over all of them. */
export function summariseChunkMap(
  chunks: MapChunk[],
  reports: ReadonlyMap<number, OwnerReport>,
  limit: number,
): { cells: ChunkCell[]; summary: ChunkMapSummary } {
  const byState: Record<ChunkState, number> = { ok: 0, under: 0, unknown: 0, 'owner-down': 0, lost: 0 };
  const owners = new Map<number, number>();
  const cells: ChunkCell[] = [];
  for (const c of chunks) {
    const report = reports.get(c.index);
    const state = chunkState(c, report);
    byState[state]++;
    owners.set(c.ownerNodeId, (owners.get(c.ownerNodeId) ?? 0) + 1);
    if (cells.length < limit) cells.push({ index: c.index, owner: c.ownerNodeId, copies: report?.live ?? null, state });
  }
  return {
    cells,
    summary: {
      chunks: chunks.length,
      shown: cells.length,
      byOwner: [...owners].map(([owner, n]) => ({ owner, chunks: n })).sort((a, b) => a.owner - b.owner),
      byState,
    },
  };
}

/** One chunk an owner reports in its Stats. */
export interface OwnedChunkStat {
  datasetId: number;
  chunk: number;
  owned: boolean;
  replicaCount: number;
  replicasWanted: number;
  underReplicated: boolean;
}

/** The owners' reports of every chunk of every dataset, from the Stats of the nodes that answered. */
export function ownerReports(stats: readonly { chunks: OwnedChunkStat[] }[]): Map<number, Map<number, OwnerReport>> {
  const out = new Map<number, Map<number, OwnerReport>>();
  for (const s of stats) {
    for (const ch of s.chunks) {
      if (!ch.owned) continue;
      let m = out.get(ch.datasetId);
      if (!m) out.set(ch.datasetId, (m = new Map<number, OwnerReport>()));
      m.set(ch.chunk, { live: ch.replicaCount, wanted: ch.replicasWanted, underReplicated: ch.underReplicated });
    }
  }
  return out;
}

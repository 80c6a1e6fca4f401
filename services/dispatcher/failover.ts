// Owner failover: which chunks of a dead owner get a new owner, and which. Pure: given the members and
// the datasets it returns the changed datasets; the Cluster commits them and logs (cluster.ts `failOver`).
import type { ChunkRecord, DatasetRecord, NodeRecord } from './store.ts';

export type FailoverMember = Pick<NodeRecord, 'id' | 'state' | 'storeId' | 'storeReplacedEpoch'> & {
  /** Its heartbeats' replicated_through_epoch (cluster.ts LiveNode): absent or 0 = not known. */
  replicatedThroughEpoch?: number;
};

export interface FailoverMove {
  dataset: string;
  chunk: number;
  from: number;
  to: number;
  /** The chunk's era after the move (one more than before). */
  era: number;
}

export interface FailoverBlocked {
  dataset: string;
  chunk: number;
  owner: number;
  /** `members-down`: as many members are down as the dataset has replicas, so the newest copy of a page, or a
   * prepared part's copy, may be on a node that is down — or on a member that rejoined with a replaced store since
   * the owner last reported its pages at N copies (`refilling`). `single-copy`: N=1, no other node has a copy. */
  reason: 'members-down' | 'single-copy';
  down: number;
  /** Live members counted with the ones down: their store was replaced after the owner's last report. */
  refilling: number[];
  replicas: number;
}

export interface FailoverPlan {
  /** Every dataset with a chunk that changed owner, at generation + 1. */
  datasets: DatasetRecord[];
  moves: FailoverMove[];
  /** Chunks whose owner is not alive and that stay with it (for now). */
  blocked: FailoverBlocked[];
}

/**
 * Gives every chunk whose owner is not alive a new owner, when that is safe: the dataset keeps copies on N ≥ 2
 * nodes and fewer than N members are down (DEAD or LEFT, every member counted, and with them the live members
 * that rejoined with a replaced store after the owner last reported its pages at N live copies), so each committed
 * page and each replicated prepare has a copy on a live node for the new owner to recover. The new owner is the
 * first live replica with a known store (it has a copy already), else the live node with a known store owning the
 * fewest chunks (counting the moves made here; ties: lowest id). The chunk keeps the old owner's store as
 * `ownerStore`, which differs from the new owner's, so the new owner sees the chunk as recovering until it reports it
 * recovered (ChunkRecovered). The era goes up by one.
 */
export function planFailover(members: readonly FailoverMember[], datasets: readonly DatasetRecord[]): FailoverPlan {
  const byId = new Map(members.map((m) => [m.id, m]));
  const down = members.filter((m) => m.state !== 'ALIVE').length;
  const candidates = members
    .filter((m): m is FailoverMember & { storeId: string } => m.state === 'ALIVE' && m.storeId !== undefined)
    .sort((a, b) => a.id - b.id);
  const load = new Map<number, number>(candidates.map((m) => [m.id, 0]));
  for (const ds of datasets) {
    for (const c of ds.chunks) {
      const n = load.get(c.owner);
      if (n !== undefined) load.set(c.owner, n + 1);
    }
  }
  const leastLoaded = (): (FailoverMember & { storeId: string }) | undefined => {
    let best: (FailoverMember & { storeId: string }) | undefined;
    for (const m of candidates) {
      if (!best || (load.get(m.id) ?? 0) < (load.get(best.id) ?? 0)) best = m;
    }
    return best;
  };

  // A live member whose store was replaced after the dead owner last found its pages at N live copies may have held
  // its only other copy of a page: it counts as down for that owner's chunks.
  const refillingFor = (old: FailoverMember): number[] =>
    members
      .filter(
        (m) =>
          m.state === 'ALIVE' && m.id !== old.id && (m.storeReplacedEpoch ?? 0) > (old.replicatedThroughEpoch ?? 0),
      )
      .map((m) => m.id);

  const plan: FailoverPlan = { datasets: [], moves: [], blocked: [] };
  for (const ds of datasets) {
    let chunks: ChunkRecord[] | null = null;
    // One new owner per old owner and dataset: a commit's part at the old owner may span several of its chunks, and
    // the node taking them over settles it from its prepare copies only if it takes them all.
    const heir = new Map<number, FailoverMember & { storeId: string }>();
    for (const [index, c] of ds.chunks.entries()) {
      const old = byId.get(c.owner);
      // Only an owner declared dead: one that left (a stop without handoff) is waited for, like a restart.
      if (old?.state !== 'DEAD') continue;
      if (ds.replicas < 2) {
        plan.blocked.push({
          dataset: ds.name,
          chunk: index,
          owner: c.owner,
          reason: 'single-copy',
          down,
          refilling: [],
          replicas: 1,
        });
        continue;
      }
      const refilling = refillingFor(old);
      if (down + refilling.length >= ds.replicas) {
        plan.blocked.push({
          dataset: ds.name,
          chunk: index,
          owner: c.owner,
          reason: 'members-down',
          down,
          refilling,
          replicas: ds.replicas,
        });
        continue;
      }
      const to =
        heir.get(c.owner) ??
        c.replicas
          .filter((r) => r !== c.owner)
          .map((r) => candidates.find((m) => m.id === r))
          .find((m) => m !== undefined) ??
        leastLoaded();
      // No live member with a known store (only members that joined before store identities existed, and have
      // not rejoined since, lack one): nobody can take it yet; their rejoin re-evaluates.
      if (!to) continue;
      const era = (c.era ?? 0) + 1;
      const moved: ChunkRecord = {
        owner: to.id,
        ownerStore: c.ownerStore ?? old.storeId ?? 'failover',
        replicas: [to.id, ...c.replicas.filter((r) => r !== to.id)],
        era,
        ...(c.lost ? { lost: c.lost } : {}),
      };
      heir.set(c.owner, to);
      chunks ??= [...ds.chunks];
      chunks[index] = moved;
      load.set(to.id, (load.get(to.id) ?? 0) + 1);
      plan.moves.push({ dataset: ds.name, chunk: index, from: c.owner, to: to.id, era });
    }
    if (chunks) plan.datasets.push({ ...ds, chunks, generation: ds.generation + 1 });
  }
  return plan;
}

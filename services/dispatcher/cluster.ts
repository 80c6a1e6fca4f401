// The dispatcher's state machine: membership with leases and epochs, the dataset namespace and the chunk
// directory. All mutations run one at a time (a promise chain) and are durable before they are acknowledged.
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import { alreadyExists, failedPrecondition, invalidArgument, notFound, resourceExhausted } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import { PAGE_SIZE } from '../common/page.ts';
import { planFailover } from './failover.ts';
import {
  datasetAccess,
  type ChunkRecord,
  type DatasetAccess,
  type DatasetRecord,
  type DispatcherStore,
  type Mode,
  type NodeRecord,
} from './store.ts';

export const PROTOCOL_VERSION = 1;
/** Largest dataset the dispatcher accepts: 1 TiB (262,144 chunks of 4 MiB). */
export const MAX_DATASET_BYTES = 2 ** 40;
export const MAX_REPLICAS = 16;
const NAME_RE = /^[A-Za-z0-9._-]{1,128}$/;

export interface ClusterOptions {
  chunkSizeBytes: number;
  leaseMs: number;
  /**
   * Owner failover, and the era raises it relies on (an owner's restart, a handoff). Off by default for now: the chaos
   * suite found one snapshot read showing part of a transfer while a chunk failed over (docs/design/availability.md).
   */
  failover?: boolean;
  /** Most members (alive or not) the cluster keeps: a join of a new identity past it is refused. Default 256. */
  maxMembers?: number;
  /** New identities accepted per minute (a burst of up to that many, then one every 60 s / this). Default 120. */
  newMembersPerMinute?: number;
  /**
   * A member down this long that owns no chunk and is in no chunk's replica list is forgotten on its own (it holds
   * nothing the cluster needs: e.g. one that joined and never came back). Default 10 minutes.
   */
  forgetIdleAfterMs?: number;
}

export interface LiveNode extends NodeRecord {
  leaseExpiresUnixMs: number;
}

export type MembershipChange = 'JOINED' | 'REJOINED' | 'DEAD' | 'LEFT' | 'FORGOTTEN';

export interface MembershipEventData {
  kind: MembershipChange;
  epoch: number;
  node: LiveNode;
  /** REJOINED by a new process (its store was opened again or replaced): the sessions of the old one are gone. */
  newProcess?: boolean;
}

export interface ChunkView {
  index: number;
  owner: number;
  replicas: number[];
  ownerAlive: boolean;
  ownerRecovering: boolean;
  /** How many times the chunk failed over (0 if never). */
  era: number;
  /** Pages with no surviving copy ([first, count] ranges; ChunkRecord.lost). */
  lost: [number, number][];
}

export type StoreState = 'KNOWN' | 'REPLACED';

/** Owner ids up to 2^32 - 2 (2^32 - 1 is "no id" to the kernel) and permission bits up to 0777. */
export function validAccess(a: DatasetAccess): DatasetAccess {
  for (const [what, v] of [
    ['owner uid', a.uid],
    ['owner gid', a.gid],
  ] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 0xfffffffe) {
      throw invalidArgument(`${what} must be 0..4294967294 (got ${String(v)})`);
    }
  }
  if (!Number.isInteger(a.perm) || a.perm < 0 || a.perm > 0o777) {
    throw invalidArgument(`permissions must be 0..0777 (got 0${a.perm.toString(8)})`);
  }
  return { uid: a.uid, gid: a.gid, perm: a.perm };
}

/** At most this many lost-page ranges per chunk in a ChunkRecovered report. */
export const MAX_LOST_RANGES = 4096;

/**
 * The lost pages a recovering owner reports for one chunk, checked: every range inside the chunk's pages
 * [first, first + count), non-empty, sorted and not overlapping, at most MAX_LOST_RANGES. Returns them as
 * [first, count] pairs with adjacent ranges merged.
 */
export function validLostPages(
  ranges: readonly { firstPage: number; count: number }[],
  first: number,
  count: number,
  where: string,
): [number, number][] {
  if (ranges.length > MAX_LOST_RANGES) {
    throw invalidArgument(`${where}: ${String(ranges.length)} lost page ranges (at most ${String(MAX_LOST_RANGES)})`);
  }
  const out: [number, number][] = [];
  let next = first;
  for (const r of ranges) {
    if (!Number.isSafeInteger(r.firstPage) || !Number.isSafeInteger(r.count) || r.count < 1) {
      throw invalidArgument(`${where}: lost page range ${String(r.firstPage)}+${String(r.count)} is empty or invalid`);
    }
    if (r.firstPage < next || r.firstPage + r.count > first + count) {
      throw invalidArgument(
        `${where}: lost page range ${String(r.firstPage)}+${String(r.count)} is outside pages ` +
          `${String(first)}..${String(first + count - 1)} or not sorted`,
      );
    }
    const last = out[out.length - 1];
    if (last && last[0] + last[1] === r.firstPage) last[1] += r.count;
    else out.push([r.firstPage, r.count]);
    next = r.firstPage + r.count;
  }
  return out;
}

export function validateName(name: string): void {
  if (!NAME_RE.test(name)) {
    throw invalidArgument(`invalid dataset name "${name}": use 1-128 characters from [A-Za-z0-9._-]`);
  }
}

export class Cluster extends EventEmitter<{ membership: [MembershipEventData] }> {
  readonly instance = randomUUID();
  private meta;
  private readonly nodes = new Map<number, LiveNode>();
  /** Token bucket of new identities (admitNewMember). */
  private joinTokens = 0;
  private joinTokensAt = 0;
  private queue: Promise<unknown> = Promise.resolve();
  private timer: NodeJS.Timeout | null = null;
  /** A failover evaluation failed (the store did not commit): the next lease check runs it again. */
  private failoverDue = false;
  /** "dataset/chunk" -> why it was last logged as unable to fail over, so each blocked state is logged once. */
  private blockedLogged = new Map<string, string>();
  /** When each member that is down went down (or this dispatcher started, for those down before). */
  private readonly downSince = new Map<number, number>();
  /** Chunks failed over to a new owner since this dispatcher started (metrics). */
  private failovers = 0;

  constructor(
    private readonly store: DispatcherStore,
    private readonly opts: ClusterOptions,
    private readonly log: Logger,
  ) {
    super();
    this.joinTokens = opts.newMembersPerMinute ?? 120; // a full bucket: a cluster's first nodes join at once
    this.joinTokensAt = Date.now();
    this.meta = store.getMeta(opts.chunkSizeBytes);
    if (this.meta.chunkSizeBytes !== opts.chunkSizeBytes) {
      throw new Error(
        `the metadata store was created with chunk size ${String(this.meta.chunkSizeBytes)}, ` +
          `not ${String(opts.chunkSizeBytes)}; start the dispatcher with the store's chunk size`,
      );
    }
    // After a restart, nodes that were alive get one fresh lease to renew: a dispatcher restart alone must
    // not declare the whole cluster dead.
    const now = Date.now();
    for (const n of store.allNodes()) {
      this.nodes.set(n.id, { ...n, leaseExpiresUnixMs: n.state === 'ALIVE' ? now + opts.leaseMs : 0 });
      if (n.state !== 'ALIVE') this.downSince.set(n.id, now);
    }
  }

  get epoch(): number {
    return this.meta.epoch;
  }
  get chunkSizeBytes(): number {
    return this.opts.chunkSizeBytes;
  }
  get leaseMs(): number {
    return this.opts.leaseMs;
  }

  async init(): Promise<void> {
    // A restart is a membership event for fencing purposes: bump the epoch once.
    await this.serial(async () => {
      this.meta = { ...this.meta, epoch: this.meta.epoch + 1 };
      await this.store.commit({ meta: this.meta });
      // A dispatcher that stopped between declaring a node dead and failing its chunks over finishes that now.
      await this.reevaluateFailover();
    });
    this.timer = setInterval(() => void this.expireLeases(), Math.max(50, Math.floor(this.opts.leaseMs / 10)));
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  members(): LiveNode[] {
    return [...this.nodes.values()].sort((a, b) => a.id - b.id);
  }

  /** Calls `fn` after every committed change to the datasets (the dataset watch); returns the unsubscribe. */
  onDatasetsChanged(fn: () => void): () => void {
    this.store.on('datasets', fn);
    return () => this.store.off('datasets', fn);
  }

  /** Chunks failed over to a new owner since this dispatcher started. */
  get chunkFailovers(): number {
    return this.failovers;
  }

  liveNodes(): LiveNode[] {
    return this.members().filter((n) => n.state === 'ALIVE');
  }

  // ---- membership ----

  join(req: {
    identity: string;
    protocolVersion: number;
    chunkSizeBytes: number;
    controlAddress: string;
    dataAddress: string;
    storeId: string;
    storeIncarnation: number;
  }): Promise<LiveNode & { storeState: StoreState }> {
    if (req.protocolVersion !== PROTOCOL_VERSION) {
      throw failedPrecondition(
        `protocol version ${String(req.protocolVersion)} is not supported: this dispatcher speaks version ${String(PROTOCOL_VERSION)}`,
      );
    }
    if (req.chunkSizeBytes !== this.opts.chunkSizeBytes) {
      throw failedPrecondition(
        `chunk size ${String(req.chunkSizeBytes)} differs from the cluster's chunk size ${String(this.opts.chunkSizeBytes)}`,
      );
    }
    if (!req.identity || req.identity.length > 256) {
      throw invalidArgument('identity must be 1-256 characters');
    }
    if (
      !/^[0-9a-f]{32}$/.test(req.storeId) ||
      !Number.isSafeInteger(req.storeIncarnation) ||
      req.storeIncarnation < 1
    ) {
      throw invalidArgument('store_id must be 32 lowercase hex digits and store_incarnation at least 1');
    }
    return this.serial(async () => {
      const existing = [...this.nodes.values()].find((n) => n.identity === req.identity);
      if (!existing) this.admitNewMember();
      // The same store comes back with the same incarnation (a rejoin after a lost lease) or a higher one (a
      // restart); a lower one is an older copy of it (a restored backup): its pages may be older than what the
      // cluster acknowledged.
      if (existing?.storeId === req.storeId && req.storeIncarnation < (existing.storeIncarnation ?? 0)) {
        throw failedPrecondition(
          `node "${req.identity}" joins with store ${req.storeId} at incarnation ${String(req.storeIncarnation)}, ` +
            `but it was last seen at incarnation ${String(existing.storeIncarnation)}: this is an older copy of its ` +
            'store. Move its pool and data directories away to rejoin empty (its chunks are then recovered from ' +
            'the nodes holding copies)',
        );
      }
      const replaced = existing?.storeId !== undefined && existing.storeId !== req.storeId;
      const id = existing?.id ?? this.meta.nextNodeId;
      const epoch = this.meta.epoch + 1;
      const now = Date.now();
      const node: LiveNode = {
        id,
        identity: req.identity,
        controlAddress: req.controlAddress,
        dataAddress: req.dataAddress,
        state: 'ALIVE',
        joinedUnixMs: now,
        stateEpoch: epoch,
        storeId: req.storeId,
        storeIncarnation: req.storeIncarnation,
        ...(replaced
          ? { storeReplacedEpoch: epoch }
          : existing?.storeReplacedEpoch !== undefined
            ? { storeReplacedEpoch: existing.storeReplacedEpoch }
            : {}),
        leaseExpiresUnixMs: now + this.opts.leaseMs,
        // What its last process reported still holds of the copies on other nodes (a restart or a replaced store
        // loses none of those); a new process reports from 0 and only moves it up.
        ...(existing?.replicatedThroughEpoch !== undefined
          ? { replicatedThroughEpoch: existing.replicatedThroughEpoch }
          : {}),
      };
      // Chunks whose record names no store yet (written before store identities existed) belong to the store the
      // node last had: the one joining now, unless it replaced that one (then they are "recovering", like every
      // chunk that names the old store, until the node reports them recovered). A chunk that failed over while the
      // node was down names its new owner (and a store), so a returning node never takes it back here.
      const holder = replaced && existing.storeId !== undefined ? existing.storeId : req.storeId;
      // A restarted owner no longer knows which versions it gave parts that were later aborted: the chunks it owns
      // go one era up, so it never gives such a version again (a version names one part; the takeover after a
      // failover relies on it).
      const newProcess =
        existing !== undefined && (replaced || req.storeIncarnation > (existing.storeIncarnation ?? 0));
      const restarted = this.opts.failover === true && newProcess;
      const adopt: DatasetRecord[] = [];
      for (const ds of this.store.allDatasets()) {
        const mine = (c: ChunkRecord) => c.owner === id && (c.ownerStore === undefined || restarted);
        if (!ds.chunks.some(mine)) continue;
        const chunks = ds.chunks.map((c) =>
          mine(c)
            ? {
                ...c,
                ownerStore: c.ownerStore ?? holder,
                ...(restarted ? { era: (c.era ?? 0) + 1 } : {}),
              }
            : c,
        );
        adopt.push({ ...ds, chunks, generation: ds.generation + 1 });
      }
      const meta = { ...this.meta, epoch, nextNodeId: existing ? this.meta.nextNodeId : id + 1 };
      await this.store.commit({ meta, nodes: [strip(node)], putDatasets: adopt });
      this.meta = meta;
      this.nodes.set(id, node);
      this.downSince.delete(id);
      this.log.info({ node: id, identity: req.identity, epoch, replaced }, existing ? 'node rejoined' : 'node joined');
      if (replaced) {
        this.log.warn(
          { node: id, identity: req.identity, was: existing.storeId, now: req.storeId },
          'node rejoined with a replaced store: its chunks are refused until it recovers them from their holders',
        );
      }
      this.emit('membership', { kind: existing ? 'REJOINED' : 'JOINED', epoch, node, newProcess });
      // One member fewer down can unblock a failover (and a new live node is a target).
      await this.reevaluateFailover();
      return { ...node, storeState: replaced ? 'REPLACED' : 'KNOWN' };
    });
  }

  /**
   * A join of an identity the cluster does not know: refused past the member cap (members are kept until forgotten,
   * so unbounded joins would grow the membership, every heartbeat answer and every node's peer table for good) and
   * past the rate of new identities (a token bucket).
   */
  private admitNewMember(): void {
    const cap = this.opts.maxMembers ?? 256;
    if (this.nodes.size >= cap) {
      throw resourceExhausted(
        `the cluster has ${String(this.nodes.size)} members, the most it keeps (${String(cap)}): forget members that ` +
          'will not return (hotpot forget NODE) before new ones join',
      );
    }
    const perMinute = this.opts.newMembersPerMinute ?? 120;
    const now = Date.now();
    this.joinTokens = Math.min(perMinute, this.joinTokens + ((now - this.joinTokensAt) * perMinute) / 60_000);
    this.joinTokensAt = now;
    if (this.joinTokens < 1) {
      throw resourceExhausted(
        `too many new members: at most ${String(perMinute)} new identities join per minute; retry in ` +
          `${String(Math.ceil(((1 - this.joinTokens) * 60_000) / perMinute))} ms`,
      );
    }
    this.joinTokens -= 1;
  }

  /** The owner reports a chunk marked recovering as recovered: its store now holds the pages, but for `lost` ones
   * that no node held (they stay refused with DATA_LOSS until an operator forgets them). */
  chunkRecovered(req: {
    nodeId: number;
    storeId: string;
    datasetId: number;
    chunk: number;
    lost?: readonly { firstPage: number; count: number }[];
  }): Promise<void> {
    return this.serial(async () => {
      const node = this.nodes.get(req.nodeId);
      if (node?.state !== 'ALIVE' || node.storeId !== req.storeId) {
        throw failedPrecondition(`node ${String(req.nodeId)} is not alive with store ${req.storeId}`);
      }
      const ds = this.store.allDatasets().find((d) => d.id === req.datasetId);
      const c = ds?.chunks[req.chunk];
      if (!ds || !c) throw notFound(`dataset ${String(req.datasetId)} has no chunk ${String(req.chunk)}`);
      if (c.owner !== req.nodeId) {
        throw failedPrecondition(`chunk ${String(req.chunk)} of "${ds.name}" is owned by node ${String(c.owner)}`);
      }
      if (c.ownerStore === req.storeId) return;
      const pagesPerChunk = ds.chunkSizeBytes / PAGE_SIZE;
      const lost = validLostPages(
        req.lost ?? [],
        req.chunk * pagesPerChunk,
        pagesPerChunk,
        `chunk ${String(req.chunk)} of "${ds.name}"`,
      );
      const { lost: _before, ...rest } = c;
      const recovered: ChunkRecord = { ...rest, ownerStore: req.storeId, ...(lost.length > 0 ? { lost } : {}) };
      const chunks = ds.chunks.map((x, i) => (i === req.chunk ? recovered : x));
      await this.store.commit({ putDatasets: [{ ...ds, chunks, generation: ds.generation + 1 }] });
      const lostPages = lost.reduce((n, r) => n + r[1], 0);
      if (lostPages > 0) {
        this.log.error(
          { node: req.nodeId, dataset: ds.name, chunk: req.chunk, lostPages, lost: lost.slice(0, 16) },
          'chunk recovered by its owner, but some of its pages have no surviving copy anywhere: they are LOST (reads ' +
            'and commits of them fail with DATA_LOSS; `hotpot stat` lists them, `hotpot forget-lost` accepts the loss)',
        );
      } else {
        this.log.info({ node: req.nodeId, dataset: ds.name, chunk: req.chunk }, 'chunk recovered by its owner');
      }
    });
  }

  /** Changes a dataset's owner and/or permission bits (hotpot chown / chmod). */
  setDatasetAccess(name: string, change: Partial<DatasetAccess>): Promise<DatasetRecord> {
    return this.serial(async () => {
      const ds = this.getDataset(name);
      const access = validAccess({ ...datasetAccess(ds), ...change });
      const updated: DatasetRecord = { ...ds, access, generation: ds.generation + 1 };
      await this.store.commit({ putDatasets: [updated] });
      this.log.info(
        { dataset: name, uid: access.uid, gid: access.gid, perm: access.perm.toString(8) },
        'dataset access changed',
      );
      return updated;
    });
  }

  /** An operator accepts the loss of a dataset's lost pages: they read as zeros from then on. Returns how many. */
  forgetLostPages(name: string): Promise<{ pages: number; dataset: DatasetRecord }> {
    return this.serial(async () => {
      const ds = this.getDataset(name);
      const pages = ds.chunks.reduce((n, c) => n + (c.lost ?? []).reduce((m, r) => m + r[1], 0), 0);
      if (pages === 0) return { pages, dataset: ds };
      const chunks = ds.chunks.map((c) => {
        const { lost: _gone, ...rest } = c;
        return rest;
      });
      const updated: DatasetRecord = { ...ds, chunks, generation: ds.generation + 1 };
      await this.store.commit({ putDatasets: [updated] });
      this.log.warn({ dataset: name, pages }, 'lost pages forgotten by an operator: they read as zeros from now on');
      return { pages, dataset: updated };
    });
  }

  /**
   * Planned handoff: the owner of a chunk gives it to another live node. The caller has already stopped commits on
   * the chunk and copied every page to the target, so from this change on the target's store is where the chunk's
   * pages live. The old owner stays among the replicas: it still holds a full copy.
   */
  moveChunk(req: {
    nodeId: number;
    identity: string;
    storeId: string;
    datasetId: number;
    chunk: number;
    toNodeId: number;
  }): Promise<{ dataset: DatasetRecord; chunk: ChunkView }> {
    if (!req.identity) throw invalidArgument('identity is required to move a chunk');
    if (req.toNodeId === 0 || req.toNodeId === req.nodeId) {
      throw invalidArgument(
        `to_node_id must name another node than the caller ${String(req.nodeId)} (got ${String(req.toNodeId)})`,
      );
    }
    return this.serial(async () => {
      this.requireMember(req.nodeId, req.identity, req.storeId);
      const ds = this.store.allDatasets().find((d) => d.id === req.datasetId);
      if (!ds) throw notFound(`dataset ${String(req.datasetId)} not found`);
      const c = ds.chunks[req.chunk];
      if (!c) throw notFound(`dataset "${ds.name}" has no chunk ${String(req.chunk)}`);
      const where = `chunk ${String(req.chunk)} of "${ds.name}"`;
      if (c.owner !== req.nodeId) {
        throw failedPrecondition(`${where} is owned by node ${String(c.owner)}, not node ${String(req.nodeId)}`);
      }
      // The caller's store does not hold the pages yet: handing the chunk off now would hand off a hole.
      if (c.ownerStore !== undefined && c.ownerStore !== req.storeId) {
        throw failedPrecondition(`node ${String(req.nodeId)} is still recovering ${where}: report it recovered first`);
      }
      const to = this.moveTarget(req.toNodeId);
      // One era up, as for a failover: the new owner cannot know which versions the old one gave parts that were
      // aborted, so it gives versions above every one of them.
      const moved: ChunkRecord = {
        owner: to.id,
        ownerStore: to.storeId,
        replicas: [to.id, ...c.replicas.filter((r) => r !== to.id)],
        ...(this.opts.failover === true ? { era: (c.era ?? 0) + 1 } : c.era !== undefined ? { era: c.era } : {}),
        ...(c.lost ? { lost: c.lost } : {}),
      };
      const chunks = ds.chunks.map((x, i) => (i === req.chunk ? moved : x));
      const updated: DatasetRecord = { ...ds, chunks, generation: ds.generation + 1 };
      await this.store.commit({ putDatasets: [updated] });
      this.log.info(
        { dataset: ds.name, chunk: req.chunk, from: req.nodeId, to: to.id, generation: updated.generation },
        'chunk handed off',
      );
      const view = this.chunkView(updated)[req.chunk];
      if (!view) throw new Error(`chunk ${String(req.chunk)} vanished from "${ds.name}" while moving it`);
      return { dataset: updated, chunk: view };
    });
  }

  /** The caller of a chunk-directory change: alive, with the identity and the store it joined with. */
  private requireMember(nodeId: number, identity: string, storeId: string): void {
    const n = this.nodes.get(nodeId);
    if (n?.identity !== identity) {
      throw failedPrecondition(`node ${String(nodeId)} is not a member with identity "${identity}"; rejoin`);
    }
    if (n.state !== 'ALIVE') throw failedPrecondition(`node ${String(nodeId)} is not alive (state ${n.state}); rejoin`);
    if (n.storeId !== storeId) {
      throw failedPrecondition(
        `node ${String(nodeId)} joined with store ${n.storeId ?? '(none)'}, not ${storeId || '(empty)'}; rejoin`,
      );
    }
  }

  /** The node a chunk is handed to: alive and with a known store, which becomes the chunk's ownerStore. */
  private moveTarget(nodeId: number): LiveNode & { storeId: string } {
    const n = this.nodes.get(nodeId);
    if (!n) throw failedPrecondition(`target node ${String(nodeId)} is not a member`);
    if (n.state !== 'ALIVE') throw failedPrecondition(`target node ${String(nodeId)} is not alive (state ${n.state})`);
    const storeId = n.storeId;
    if (storeId === undefined) {
      throw failedPrecondition(`target node ${String(nodeId)} has no store identity yet: it must rejoin first`);
    }
    return { ...n, storeId };
  }

  heartbeat(nodeId: number, identity: string, replicatedThroughEpoch = 0): LiveNode {
    // The identity is always checked: an empty one matched every member, so anyone could keep a dead node "alive".
    const n = this.nodes.get(nodeId);
    if (!n || n.identity !== identity) {
      throw failedPrecondition(`node ${String(nodeId)} is not a member with identity "${identity}"; rejoin`);
    }
    if (n.state !== 'ALIVE') {
      throw failedPrecondition(`node ${String(nodeId)} lease expired (state ${n.state}); rejoin`);
    }
    n.leaseExpiresUnixMs = Date.now() + this.opts.leaseMs;
    // Never above the epoch this dispatcher has handed out, never backwards (kept across the node's rejoins too).
    if (Number.isSafeInteger(replicatedThroughEpoch) && replicatedThroughEpoch > 0) {
      const through = Math.min(replicatedThroughEpoch, this.meta.epoch);
      if (through > (n.replicatedThroughEpoch ?? 0)) {
        n.replicatedThroughEpoch = through;
        this.persistReplicatedThrough(nodeId);
      }
    }
    return n;
  }

  /** Stores a member's raised replicated-through epoch (one write per pass that found its pages at N copies after a
   * membership change), so that a restarted dispatcher does not take every replaced store for one its owners may
   * have counted on. Not awaited by the heartbeat: until it is written, a restart reads the epoch before (which only
   * holds more chunks back). */
  private persistReplicatedThrough(nodeId: number): void {
    void this.serial(async () => {
      const n = this.nodes.get(nodeId);
      if (!n) return;
      await this.store.commit({ nodes: [strip(n)] });
    }).catch((err: unknown) => {
      this.log.warn({ err, node: nodeId }, 'storing the replicated-through epoch failed (kept in memory)');
    });
  }

  leave(nodeId: number, identity: string): Promise<number> {
    return this.serial(async () => {
      const n = this.nodes.get(nodeId);
      if (!n || n.identity !== identity) {
        throw notFound(`node ${String(nodeId)} is not a member with identity "${identity}"`);
      }
      if (n.state !== 'ALIVE') return this.meta.epoch;
      await this.changeState(n, 'LEFT');
      await this.reevaluateFailover();
      return this.meta.epoch;
    });
  }

  /**
   * An operator's word that member `nodeId`, down now, will never return (`hotpot forget`): it leaves the
   * membership, so it stops counting as down (with N = 2, one member that never returns would otherwise block every
   * later failover) and is dropped from every chunk's replica list. Refused while it is alive or owns a chunk: its
   * chunks fail over first, and a chunk that cannot fail over (too many members down, or N = 1) waits for it.
   * Whether the cluster still needs copies that only it held is the caller's question (`hotpot forget` asks every
   * live owner for under-replicated chunks first). Its identity joining again is a new member with a new id.
   */
  forget(nodeId: number): Promise<number> {
    return this.serial(async () => {
      const n = this.nodes.get(nodeId);
      if (!n) throw notFound(`node ${String(nodeId)} is not a member`);
      if (n.state === 'ALIVE') {
        throw failedPrecondition(
          `node ${String(nodeId)} is alive: only a member that is down can be forgotten (drain or stop it first)`,
        );
      }
      const datasets = this.store.allDatasets();
      const owned = datasets.flatMap((ds) =>
        ds.chunks.flatMap((c, i) => (c.owner === nodeId ? [`chunk ${String(i)} of "${ds.name}"`] : [])),
      );
      if (owned.length > 0) {
        throw failedPrecondition(
          `node ${String(nodeId)} still owns ${String(owned.length)} chunk(s) (${owned.slice(0, 3).join(', ')}` +
            `${owned.length > 3 ? ', …' : ''}): they fail over to a live node first, which needs N >= 2 and fewer ` +
            'than N members down',
        );
      }
      return this.forgetMember(n, 'forgotten');
    });
  }

  /** Removes down member `n` (that owns no chunk) from the membership and every replica list; in the serial section. */
  private async forgetMember(n: LiveNode, why: string): Promise<number> {
    const nodeId = n.id;
    const putDatasets = this.store
      .allDatasets()
      .filter((ds) => ds.chunks.some((c) => c.replicas.includes(nodeId)))
      .map((ds) => ({
        ...ds,
        chunks: ds.chunks.map((c) => ({ ...c, replicas: c.replicas.filter((r) => r !== nodeId) })),
        generation: ds.generation + 1,
      }));
    const epoch = this.meta.epoch + 1;
    const meta = { ...this.meta, epoch };
    await this.store.commit({ meta, removeNodes: [nodeId], putDatasets });
    this.meta = meta;
    this.nodes.delete(nodeId);
    this.downSince.delete(nodeId);
    this.log.warn({ node: nodeId, identity: n.identity, state: n.state, epoch }, `node ${why}`);
    this.emit('membership', { kind: 'FORGOTTEN', epoch, node: n });
    // One member fewer down can unblock a failover.
    await this.reevaluateFailover();
    return epoch;
  }

  /**
   * Forgets members down for longer than forgetIdleAfterMs that hold nothing: no chunk owned, in no replica list (a
   * member that joined and never returned, or 200 joins of made-up identities, must not stay forever).
   */
  private async forgetIdleMembers(): Promise<void> {
    const after = this.opts.forgetIdleAfterMs ?? 600_000;
    const now = Date.now();
    const due = [...this.downSince].filter(([, t]) => now - t >= after).map(([id]) => id);
    if (due.length === 0) return;
    await this.serial(async () => {
      const datasets = this.store.allDatasets();
      for (const id of due) {
        const n = this.nodes.get(id);
        if (!n || n.state === 'ALIVE') continue;
        const holds = datasets.some((ds) => ds.chunks.some((c) => c.owner === id || c.replicas.includes(id)));
        // One that holds something stays until an operator forgets it (hotpot forget checks what only it held).
        if (holds) continue;
        await this.forgetMember(
          n,
          `forgotten: down ${String(Math.round((now - (this.downSince.get(id) ?? now)) / 1000))} s holding nothing`,
        );
      }
    }).catch((err: unknown) => {
      this.log.error({ err }, 'forgetting idle members failed');
    });
  }

  private async changeState(n: LiveNode, state: 'DEAD' | 'LEFT'): Promise<void> {
    const epoch = this.meta.epoch + 1;
    const meta = { ...this.meta, epoch };
    const updated: LiveNode = { ...n, state, stateEpoch: epoch, leaseExpiresUnixMs: 0 };
    await this.store.commit({ meta, nodes: [strip(updated)] });
    this.meta = meta;
    this.nodes.set(n.id, updated);
    this.downSince.set(n.id, Date.now());
    this.log.warn({ node: n.id, state, epoch }, state === 'DEAD' ? 'node lease expired' : 'node left');
    this.emit('membership', { kind: state, epoch, node: updated });
  }

  private async expireLeases(): Promise<void> {
    await this.forgetIdleMembers();
    const now = Date.now();
    const expired = this.liveNodes().filter((n) => n.leaseExpiresUnixMs < now);
    if (expired.length === 0 && !this.failoverDue) return;
    await this.serial(async () => {
      let died = false;
      for (const e of expired) {
        const cur = this.nodes.get(e.id);
        if (cur && cur.state === 'ALIVE' && cur.leaseExpiresUnixMs < Date.now()) {
          await this.changeState(cur, 'DEAD');
          died = true;
        }
      }
      // Once for all the nodes that died together: failing one's chunks over to another that is about to be
      // declared dead too would only move them to a dead owner.
      if (died || this.failoverDue) await this.reevaluateFailover();
    }).catch((err: unknown) => {
      this.log.error({ err }, 'lease expiry failed');
    });
  }

  /**
   * Owner failover (failover.ts), re-evaluated in the serialized section after every membership change: a death
   * makes chunks ownerless, and a return can unblock a failover that had too many members down. A failure to commit
   * is retried at the next lease check rather than failing the membership change that triggered it.
   */
  private async reevaluateFailover(): Promise<void> {
    if (this.opts.failover !== true) return;
    try {
      await this.failOver();
      this.failoverDue = false;
    } catch (err) {
      this.failoverDue = true;
      this.log.error({ err }, 'owner failover failed; retrying at the next lease check');
    }
  }

  private async failOver(): Promise<void> {
    const plan = planFailover(this.members(), this.store.allDatasets());
    if (plan.datasets.length > 0) await this.store.commit({ putDatasets: plan.datasets });
    this.failovers += plan.moves.length;
    const generations = new Map(plan.datasets.map((d) => [d.name, d.generation]));
    for (const m of plan.moves) {
      this.log.warn({ ...m, generation: generations.get(m.dataset) }, 'chunk failed over');
    }
    const logged = new Map<string, string>();
    for (const b of plan.blocked) {
      const key = `${b.dataset}/${String(b.chunk)}`;
      const why =
        `${b.reason} owner ${String(b.owner)}` +
        (b.reason === 'members-down' ? ` down ${String(b.down)} refilling ${b.refilling.join(',')}` : '');
      logged.set(key, why);
      if (this.blockedLogged.get(key) === why) continue;
      const fields = {
        dataset: b.dataset,
        chunk: b.chunk,
        owner: b.owner,
        down: b.down,
        refilling: b.refilling,
        replicas: b.replicas,
      };
      if (b.reason === 'single-copy') {
        this.log.warn(fields, 'chunk has no other copy (replicas 1): it stays unavailable until its owner returns');
      } else {
        this.log.warn(
          fields,
          b.refilling.length === 0
            ? `chunk cannot fail over yet: ${String(b.down)} members down >= replicas (${String(b.replicas)})`
            : `chunk cannot fail over yet: ${String(b.down)} members down and ${String(b.refilling.length)} ` +
                `rejoined with a replaced store (node ${b.refilling.join(', ')}) since its owner last had every ` +
                `page at N copies >= replicas (${String(b.replicas)})`,
        );
      }
    }
    this.blockedLogged = logged;
  }

  // ---- namespace and chunk directory ----

  private place(chunkCount: number, replicas: number, cursor: number): ChunkRecord[] {
    const live = this.liveNodes();
    const chunks: ChunkRecord[] = [];
    for (let i = 0; i < chunkCount; i++) {
      const start = (cursor + i) % live.length;
      const set: number[] = [];
      for (let r = 0; r < Math.min(replicas, live.length); r++) {
        const node = live[(start + r) % live.length];
        if (node) set.push(node.id);
      }
      const owner = set[0] ?? 0;
      const ownerStore = this.nodes.get(owner)?.storeId;
      chunks.push({ owner, replicas: set, ...(ownerStore ? { ownerStore } : {}) });
    }
    return chunks;
  }

  private validateSize(sizeBytes: number): number {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) {
      throw invalidArgument(`size must be greater than 0 bytes (got ${String(sizeBytes)})`);
    }
    if (sizeBytes > MAX_DATASET_BYTES) {
      throw invalidArgument(
        `size ${String(sizeBytes)} exceeds the limit of ${String(MAX_DATASET_BYTES)} bytes (1 TiB)`,
      );
    }
    return Math.ceil(sizeBytes / PAGE_SIZE) * PAGE_SIZE;
  }

  createDataset(req: {
    name: string;
    sizeBytes: number;
    mode: string;
    replicas: number;
    access?: Partial<DatasetAccess>;
  }): Promise<DatasetRecord> {
    validateName(req.name);
    const access = validAccess({ uid: 0, gid: 0, perm: 0o600, ...req.access });
    const size = this.validateSize(req.sizeBytes);
    const mode = parseMode(req.mode);
    const live = this.liveNodes().length;
    if (!Number.isInteger(req.replicas) || req.replicas < 1) {
      throw invalidArgument(`replicas must be at least 1 (got ${String(req.replicas)})`);
    }
    if (req.replicas > MAX_REPLICAS) {
      throw invalidArgument(`replicas must be at most ${String(MAX_REPLICAS)} (got ${String(req.replicas)})`);
    }
    if (req.replicas > live) {
      throw invalidArgument(`replicas ${String(req.replicas)} exceeds the ${String(live)} live node(s)`);
    }
    return this.serial(async () => {
      if (this.store.getDataset(req.name)) throw alreadyExists(`dataset "${req.name}" already exists`);
      const chunkCount = Math.ceil(size / this.opts.chunkSizeBytes);
      const ds: DatasetRecord = {
        name: req.name,
        id: this.meta.nextDatasetId,
        sizeBytes: size,
        mode,
        replicas: req.replicas,
        chunkSizeBytes: this.opts.chunkSizeBytes,
        createdUnixMs: Date.now(),
        generation: 1,
        chunks: this.place(chunkCount, req.replicas, this.meta.placementCursor),
        access,
      };
      const meta = {
        ...this.meta,
        nextDatasetId: ds.id + 1,
        placementCursor: (this.meta.placementCursor + chunkCount) % 1_000_000_007,
      };
      await this.store.commit({ meta, putDatasets: [ds] });
      this.meta = meta;
      this.log.info({ dataset: ds.name, id: ds.id, size, chunks: chunkCount }, 'dataset created');
      return ds;
    });
  }

  getDataset(name: string): DatasetRecord {
    validateName(name);
    const ds = this.store.getDataset(name);
    if (!ds) throw notFound(`dataset "${name}" not found`);
    return ds;
  }

  listDatasets(): DatasetRecord[] {
    return this.store.allDatasets().sort((a, b) => a.name.localeCompare(b.name));
  }

  resizeDataset(name: string, sizeBytes: number): Promise<DatasetRecord> {
    validateName(name);
    const size = this.validateSize(sizeBytes);
    return this.serial(async () => {
      const ds = this.getDataset(name);
      if (size < ds.sizeBytes) {
        throw invalidArgument(
          `datasets can only grow: "${name}" is ${String(ds.sizeBytes)} bytes, asked ${String(size)}`,
        );
      }
      if (size === ds.sizeBytes) return ds;
      const chunkCount = Math.ceil(size / ds.chunkSizeBytes);
      const added = chunkCount - ds.chunks.length;
      if (added > 0 && this.liveNodes().length === 0) throw failedPrecondition('no live nodes to place new chunks on');
      const updated: DatasetRecord = {
        ...ds,
        sizeBytes: size,
        generation: ds.generation + 1,
        chunks: added > 0 ? [...ds.chunks, ...this.place(added, ds.replicas, this.meta.placementCursor)] : ds.chunks,
      };
      const meta = { ...this.meta, placementCursor: (this.meta.placementCursor + Math.max(0, added)) % 1_000_000_007 };
      await this.store.commit({ meta, putDatasets: [updated] });
      this.meta = meta;
      return updated;
    });
  }

  deleteDataset(name: string): Promise<void> {
    validateName(name);
    return this.serial(async () => {
      this.getDataset(name);
      await this.store.commit({ removeDatasets: [name] });
      this.log.info({ dataset: name }, 'dataset deleted');
    });
  }

  chunkView(ds: DatasetRecord): ChunkView[] {
    return ds.chunks.map((c, index) => {
      const owner = this.nodes.get(c.owner);
      return {
        index,
        owner: c.owner,
        replicas: c.replicas,
        ownerAlive: owner?.state === 'ALIVE',
        ownerRecovering: c.ownerStore !== undefined && owner?.storeId !== undefined && owner.storeId !== c.ownerStore,
        era: c.era ?? 0,
        lost: c.lost ?? [],
      };
    });
  }
}

function strip(n: LiveNode): NodeRecord {
  const { leaseExpiresUnixMs: _unused, ...rest } = n;
  return rest;
}

export function parseMode(mode: string): Mode {
  switch (mode) {
    case 'CONSISTENCY_MODE_MRMW':
    case 'mrmw':
      return 'mrmw';
    case 'CONSISTENCY_MODE_MRSW':
    case 'mrsw':
      return 'mrsw';
    default:
      throw invalidArgument(`mode must be mrmw or mrsw (got "${mode}")`);
  }
}

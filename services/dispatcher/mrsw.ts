// The MRSW master (ARCHITECTURE §5, docs/design/consistency.md): write ownership of page ranges of MRSW
// datasets, all-or-nothing, with a lease and a fencing epoch. The lock table and the epoch counter live in the
// dispatcher's store and every grant is durable before it is answered, so a dispatcher restart keeps
// every lease (holders keep committing; expired ones free as usual).
//
// A grant carries a certificate signed with the cluster secret {dataset id, holder node, fencing epoch, expiry,
// page ranges}; owners verify it at commit (native/src/engine/lease.h), so a holder whose lease expired cannot
// commit and the master is never on the commit path.
import { createHmac, randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { failedPrecondition, invalidArgument, notFound, RpcError, unavailable } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import type { Cluster } from './cluster.ts';
import { PAGE_SIZE } from '../common/page.ts';
import type { DispatcherStore, Table } from './store.ts';

/** Pages of an expired lease stay blocked this long, so a commit prepared just before expiry finishes first. */
export const LEASE_GRACE_MS = 1000;
export const MIN_LEASE_MS = 100;
export const MAX_LEASE_MS = 600_000;
export const MAX_WAIT_MS = 600_000;
const MAX_RANGES = 4096;
const LEASE_MAGIC = 0x314c5048; // "HPL1", as in native/src/engine/lease.h

export interface PageSpan {
  firstPage: number;
  count: number;
}

export interface LeaseRecord {
  id: string;
  dataset: string;
  datasetId: number;
  nodeId: number;
  holder: string;
  epoch: number;
  expiresUnixMs: number;
  pages: PageSpan[];
  /** The acquire's request id (AcquireRequest.request_id): a retry from the same node gets this lease again. */
  requestId?: string;
}

export interface GrantedLease extends LeaseRecord {
  certificate: Buffer;
}

/** The signed certificate owners verify (layout in native/src/engine/lease.h). */
export function encodeLeaseCertificate(l: LeaseRecord, secret: string): Buffer {
  const header = 4 + 8 + 4 + 8 + 8 + 4;
  const body = Buffer.alloc(header + l.pages.length * 16);
  body.writeUInt32LE(LEASE_MAGIC, 0);
  body.writeBigUInt64LE(BigInt(l.datasetId), 4);
  body.writeUInt32LE(l.nodeId, 12);
  body.writeBigUInt64LE(BigInt(l.epoch), 16);
  body.writeBigUInt64LE(BigInt(l.expiresUnixMs), 24);
  body.writeUInt32LE(l.pages.length, 32);
  l.pages.forEach((p, i) => {
    body.writeBigUInt64LE(BigInt(p.firstPage), header + i * 16);
    body.writeBigUInt64LE(BigInt(p.count), header + i * 16 + 8);
  });
  const mac = createHmac('sha256', secret).update('hotpot-lease-v1').update(body).digest();
  return Buffer.concat([body, mac]);
}

function overlaps(a: PageSpan[], b: PageSpan[]): boolean {
  for (const x of a)
    for (const y of b) if (x.firstPage < y.firstPage + y.count && y.firstPage < x.firstPage + x.count) return true;
  return false;
}

/** Byte ranges -> sorted, merged page spans. */
export function toPageSpans(ranges: { offset: number; length: number }[], sizeBytes: number): PageSpan[] {
  if (ranges.length === 0) throw invalidArgument('acquire needs at least one range');
  if (ranges.length > MAX_RANGES) throw invalidArgument(`acquire takes at most ${String(MAX_RANGES)} ranges`);
  const spans = ranges.map((r, i) => {
    if (!Number.isSafeInteger(r.offset) || !Number.isSafeInteger(r.length) || r.offset < 0 || r.length <= 0) {
      throw invalidArgument(`range ${String(i)}: offset must be >= 0 and length > 0`);
    }
    if (r.offset + r.length > sizeBytes) {
      throw invalidArgument(
        `range ${String(i)} (${String(r.offset)}+${String(r.length)}) ends beyond the dataset (${String(sizeBytes)} bytes)`,
      );
    }
    const first = Math.floor(r.offset / PAGE_SIZE);
    return { firstPage: first, count: Math.floor((r.offset + r.length - 1) / PAGE_SIZE) - first + 1 };
  });
  spans.sort((a, b) => a.firstPage - b.firstPage);
  const merged: PageSpan[] = [];
  for (const s of spans) {
    const last = merged.at(-1);
    if (last && s.firstPage <= last.firstPage + last.count) {
      last.count = Math.max(last.count, s.firstPage + s.count - last.firstPage);
    } else {
      merged.push({ ...s });
    }
  }
  return merged;
}

/** Longest AcquireRequest.request_id. */
const MAX_REQUEST_ID = 128;

function samePages(a: PageSpan[], b: PageSpan[]): boolean {
  if (a.length !== b.length) return false;
  return a.every((x, i) => {
    const y = b[i];
    return y !== undefined && x.firstPage === y.firstPage && x.count === y.count;
  });
}

const floorKey = (nodeId: number): string => `leaseFloor:${String(nodeId)}`;

/** The store tables of MRSW leases and their fencing counter (migrate.ts copies every table by name). */
export const MRSW_LEASES_TABLE = 'mrsw-leases';
export const MRSW_META_TABLE = 'mrsw-meta';

export class MrswMaster {
  private readonly leases: Table<LeaseRecord>;
  private readonly meta: Table<number>;
  private readonly table = new Map<string, LeaseRecord>();
  private nextEpoch = 1;
  private chain: Promise<unknown> = Promise.resolve();
  private readonly waiters = new Set<() => void>();

  constructor(
    private readonly store: DispatcherStore,
    private readonly cluster: Cluster,
    private readonly secret: string | undefined,
    private readonly log: Logger,
  ) {
    this.leases = store.table<LeaseRecord>(MRSW_LEASES_TABLE);
    this.meta = store.table<number>(MRSW_META_TABLE);
  }

  /** Loads the durable lock table (after a restart every lease is back with its expiry and epoch), and from then
   * on ends the leases of a node declared dead, gone or forgotten (see revokeNode). */
  init(): void {
    for (const [, value] of this.leases.entries()) this.table.set(value.id, value);
    this.nextEpoch = this.meta.get('nextEpoch') ?? 1;
    if (this.table.size > 0) this.log.info({ leases: this.table.size }, 'MRSW lock table restored');
    this.cluster.on('membership', (ev) => {
      // A node that rejoins as a new process (restarted within its membership lease) lost the sessions that held
      // its leases, as a dead one did.
      if (ev.kind === 'DEAD' || ev.kind === 'LEFT' || ev.kind === 'FORGOTTEN' || ev.newProcess === true) {
        void this.revokeNode(ev.node.id, ev.newProcess === true ? 'restarted' : ev.kind).catch((e: unknown) => {
          this.log.warn({ node: ev.node.id, err: e instanceof Error ? e.message : String(e) }, 'lease revoke failed');
        });
      }
    });
  }

  list(dataset: string): GrantedLease[] {
    const now = Date.now();
    return [...this.table.values()]
      .filter((l) => (dataset === '' || l.dataset === dataset) && l.expiresUnixMs > now)
      .map((l) => this.granted(l));
  }

  async acquire(req: {
    dataset: string;
    ranges: { offset: number; length: number }[];
    leaseMs: number;
    waitMs: number;
    nodeId: number;
    holder: string;
    requestId?: string;
    /** True once the caller has gone (its call was cancelled): nothing is granted to it after that. */
    cancelled?: () => boolean;
  }): Promise<GrantedLease> {
    const secret = this.requireSecret();
    if (!Number.isInteger(req.leaseMs) || req.leaseMs < MIN_LEASE_MS || req.leaseMs > MAX_LEASE_MS) {
      throw invalidArgument(`lease_ms must be ${String(MIN_LEASE_MS)}..${String(MAX_LEASE_MS)}`);
    }
    if (!Number.isInteger(req.waitMs) || req.waitMs < 0 || req.waitMs > MAX_WAIT_MS) {
      throw invalidArgument(`wait_ms must be 0..${String(MAX_WAIT_MS)}`);
    }
    if (!Number.isInteger(req.nodeId) || req.nodeId <= 0) {
      throw invalidArgument('node_id is required (apps reach acquire through their node)');
    }
    // A node declared dead (or gone) gets no lease until it rejoins: its leases ended with its membership.
    const member = this.cluster.members().find((m) => m.id === req.nodeId);
    if (member?.state !== 'ALIVE') {
      throw failedPrecondition(
        `node ${String(req.nodeId)} is not a live member (${member?.state ?? 'unknown'}): it must rejoin before acquiring`,
      );
    }
    const ds = this.cluster.getDataset(req.dataset);
    if (ds.mode !== 'mrsw') {
      throw failedPrecondition(`dataset "${req.dataset}" is ${ds.mode.toUpperCase()}: acquire is for MRSW datasets`);
    }
    const requestId = req.requestId ?? '';
    if (requestId.length > MAX_REQUEST_ID || !/^[!-~]*$/.test(requestId)) {
      throw invalidArgument(`request_id must be at most ${String(MAX_REQUEST_ID)} printable ASCII characters`);
    }
    const pages = toPageSpans(req.ranges, ds.sizeBytes);
    const deadline = Date.now() + req.waitMs;
    // The node process that asked: a lease is granted only while it is still the live member (an acquire that waited
    // for the pages outlived a node declared dead or restarted meanwhile, and a grant then went to nobody and held
    // the pages for a whole lease — chaos: an MRSW worker refused by its own node's lost grant for 5 s).
    const asked = member.stateEpoch;
    for (;;) {
      const r = await this.serial(async () => {
        await this.purgeExpired();
        const now = Date.now();
        const still = this.cluster.members().find((m) => m.id === req.nodeId);
        if (still?.state !== 'ALIVE' || still.stateEpoch !== asked) {
          const what =
            still === undefined
              ? 'forgotten'
              : still.state === 'ALIVE'
                ? 'rejoined'
                : still.state === 'DEAD'
                  ? 'declared dead'
                  : 'gone (left)';
          throw unavailable(
            `node ${String(req.nodeId)} was ${what} while its acquire waited: no lease was granted to it (acquire again)`,
          );
        }
        if (req.cancelled?.() === true) {
          throw new RpcError(grpc.status.CANCELLED, 'the acquire was cancelled by its caller: no lease was granted');
        }
        // A retry of an acquire this node already got (its answer was lost): the same lease, not a second one that
        // would wait for — or, once granted, be refused by — the first.
        const again =
          requestId === ''
            ? undefined
            : [...this.table.values()].find(
                (l) => l.requestId === requestId && l.nodeId === req.nodeId && l.expiresUnixMs > now,
              );
        if (again) {
          if (again.datasetId !== ds.id || !samePages(again.pages, pages)) {
            throw invalidArgument(`request_id ${requestId} was used by another acquire (other dataset or pages)`);
          }
          return { granted: true as const, lease: again };
        }
        const holder = [...this.table.values()].find(
          (l) => l.datasetId === ds.id && l.expiresUnixMs + LEASE_GRACE_MS > now && overlaps(l.pages, pages),
        );
        if (holder) return { granted: false as const, lease: holder };
        const rec: LeaseRecord = {
          id: randomUUID(),
          dataset: ds.name,
          datasetId: ds.id,
          nodeId: req.nodeId,
          holder: req.holder.slice(0, 256),
          epoch: this.nextEpoch,
          expiresUnixMs: now + req.leaseMs,
          pages,
          ...(requestId === '' ? {} : { requestId }),
        };
        this.nextEpoch++;
        const nextEpoch = this.nextEpoch;
        await this.store.commit({ tables: [this.leases.put(rec.id, rec), this.meta.put('nextEpoch', nextEpoch)] });
        this.table.set(rec.id, rec);
        return { granted: true as const, lease: rec };
      });
      if (r.granted) return this.granted(r.lease, secret);
      const held = r.lease;
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new RpcError(
          grpc.status.ABORTED,
          `pages of dataset "${req.dataset}" are held by lease ${held.id} (node ${String(held.nodeId)}${held.holder ? `, ${held.holder}` : ''}, fencing epoch ${String(held.epoch)}) until ${new Date(held.expiresUnixMs).toISOString()}`,
        );
      }
      // Wake on a release, or when the holder's lease (plus grace) runs out, or at our deadline.
      const until = Math.min(remaining, Math.max(5, held.expiresUnixMs + LEASE_GRACE_MS - Date.now()));
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, until);
        const self = this.waiters;
        function done(): void {
          clearTimeout(t);
          self.delete(done);
          resolve();
        }
        self.add(done);
      });
    }
  }

  /** The node holding a lease (undefined: no such lease). */
  holderOf(leaseId: string): number | undefined {
    return this.table.get(leaseId)?.nodeId;
  }

  async release(leaseId: string): Promise<void> {
    if (!leaseId) throw invalidArgument('lease_id is required');
    const released = await this.serial(async () => {
      if (!this.table.has(leaseId)) return false; // already released or expired and purged: idempotent
      // Durable before it is answered, like a grant: a release answered and then lost with its dispatcher (kill -9, a
      // takeover by a standby that loads the lock table from the store) kept the pages held for the rest of the
      // lease, so the holder that released them, and everyone else, waited up to a whole lease to acquire them
      // again. A failed write is refused (UNAVAILABLE): the holder sends the release again, to this dispatcher or
      // the next leader.
      await this.store.commit({ tables: [this.leases.remove(leaseId)] });
      this.table.delete(leaseId);
      return true;
    });
    if (released) this.wake();
  }

  /**
   * Ends every lease of a node the cluster declared dead (or that left or was forgotten), so its pages are free as
   * soon as the membership lease says it is gone rather than when its MRSW lease (often longer) runs out. Safe even
   * if the node still runs: peers refuse a dead node's PREPARE, a grant after this one carries a higher fencing
   * epoch that owners keep per page (an older lease's commit after the newer holder's is refused), and an MRSW
   * commit sends the base version of every page it writes (a commit of the old holder applied after the new holder
   * read the page aborts the new holder's commit rather than being overwritten). A prepared, undecided part of the
   * dead holder keeps its pages locked at their owners until recovery decides it, so nothing interleaves with it.
   */
  async revokeNode(nodeId: number, why: string): Promise<number> {
    const ended = await this.serial(async () => {
      const gone = [...this.table.values()].filter((l) => l.nodeId === nodeId);
      // Every lease this node holds has a lower epoch than the next grant: the floor its next join carries, so a
      // certificate it still has is refused by its own committer (see JoinResponse.mrsw_lease_floor).
      const floor = this.nextEpoch;
      await this.store.commit({
        tables: [...gone.map((l) => this.leases.remove(l.id)), this.meta.put(floorKey(nodeId), floor)],
      });
      for (const l of gone) this.table.delete(l.id);
      return gone;
    });
    for (const l of ended) {
      this.log.warn(
        { lease: l.id, dataset: l.dataset, node: nodeId, epoch: l.epoch, membership: why },
        'MRSW lease ended: its holder node is no longer a live member',
      );
    }
    if (ended.length > 0) this.wake();
    return ended.length;
  }

  /** The fencing epoch below which every lease of this node ended (0: none ended), for its next join. */
  leaseFloor(nodeId: number): number {
    return this.meta.get(floorKey(nodeId)) ?? 0;
  }

  async renew(leaseId: string, leaseMs: number): Promise<GrantedLease> {
    const secret = this.requireSecret();
    if (!Number.isInteger(leaseMs) || leaseMs < MIN_LEASE_MS || leaseMs > MAX_LEASE_MS) {
      throw invalidArgument(`lease_ms must be ${String(MIN_LEASE_MS)}..${String(MAX_LEASE_MS)}`);
    }
    const rec = await this.serial(async () => {
      const l = this.table.get(leaseId);
      if (!l) throw notFound(`lease ${leaseId} not found (released or expired)`);
      const now = Date.now();
      if (l.expiresUnixMs <= now) {
        throw failedPrecondition(`lease ${leaseId} expired ${String(now - l.expiresUnixMs)} ms ago: acquire again`);
      }
      const next = { ...l, expiresUnixMs: now + leaseMs };
      await this.store.commit({ tables: [this.leases.put(next.id, next)] });
      this.table.set(next.id, next);
      return next;
    });
    return this.granted(rec, secret);
  }

  stop(): void {
    this.wake();
  }

  private granted(l: LeaseRecord, secret = this.requireSecret()): GrantedLease {
    return { ...l, certificate: encodeLeaseCertificate(l, secret) };
  }

  private requireSecret(): string {
    if (!this.secret) {
      throw failedPrecondition(
        'the dispatcher has no cluster secret (HOTPOT_CLUSTER_SECRET): MRSW leases cannot be signed',
      );
    }
    return this.secret;
  }

  private async purgeExpired(): Promise<void> {
    const now = Date.now();
    const dead = [...this.table.values()].filter((l) => l.expiresUnixMs + LEASE_GRACE_MS <= now);
    if (dead.length === 0) return;
    await this.store.commit({ tables: dead.map((l) => this.leases.remove(l.id)) });
    for (const l of dead) {
      this.table.delete(l.id);
      this.log.info({ lease: l.id, dataset: l.dataset, node: l.nodeId, epoch: l.epoch }, 'MRSW lease expired');
    }
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.chain.then(fn, fn);
    this.chain = p.catch(() => undefined);
    return p;
  }
}

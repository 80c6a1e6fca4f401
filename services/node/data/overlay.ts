// The private pages of one gRPC Data session laid over the engine's pages: what a process's MAP_PRIVATE mapping
// is on the mmap path. A first write to a page copies its base image (the page as of the session's sync point)
// into a private 4 KiB copy; reads show private copies over base images (or, for a snapshot read, over one
// consistent copy of the latest committed pages); a commit hands the engine exactly the private copies, which it
// diffs against their base images so that only this session's bytes are shipped.
//
// It reaches the engine only through OverlayEngine (one engine session's calls), so a unit test can give it a
// fake engine: no native addon, no network.
import * as grpc from '@grpc/grpc-js';
import { RpcError } from '../../common/errors.ts';
import { PAGE_SIZE } from '../../common/page.ts';
import type { EngineCommitResult, EngineDirtyPage, EngineReadRange } from '../../../native/index.ts';

/** Pages per ensurePages/baseImage step of a read or a first write (bounded memory per step). */
const STEP_PAGES = 256;

/** The engine calls of one engine session (native/index.ts engine* functions, bound to a dataset and session). */
export interface OverlayEngine {
  /** Makes pages [first, first + count) present in the node cache, fetching absent ones from their owners. */
  ensurePages(first: number, count: number): Promise<void>;
  /** `count` present pages as of the session's sync point. */
  baseImage(first: number, count: number): Buffer;
  /** `count` pages as the latest committed state this node shows, every commit whole (fetches absent pages). */
  readCommitted(first: number, count: number): Promise<Buffer>;
  /** Commits these private pages and moves the sync point to now; rejects, applying nothing, on a conflict. */
  commit(
    pages: EngineDirtyPage[],
    replicas: number,
    reads: EngineReadRange[],
    lease: Buffer | null,
  ): Promise<EngineCommitResult>;
  /** Moves the sync point to now. */
  resync(): void;
}

export interface CommitOptions {
  /** N for this commit; 0 = the dataset's default. */
  replicas: number;
  /** Byte ranges whose pages must not have changed since the sync point. */
  reads: EngineReadRange[];
  /** The MRSW lease certificate, or null. */
  lease: Buffer | null;
}

/** Pages [first, last] covering `length` bytes at `offset` (length >= 1). */
function pageSpan(offset: number, length: number): { first: number; last: number } {
  return { first: Math.floor(offset / PAGE_SIZE), last: Math.floor((offset + length - 1) / PAGE_SIZE) };
}

/** Copies the part of `page` (its bytes `src`, starting at `srcAt` for the page's first byte) inside the range. */
function copyPart(src: Buffer, srcAt: number, page: number, out: Buffer, offset: number, length: number): void {
  const from = Math.max(offset, page * PAGE_SIZE);
  const to = Math.min(offset + length, (page + 1) * PAGE_SIZE);
  src.copy(out, from - offset, srcAt + from - page * PAGE_SIZE, srcAt + to - page * PAGE_SIZE);
}

/**
 * Private bytes some sessions hold together, against a limit: the node's sessions all together, and each caller's
 * sessions on the node (one session's cap alone let a few sessions, or one caller's many, take gigabytes of the
 * daemon's memory). A caller's budget takes from the node's too.
 */
export class PrivateBudget {
  private used = 0;

  constructor(
    readonly max: number,
    /** Whose bytes these are, for the error: "this node's sessions". */
    private readonly whose = "this node's sessions",
    private readonly parent: PrivateBudget | null = null,
  ) {}

  get bytes(): number {
    return this.used;
  }

  /** Takes `n` bytes, or throws RESOURCE_EXHAUSTED naming the limit (nothing taken) past it or a parent's. */
  take(n: number): void {
    if (this.used + n > this.max) {
      throw new RpcError(
        grpc.status.RESOURCE_EXHAUSTED,
        `${this.whose} would hold more than ${String(this.max)} private bytes together: commit or roll back first`,
      );
    }
    this.parent?.take(n);
    this.used += n;
  }

  give(n: number): void {
    const back = Math.min(n, this.used);
    this.used -= back;
    this.parent?.give(back);
  }
}

export class Overlay {
  /** page index -> the session's private copy (PAGE_SIZE bytes). */
  private readonly pages = new Map<number, Buffer>();

  constructor(
    private readonly engine: OverlayEngine,
    /** Private (uncommitted) bytes the session may hold. */
    private readonly maxPrivateBytes: number,
    /** The node's private bytes, all sessions together (unbounded when absent). */
    private readonly budget: PrivateBudget = new PrivateBudget(Number.MAX_SAFE_INTEGER),
  ) {}

  /** Private pages held. */
  get size(): number {
    return this.pages.size;
  }

  /** `length` bytes at `offset`: private copies, base images elsewhere. */
  async read(offset: number, length: number): Promise<Buffer> {
    const out = Buffer.allocUnsafe(length);
    const { first, last } = pageSpan(offset, length);
    await this.forPages(first, last, (page, bytes) => {
      copyPart(bytes, 0, page, out, offset, length);
    });
    return out;
  }

  /**
   * Snapshot read: private copies, and every other page of the span from ONE readCommitted — the latest committed
   * state, every commit whole, even one spanning several owners. Reading the whole span in one call (private pages
   * included, then overlaid) is what makes the non-private pages one state; per-run calls could straddle a commit.
   * A span of at most 1 MiB is at most 257 pages, well inside the engine's 4096.
   */
  async readSnapshot(offset: number, length: number): Promise<Buffer> {
    const { first, last } = pageSpan(offset, length);
    let committed: Buffer | null = null;
    for (let p = first; p <= last; p++) {
      if (!this.pages.has(p)) {
        committed = await this.engine.readCommitted(first, last - first + 1);
        break;
      }
    }
    const out = Buffer.allocUnsafe(length);
    for (let p = first; p <= last; p++) {
      const own = this.pages.get(p);
      if (own) copyPart(own, 0, p, out, offset, length);
      else if (committed) copyPart(committed, (p - first) * PAGE_SIZE, p, out, offset, length);
    }
    return out;
  }

  /** Writes `data` at `offset` into private copies (RESOURCE_EXHAUSTED past the private-byte limit, nothing written). */
  async write(offset: number, data: Buffer): Promise<void> {
    const { first, last } = pageSpan(offset, data.length);
    let fresh = 0;
    for (let p = first; p <= last; p++) if (!this.pages.has(p)) fresh++;
    if ((this.pages.size + fresh) * PAGE_SIZE > this.maxPrivateBytes) {
      throw new RpcError(
        grpc.status.RESOURCE_EXHAUSTED,
        `the session would hold more than ${String(this.maxPrivateBytes)} private bytes: commit or roll back first`,
      );
    }
    this.budget.take(fresh * PAGE_SIZE);
    const before = this.pages.size;
    try {
      // Private copies are made from the base image, so the commit's diff against it ships only this session's bytes.
      await this.forPages(first, last, (page, bytes, isPrivate) => {
        const copy = isPrivate ? bytes : Buffer.from(bytes);
        const from = Math.max(offset, page * PAGE_SIZE);
        const to = Math.min(offset + data.length, (page + 1) * PAGE_SIZE);
        data.copy(copy, from - page * PAGE_SIZE, from - offset, to - offset);
        if (!isPrivate) this.pages.set(page, copy);
      });
    } finally {
      // A write that failed part way keeps the pages it made private; the rest goes back.
      this.budget.give((fresh - (this.pages.size - before)) * PAGE_SIZE);
    }
  }

  /** Hands the private copies (in page order) to the engine's commit; on success they are dropped. */
  async commit(o: CommitOptions): Promise<EngineCommitResult> {
    const dirty = [...this.pages].sort((a, b) => a[0] - b[0]).map(([page, data]) => ({ page, data }));
    const r = await this.engine.commit(dirty, o.replicas, o.reads, o.lease);
    // The node cache holds the new bytes and the engine moved the sync point. On a rejection they stay private.
    this.drop();
    return r;
  }

  /** Drops every private page and moves the sync point to now; returns how many were dropped. */
  rollback(): number {
    const dropped = this.drop();
    this.engine.resync();
    return dropped;
  }

  /** Drops private pages equal to their base image; with none left, moves the sync point to now. */
  refresh(): { pagesKept: number; pagesDropped: number } {
    let dropped = 0;
    for (const [page, bytes] of [...this.pages]) {
      if (this.engine.baseImage(page, 1).equals(bytes)) {
        this.pages.delete(page);
        this.budget.give(PAGE_SIZE);
        dropped++;
      }
    }
    // Like the mmap path: the sync point moves only when no private change is left to be diffed against it.
    if (this.pages.size === 0) this.engine.resync();
    return { pagesKept: this.pages.size, pagesDropped: dropped };
  }

  /** Drops every private page (the session ends); returns how many. */
  drop(): number {
    const dropped = this.pages.size;
    this.pages.clear();
    this.budget.give(dropped * PAGE_SIZE);
    return dropped;
  }

  /** Calls `each(page, bytes, isPrivate)` for every page in [first, last] in order: private copy or base image. */
  private async forPages(
    first: number,
    last: number,
    each: (page: number, bytes: Buffer, isPrivate: boolean) => void,
  ): Promise<void> {
    let p = first;
    while (p <= last) {
      const own = this.pages.get(p);
      if (own) {
        each(p, own, true);
        p++;
        continue;
      }
      let q = p + 1;
      while (q <= last && q - p < STEP_PAGES && !this.pages.has(q)) q++;
      await this.engine.ensurePages(p, q - p);
      const buf = this.engine.baseImage(p, q - p);
      for (let i = 0; i < q - p; i++) each(p + i, buf.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE), false);
      p = q;
    }
  }
}

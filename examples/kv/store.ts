// KvStore: the hash table of table.ts on one mapped MRMW dataset. Gets are loads from the mapping inside
// ds.snapshot() (or plain loads, peek()); puts, deletes and updates are commits, rolled back and run again with
// jittered backoff on a conflict.
import { CommitConflictError, type Dataset, type Hotpot } from '../../clients/typescript/index.ts';
import { formatBytes, KvError, planLayout, readLayout, type CreateOptions, type Layout } from './layout.ts';
import * as table from './table.ts';

export type Bytes = string | Uint8Array;

export interface StoreOptions {
  /** Runs of a write before its last CommitConflictError is thrown (default 64). */
  attempts?: number;
  /** First backoff after a conflict in ms, doubled per attempt up to 50 ms, full jitter (default 0.5). */
  backoffMs?: number;
  /** Commit replicas (default: the dataset's N). */
  replicas?: number;
}

export interface OpenStoreOptions extends StoreOptions {
  /** Create the dataset (MRMW) and format the store if missing. */
  create?: CreateOptions & { size: number; replicas?: number };
}

/** Counts of one KvStore's work (conflicts: commits ABORTED and run again; torn: views read mid-commit). */
export interface StoreCounters {
  commits: number;
  conflicts: number;
  torn: number;
  snapshotRuns: number;
}

const MAX_BACKOFF_MS = 50;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const bytes = (b: Bytes): Uint8Array => (typeof b === 'string' ? Buffer.from(b, 'utf8') : b);

/** The batch handle: the same operations, applied together by one commit. */
export interface Batch {
  put(key: Bytes, value: Bytes): void;
  delete(key: Bytes): boolean;
  update(key: Bytes, fn: (old: Buffer | undefined) => Bytes | undefined): Buffer | undefined;
  get(key: Bytes): Buffer | undefined;
}

export class KvStore {
  readonly counters: StoreCounters = { commits: 0, conflicts: 0, torn: 0, snapshotRuns: 0 };
  private readonly mem: Buffer;
  private readonly attempts: number;
  private readonly backoffMs: number;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    readonly ds: Dataset,
    readonly layout: Layout,
    private readonly opts: StoreOptions,
  ) {
    this.mem = ds.map();
    this.attempts = opts.attempts ?? 64;
    this.backoffMs = opts.backoffMs ?? 0.5;
    if (!Number.isInteger(this.attempts) || this.attempts < 1) {
      throw new KvError('INVALID_ARGUMENT', 'attempts must be an integer >= 1');
    }
  }

  /**
   * Opens the store in dataset `name` on the connection `hp`; with `create`, creates the dataset and formats the
   * store when they do not exist yet (several processes may race to do so: one format wins, the others open it).
   */
  static async open(hp: Hotpot, name: string, opts: OpenStoreOptions = {}): Promise<KvStore> {
    const c = opts.create;
    if (c) planLayout(c.size, c); // bad options fail before anything is created
    const ds = await hp.open(name, c ? { create: { size: c.size, mode: 'mrmw', replicas: c.replicas ?? 1 } } : {});
    try {
      return await KvStore.on(ds, opts);
    } catch (e) {
      ds.close();
      throw e;
    }
  }

  /** The store in an open dataset (formats it when `create` is given and the dataset is still blank). */
  static async on(ds: Dataset, opts: OpenStoreOptions = {}): Promise<KvStore> {
    if (ds.info.mode !== 'mrmw') throw new KvError('FAILED_PRECONDITION', 'a key-value store needs an MRMW dataset');
    const mem = ds.map();
    for (let i = 0; ; i++) {
      const l = readLayout(mem);
      if (l) return new KvStore(ds, l, opts);
      if (!opts.create) throw new KvError('FAILED_PRECONDITION', `dataset "${ds.info.name}" holds no store yet`);
      formatBytes(planLayout(ds.info.size, opts.create)).copy(mem, 0);
      try {
        await ds.commit(opts.replicas ? { replicas: opts.replicas } : {});
      } catch (e) {
        // Another process formatted it first: its header is now visible.
        await ds.rollback();
        if (!(e instanceof CommitConflictError) || i > 10) throw e;
      }
    }
  }

  /** The value of `key` (a copy), or undefined; every commit seen whole (ds.snapshot). */
  get(key: Bytes): Promise<Buffer | undefined> {
    const k = bytes(key);
    table.checkKey(this.layout, k);
    return this.serial(async () => {
      const torn = Symbol('torn');
      const r = await this.ds.snapshot((mem) => {
        this.counters.snapshotRuns++;
        try {
          return table.get(mem, this.layout, k);
        } catch (e) {
          if (e instanceof table.TornView) return torn;
          throw e;
        }
      });
      // An unchanged publication state around a torn read would mean the store itself is damaged.
      if (r === torn) throw new KvError('DATA_LOSS', 'the store is inconsistent in a stable snapshot');
      return r;
    });
  }

  /**
   * The value of `key` from plain loads, without waiting: may show a concurrent commit half landed (another
   * record's new bytes, or a torn value when the value spans pages) and this process's own write in flight.
   */
  peek(key: Bytes): Buffer | undefined {
    const k = bytes(key);
    table.checkKey(this.layout, k);
    for (let i = 0; ; i++) {
      try {
        return table.get(this.mem, this.layout, k);
      } catch (e) {
        if (!(e instanceof table.TornView) || i >= 100) throw e;
        this.counters.torn++;
      }
    }
  }

  put(key: Bytes, value: Bytes): Promise<void> {
    const k = bytes(key);
    const v = bytes(value);
    return this.write((t) => table.put(t, k, v));
  }

  /** Deletes `key`; false if it was absent. */
  delete(key: Bytes): Promise<boolean> {
    const k = bytes(key);
    return this.write((t) => table.del(t, k));
  }

  /**
   * Atomic read-modify-write of one key: `fn` gets the current value (undefined when absent) and returns the new
   * one (undefined deletes). `fn` may run more than once (after a conflict) and should have no side effects.
   */
  async update(key: Bytes, fn: (old: Buffer | undefined) => Bytes | undefined): Promise<Buffer | undefined> {
    const k = bytes(key);
    const r = await this.write((t) =>
      table.update(t, k, (old) => {
        const v = fn(old);
        return v === undefined ? undefined : bytes(v);
      }),
    );
    return r === undefined ? undefined : Buffer.from(r);
  }

  /** Adds `by` to the signed 64-bit little-endian counter at `key` (absent: 0); returns the new value. */
  async increment(key: Bytes, by = 1n): Promise<bigint> {
    const v = await this.update(key, (old) => {
      if (old !== undefined && old.length !== 8) throw new KvError('FAILED_PRECONDITION', 'not an 8-byte counter');
      const b = Buffer.alloc(8);
      b.writeBigInt64LE(BigInt.asIntN(64, (old?.readBigInt64LE(0) ?? 0n) + by));
      return b;
    });
    return v?.readBigInt64LE(0) ?? 0n;
  }

  /** Runs `fn` over a batch and commits all its operations at once (all or nothing). `fn` may run more than once. */
  batch<T>(fn: (b: Batch) => T): Promise<T> {
    return this.write((t) => {
      const b: Batch = {
        put: (key, value) => table.put(t, bytes(key), bytes(value)),
        delete: (key) => table.del(t, bytes(key)),
        update: (key, f) => {
          const r = table.update(t, bytes(key), (old) => {
            const v = f(old);
            return v === undefined ? undefined : bytes(v);
          });
          return r === undefined ? undefined : Buffer.from(r);
        },
        get: (key) => {
          const k = bytes(key);
          table.checkKey(t.l, k);
          // Validated: the batch commits only if what it read is still current (the key's slots; its record is
          // covered when the batch also writes it).
          const at = table.lookup(t.mem, t.l, k);
          table.readSlots(t, at.home, at.probed);
          if (!at.found) return undefined;
          const v = table.valueOf(t.mem, at.rec);
          t.read(at.rec, v.byteOffset - t.mem.byteOffset - at.rec + v.length);
          return Buffer.from(v);
        },
      };
      return fn(b);
    });
  }

  /** Entries whose key starts with `prefix` (at most `limit`), read in one snapshot: a consistent cut. */
  scan(opts: { prefix?: Bytes; limit?: number } = {}): Promise<table.Entry[]> {
    const prefix = bytes(opts.prefix ?? '');
    const limit = opts.limit ?? Infinity;
    if (!(limit >= 0)) throw new KvError('INVALID_ARGUMENT', 'limit must be >= 0');
    return this.serial(async () => {
      const torn = Symbol('torn');
      const r = await this.ds.snapshot((mem) => {
        this.counters.snapshotRuns++;
        try {
          return table.scan(mem, this.layout, prefix, limit);
        } catch (e) {
          if (e instanceof table.TornView) return torn;
          throw e;
        }
      });
      if (r === torn) throw new KvError('DATA_LOSS', 'the store is inconsistent in a stable snapshot');
      return r;
    });
  }

  stats(): Promise<table.TableStats & { layout: Layout }> {
    return this.serial(() => this.ds.snapshot((mem) => ({ ...table.stats(mem, this.layout), layout: this.layout })));
  }

  close(): void {
    this.ds.close();
  }

  /** One operation at a time per store: they share the dataset's private pages and its sync point. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private write<T>(op: (t: table.Txn) => T): Promise<T> {
    return this.serial(async () => {
      let last: Error | null = null;
      for (let i = 0; i < this.attempts; i++) {
        if (i > 0) await sleep(Math.random() * Math.min(MAX_BACKOFF_MS, this.backoffMs * 2 ** i));
        const t = new table.Txn(this.mem, this.layout);
        let result: T;
        try {
          result = op(t);
        } catch (e) {
          await this.ds.rollback();
          if (e instanceof table.TornView) {
            this.counters.torn++;
            last = e;
            continue;
          }
          if (e instanceof table.FullError) {
            // Report "full" only if what it was decided on is still current.
            if (await this.validate(t)) throw e;
            last = e;
            continue;
          }
          throw e;
        }
        const reads = t.reads();
        if (!t.wrote && reads.length === 0) return result;
        try {
          await this.ds.commit({ reads, ...(this.opts.replicas ? { replicas: this.opts.replicas } : {}) });
          this.counters.commits++;
          return result;
        } catch (e) {
          if (!(e instanceof CommitConflictError)) {
            await this.ds.rollback().catch(() => undefined);
            throw e;
          }
          this.counters.conflicts++;
          last = e;
          await this.ds.rollback();
        }
      }
      if (last instanceof table.TornView) {
        throw new KvError('DATA_LOSS', `the store looked inconsistent in ${String(this.attempts)} attempts`);
      }
      throw last ?? new KvError('FAILED_PRECONDITION', 'no attempt made');
    });
  }

  /** A read-only commit of `t`'s reads: true if they are still current. */
  private async validate(t: table.Txn): Promise<boolean> {
    const reads = t.reads();
    if (reads.length === 0) return true;
    try {
      await this.ds.commit({ reads });
      return true;
    } catch (e) {
      if (e instanceof CommitConflictError) {
        await this.ds.rollback();
        return false;
      }
      throw e;
    }
  }
}

// The etcd backend of the dispatcher store (ARCHITECTURE §8): several dispatchers share one etcd cluster; the one
// holding the election key leads, the others wait (standby) until it is gone.
//
// - Election: the key `<prefix>leader` is created (only if absent) on an etcd lease of `electionTtlS` seconds that
//   this process keeps alive. Candidates queue first (`candidates/<lease id>` on their own lease, oldest first): only
//   the head of the queue may create the key, so the standby that waited longest takes over. A standby watches the
//   key and tries again once it is deleted (its holder stopped, or its lease ran out because the holder died or lost
//   etcd).
// - Once elected, the leader loads the whole state (linearizable reads, after the previous leader's key is gone, so
//   nothing it acknowledged is missed) and keeps it in memory for the synchronous reads.
// - Every commit is ONE etcd transaction guarded by the election key: "if the leader key still has the create
//   revision of my election, apply all the puts/deletes". A deposed leader (its lease expired, its key deleted, maybe
//   a new one created by another dispatcher) therefore can never write: its transaction fails, the store reports
//   'deposed' and refuses every later commit.
//
// - Chunk maps are stored in pages: a dataset of 1 TiB has 262,144 chunks (~23 MB of JSON), far more than etcd takes in
//   one request (--max-request-bytes, 1.5 MiB by default; --max-txn-ops, 128). The dataset record
//   (`state/datasets/<name>`) holds everything but its chunks, plus `chunkMap: {version, count, perPage}`; its chunks
//   are in `state/chunks/<dataset id>/<version>/<page>`, `perPage` chunks each. A change writes only the pages that
//   differ from the map in memory. When the whole change fits in one request it stays ONE guarded transaction (the
//   changed pages are rewritten in place). Otherwise the datasets whose pages changed get a new map version: their
//   pages are written under it first (guarded transactions that change nothing a reader follows), then ONE final
//   guarded transaction writes everything else and switches the records to the new versions; the old versions' pages
//   are deleted afterwards. So a change is still all-or-nothing: a leader deposed or dead before the switch leaves
//   only unreferenced pages, which the next leader's load ignores and deletes.
// - The load reads with paged range reads (a limit per request, continued after the last key), at one revision.
//
// Layout under the prefix: `leader`; `candidates/<lease id>`; `state/meta`; `state/nodes/<id>`; `state/datasets/<name>`;
// `state/chunks/<dataset id>/<version>/<page>`; `state/tables/<table>/<key>`. Values are JSON.
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import {
  Etcd3,
  EtcdAuthenticationFailedError,
  EtcdPermissionDeniedError,
  type IOptions,
  type Lease,
  type Namespace,
  Range,
} from 'etcd3';
import { resourceExhausted, unavailable } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import {
  changesDatasets,
  type ChunkRecord,
  type DatasetRecord,
  type DispatcherStore,
  type Meta,
  type NodeRecord,
  type StoreChange,
  type StoreEvents,
  type Table,
} from './store.ts';

export interface EtcdStoreOptions {
  /** etcd client endpoints, "host:port" or "https://host:port". */
  endpoints: string[];
  /** TLS to etcd: the CA that signed etcd's certificate, and this client's certificate and key (mutual TLS). */
  tls?: { ca: Buffer; cert?: Buffer; key?: Buffer };
  /** etcd authentication (etcd's user/role auth). */
  auth?: { username: string; password: string };
  /** Key prefix of this cluster's state (several Hotpot clusters can share one etcd). Ends with "/". */
  prefix: string;
  /** TTL of the election lease, in whole seconds: a dead leader is replaced this long after its last keepalive. */
  electionTtlS: number;
  /** Who this candidate is, as the leader key names it (shown to standbys and operators). */
  candidate: { instance: string; address: string };
  /** Deadline of each etcd request other than the election wait. */
  requestTimeoutMs?: number;
  /** Largest request this store sends (bytes of keys and values): keep it under etcd's --max-request-bytes (default
   * 1.5 MiB). Default 1 MiB. */
  maxRequestBytes?: number;
  /** Fault injection: runs once a change that needs several requests wrote its new chunk-map pages, before the final
   * transaction switches the records to them (tests depose the leader here). */
  beforeSwitch?: () => Promise<void>;
}

export interface LeaderInfo {
  instance: string;
  address: string;
  pid: number;
  host: string;
  sinceUnixMs: number;
}

const LEADER_KEY = 'leader';
const CANDIDATES = 'candidates/';
const STATE = 'state/';
const META_KEY = `${STATE}meta`;
const NODES = `${STATE}nodes/`;
const DATASETS = `${STATE}datasets/`;
const TABLES = `${STATE}tables/`;
const CHUNKS = `${STATE}chunks/`;
/** Chunks per page of a chunk map (one etcd key; ~90 KB of JSON). */
export const CHUNKS_PER_PAGE = 1024;
/** Most operations in one transaction: etcd refuses more than --max-txn-ops (default 128). */
const MAX_TXN_OPS = 120;
/** Bytes counted per operation beyond its key and value (protobuf framing), for the request size estimate. */
const OP_OVERHEAD = 32;
/** Keys per range request of the load: chunk pages (~90 KB each), and every other key. */
const LOAD_PAGES_PER_READ = 16;
const LOAD_KEYS_PER_READ = 1000;

/** Where a dataset's chunk map is in etcd, as its record names it. */
interface ChunkMapRef {
  version: number;
  count: number;
  perPage: number;
}

/** The chunk map of a dataset as it is in etcd (what a change is diffed against). */
interface StoredMap {
  id: number;
  version: number;
  perPage: number;
  /** The JSON of each page as written; empty for a record written with its chunks inline (before pages existed). */
  pages: string[];
}

const pagePrefix = (id: number, version?: number): string =>
  `${CHUNKS}${String(id)}/${version === undefined ? '' : `${String(version)}/`}`;
const pageKey = (id: number, version: number, page: number): string => `${pagePrefix(id, version)}${String(page)}`;

/** The etcd client options for `opts` (also used by tests and tools that read the same etcd). */
export function etcdClientOptions(
  opts: Pick<EtcdStoreOptions, 'endpoints' | 'tls' | 'auth' | 'requestTimeoutMs'>,
): IOptions {
  const timeout = opts.requestTimeoutMs ?? 5000;
  const scheme = opts.tls ? 'https://' : 'http://';
  return {
    hosts: opts.endpoints.map((e) => (/^https?:\/\//.test(e) ? e : `${scheme}${e}`)),
    ...(opts.tls
      ? {
          credentials: {
            rootCertificate: opts.tls.ca,
            ...(opts.tls.cert ? { certChain: opts.tls.cert } : {}),
            ...(opts.tls.key ? { privateKey: opts.tls.key } : {}),
          },
        }
      : {}),
    ...(opts.auth ? { auth: { username: opts.auth.username, password: opts.auth.password } } : {}),
    // A whole state can be larger than gRPC's default 4 MiB answer.
    grpcOptions: { 'grpc.max_receive_message_length': 256 * 1024 * 1024 },
    dialTimeout: timeout,
    // Every unary call has a deadline (streams — watches, keepalives — do not).
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeout }),
  };
}

/** One operation of a transaction, with the key it names and its size estimate. */
interface Op {
  key: string;
  bytes: number;
  op: ReturnType<Namespace['put']> | ReturnType<ReturnType<Namespace['delete']>['key']>;
}

/** How a put dataset's chunk map is written. */
interface MapPlan {
  record: DatasetRecord;
  id: number;
  /** The version its pages are written under (raised when the change needs several requests). */
  version: number;
  perPage: number;
  pages: string[];
  /** Pages whose JSON differs from etcd's. */
  changed: number[];
  /** Pages in etcd beyond the map's new end. */
  dropped: number[];
  /** The map in etcd it replaces (absent: a new dataset). */
  stored: StoredMap | undefined;
  /** The id of a dataset of the same name whose pages go (deleted and created again). */
  replaces?: number;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export class EtcdStore extends EventEmitter<StoreEvents> implements DispatcherStore {
  readonly description: string;
  private meta: Meta | undefined;
  private readonly nodes = new Map<number, NodeRecord>();
  private readonly datasets = new Map<string, DatasetRecord>();
  /** Each dataset's chunk map as it is in etcd, by name. */
  private readonly maps = new Map<string, StoredMap>();
  private datasetWrites: Promise<unknown> = Promise.resolve();
  private readonly tables = new Map<string, Map<string, unknown>>();
  private deposed: Error | null = null;
  private closed = false;
  /** Until when etcd surely keeps the election lease: when the last answered keepalive was sent + the TTL. */
  private leaseValidUntil: number;
  private readonly leaseTimer: NodeJS.Timeout;

  private constructor(
    private readonly client: Etcd3,
    private readonly ns: Namespace,
    private readonly lease: Lease,
    /** Create revision of our election key: every commit compares it. */
    private readonly leaderRevision: string,
    /** Until when the lease is surely kept, as the campaign saw its keepalives. */
    validUntil: number,
    private readonly leader: LeaderInfo,
    private readonly opts: EtcdStoreOptions,
  ) {
    super();
    this.description = `etcd://${opts.endpoints.join(',')} (prefix ${opts.prefix})`;
    lease.on('lost', (err) => {
      this.depose(new Error(`the election lease was lost (${err.message})`));
    });
    // etcd counts the TTL from when it received the last keepalive, which is after we sent it: a leader that has not
    // had a keepalive answered for a TTL since sending it steps down before etcd can let a standby lead, so two
    // dispatchers never serve at once (a stalled one cannot write anyway: its transactions compare the key).
    const ttlMs = opts.electionTtlS * 1000;
    this.leaseValidUntil = validUntil;
    let firedAt = Date.now();
    lease.on('keepaliveFired', () => {
      firedAt = Date.now();
    });
    lease.on('keepaliveSucceeded', () => {
      this.leaseValidUntil = Math.max(this.leaseValidUntil, firedAt + ttlMs);
    });
    this.leaseTimer = setInterval(() => {
      if (Date.now() > this.leaseValidUntil) {
        this.depose(new Error(`no keepalive of the election lease was answered within its TTL (${String(ttlMs)} ms)`));
      }
    }, 100);
    this.leaseTimer.unref();
  }

  /**
   * Connects, waits until this candidate holds the election key (standby until then; `onStandby` is called with
   * the leader each time another one is seen), then loads the state. `signal` gives up waiting.
   */
  static async open(
    opts: EtcdStoreOptions,
    log: Logger,
    hooks: { onStandby?: (leader: LeaderInfo | null) => void; signal?: AbortSignal } = {},
  ): Promise<EtcdStore> {
    if (!Number.isInteger(opts.electionTtlS) || opts.electionTtlS < 1) {
      throw new Error(`the election TTL must be a whole number of seconds >= 1 (got ${String(opts.electionTtlS)})`);
    }
    if (
      opts.maxRequestBytes !== undefined &&
      (!Number.isInteger(opts.maxRequestBytes) || opts.maxRequestBytes < 65536)
    ) {
      throw new Error(
        `the largest etcd request must be a whole number of bytes >= 65536 (got ${String(opts.maxRequestBytes)})`,
      );
    }
    const client = new Etcd3(etcdClientOptions(opts));
    try {
      const ns = client.namespace(opts.prefix);
      const { lease, revision, validUntil, leader } = await campaign(ns, opts, log, hooks);
      const store = new EtcdStore(client, ns, lease, revision, validUntil, leader, opts);
      try {
        await store.load();
      } catch (e) {
        // Give the election key up at once: another dispatcher (or this one, restarted) may read a repaired state.
        await store.close();
        throw e;
      }
      return store;
    } catch (e) {
      client.close();
      throw e;
    }
  }

  getMeta(chunkSizeBytes: number): Meta {
    return this.meta ?? { epoch: 0, nextNodeId: 1, nextDatasetId: 1, placementCursor: 0, chunkSizeBytes };
  }

  allNodes(): NodeRecord[] {
    return [...this.nodes.values()].sort((a, b) => a.id - b.id);
  }

  allDatasets(): DatasetRecord[] {
    return [...this.datasets.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  getDataset(name: string): DatasetRecord | undefined {
    return this.datasets.get(name);
  }

  table<V>(name: string): Table<V> {
    if (name.includes('/') || name === '') throw new Error(`table name "${name}" must be non-empty without "/"`);
    const rows = (): Map<string, V> => {
      let t = this.tables.get(name);
      if (!t) {
        t = new Map();
        this.tables.set(name, t);
      }
      return t as Map<string, V>;
    };
    return {
      get: (key) => rows().get(key),
      entries: () => [...rows()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
      count: () => rows().size,
      put: (key, value) => ({ table: name, key, value }),
      remove: (key) => ({ table: name, key, value: undefined }),
    };
  }

  /** Rewrites the election key's value (same key, same lease) with the address this leader listens on. */
  async announce(address: string): Promise<void> {
    const value = JSON.stringify({ ...this.leader, address });
    const res = await this.ns
      .if(LEADER_KEY, 'Create', '==', this.leaderRevision)
      .then(this.lease.put(LEADER_KEY).value(value))
      .commit();
    if (!res.succeeded) {
      this.depose(new Error('the election key is gone or belongs to another dispatcher'));
      throw this.refusal();
    }
  }

  async commit(c: StoreChange): Promise<void> {
    if (!changesDatasets(c)) return this.write(c);
    // Changes of datasets run one at a time: each is diffed against the chunk maps as the previous one left them.
    const run = this.datasetWrites.then(
      () => this.write(c),
      () => this.write(c),
    );
    this.datasetWrites = run.catch(() => undefined);
    return run;
  }

  private async write(c: StoreChange): Promise<void> {
    if (this.deposed) throw this.refusal();
    if (this.closed) throw unavailable('the dispatcher store is closed');
    const ops: Op[] = [];
    const put = (key: string, value: string): void => {
      ops.push(this.putOp(key, value));
    };
    const del = (key: string, prefix = false): void => {
      ops.push(this.deleteOp(key, prefix));
    };
    if (c.meta) put(META_KEY, JSON.stringify(c.meta));
    for (const n of c.nodes ?? []) put(`${NODES}${String(n.id)}`, JSON.stringify(n));
    for (const id of c.removeNodes ?? []) del(`${NODES}${String(id)}`);
    const plans = (c.putDatasets ?? []).map((d) => this.planMap(d));
    for (const name of c.removeDatasets ?? []) {
      del(`${DATASETS}${name}`);
      const old = this.maps.get(name);
      if (old) del(pagePrefix(old.id), true);
    }
    for (const p of plans) {
      // The same name with another id: a dataset deleted and created again; the old one's pages go.
      if (p.replaces !== undefined) del(pagePrefix(p.replaces), true);
    }
    for (const t of c.tables ?? []) {
      const key = `${TABLES}${t.table}/${t.key}`;
      if (t.value === undefined) del(key);
      else put(key, JSON.stringify(t.value));
    }
    // Every value must fit in one request, whatever the plan.
    for (const o of ops) this.checkFits(o.key, o.bytes);
    for (const p of plans) {
      p.pages.forEach((v, i) => {
        this.checkFits(pageKey(p.id, p.version, i), Buffer.byteLength(v));
      });
    }
    const inPlace = (p: MapPlan): Op[] => [
      ...p.changed.map((i) => this.putOp(pageKey(p.id, p.version, i), p.pages[i] ?? '')),
      ...p.dropped.map((i) => this.deleteOp(pageKey(p.id, p.version, i))),
    ];
    const record = (p: MapPlan, version: number): Op => {
      const key = `${DATASETS}${p.record.name}`;
      const ref: ChunkMapRef = { version, count: p.record.chunks.length, perPage: p.perPage };
      const stored: Record<string, unknown> = { ...p.record, chunkMap: ref };
      delete stored.chunks;
      const op = this.putOp(key, JSON.stringify(stored));
      this.checkFits(key, op.bytes);
      return op;
    };
    const single = [...ops, ...plans.flatMap((p) => [record(p, p.version), ...inPlace(p)])];
    if (single.length === 0) return;
    let moved: { id: number; from: number }[] = [];
    let final = single;
    if (!this.fitsOneRequest(single)) {
      // Several requests: the maps that changed go to a new version, written first; one final transaction switches.
      const rewritten = plans.filter((p) => p.changed.length > 0 || p.dropped.length > 0);
      final = [...ops, ...plans.map((p) => record(p, rewritten.includes(p) ? p.version + 1 : p.version))];
      if (!this.fitsOneRequest(final)) {
        throw resourceExhausted(
          `the change is larger than one etcd request even without its chunk maps (${String(final.length)} ` +
            `operations, ${String(final.reduce((n, o) => n + o.bytes, 0))} bytes; at most ${String(MAX_TXN_OPS)} ` +
            `and ${String(this.maxRequestBytes)}): split it`,
        );
      }
      const pages: Op[] = rewritten.flatMap((p) =>
        p.pages.map((value, i) => this.putOp(pageKey(p.id, p.version + 1, i), value)),
      );
      for (const batch of this.batches(pages)) {
        // Nothing a reader follows changes yet: a failure here leaves only unreferenced pages (this leader's state in
        // memory still matches etcd's), which a retry overwrites and the next leader's load deletes.
        await this.guarded(batch, false);
      }
      await this.opts.beforeSwitch?.();
      moved = rewritten.filter((p) => p.stored !== undefined).map((p) => ({ id: p.id, from: p.version }));
      for (const p of rewritten) p.version += 1;
    }
    await this.guarded(final, true);
    this.apply(c);
    for (const name of c.removeDatasets ?? []) this.maps.delete(name);
    for (const p of plans) {
      this.maps.set(p.record.name, { id: p.id, version: p.version, perPage: p.perPage, pages: p.pages });
    }
    if (changesDatasets(c)) this.emit('datasets');
    if (moved.length > 0) {
      // The old versions' pages are unreferenced now: delete them (if this fails the next leader's load does).
      const drops = moved.map(({ id, from }) => this.deleteOp(pagePrefix(id, from), true));
      for (const batch of this.batches(drops)) await this.guarded(batch, false).catch(() => undefined);
    }
  }

  /** What a put dataset writes: its pages as JSON (unchanged pages reuse the JSON in memory), which of them differ
   * from etcd's, and which pages beyond its end are left over. */
  private planMap(d: DatasetRecord): MapPlan {
    const prevMap = this.maps.get(d.name);
    const stored = prevMap?.id === d.id ? prevMap : undefined;
    const prev = stored ? this.datasets.get(d.name) : undefined;
    const perPage = stored?.perPage ?? CHUNKS_PER_PAGE;
    const pages: string[] = [];
    const changed: number[] = [];
    for (let i = 0, from = 0; from < d.chunks.length; i++, from += perPage) {
      const to = Math.min(from + perPage, d.chunks.length);
      const was = stored?.pages[i];
      let same = was !== undefined && prev !== undefined && prev.chunks.length >= to;
      if (same && (to - from === perPage || prev?.chunks.length === d.chunks.length)) {
        for (let k = from; k < to && same; k++) same = prev?.chunks[k] === d.chunks[k];
      } else same = false;
      const json = same && was !== undefined ? was : JSON.stringify(d.chunks.slice(from, to));
      pages.push(json);
      if (json !== was) changed.push(i);
    }
    const dropped: number[] = [];
    for (let i = pages.length; i < (stored?.pages.length ?? 0); i++) dropped.push(i);
    return {
      record: d,
      id: d.id,
      version: stored?.version ?? 1,
      perPage,
      pages,
      changed,
      dropped,
      stored,
      ...(prevMap && prevMap.id !== d.id ? { replaces: prevMap.id } : {}),
    };
  }

  private putOp(key: string, value: string): Op {
    const bytes = Buffer.byteLength(key) + Buffer.byteLength(value) + OP_OVERHEAD;
    return { key, bytes, op: this.ns.put(key).value(value) };
  }

  /** Deletes `key`, or (`prefix`) every key under it. */
  private deleteOp(key: string, prefix = false): Op {
    const op = prefix ? this.ns.delete().prefix(key) : this.ns.delete().key(key);
    return { key, bytes: Buffer.byteLength(key) * 2 + OP_OVERHEAD, op };
  }

  private get maxRequestBytes(): number {
    return this.opts.maxRequestBytes ?? 1024 * 1024;
  }

  private fitsOneRequest(ops: Op[]): boolean {
    return ops.length <= MAX_TXN_OPS && ops.reduce((n, o) => n + o.bytes, 0) <= this.maxRequestBytes;
  }

  /** Refuses a value that no plan can write: larger than one etcd request. */
  private checkFits(key: string, bytes: number): void {
    if (bytes > this.maxRequestBytes) {
      throw resourceExhausted(
        `the value of ${key} (${String(bytes)} bytes) is larger than one etcd request takes ` +
          `(${String(this.maxRequestBytes)} bytes; etcd's --max-request-bytes)`,
      );
    }
  }

  /** Splits `ops` into transactions of at most MAX_TXN_OPS operations and maxRequestBytes bytes. */
  private batches(ops: Op[]): Op[][] {
    const out: Op[][] = [];
    let cur: Op[] = [];
    let bytes = 0;
    for (const o of ops) {
      if (cur.length > 0 && (cur.length >= MAX_TXN_OPS || bytes + o.bytes > this.maxRequestBytes)) {
        out.push(cur);
        cur = [];
        bytes = 0;
      }
      cur.push(o);
      bytes += o.bytes;
    }
    if (cur.length > 0) out.push(cur);
    return out;
  }

  /**
   * One transaction guarded by the election key. `decisive`: it changes what a reader follows, so a failure whose
   * outcome is unknown deposes this leader (its state in memory may differ from etcd's).
   */
  private async guarded(ops: Op[], decisive: boolean): Promise<void> {
    let res;
    try {
      res = await this.ns
        .if(LEADER_KEY, 'Create', '==', this.leaderRevision)
        .then(...ops.map((o) => o.op))
        .commit();
    } catch (e) {
      if (/request is too large|message larger than max|too many operations/i.test(message(e))) {
        throw resourceExhausted(
          `the change is larger than etcd accepts in one request (${message(e)}): raise etcd's --max-request-bytes ` +
            `and --max-txn-ops, or lower this store's request size (${String(this.maxRequestBytes)} bytes)`,
        );
      }
      if (!decisive) throw unavailable(`the dispatcher's etcd store did not answer (nothing changed): ${message(e)}`);
      // Not known to be applied or not: this leader's state in memory (and the dispatcher's, derived from it) may now
      // differ from etcd's, and a later change computed from it could contradict one etcd applied (two datasets
      // with one id). So it steps down: the next leader reads what etcd has. The caller answers UNAVAILABLE and its
      // client retries there (a retried create finds its dataset: ALREADY_EXISTS).
      this.depose(new Error(`a write's outcome is unknown (${message(e)})`));
      throw unavailable(`the dispatcher's etcd store did not answer: ${message(e)}`);
    }
    if (!res.succeeded) {
      this.depose(new Error('the election key is gone or belongs to another dispatcher'));
      throw this.refusal();
    }
  }

  /** Gives up leadership: revokes the lease (the key goes at once, a standby takes over without waiting the TTL). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.leaseTimer);
    try {
      await this.lease.revoke();
    } catch {
      // The lease runs out by itself.
    }
    this.client.close();
  }

  private refusal(): Error {
    return unavailable(
      `this dispatcher is no longer the leader (${this.deposed?.message ?? 'deposed'}): its writes are refused; ` +
        'retry against the current leader',
    );
  }

  private depose(why: Error): void {
    if (this.deposed || this.closed) return;
    this.deposed = why;
    clearInterval(this.leaseTimer);
    this.emit('deposed', why);
  }

  private apply(c: StoreChange): void {
    if (c.meta) this.meta = c.meta;
    for (const n of c.nodes ?? []) this.nodes.set(n.id, n);
    for (const id of c.removeNodes ?? []) this.nodes.delete(id);
    for (const d of c.putDatasets ?? []) this.datasets.set(d.name, d);
    for (const name of c.removeDatasets ?? []) this.datasets.delete(name);
    for (const t of c.tables ?? []) {
      let rows = this.tables.get(t.table);
      if (!rows) {
        rows = new Map();
        this.tables.set(t.table, rows);
      }
      if (t.value === undefined) rows.delete(t.key);
      else rows.set(t.key, t.value);
    }
  }

  /** Every key and value under `prefix`, `limit` keys per request, at `revision` (the first read's when absent). */
  private async readPaged(
    prefix: string,
    limit: number,
    revision: string | undefined,
    each: (key: string, value: Buffer) => void,
  ): Promise<string> {
    const end = Range.prefix(prefix).end;
    let start = Buffer.from(prefix);
    let rev = revision;
    for (;;) {
      const req = this.ns.getAll().inRange(new Range(start, end)).limit(limit);
      if (rev !== undefined) req.revision(rev);
      const res = await req.exec();
      rev ??= res.header.revision;
      for (const kv of res.kvs) each(kv.key.toString(), kv.value);
      const last = res.kvs[res.kvs.length - 1];
      if (!res.more || !last) return rev;
      start = Buffer.concat([last.key, Buffer.from([0])]);
    }
  }

  private async load(): Promise<void> {
    // All reads at one revision (the first one's): one consistent state, read in pieces.
    const records = new Map<string, Record<string, unknown>>();
    const rev = await this.readPaged(DATASETS, LOAD_KEYS_PER_READ, undefined, (key, raw) => {
      records.set(key.slice(DATASETS.length), JSON.parse(raw.toString()) as Record<string, unknown>);
    });
    for (const prefix of [META_KEY, NODES, TABLES]) {
      await this.readPaged(prefix, LOAD_KEYS_PER_READ, rev, (key, raw) => {
        const value: unknown = JSON.parse(raw.toString());
        if (key === META_KEY) this.meta = value as Meta;
        else if (key.startsWith(NODES)) this.nodes.set(Number(key.slice(NODES.length)), value as NodeRecord);
        else if (key.startsWith(TABLES)) {
          const rest = key.slice(TABLES.length);
          const slash = rest.indexOf('/');
          if (slash > 0) this.apply({ tables: [{ table: rest.slice(0, slash), key: rest.slice(slash + 1), value }] });
        }
      });
    }
    // The pages the records reference; every other page key (left by a change that never switched, or not deleted
    // after one that did) is deleted below.
    const wanted = new Map<string, { name: string; page: number }>();
    const pages = new Map<string, string[]>();
    for (const [name, r] of records) {
      const ref = r.chunkMap as ChunkMapRef | undefined;
      if (Array.isArray(r.chunks) || !ref) continue;
      const whole = (v: unknown, min: number): boolean => Number.isSafeInteger(v) && (v as number) >= min;
      if (!whole(r.id, 0) || !whole(ref.version, 0) || !whole(ref.count, 0) || !whole(ref.perPage, 1)) {
        throw new Error(
          `the record of dataset "${name}" in etcd has an invalid id or chunk map: ${JSON.stringify(ref)}`,
        );
      }
      const n = Math.ceil(ref.count / ref.perPage);
      pages.set(name, new Array<string>(n));
      for (let i = 0; i < n; i++) wanted.set(pageKey(r.id as number, ref.version, i), { name, page: i });
    }
    const stale: string[] = [];
    await this.readPaged(CHUNKS, LOAD_PAGES_PER_READ, rev, (key, raw) => {
      const w = wanted.get(key);
      const list = w ? pages.get(w.name) : undefined;
      if (w && list) list[w.page] = raw.toString();
      else stale.push(key);
    });
    for (const [name, r] of records) {
      const ref = r.chunkMap as ChunkMapRef | undefined;
      let chunks: ChunkRecord[];
      if (Array.isArray(r.chunks)) {
        // Written before chunk maps were paged: its next change writes all its pages.
        chunks = r.chunks as ChunkRecord[];
        this.maps.set(name, { id: r.id as number, version: 0, perPage: CHUNKS_PER_PAGE, pages: [] });
      } else if (ref) {
        const list = pages.get(name) ?? [];
        chunks = [];
        for (let i = 0; i < list.length; i++) {
          const json = list[i];
          if (json === undefined) {
            throw new Error(
              `the chunk map of dataset "${name}" in etcd is incomplete: ${pageKey(r.id as number, ref.version, i)} ` +
                'is missing',
            );
          }
          let page: unknown;
          try {
            page = JSON.parse(json);
          } catch (e) {
            throw new Error(`${pageKey(r.id as number, ref.version, i)} in etcd is not JSON (${message(e)})`, {
              cause: e,
            });
          }
          if (!Array.isArray(page)) throw new Error(`${pageKey(r.id as number, ref.version, i)} in etcd is not a list`);
          for (const c of page as ChunkRecord[]) chunks.push(c);
        }
        if (chunks.length !== ref.count) {
          throw new Error(
            `the chunk map of dataset "${name}" in etcd has ${String(chunks.length)} chunks, its record ${String(ref.count)}`,
          );
        }
        this.maps.set(name, { id: r.id as number, version: ref.version, perPage: ref.perPage, pages: list });
      } else {
        throw new Error(`the record of dataset "${name}" in etcd has neither chunks nor a chunk map`);
      }
      const d: Record<string, unknown> = { ...r, chunks };
      delete d.chunkMap;
      this.datasets.set(name, d as unknown as DatasetRecord);
    }
    if (stale.length > 0) {
      // Whole unreferenced versions (or datasets) go by prefix, single leftover pages by key.
      const keys = new Set<string>();
      const referenced = new Set([...wanted.keys()].map((k) => k.slice(0, k.lastIndexOf('/') + 1)));
      for (const k of stale) {
        const version = k.slice(0, k.lastIndexOf('/') + 1);
        keys.add(referenced.has(version) ? k : `${version}*`);
      }
      const ops = [...keys].map((k) => (k.endsWith('*') ? this.deleteOp(k.slice(0, -1), true) : this.deleteOp(k)));
      for (const batch of this.batches(ops)) {
        // Best effort (the next load tries again), unless this store is no longer the leader.
        await this.guarded(batch, false).catch((e: unknown) => {
          if (this.deposed) throw e;
        });
      }
    }
  }
}

/**
 * Waits until this candidate creates the election key; returns its lease, the key's create revision and until when
 * the lease is surely kept (the last answered keepalive's send time + the TTL).
 *
 * Candidates queue: each puts `candidates/<lease id>` on its own lease, kept alive while it waits, and only the one
 * whose key is oldest (lowest create revision) may create the leader key. So the standby that has waited longest
 * takes over, not whichever process happens to look first (a dispatcher restarted a second after being killed
 * would otherwise race the standby for the key); a dead candidate leaves the queue when its lease runs out.
 */
async function campaign(
  ns: Namespace,
  opts: EtcdStoreOptions,
  log: Logger,
  hooks: { onStandby?: (leader: LeaderInfo | null) => void; signal?: AbortSignal },
): Promise<{ lease: Lease; revision: string; validUntil: number; leader: LeaderInfo }> {
  const me: LeaderInfo = {
    instance: opts.candidate.instance,
    address: opts.candidate.address,
    pid: process.pid,
    host: hostname(),
    sinceUnixMs: 0,
  };
  const ttlMs = opts.electionTtlS * 1000;
  let lastSeen = '';
  for (;;) {
    hooks.signal?.throwIfAborted();
    const grantedAt = Date.now();
    const lease = ns.lease(opts.electionTtlS);
    let validUntil = grantedAt + ttlMs;
    let firedAt = grantedAt;
    const held = { lost: null as Error | null };
    const wake = new AbortController();
    lease.on('keepaliveFired', () => {
      firedAt = Date.now();
    });
    lease.on('keepaliveSucceeded', () => {
      validUntil = Math.max(validUntil, firedAt + ttlMs);
    });
    lease.on('lost', (err) => {
      held.lost = err;
      wake.abort();
    });
    try {
      const id = await lease.grant();
      const mine = `${CANDIDATES}${id}`;
      await lease.put(mine).value(JSON.stringify(me));
      for (;;) {
        hooks.signal?.throwIfAborted();
        if (held.lost !== null || Date.now() >= validUntil) {
          const why = held.lost === null ? '' : ` (${held.lost.message})`;
          throw new Error(`the candidate lease was lost while waiting${why}`);
        }
        const first = await ns.getAll().prefix(CANDIDATES).sort('Create', 'Ascend').limit(1).keys();
        const leader = { ...me, sinceUnixMs: Date.now() };
        const res = await ns
          .if(LEADER_KEY, 'Create', '==', 0)
          .and(mine, 'Create', '>', 0)
          .then(...(first[0] === mine ? [lease.put(LEADER_KEY).value(JSON.stringify(leader))] : []))
          .else(ns.get(LEADER_KEY))
          .commit();
        if (res.succeeded && first[0] === mine) {
          // Stopped meanwhile: give the key up at once (the catch revokes the lease) rather than lead for a moment.
          hooks.signal?.throwIfAborted();
          if (Date.now() >= validUntil) throw new Error('the candidate lease ran out while it was elected');
          await ns.delete().key(mine);
          return { lease, revision: res.header.revision, validUntil, leader };
        }
        const raw = res.succeeded ? null : (res.responses[0]?.response_range.kvs[0]?.value.toString() ?? null);
        if (raw !== null && raw !== lastSeen) {
          lastSeen = raw;
          let current: LeaderInfo | null = null;
          try {
            current = JSON.parse(raw) as LeaderInfo;
          } catch {
            current = null;
          }
          log.info({ leader: current }, 'standby: another dispatcher leads');
          hooks.onStandby?.(current);
        }
        // The leader key is held (wait until it goes) or another candidate is ahead in the queue (it is about to
        // create it, or its lease is running out): look again on a change, or after a second.
        await leaderGone(ns, res.header.revision, hooks.signal, wake.signal);
      }
    } catch (e) {
      await lease.revoke().catch(() => undefined);
      hooks.signal?.throwIfAborted();
      // Wrong credentials or a user without access to the prefix: trying again cannot help.
      if (e instanceof EtcdAuthenticationFailedError || e instanceof EtcdPermissionDeniedError) {
        throw new Error(`etcd refused this dispatcher (${message(e)}): check --etcd-user, its password and its role`, {
          cause: e,
        });
      }
      log.warn({ err: message(e) }, 'election: etcd did not answer or the lease was lost; trying again');
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

/**
 * Resolves when the election key or a queued candidate's key is deleted after `revision`, when `signal` or `wake`
 * aborts, or after a second (to look again: a safety net).
 */
async function leaderGone(ns: Namespace, revision: string, signal?: AbortSignal, wake?: AbortSignal): Promise<void> {
  const from = String(BigInt(revision) + 1n);
  const watchers = await Promise.all([
    ns.watch().key(LEADER_KEY).startRevision(from).create(),
    ns.watch().prefix(CANDIDATES).startRevision(from).create(),
  ]);
  try {
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, 1000);
      const done = (): void => {
        clearTimeout(t);
        resolve();
      };
      for (const w of watchers) {
        w.on('delete', done);
        w.on('error', done);
      }
      signal?.addEventListener('abort', done, { once: true });
      wake?.addEventListener('abort', done, { once: true });
      if (signal?.aborted === true || wake?.aborted === true) done();
    });
  } finally {
    await Promise.all(watchers.map((w) => w.cancel().catch(() => undefined)));
  }
}

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
// Layout under the prefix: `leader`; `candidates/<lease id>`; `state/meta`; `state/nodes/<id>`; `state/datasets/<name>`;
// `state/tables/<table>/<key>`. Values are JSON.
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import {
  Etcd3,
  EtcdAuthenticationFailedError,
  EtcdPermissionDeniedError,
  type IOptions,
  type Lease,
  type Namespace,
} from 'etcd3';
import { resourceExhausted, unavailable } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import {
  changesDatasets,
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

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export class EtcdStore extends EventEmitter<StoreEvents> implements DispatcherStore {
  readonly description: string;
  private meta: Meta | undefined;
  private readonly nodes = new Map<number, NodeRecord>();
  private readonly datasets = new Map<string, DatasetRecord>();
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
    opts: EtcdStoreOptions,
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
    const client = new Etcd3(etcdClientOptions(opts));
    try {
      const ns = client.namespace(opts.prefix);
      const { lease, revision, validUntil, leader } = await campaign(ns, opts, log, hooks);
      const store = new EtcdStore(client, ns, lease, revision, validUntil, leader, opts);
      await store.load();
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
    if (this.deposed) throw this.refusal();
    if (this.closed) throw unavailable('the dispatcher store is closed');
    const ops = [];
    if (c.meta) ops.push(this.ns.put(META_KEY).value(JSON.stringify(c.meta)));
    for (const n of c.nodes ?? []) ops.push(this.ns.put(`${NODES}${String(n.id)}`).value(JSON.stringify(n)));
    for (const id of c.removeNodes ?? []) ops.push(this.ns.delete().key(`${NODES}${String(id)}`));
    for (const d of c.putDatasets ?? []) ops.push(this.ns.put(`${DATASETS}${d.name}`).value(JSON.stringify(d)));
    for (const name of c.removeDatasets ?? []) ops.push(this.ns.delete().key(`${DATASETS}${name}`));
    for (const t of c.tables ?? []) {
      const key = `${TABLES}${t.table}/${t.key}`;
      ops.push(t.value === undefined ? this.ns.delete().key(key) : this.ns.put(key).value(JSON.stringify(t.value)));
    }
    if (ops.length === 0) return;
    let res;
    try {
      res = await this.ns
        .if(LEADER_KEY, 'Create', '==', this.leaderRevision)
        .then(...ops)
        .commit();
    } catch (e) {
      if (/request is too large|message larger than max/i.test(message(e))) {
        throw resourceExhausted(
          `the change is larger than etcd accepts in one request (${message(e)}): raise etcd's --max-request-bytes ` +
            '(a dataset record holds its whole chunk map)',
        );
      }
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
    this.apply(c);
    if (changesDatasets(c)) this.emit('datasets');
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

  private async load(): Promise<void> {
    const all = await this.ns.getAll().prefix(STATE).strings();
    for (const [key, raw] of Object.entries(all)) {
      const value: unknown = JSON.parse(raw);
      if (key === META_KEY) this.meta = value as Meta;
      else if (key.startsWith(NODES)) this.nodes.set(Number(key.slice(NODES.length)), value as NodeRecord);
      else if (key.startsWith(DATASETS)) this.datasets.set(key.slice(DATASETS.length), value as DatasetRecord);
      else if (key.startsWith(TABLES)) {
        const rest = key.slice(TABLES.length);
        const slash = rest.indexOf('/');
        if (slash <= 0) continue;
        this.apply({ tables: [{ table: rest.slice(0, slash), key: rest.slice(slash + 1), value }] });
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

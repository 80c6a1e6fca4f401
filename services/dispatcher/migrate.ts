// `hotpot dispatcher migrate`: copies a stopped dispatcher's whole state from one store to another (LMDB → etcd, when
// a deployment outgrows one machine, and etcd → LMDB, the way back) through the DispatcherStore interface only, so the
// etcd store pages chunk maps and guards every write with its election key as it does for a dispatcher. The target
// must be empty; with `yes` it is written, then opened again and compared record by record with the source.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { validateConfig } from '../common/config.ts';
import { createLogger } from '../common/logger.ts';
import { DispatcherConfig } from './main.ts';
import { ARRIVALS_TABLE, BARRIERS_TABLE } from './barrier.ts';
import { MRSW_LEASES_TABLE, MRSW_META_TABLE } from './mrsw.ts';
import { REVOKED_META_TABLE, REVOKED_TABLE } from './revocations.ts';
import { TOKENS_TABLE } from './tokens.ts';
import type { DatasetRecord, DispatcherStore, Meta, NodeRecord, StoreChange, TableChange } from './store.ts';
import { openStore, parseStoreSpec, type EtcdSettings, type StoreSpec } from './store-open.ts';
import type { LeaderInfo } from './store-etcd.ts';

/** Every named table a dispatcher keeps (tokens.ts, revocations.ts, mrsw.ts, barrier.ts). */
export const DISPATCHER_TABLES = [
  TOKENS_TABLE,
  REVOKED_TABLE,
  REVOKED_META_TABLE,
  MRSW_LEASES_TABLE,
  MRSW_META_TABLE,
  BARRIERS_TABLE,
  ARRIVALS_TABLE,
] as const;

/** The migration cannot go ahead as asked (no source state, a target in use or not empty, a dispatcher running). */
export class MigrateRefused extends Error {}

function validSpec(s: string): boolean {
  try {
    parseStoreSpec(s);
    return true;
  } catch {
    return false;
  }
}

export const MigrateConfig = DispatcherConfig.pick({
  etcdCa: true,
  etcdCert: true,
  etcdKey: true,
  etcdUser: true,
  etcdPassword: true,
  etcdPrefix: true,
  electionTtlS: true,
}).extend({
  from: z.string().refine(validSpec, 'from must be lmdb:DIR or etcd://host:port[,host:port…]'),
  to: z.string().refine(validSpec, 'to must be lmdb:DIR or etcd://host:port[,host:port…]'),
  /** How long to wait for an etcd prefix's election key before concluding that a dispatcher holds it. */
  waitS: z.number().int().min(1).max(600).default(10),
  yes: z.boolean().default(false),
});
export type MigrateConfig = z.infer<typeof MigrateConfig>;

/** The environment variables of the etcd settings (as `hotpot dispatcher` reads them). */
const ETCD_ENV = {
  etcdCa: 'HOTPOT_ETCD_CA',
  etcdCert: 'HOTPOT_ETCD_CERT',
  etcdKey: 'HOTPOT_ETCD_KEY',
  etcdUser: 'HOTPOT_ETCD_USER',
  etcdPassword: 'HOTPOT_ETCD_PASSWORD',
  etcdPrefix: 'HOTPOT_ETCD_PREFIX',
  electionTtlS: 'HOTPOT_ELECTION_TTL',
} as const;

/** The configuration from the command's flags (commander's names: --election-ttl, --wait) over the environment; a
 * ConfigError names a bad field. Other flags are ignored. */
export function migrateConfig(flags: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): MigrateConfig {
  const { electionTtl, wait, ...rest } = flags;
  const given = Object.fromEntries(
    Object.entries({ ...rest, electionTtlS: electionTtl, waitS: wait }).filter(([, v]) => v !== undefined),
  );
  const fromEnv: Record<string, unknown> = {};
  for (const [field, name] of Object.entries(ETCD_ENV)) {
    const v = env[name];
    if (v !== undefined && v !== '') fromEnv[field] = field === 'electionTtlS' ? Number(v) : v;
  }
  return validateConfig(MigrateConfig, { ...fromEnv, ...given });
}

/** Everything a dispatcher store holds, read through its interface. */
export interface StoreSnapshot {
  /** Absent: the store never wrote one (a fresh store). */
  meta: Meta | undefined;
  nodes: NodeRecord[];
  datasets: DatasetRecord[];
  tables: Map<string, [string, unknown][]>;
}

export function snapshot(store: DispatcherStore): StoreSnapshot {
  // A written meta always has a chunk size (>= 4096): 0 marks the default a fresh store returns.
  const meta = store.getMeta(0);
  const tables = new Map<string, [string, unknown][]>();
  for (const name of DISPATCHER_TABLES) tables.set(name, store.table(name).entries());
  return {
    meta: meta.chunkSizeBytes === 0 ? undefined : meta,
    nodes: [...store.allNodes()].sort((a, b) => a.id - b.id),
    datasets: [...store.allDatasets()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
    tables,
  };
}

export function isEmpty(s: StoreSnapshot): boolean {
  return (
    (s.meta?.epoch ?? 0) === 0 &&
    s.nodes.length === 0 &&
    s.datasets.length === 0 &&
    [...s.tables.values()].every((rows) => rows.length === 0)
  );
}

/** JSON with object keys sorted and undefined fields dropped: the same record reads the same from LMDB and etcd. */
function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    x !== null && typeof x === 'object' && !Array.isArray(x)
      ? Object.fromEntries(Object.entries(x as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : 1)))
      : x,
  );
}

export interface KindSummary {
  kind: string;
  records: number;
  /** Chunks of the datasets' maps (datasets only). */
  chunks?: number;
  /** SHA-256 of every record's canonical JSON, in key order. */
  digest: string;
}

/** Counts and a digest per kind: meta, members, datasets, then each table. */
export function summarize(s: StoreSnapshot): KindSummary[] {
  const digest = (records: unknown[]): string => {
    const h = createHash('sha256');
    for (const r of records) h.update(canonical(r)).update('\n');
    return h.digest('hex');
  };
  const out: KindSummary[] = [
    { kind: 'meta', records: s.meta ? 1 : 0, digest: digest(s.meta ? [s.meta] : []) },
    { kind: 'members', records: s.nodes.length, digest: digest(s.nodes) },
    {
      kind: 'datasets',
      records: s.datasets.length,
      chunks: s.datasets.reduce((n, d) => n + d.chunks.length, 0),
      digest: digest(s.datasets),
    },
  ];
  for (const [name, rows] of s.tables) out.push({ kind: name, records: rows.length, digest: digest(rows) });
  return out;
}

/** The processes (other than this one) that have the LMDB environment in `dir` open, as "pid (command)". */
export function lmdbUsers(dir: string): string[] {
  const files = new Set([join(dir, 'data.mdb'), join(dir, 'lock.mdb')]);
  const users: string[] = [];
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((p) => /^\d+$/.test(p) && Number(p) !== process.pid);
  } catch {
    return [];
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue; // gone, or another user's: not readable
    }
    const holds = fds.some((fd) => {
      try {
        return files.has(readlinkSync(`/proc/${pid}/fd/${fd}`));
      } catch {
        return false;
      }
    });
    if (!holds) continue;
    let cmd: string;
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ').slice(0, 120);
    } catch {
      cmd = '';
    }
    users.push(cmd === '' ? pid : `${pid} (${cmd})`);
  }
  return users;
}

function refuseIfInUse(spec: StoreSpec, side: 'source' | 'target'): void {
  if (spec.kind !== 'lmdb') return;
  const users = lmdbUsers(spec.dir);
  if (users.length > 0) {
    throw new MigrateRefused(
      `the ${side} lmdb:${spec.dir} is open in process ${users.join(', ')}: a dispatcher runs on it; it must be ` +
        'stopped first',
    );
  }
}

function describe(spec: StoreSpec, prefix: string): string {
  return spec.kind === 'lmdb' ? `lmdb:${spec.dir}` : `etcd://${spec.endpoints.join(',')} (prefix ${prefix})`;
}

/** Opens a store; an etcd one as an election candidate that gives up after `waitS` (a dispatcher leads there). */
async function open(spec: StoreSpec, cfg: MigrateConfig, settings: EtcdSettings): Promise<DispatcherStore> {
  const log = createLogger('migrate', process.env.HOTPOT_LOG_LEVEL ?? 'error');
  let leader: LeaderInfo | null = null;
  const signal = AbortSignal.timeout(cfg.waitS * 1000);
  try {
    return await openStore(spec, settings, { instance: 'hotpot-dispatcher-migrate', address: '' }, log, {
      onStandby: (l) => (leader = l),
      signal,
    });
  } catch (e) {
    if (!signal.aborted) throw e;
    const l = leader as LeaderInfo | null;
    const who =
      l === null
        ? 'etcd did not answer, or another candidate is queued for it'
        : `a dispatcher leads there (instance ${l.instance}, address ${l.address || '?'}, pid ${String(l.pid)} on ` +
          `${l.host}): stop it first`;
    throw new MigrateRefused(
      `could not become the only writer of ${describe(spec, settings.prefix)} within ${String(cfg.waitS)} s: ${who}`,
    );
  }
}

/** Splits `changes` into commits of at most `maxOps` changes and about `maxBytes` bytes of JSON (an etcd store
 * writes a commit as one transaction: at most 128 operations and 1.5 MiB by default). */
function batches<T>(items: T[], size: (t: T) => number, maxOps = 100, maxBytes = 512 * 1024): T[][] {
  const out: T[][] = [];
  let cur: T[] = [];
  let bytes = 0;
  for (const it of items) {
    const b = size(it);
    if (cur.length > 0 && (cur.length >= maxOps || bytes + b > maxBytes)) {
      out.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(it);
    bytes += b;
  }
  if (cur.length > 0) out.push(cur);
  return out;
}

/** Writes every record of `s` into the empty `target`; the meta (epoch and counters) last. */
async function copy(s: StoreSnapshot, target: DispatcherStore): Promise<void> {
  for (const nodes of batches(s.nodes, (n) => JSON.stringify(n).length)) await target.commit({ nodes });
  const rows: TableChange[] = [];
  for (const [name, entries] of s.tables) {
    const t = target.table(name);
    for (const [key, value] of entries) rows.push(t.put(key, value));
  }
  for (const tables of batches(rows, (r) => r.key.length + JSON.stringify(r.value).length)) {
    await target.commit({ tables });
  }
  // One dataset per commit: the etcd store writes its chunk map in pages (a 1 TiB map is ~23 MB of JSON).
  for (const d of s.datasets) await target.commit({ putDatasets: [d] });
  if (s.meta) await target.commit({ meta: s.meta } satisfies StoreChange);
}

export interface MigrateResult {
  from: string;
  to: string;
  copied: boolean;
  kinds: (KindSummary & { verified?: boolean })[];
}

/**
 * Checks both stores and, with `cfg.yes`, copies the source into the target and verifies it (every kind's count and
 * digest read back from the target). Throws MigrateRefused when it cannot go ahead; changes nothing without `yes`.
 */
export async function migrate(cfg: MigrateConfig): Promise<MigrateResult> {
  const from = parseStoreSpec(cfg.from);
  const to = parseStoreSpec(cfg.to);
  if (from.kind === 'etcd' && to.kind === 'etcd') {
    throw new MigrateRefused('both stores are etcd: migrate copies from or to lmdb:DIR');
  }
  const settings: EtcdSettings = {
    caFile: cfg.etcdCa,
    certFile: cfg.etcdCert,
    keyFile: cfg.etcdKey,
    user: cfg.etcdUser,
    password: cfg.etcdPassword,
    prefix: cfg.etcdPrefix,
    electionTtlS: cfg.electionTtlS,
  };
  if (from.kind === 'lmdb' && !existsSync(join(from.dir, 'data.mdb'))) {
    throw new MigrateRefused(`the source lmdb:${from.dir} has no dispatcher state (no data.mdb there)`);
  }
  refuseIfInUse(from, 'source');
  refuseIfInUse(to, 'target');
  const result: MigrateResult = {
    from: describe(from, cfg.etcdPrefix),
    to: describe(to, cfg.etcdPrefix),
    copied: false,
    kinds: [],
  };
  const source = await open(from, cfg, settings);
  try {
    const s = snapshot(source);
    if (isEmpty(s)) throw new MigrateRefused(`the source ${result.from} has no dispatcher state`);
    result.kinds = summarize(s);
    // An LMDB target that does not exist yet is empty; opening it would create it (the dry run changes nothing).
    const fresh = to.kind === 'lmdb' && !existsSync(join(to.dir, 'data.mdb'));
    if (fresh && !cfg.yes) return result;
    let target = await open(to, cfg, settings);
    try {
      if (!isEmpty(snapshot(target))) {
        throw new MigrateRefused(
          `the target ${result.to} already holds dispatcher state: migrate only into an empty ` +
            (to.kind === 'etcd' ? 'prefix (choose another --etcd-prefix)' : 'directory'),
        );
      }
      if (!cfg.yes) return result;
      await copy(s, target);
      result.copied = true;
      // Read back what the target store has now (etcd: loaded again by a new leader; LMDB: a new environment).
      await target.close();
      target = await open(to, cfg, settings);
      const back = new Map(summarize(snapshot(target)).map((k) => [k.kind, k]));
      result.kinds = result.kinds.map((k) => {
        const b = back.get(k.kind);
        return { ...k, verified: b?.records === k.records && b.digest === k.digest && b.chunks === k.chunks };
      });
      const bad = result.kinds.filter((k) => k.verified !== true);
      if (bad.length > 0) {
        throw new Error(
          `the target ${result.to} read back differs from the source in: ${bad.map((k) => k.kind).join(', ')}; ` +
            'do not start a dispatcher on it (empty it and migrate again)',
        );
      }
      return result;
    } finally {
      await target.close();
    }
  } finally {
    await source.close();
  }
}

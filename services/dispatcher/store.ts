// The dispatcher's durable state behind one interface (DispatcherStore), with two backends: LMDB in a local
// directory (store-lmdb.ts, the default) and etcd (store-etcd.ts, for standby dispatchers that take over). Node
// records, datasets with their chunk maps, counters, and named tables (MRSW leases, tokens, revoked certificates).
// Reads are synchronous (LMDB reads its map; the etcd store keeps the copy it loaded as leader); every change is one
// durable transaction, awaited before the dispatcher answers, so `kill -9` loses nothing it acknowledged.
import type { EventEmitter } from 'node:events';
import type { DatasetAccess } from '../common/access.ts';

export interface NodeRecord {
  id: number;
  identity: string;
  controlAddress: string;
  dataAddress: string;
  state: 'ALIVE' | 'DEAD' | 'LEFT';
  joinedUnixMs: number;
  stateEpoch: number;
  /** The node's store identity at its last join (absent in records written before store identities existed). */
  storeId?: string;
  storeIncarnation?: number;
  /** The membership epoch at which the node last rejoined with a replaced store (absent: never). Until a live owner
   * reports its pages back at N copies at that epoch or later, the node may lack copies that owner counted on. */
  storeReplacedEpoch?: number;
  /** From its heartbeats: the membership epoch up to which every page it owns was found at N live copies (absent:
   * never reported; kept across its rejoins and the dispatcher's restarts). A dead owner's chunks do not fail over,
   * and a recovering owner reports its unheld pages lost, while N or more members lost their stores since. */
  replicatedThroughEpoch?: number;
}

export type Mode = 'mrmw' | 'mrsw';

export interface ChunkRecord {
  owner: number;
  replicas: number[];
  /** The store (of the owner) that holds the chunk's pages. When the owner rejoins with another store, the chunk is
   * "recovering" until the owner reports it recovered them from the other holders. Absent in older records: the
   * owner's store as it is. */
  ownerStore?: string;
  /** How many times the chunk failed over (its owner was declared dead and another node took it); its owner versions
   * every page above era << 40. Absent in records written before failover existed, and while it never failed over:
   * 0. */
  era?: number;
  /** Pages of the chunk (dataset page numbers, as [first, count] ranges: sorted, not overlapping) that no node held
   * when the owner recovered the chunk: reads and commits of them fail with DATA_LOSS until an operator accepts the
   * loss (ForgetLostPages). Absent: none. */
  lost?: [number, number][];
}

export interface DatasetRecord {
  name: string;
  id: number;
  sizeBytes: number;
  mode: Mode;
  replicas: number;
  chunkSizeBytes: number;
  createdUnixMs: number;
  generation: number;
  chunks: ChunkRecord[];
  /** Who may open it from a node's app socket (datasetAccess): owner uid/gid and permission bits. Absent in records
   * written before access control: uid 0, gid 0, 0600. */
  access?: DatasetAccess;
}

export type { DatasetAccess };

/** Access of a record (the default for records written before access control). */
export function datasetAccess(d: Pick<DatasetRecord, 'access'>): DatasetAccess {
  return d.access ?? { uid: 0, gid: 0, perm: 0o600 };
}

export interface Meta {
  epoch: number;
  nextNodeId: number;
  nextDatasetId: number;
  placementCursor: number;
  chunkSizeBytes: number;
}

/** One put (value set) or remove (value undefined) in a named table, applied by DispatcherStore.commit. */
export interface TableChange {
  readonly table: string;
  readonly key: string;
  readonly value: unknown;
}

/** A named table of records by string key (an LMDB sub-database; a key prefix in etcd). */
export interface Table<V> {
  get(key: string): V | undefined;
  entries(): [string, V][];
  count(): number;
  /** The change that puts `value` under `key` (written by DispatcherStore.commit, not here). */
  put(key: string, value: V): TableChange;
  /** The change that removes `key` (written by DispatcherStore.commit, not here). */
  remove(key: string): TableChange;
}

/** Several puts and removes, applied as one durable transaction. */
export interface StoreChange {
  meta?: Meta;
  nodes?: NodeRecord[];
  removeNodes?: number[];
  putDatasets?: DatasetRecord[];
  removeDatasets?: string[];
  tables?: TableChange[];
}

/**
 * 'datasets': a committed change put or removed datasets (the dataset watch streams the namespace again).
 * 'deposed': this dispatcher is no longer the one allowed to write (etcd: its election key is gone); every later
 * commit fails with UNAVAILABLE.
 */
export interface StoreEvents {
  datasets: [];
  deposed: [Error];
}

/** Records read from a store are shared with it (the etcd store keeps them in memory): never change one in place; commit
 * a new one. */
export interface DispatcherStore extends EventEmitter<StoreEvents> {
  /** Where the state is, for logs: "lmdb:/path" or "etcd://host:port,…". */
  readonly description: string;
  getMeta(chunkSizeBytes: number): Meta;
  allNodes(): NodeRecord[];
  allDatasets(): DatasetRecord[];
  getDataset(name: string): DatasetRecord | undefined;
  table<V>(name: string): Table<V>;
  /** Tells standbys (etcd) where this leader serves, once it listens; nothing for LMDB. */
  announce(address: string): Promise<void>;
  /** Applies every change in one durable transaction; resolves once it is durable, or rejects and changes nothing. */
  commit(change: StoreChange): Promise<void>;
  close(): Promise<void>;
}

/** Whether a change puts or removes datasets (the 'datasets' event). */
export function changesDatasets(c: StoreChange): boolean {
  return (c.putDatasets?.length ?? 0) > 0 || (c.removeDatasets?.length ?? 0) > 0;
}

// Durable dispatcher metadata in LMDB (lmdb-js): node records, datasets with their chunk maps, counters.
// Every acknowledged change is awaited through a committed (fsynced) LMDB transaction, so `kill -9` of the
// dispatcher loses nothing it answered.
import { EventEmitter } from 'node:events';
import { mkdirSync } from 'node:fs';
import { open, type Database, type RootDatabase } from 'lmdb';
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

interface Meta {
  epoch: number;
  nextNodeId: number;
  nextDatasetId: number;
  placementCursor: number;
  chunkSizeBytes: number;
}

/** 'datasets': a committed change put or removed datasets (the dataset watch streams the namespace again). */
export class MetadataStore extends EventEmitter<{ datasets: [] }> {
  private readonly root: RootDatabase;
  private readonly meta: Database<Meta, string>;
  private readonly nodes: Database<NodeRecord, number>;
  private readonly datasets: Database<DatasetRecord, string>;

  constructor(dir: string) {
    super();
    mkdirSync(dir, { recursive: true });
    // Default lmdb-js settings sync on commit; `await` of a write resolves only after the commit is durable.
    this.root = open({ path: dir, compression: false });
    this.meta = this.root.openDB<Meta, string>({ name: 'meta' });
    this.nodes = this.root.openDB<NodeRecord, number>({ name: 'nodes' });
    this.datasets = this.root.openDB<DatasetRecord, string>({ name: 'datasets' });
  }

  getMeta(chunkSizeBytes: number): Meta {
    return this.meta.get('meta') ?? { epoch: 0, nextNodeId: 1, nextDatasetId: 1, placementCursor: 0, chunkSizeBytes };
  }

  allNodes(): NodeRecord[] {
    return [...this.nodes.getRange()].map((e) => e.value);
  }

  allDatasets(): DatasetRecord[] {
    return [...this.datasets.getRange()].map((e) => e.value);
  }

  getDataset(name: string): DatasetRecord | undefined {
    return this.datasets.get(name);
  }

  /** Applies several puts/removes in one durable transaction. */
  async commit(ops: {
    meta?: Meta;
    nodes?: NodeRecord[];
    removeNodes?: number[];
    putDatasets?: DatasetRecord[];
    removeDatasets?: string[];
  }): Promise<void> {
    await this.root.transaction(() => {
      if (ops.meta) void this.meta.put('meta', ops.meta);
      for (const n of ops.nodes ?? []) void this.nodes.put(n.id, n);
      for (const id of ops.removeNodes ?? []) void this.nodes.remove(id);
      for (const d of ops.putDatasets ?? []) void this.datasets.put(d.name, d);
      for (const name of ops.removeDatasets ?? []) void this.datasets.remove(name);
    });
    if ((ops.putDatasets?.length ?? 0) > 0 || (ops.removeDatasets?.length ?? 0) > 0) this.emit('datasets');
  }

  /** A named sub-database of this environment; writes through `transaction` are durable when awaited. */
  subDatabase<V, K extends string | number>(name: string): Database<V, K> {
    return this.root.openDB<V, K>({ name });
  }

  /** Runs `fn` in one durable write transaction. */
  async transaction(fn: () => void): Promise<void> {
    await this.root.transaction(fn);
  }

  async close(): Promise<void> {
    await this.root.close();
  }
}

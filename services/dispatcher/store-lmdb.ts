// The LMDB backend of the dispatcher store (lmdb-js): one environment in a local directory, the default. Every
// acknowledged change is awaited through a committed (fsynced) LMDB transaction. Named tables are sub-databases of
// the same environment, so one commit spans them all. The layout on disk is the one the dispatcher always had.
import { EventEmitter } from 'node:events';
import { mkdirSync } from 'node:fs';
import { open, type Database, type RootDatabase } from 'lmdb';
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

export class LmdbStore extends EventEmitter<StoreEvents> implements DispatcherStore {
  readonly description: string;
  private readonly root: RootDatabase;
  private readonly meta: Database<Meta, string>;
  private readonly nodes: Database<NodeRecord, number>;
  private readonly datasets: Database<DatasetRecord, string>;
  private readonly tables = new Map<string, Database<unknown, string>>();

  constructor(dir: string) {
    super();
    this.description = `lmdb:${dir}`;
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

  table<V>(name: string): Table<V> {
    const db = this.sub(name) as Database<V, string>;
    return {
      get: (key) => db.get(key),
      entries: () => [...db.getRange()].map((e) => [e.key, e.value]),
      count: () => db.getKeysCount(),
      put: (key, value) => ({ table: name, key, value }),
      remove: (key) => ({ table: name, key, value: undefined }),
    };
  }

  announce(): Promise<void> {
    return Promise.resolve();
  }

  async commit(ops: StoreChange): Promise<void> {
    await this.root.transaction(() => {
      if (ops.meta) void this.meta.put('meta', ops.meta);
      for (const n of ops.nodes ?? []) void this.nodes.put(n.id, n);
      for (const id of ops.removeNodes ?? []) void this.nodes.remove(id);
      for (const d of ops.putDatasets ?? []) void this.datasets.put(d.name, d);
      for (const name of ops.removeDatasets ?? []) void this.datasets.remove(name);
      for (const c of ops.tables ?? []) {
        if (c.value === undefined) void this.sub(c.table).remove(c.key);
        else void this.sub(c.table).put(c.key, c.value);
      }
    });
    if (changesDatasets(ops)) this.emit('datasets');
  }

  async close(): Promise<void> {
    await this.root.close();
  }

  private sub(name: string): Database<unknown, string> {
    let db = this.tables.get(name);
    if (!db) {
      db = this.root.openDB<unknown, string>({ name });
      this.tables.set(name, db);
    }
    return db;
  }
}

// examples/kv: a key-value store on one mapped Hotpot dataset (README.md).
export {
  KvStore,
  type Batch,
  type Bytes,
  type OpenStoreOptions,
  type StoreCounters,
  type StoreOptions,
} from './store.ts';
export { KvError, planLayout, type CreateOptions, type Layout } from './layout.ts';
export type { Entry, TableStats } from './table.ts';

// Which store a dispatcher uses, from `--store`: `lmdb:DIR` (the default: `lmdb:<state dir>`) or
// `etcd://host:port[,host:port…]` (standby dispatchers that take over; TLS and auth from their own options).
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Logger } from '../common/logger.ts';
import type { DispatcherStore } from './store.ts';
import type { LeaderInfo } from './store-etcd.ts';

export type StoreSpec = { kind: 'lmdb'; dir: string } | { kind: 'etcd'; endpoints: string[] };

/** Parses a --store value; throws with a message naming the flag. */
export function parseStoreSpec(spec: string): StoreSpec {
  if (spec.startsWith('lmdb:')) {
    const dir = spec.slice('lmdb:'.length);
    if (dir === '') throw new Error('--store lmdb:DIR needs a directory');
    return { kind: 'lmdb', dir: resolve(dir) };
  }
  const m = /^etcd:\/\/(.+)$/.exec(spec);
  if (m?.[1] !== undefined) {
    const endpoints = m[1].split(',').map((e) => e.trim());
    for (const e of endpoints) {
      if (!/^[A-Za-z0-9.-]+:\d{1,5}$|^\[[0-9A-Fa-f:]+\]:\d{1,5}$/.test(e)) {
        throw new Error(`--store etcd://…: "${e}" is not host:port`);
      }
    }
    return { kind: 'etcd', endpoints };
  }
  throw new Error(`--store must be lmdb:DIR or etcd://host:port[,host:port…] (got "${spec}")`);
}

export interface EtcdSettings {
  /** PEM files: the CA of etcd's certificate, and this dispatcher's client certificate and key. */
  caFile?: string | undefined;
  certFile?: string | undefined;
  keyFile?: string | undefined;
  user?: string | undefined;
  password?: string | undefined;
  prefix: string;
  electionTtlS: number;
}

/**
 * Opens the store. For etcd this waits until this dispatcher leads (it is a standby until then: `onStandby` is told
 * who leads).
 */
export async function openStore(
  spec: StoreSpec,
  etcd: EtcdSettings,
  candidate: { instance: string; address: string },
  log: Logger,
  hooks: { onStandby?: (leader: LeaderInfo | null) => void; signal?: AbortSignal } = {},
): Promise<DispatcherStore> {
  if (spec.kind === 'lmdb') {
    const { LmdbStore } = await import('./store-lmdb.ts');
    return new LmdbStore(spec.dir);
  }
  const { EtcdStore } = await import('./store-etcd.ts');
  const read = (f: string): Buffer => readFileSync(resolve(f));
  if ((etcd.certFile === undefined) !== (etcd.keyFile === undefined)) {
    throw new Error('--etcd-cert and --etcd-key go together');
  }
  if (etcd.certFile !== undefined && etcd.caFile === undefined) throw new Error('--etcd-cert needs --etcd-ca');
  if ((etcd.user === undefined) !== (etcd.password === undefined)) {
    throw new Error('--etcd-user needs a password (HOTPOT_ETCD_PASSWORD) and the other way round');
  }
  return EtcdStore.open(
    {
      endpoints: spec.endpoints,
      ...(etcd.caFile !== undefined
        ? {
            tls: {
              ca: read(etcd.caFile),
              ...(etcd.certFile !== undefined ? { cert: read(etcd.certFile) } : {}),
              ...(etcd.keyFile !== undefined ? { key: read(etcd.keyFile) } : {}),
            },
          }
        : {}),
      ...(etcd.user !== undefined && etcd.password !== undefined
        ? { auth: { username: etcd.user, password: etcd.password } }
        : {}),
      prefix: etcd.prefix,
      electionTtlS: etcd.electionTtlS,
      candidate,
    },
    log,
    hooks,
  );
}

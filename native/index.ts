// The one typed boundary to the native addon (conventions.md). Every native function is declared here once,
// with opaque handle types; native failures become `NativeError`s with a gRPC-style `code` in one place.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** gRPC-aligned status names used by the engine (native/src/common/status.h). */
export type NativeCode =
  | 'CANCELLED'
  | 'UNKNOWN'
  | 'INVALID_ARGUMENT'
  | 'DEADLINE_EXCEEDED'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'PERMISSION_DENIED'
  | 'RESOURCE_EXHAUSTED'
  | 'FAILED_PRECONDITION'
  | 'ABORTED'
  | 'OUT_OF_RANGE'
  | 'UNIMPLEMENTED'
  | 'INTERNAL'
  | 'UNAVAILABLE'
  | 'DATA_LOSS'
  | 'UNAUTHENTICATED';

export class NativeError extends Error {
  override readonly name = 'NativeError';
  constructor(
    readonly code: NativeCode,
    message: string,
    readonly details: unknown = null,
  ) {
    super(message);
  }
}

export interface EngineInfo {
  version: string;
  build: string;
  protocolVersion: number;
}

interface RawAddon {
  engineInfo(): EngineInfo;
  [name: string]: unknown;
}

function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'native'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('hotpot: cannot find the project root (package.json) above native/index.ts');
    dir = up;
  }
}

export const projectRoot = findRoot();

function load(): RawAddon {
  const path = join(projectRoot, 'native', 'build', 'Release', 'hotpot_native.node');
  if (!existsSync(path)) {
    throw new Error(`hotpot: native engine not built (${path} missing); run "npm run build:native"`);
  }
  return createRequire(import.meta.url)(path) as RawAddon;
}

const addon = load();

/** Converts an error thrown by the addon (an Error with a string `code`) into a NativeError. */
export function toNativeError(e: unknown): NativeError {
  if (e instanceof NativeError) return e;
  if (e instanceof Error) {
    const code = (e as Error & { code?: unknown }).code;
    const details = (e as Error & { details?: unknown }).details ?? null;
    return new NativeError(typeof code === 'string' ? (code as NativeCode) : 'INTERNAL', e.message, details);
  }
  return new NativeError('INTERNAL', String(e));
}

function wrap<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => R {
  return (...args: A): R => {
    try {
      const r = fn(...args);
      if (r instanceof Promise) return r.catch((e: unknown) => Promise.reject(toNativeError(e))) as R;
      return r;
    } catch (e) {
      throw toNativeError(e);
    }
  };
}

export const engineInfo = wrap((): EngineInfo => addon.engineInfo());

// ---- engine (node daemon side) ----
// The node's native data plane (native/src/engine/engine.h). One handle per daemon; engine threads reach
// JavaScript only through onOpenRequest / onLog (called on the event loop).

/** Opaque engine handle returned by createEngine. */
export type EngineHandle = { readonly __brand: 'EngineHandle' };

export type DatasetMode = 'mrmw' | 'mrsw';

export interface EngineOpenRequest {
  requestId: number;
  name: string;
  create: null | { sizeBytes: number; mode: DatasetMode; replicas: number };
  uid: number;
  pid: number;
}

export interface EngineOptions {
  nodeId?: number;
  clusterSecret: string;
  poolDir: string;
  dataDir?: string;
  durability?: 'memory' | 'disk';
  dataHost?: string;
  /** 0 = any free port (read it back with engineDataPort). */
  dataPort?: number;
  /** Unix socket for apps; empty = no shim server. */
  shimSocketPath?: string;
  chunkSizeBytes?: number;
  requestTimeoutMs?: number;
  /** An app asked to open/create a dataset: resolve it, engineOpenDataset, then engineCompleteOpen. */
  onOpenRequest?: (req: EngineOpenRequest) => void;
  onLog?: (line: string) => void;
}

export interface EngineMember {
  id: number;
  dataAddress: string;
  alive: boolean;
}

export interface EngineChunk {
  index: number;
  owner: number;
  replicas?: number[];
  ownerAlive?: boolean;
}

export interface EngineDatasetInfo {
  id: number;
  name?: string;
  sizeBytes: number;
  mode?: DatasetMode;
  replicas?: number;
  chunkSizeBytes?: number;
  chunks: EngineChunk[];
}

export type EngineOpenResult = { ok: true; datasetId: number } | { ok: false; code: NativeCode; message: string };

export interface EngineCounters {
  faultsLocal: number;
  faultsRemote: number;
  fetchesServed: number;
  fetchRetries: number;
  commits: number;
  commitAborts: number;
  conflicts: number;
  coherencePushes: number;
  coherencePages: number;
  replicasSent: number;
  replicasReceived: number;
  bytesIn: number;
  bytesOut: number;
}

export interface EngineChunkStat {
  datasetId: number;
  chunk: number;
  owned: boolean;
  pagesOwned: number;
  pagesCommitted: number;
  pagesRedundant: number;
}

export interface EngineStats {
  nodeId: number;
  dataPort: number;
  counters: EngineCounters;
  pool: {
    bytesResident: number;
    redoInFlight: number;
    syncs: number;
    syncedCommits: number;
    datasets: {
      datasetId: number;
      sizeBytes: number;
      pagesOwned: number;
      pagesCommitted: number;
      pagesRedundant: number;
    }[];
  };
  openSessions: number;
  lockedPages: number;
  chunks: EngineChunkStat[];
}

export interface EnginePageDump {
  state: 'absent' | 'committed' | 'redundant' | 'owned';
  version: number;
  data: Buffer;
}

interface EngineAddon {
  createEngine(options: EngineOptions): EngineHandle;
  engineDataPort(h: EngineHandle): number;
  engineSetNodeId(h: EngineHandle, nodeId: number): void;
  engineSetMembers(h: EngineHandle, epoch: number, members: EngineMember[]): void;
  engineOpenDataset(h: EngineHandle, info: EngineDatasetInfo): void;
  engineCompleteOpen(h: EngineHandle, requestId: number, result: EngineOpenResult): void;
  engineStats(h: EngineHandle): EngineStats;
  engineDumpPage(h: EngineHandle, datasetId: number, page: number): EnginePageDump;
  engineShutdown(h: EngineHandle): void;
}

const engineAddon = addon as unknown as EngineAddon;

export const createEngine = wrap((options: EngineOptions): EngineHandle => engineAddon.createEngine(options));
export const engineDataPort = wrap((h: EngineHandle): number => engineAddon.engineDataPort(h));
export const engineSetNodeId = wrap((h: EngineHandle, nodeId: number): void => engineAddon.engineSetNodeId(h, nodeId));
export const engineSetMembers = wrap((h: EngineHandle, epoch: number, members: EngineMember[]): void =>
  engineAddon.engineSetMembers(h, epoch, members),
);
export const engineOpenDataset = wrap((h: EngineHandle, info: EngineDatasetInfo): void =>
  engineAddon.engineOpenDataset(h, info),
);
export const engineCompleteOpen = wrap((h: EngineHandle, requestId: number, result: EngineOpenResult): void =>
  engineAddon.engineCompleteOpen(h, requestId, result),
);
export const engineStats = wrap((h: EngineHandle): EngineStats => engineAddon.engineStats(h));
export const engineDumpPage = wrap((h: EngineHandle, datasetId: number, page: number): EnginePageDump =>
  engineAddon.engineDumpPage(h, datasetId, page),
);
export const engineShutdown = wrap((h: EngineHandle): void => engineAddon.engineShutdown(h));

// ---- shim (SDK side) ----
// The app side of the mmap shim (native/src/addon/shim_binding.cc over include/hotpot.h): connect to the node
// daemon's unix socket, open a dataset, map windows of it as ArrayBuffers, commit / roll back / refresh.

/** Opaque handle: a connection to the node daemon. */
export interface ShimConnection {
  readonly __brand: 'ShimConnection';
}
/** Opaque handle: an open dataset of a connection. */
export interface ShimDataset {
  readonly __brand: 'ShimDataset';
}

export type ShimMode = 'MRMW' | 'MRSW';

export interface ShimCreateOptions {
  size: number | bigint;
  mode?: ShimMode;
  replicas?: number;
}

export interface ShimDatasetInfo {
  id: number;
  size: number;
  mode: ShimMode;
  replicas: number;
  chunkSize: number;
}

export interface ShimOpenResult {
  dataset: ShimDataset;
  info: ShimDatasetInfo;
}

export interface ShimCommitResult {
  /** Distinct nodes durably holding every committed byte. */
  copies: number;
  pages: number;
  ranges: number;
  bytes: number;
}

/** `details` of an ABORTED commit error (first 64 conflicting ranges). */
export interface ShimCommitConflicts {
  conflicts: { offset: number; len: number }[];
  totalConflicts: number;
}

interface ShimAddon {
  shimConnect(path: string | null): ShimConnection;
  shimDisconnect(conn: ShimConnection): void;
  shimOpen(conn: ShimConnection, name: string, create: ShimCreateOptions | null): Promise<ShimOpenResult>;
  shimMap(ds: ShimDataset, offset: number | bigint, length: number | bigint): ArrayBuffer;
  shimCommit(ds: ShimDataset, replicas: number): Promise<ShimCommitResult>;
  shimRollback(ds: ShimDataset): Promise<void>;
  shimRefresh(ds: ShimDataset): Promise<void>;
  shimClose(ds: ShimDataset): void;
}

const shimAddon = addon as unknown as ShimAddon;

/** Connects to the node daemon; `path` null = $HOTPOT_SOCKET, else /run/hotpot/node.sock. */
export const shimConnect = wrap((path: string | null = null): ShimConnection => shimAddon.shimConnect(path));
/** Drops the handle; open datasets keep the socket until they are closed. */
export const shimDisconnect = wrap((conn: ShimConnection): void => shimAddon.shimDisconnect(conn));
/** Opens (with `create`, creates if missing) a dataset by name; runs off the JS thread. */
export const shimOpen = wrap(
  (conn: ShimConnection, name: string, create: ShimCreateOptions | null = null): Promise<ShimOpenResult> =>
    shimAddon.shimOpen(conn, name, create),
);
/**
 * Maps [offset, offset + length) of the dataset (offset a multiple of 4096; length 0 = to the end). Writes are
 * private until commit. The buffer is detached (length 0) when the dataset is closed.
 */
export const shimMap = wrap((ds: ShimDataset, offset: number | bigint = 0, length: number | bigint = 0): ArrayBuffer =>
  shimAddon.shimMap(ds, offset, length),
);
/** Commits every private page to `replicas` nodes (0 = dataset default). Rejects with code 'ABORTED' and
 * `details: ShimCommitConflicts` on a conflict (private pages are kept). */
export const shimCommit = wrap((ds: ShimDataset, replicas: number = 0): Promise<ShimCommitResult> =>
  shimAddon.shimCommit(ds, replicas),
);
/** Discards every private page. */
export const shimRollback = wrap((ds: ShimDataset): Promise<void> => shimAddon.shimRollback(ds));
/** Drops private pages that carry no change, so the mapping shows the latest committed data. */
export const shimRefresh = wrap((ds: ShimDataset): Promise<void> => shimAddon.shimRefresh(ds));
/** Detaches every mapped buffer, unmaps and closes the dataset. */
export const shimClose = wrap((ds: ShimDataset): void => shimAddon.shimClose(ds));

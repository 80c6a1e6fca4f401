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
  /** Bytes per page (native/src/common/page.h); services/common/page.ts PAGE_SIZE is checked against it. */
  pageSize: number;
}

interface RawAddon {
  engineInfo(): EngineInfo;
  [name: string]: unknown;
}

// The root is the first folder above this file holding native/binding.gyp: the repository when this runs from
// native/ or from dist/native/ (npm run build), the SDK package's dist/ when it runs from the installed SDK
// (scripts/build-sdk.mjs puts the addon's sources and build there).
function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'native', 'binding.gyp'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('hotpot: cannot find native/binding.gyp above native/index.ts');
    dir = up;
  }
}

export const projectRoot = findRoot();

/**
 * HOTPOT_TEST_ADDON=1 loads the test build of the engine (hotpot_native_test: fault points compiled in,
 * common/fault_points.h); the tests run with it (package.json "ava" config), so the daemons they spawn inherit it.
 */
export const testAddon = process.env.HOTPOT_TEST_ADDON === '1';

function load(): RawAddon {
  const file = testAddon ? 'hotpot_native_test.node' : 'hotpot_native.node';
  const path = join(projectRoot, 'native', 'build', 'Release', file);
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
  /** The app's credentials (SO_PEERCRED and SO_PEERGROUPS of its socket). */
  uid: number;
  gid: number;
  pid: number;
  /** Supplementary groups (empty for gRPC principals). */
  groups: number[];
  /** Opened for reading only: read permission suffices, and its commits are refused. */
  readOnly: boolean;
}

/** Who opens a dataset through the Data API, and for what. */
export interface OpenCaller {
  uid: number;
  gid: number;
  groups?: number[];
  readOnly?: boolean;
}

/** A unix socket peer's credentials (SO_PEERCRED, SO_PEERGROUPS). */
export interface SocketPeer {
  pid: number;
  uid: number;
  gid: number;
  groups: number[];
}

export interface EngineOptions {
  nodeId?: number;
  clusterSecret: string;
  /** Encrypt and authenticate data-plane frames after the handshake (default true; false only with --insecure). */
  protectFrames?: boolean;
  /**
   * This node's TLS certificate and key and the cluster CA (PEM). Given: peers authenticate each other on the data
   * plane by certificate (each proves the identity the membership lists for its id). Absent (--insecure): by the
   * cluster secret. Every node of a cluster must do the same.
   */
  tls?: EngineTls;
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
  /** How long a fault on a page whose owner is down waits for an owner (default 10000; 0 = fail at once). */
  ownerWaitMs?: number;
  /** The data plane (default tcp); rdma needs kmod/hotpot_rdma.ko loaded (/dev/hotpot-rdma), else createEngine throws. */
  transport?: 'tcp' | 'rdma';
  /** An app asked to open/create a dataset: resolve it, engineOpenDataset, then engineCompleteOpen. */
  onOpenRequest?: (req: EngineOpenRequest) => void;
  onLog?: (line: string) => void;
}

export interface EngineTls {
  certPem: string;
  keyPem: string;
  caPem: string;
}

export interface EngineMember {
  id: number;
  dataAddress: string;
  /** The member's identity (its --name): the CN its certificate must name on the data plane ('' = unknown). */
  identity: string;
  alive: boolean;
  /** Membership epoch at which the member last changed state (peers fence a dead node by it). */
  stateEpoch: number;
  /** The member's store identity at its last join ('' = unknown); a change means it lost its copies. */
  storeId: string;
  /** Membership epoch at which it last rejoined with a replaced store (0 = never). */
  storeReplacedEpoch?: number;
  /** The epoch through which its pages were last found at N live copies, as the dispatcher has it (0 = unknown). */
  replicatedThroughEpoch?: number;
}

export interface EngineChunk {
  index: number;
  owner: number;
  replicas?: number[];
  ownerAlive?: boolean;
  /** The owner's store was replaced: it recovers the chunk from the other holders before serving it again. */
  ownerRecovering?: boolean;
  /** How many times the chunk failed over (absent = 0): the owner versions every page above era << 40. */
  era?: number;
  /** Pages of the chunk with no surviving copy (sorted, not overlapping): refused with DATA_LOSS, never zeros. */
  lostPages?: PageSpan[];
}

/** Pages firstPage .. firstPage + count - 1 of a dataset. */
export interface PageSpan {
  firstPage: number;
  count: number;
}

/** An owned chunk recovered from its holders while the chunk map still says "recovering", with its pages no node
 * held (reported to the dispatcher, which records them as lost). */
export interface RecoveredChunk {
  datasetId: number;
  chunk: number;
  lostPages: PageSpan[];
}

/** A node's store identity (its pool): a random id made when the pool is created empty, and a counter bumped by
 * every start. The dispatcher compares them with what it saw last (Join). */
export interface EngineStore {
  id: string;
  incarnation: number;
  /** The pool was empty and got a new id at this start. */
  created: boolean;
}

export interface EngineDatasetInfo {
  id: number;
  name?: string;
  sizeBytes: number;
  mode?: DatasetMode;
  replicas?: number;
  chunkSizeBytes?: number;
  chunks: EngineChunk[];
  /** The chunk map's generation at the dispatcher: owners refuse requests routed by a newer one than they loaded. */
  generation?: number;
}

export type EngineOpenResult = { ok: true; datasetId: number } | { ok: false; code: NativeCode; message: string };

/** One engine counter as native/src/engine/counters.def lists it (the one list of counters; engineCounterTable). */
export interface EngineCounterInfo {
  /** The C++ field (snake_case), as named in proto/hotpot/v1/node.proto EngineCounters. */
  name: string;
  /** Its key in EngineStats.counters: the proto field's JSON name. */
  jsName: string;
  /** The OpenTelemetry counter it is exported as, its unit (UCUM) and description. */
  metric: string;
  unit: string;
  description: string;
}

/** The engine's counters by EngineCounterInfo.jsName (every counter of engineCounterTable), each only growing from 0
 * at engine start. */
export type EngineCounters = Readonly<Record<string, number>>;

export interface EngineChunkStat {
  datasetId: number;
  chunk: number;
  owned: boolean;
  pagesOwned: number;
  pagesCommitted: number;
  pagesRedundant: number;
  /** The chunk's owner per the chunk map. The rest is the owner's view (empty/0 when not owned here). */
  ownerNodeId: number;
  /** Other nodes holding committed copies (kept coherent by push) of pages of this chunk. */
  committedHolders: number[];
  /** Other nodes holding only redundant copies (replica top-up) of pages of this chunk. */
  redundantHolders: number[];
  /** Nodes the owner recorded as holding pages of this chunk that are not alive now: their copies do not count. */
  downHolders: number[];
  /** Fewest distinct live nodes (owner included) holding any served or written page of the chunk. */
  replicaCount: number;
  /** The dataset's N (owned chunks only). */
  replicasWanted: number;
  /** replicaCount < replicasWanted (owned chunks only). */
  underReplicated: boolean;
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
  engineCounterTable(): EngineCounterInfo[];
  engineDumpPage(h: EngineHandle, datasetId: number, page: number): EnginePageDump;
  engineStore(h: EngineHandle): EngineStore;
  engineSetLeaseDeadline(h: EngineHandle, unixMs: number): void;
  engineEndLease(h: EngineHandle): void;
  engineHideSnapshots(h: EngineHandle): void;
  engineSetMrswLeaseFloor(h: EngineHandle, epoch: number): void;
  engineSetRevokedCertificates(h: EngineHandle, fingerprints: string[]): void;
  engineRecoveredChunks(h: EngineHandle): RecoveredChunk[];
  engineReplicatedThrough(h: EngineHandle): number;
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
/** Every engine counter, in the order of counters.def: its key in EngineStats.counters and its metric. */
export const engineCounterTable = wrap((): EngineCounterInfo[] => engineAddon.engineCounterTable());
export const engineDumpPage = wrap((h: EngineHandle, datasetId: number, page: number): EnginePageDump =>
  engineAddon.engineDumpPage(h, datasetId, page),
);
export const engineStore = wrap((h: EngineHandle): EngineStore => engineAddon.engineStore(h));
/** Until when the node's membership lease is surely valid (its clock: heartbeat sent + lease); past it the engine
 * hides its cached copies from snapshot reads until they are checked with their owners (0 = no lease). */
export const engineSetLeaseDeadline = wrap((h: EngineHandle, unixMs: number): void =>
  engineAddon.engineSetLeaseDeadline(h, unixMs),
);
/** This node is leaving the cluster (before its Leave): the lease ends now and for good, and the engine hides its
 * cached copies from snapshot reads at once (the others stop pushing to a node that left). */
export const engineEndLease = wrap((h: EngineHandle): void => engineAddon.engineEndLease(h));
/** A planned stop begins (before the handoffs): this node serves no snapshot read from now on. */
export const engineHideSnapshots = wrap((h: EngineHandle): void => engineAddon.engineHideSnapshots(h));
/** MRSW leases of this node with a fencing epoch below `epoch` ended at the dispatcher (the node was declared dead,
 * left or restarted): the engine refuses commits under them (FAILED_PRECONDITION) instead of sending them. */
export const engineSetMrswLeaseFloor = wrap((h: EngineHandle, epoch: number): void =>
  engineAddon.engineSetMrswLeaseFloor(h, epoch),
);
/**
 * The certificates the data plane refuses (SHA-256 fingerprints, as `hotpot certs revoke` records them); a change
 * closes every data-plane connection so each authenticates again. No-op with --insecure.
 */
export const engineSetRevokedCertificates = wrap((h: EngineHandle, fingerprints: string[]): void =>
  engineAddon.engineSetRevokedCertificates(h, fingerprints),
);
/** Owned chunks this node recovered from their holders while its chunk map still says "recovering". */
export const engineRecoveredChunks = wrap((h: EngineHandle): RecoveredChunk[] => engineAddon.engineRecoveredChunks(h));
/**
 * The membership epoch up to which every page this node owns (datasets with N >= 2) was found at N live copies by a
 * whole re-replication pass (0: none yet). Sent with every heartbeat (docs/design/availability.md "Lost pages").
 */
export const engineReplicatedThrough = wrap((h: EngineHandle): number => engineAddon.engineReplicatedThrough(h));
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
  /** Distinct nodes durably holding every committed byte: at least `replicas` unless `underReplicated`. */
  copies: number;
  /** N the commit asked for. */
  replicas: number;
  /**
   * Applied and visible, but a push failed after the commit point, so fewer than N nodes hold it now; the owners
   * copy the pages to more live nodes in the background. Not an error: the commit happened.
   */
  underReplicated: boolean;
  pages: number;
  ranges: number;
  bytes: number;
}

/** A byte range of a dataset. */
export interface ShimRange {
  offset: number;
  length: number;
}

/** Optional parts of a commit (docs/design/consistency.md). */
export interface ShimCommitOptions {
  /** Read validation: ABORTED if a page holding these bytes changed since the last sync. */
  reads?: ShimRange[];
  /** MRSW lease certificate from acquire. */
  lease?: Buffer;
  /** begin(ranges): FAILED_PRECONDITION if a private page lies outside these ranges. */
  writeSet?: ShimRange[];
  /** W3C traceparent of the caller's span: the node's commit span becomes its child. */
  traceparent?: string;
}

/** `details` of an ABORTED commit error (first 64 conflicting ranges). */
export interface ShimCommitConflicts {
  conflicts: { offset: number; len: number }[];
  totalConflicts: number;
}

interface ShimAddon {
  shimConnect(path: string | null): ShimConnection;
  shimDisconnect(conn: ShimConnection): void;
  shimOpen(
    conn: ShimConnection,
    name: string,
    create: ShimCreateOptions | null,
    readOnly: boolean,
  ): Promise<ShimOpenResult>;
  shimMap(ds: ShimDataset, offset: number | bigint, length: number | bigint): ArrayBuffer;
  shimCommit(ds: ShimDataset, replicas: number, opts?: ShimCommitOptions): Promise<ShimCommitResult>;
  shimRollback(ds: ShimDataset): Promise<void>;
  shimRefresh(ds: ShimDataset): Promise<void>;
  shimClose(ds: ShimDataset): void;
  shimSnapshotBegin(ds: ShimDataset): ShimSnapshotSeq | null;
  shimSnapshotEnd(ds: ShimDataset, seq: ShimSnapshotSeq): boolean;
}

const shimAddon = addon as unknown as ShimAddon;

/** Connects to the node daemon; `path` null = $HOTPOT_SOCKET, else /run/hotpot/node.sock. If the daemon restarts,
 * the connection reconnects by itself; meanwhile every call fails with 'UNAVAILABLE' (docs/api.md). */
export const shimConnect = wrap((path: string | null = null): ShimConnection => shimAddon.shimConnect(path));
/** Drops the handle; open datasets keep the socket until they are closed. */
export const shimDisconnect = wrap((conn: ShimConnection): void => shimAddon.shimDisconnect(conn));
/**
 * Opens (with `create`, creates if missing) a dataset by name; runs off the JS thread. `readOnly`: read permission
 * suffices and commits are refused (not with `create`).
 */
export const shimOpen = wrap(
  (conn: ShimConnection, name: string, create: ShimCreateOptions | null, readOnly: boolean): Promise<ShimOpenResult> =>
    shimAddon.shimOpen(conn, name, create, readOnly),
);
/**
 * Maps [offset, offset + length) of the dataset (offset a multiple of 4096; length 0 = to the end). Writes are
 * private until commit. The buffer is detached (length 0) when the dataset is closed.
 */
export const shimMap = wrap((ds: ShimDataset, offset: number | bigint = 0, length: number | bigint = 0): ArrayBuffer =>
  shimAddon.shimMap(ds, offset, length),
);
/** Commits every private page to `replicas` nodes (0 = dataset default). Rejects with code 'ABORTED' and
 * `details: ShimCommitConflicts` on a conflict (private pages are kept), also with no conflicts when the private
 * pages were written before the node daemon restarted (roll back and redo). */
export const shimCommit = wrap(
  (ds: ShimDataset, replicas: number = 0, opts: ShimCommitOptions = {}): Promise<ShimCommitResult> =>
    shimAddon.shimCommit(ds, replicas, opts),
);
/** Discards every private page. */
export const shimRollback = wrap((ds: ShimDataset): Promise<void> => shimAddon.shimRollback(ds));
/** Drops private pages that carry no change, so the mapping shows the latest committed data. */
export const shimRefresh = wrap((ds: ShimDataset): Promise<void> => shimAddon.shimRefresh(ds));
/** Detaches every mapped buffer, unmaps and closes the dataset. */
export const shimClose = wrap((ds: ShimDataset): void => shimAddon.shimClose(ds));
/** Opaque: the node's publication sequence of a dataset and the daemon connection it was read from (a number; a
 * bigint only beyond 2^53, after many daemon restarts). */
export type ShimSnapshotSeq = number | bigint;
/** Starts a snapshot read (a load of the node's publication word, on this thread): the token to hand to
 * shimSnapshotEnd, or null while a commit is partly published on the node (never waits: try again shortly). */
export const shimSnapshotBegin = wrap((ds: ShimDataset): ShimSnapshotSeq | null => shimAddon.shimSnapshotBegin(ds));
/** True if the dataset's publication state still equals the one shimSnapshotBegin saw: the loads in between saw
 * every commit whole. False if it changed or the daemon restarted in between (read again). */
export const shimSnapshotEnd = wrap((ds: ShimDataset, seq: ShimSnapshotSeq): boolean =>
  shimAddon.shimSnapshotEnd(ds, seq),
);

// ---- data (gRPC Data service) ----
// Engine sessions for the node's gRPC Data service (native/src/addon/data_binding.cc): the same sessions, base
// images and commit protocol the mmap shim server uses. Calls that may wait on the network return Promises.

export interface EngineOpenedDataset {
  datasetId: number;
  sizeBytes: number;
  mode: DatasetMode;
  replicas: number;
  chunkSizeBytes: number;
}

export interface EngineDirtyPage {
  page: number;
  /** The session's private copy: exactly 4096 bytes. */
  data: Buffer;
}

export interface EngineCommitResult {
  /** Distinct nodes durably holding every committed byte: at least `replicas` unless `underReplicated`. */
  copies: number;
  /** N the commit asked for. */
  replicas: number;
  /**
   * Applied and visible, but a push failed after the commit point, so fewer than N nodes hold it now; the owners
   * copy the pages to more live nodes in the background. Not an error: the commit happened.
   */
  underReplicated: boolean;
  pages: number;
  ranges: number;
  bytes: number;
}

/** A byte range a session read, for commit read validation. */
export interface EngineReadRange {
  offset: number;
  len: number;
}

/** `details` of an ABORTED engineCommitSession error. */
export interface EngineCommitConflicts {
  conflicts: { offset: number; len: number }[];
}

interface DataAddon {
  engineOpen(
    h: EngineHandle,
    name: string,
    create: null | { sizeBytes: number; mode: DatasetMode; replicas: number },
    caller: OpenCaller,
  ): Promise<EngineOpenedDataset>;
  socketPeerCredentials(fd: number): SocketPeer;
  engineOpenSession(h: EngineHandle, datasetId: number): number;
  engineCloseSession(h: EngineHandle, session: number): void;
  engineResyncSession(h: EngineHandle, session: number): void;
  engineEnsurePages(h: EngineHandle, datasetId: number, firstPage: number, count: number): Promise<void>;
  engineRefreshPages(h: EngineHandle, datasetId: number, firstPage: number, count: number): Promise<void>;
  engineHandOffChunk(
    h: EngineHandle,
    datasetId: number,
    chunk: number,
    target: number,
    timeoutMs: number,
  ): Promise<{ pagesSent: number }>;
  engineAbandonHandOff(h: EngineHandle, datasetId: number, chunk: number): void;
  engineBaseImage(h: EngineHandle, session: number, firstPage: number, count: number): Buffer;
  engineReadCommitted(h: EngineHandle, session: number, firstPage: number, count: number): Promise<Buffer>;
  engineCommitSession(
    h: EngineHandle,
    session: number,
    pages: EngineDirtyPage[],
    replicas: number,
    reads: EngineReadRange[],
    lease: Buffer | null,
  ): Promise<EngineCommitResult>;
}

const dataAddon = addon as unknown as DataAddon;

/**
 * Opens (with `create`, creates if missing) a dataset by name through the control plane, as an app's open does,
 * checked (and a created one owned) as `caller`.
 */
export const engineOpen = wrap(
  (
    h: EngineHandle,
    name: string,
    create: null | { sizeBytes: number; mode: DatasetMode; replicas: number },
    caller: OpenCaller,
  ): Promise<EngineOpenedDataset> => dataAddon.engineOpen(h, name, create, caller),
);
/** The pid, uid, gid and groups of the process at the other end of a connected unix socket. */
export const socketPeerCredentials = wrap((fd: number): SocketPeer => dataAddon.socketPeerCredentials(fd));
/** Starts a session on an open dataset; its sync point is now. */
export const engineOpenSession = wrap((h: EngineHandle, datasetId: number): number =>
  dataAddon.engineOpenSession(h, datasetId),
);
export const engineCloseSession = wrap((h: EngineHandle, session: number): void =>
  dataAddon.engineCloseSession(h, session),
);
/** Moves the session's sync point to now (its base images become the current committed pages). */
export const engineResyncSession = wrap((h: EngineHandle, session: number): void =>
  dataAddon.engineResyncSession(h, session),
);
/** Makes pages present in the node cache (fetched from their owners when absent); runs off the JS thread. */
export const engineEnsurePages = wrap(
  (h: EngineHandle, datasetId: number, firstPage: number, count: number): Promise<void> =>
    dataAddon.engineEnsurePages(h, datasetId, firstPage, count),
);
/** Checks this node's cached copies of the pages with their owners and installs newer ones (MRSW acquire: the
 * holder then sees at least the newest committed version); rejects with 'UNAVAILABLE' when an owner is down. */
export const engineRefreshPages = wrap(
  (h: EngineHandle, datasetId: number, firstPage: number, count: number): Promise<void> =>
    dataAddon.engineRefreshPages(h, datasetId, firstPage, count),
);
/**
 * The owner side of a planned handoff (docs/design/availability.md "Handoff"): from now on the chunk is refused here
 * (senders retry), its commits drain (up to `timeoutMs`), and every written page is copied to `target`. Then move
 * the chunk at the dispatcher (MoveChunk) and load the new chunk map, or call engineAbandonHandOff.
 */
export const engineHandOffChunk = wrap(
  (
    h: EngineHandle,
    datasetId: number,
    chunk: number,
    target: number,
    timeoutMs: number,
  ): Promise<{ pagesSent: number }> => dataAddon.engineHandOffChunk(h, datasetId, chunk, target, timeoutMs),
);
/** The dispatcher still names this node the owner after a handoff that was not completed: serve the chunk again. */
export const engineAbandonHandOff = wrap((h: EngineHandle, datasetId: number, chunk: number): void =>
  dataAddon.engineAbandonHandOff(h, datasetId, chunk),
);
/** `count` pages (1..4096) as of the session's sync point; they must be present (engineEnsurePages). */
export const engineBaseImage = wrap((h: EngineHandle, session: number, firstPage: number, count: number): Buffer =>
  dataAddon.engineBaseImage(h, session, firstPage, count),
);
/** `count` pages (1..4096) of the session's dataset as the latest committed state this node shows, every commit
 * whole (never part of a multi-owner commit); not the session's base images. Fetches absent pages; rejects with
 * code 'UNAVAILABLE' when a commit stays open on this node for about 2 s. */
export const engineReadCommitted = wrap(
  (h: EngineHandle, session: number, firstPage: number, count: number): Promise<Buffer> =>
    dataAddon.engineReadCommitted(h, session, firstPage, count),
);
/** Commits private pages of a session to `replicas` nodes (0 = dataset default) and resyncs the session.
 * `reads` adds read validation (a page holding those bytes changed since the sync point -> ABORTED).
 * `lease` is the MRSW lease certificate (required to write an MRSW dataset; owners refuse with
 * FAILED_PRECONDITION without it or when it does not cover the pages or expired).
 * Rejects with code 'ABORTED' and `details: EngineCommitConflicts` on a conflict (nothing applied). */
export const engineCommitSession = wrap(
  (
    h: EngineHandle,
    session: number,
    pages: EngineDirtyPage[],
    replicas: number,
    reads: EngineReadRange[],
    lease: Buffer | null = null,
  ): Promise<EngineCommitResult> => dataAddon.engineCommitSession(h, session, pages, replicas, reads, lease),
);

// ---- observability ----
// The engine's event ring, debug mask, span records and latency histograms (native/src/engine/observe.h via
// native/src/addon/observe_binding.cc), and the operator views behind `hotpot stat`.

// Debug mask bits are named in services/common/debug-mask.ts (shared with the CLI, which must not load the addon).

export type EngineEventKind =
  | 'fault_local'
  | 'fault_remote'
  | 'fetch_served'
  | 'commit_start'
  | 'commit_end'
  | 'abort'
  | 'conflict'
  | 'owner'
  | 'coherence_push'
  | 'replica_sent'
  | 'replica_received'
  | 'membership'
  | 'fenced'
  | 'rereplicated'
  | 'chunk_owned'
  | 'chunk_handed_off'
  | 'pages_lost';

export interface EngineEvent {
  /** 1, 2, ... per engine; a gap means the ring (4096 events) overwrote events before they were read. */
  seq: number;
  /** CLOCK_REALTIME nanoseconds as a decimal string. */
  unixNs: string;
  kind: EngineEventKind;
  /** The other node involved (owner, committer, replica target); 0 = none. */
  node: number;
  datasetId: number;
  page: number;
  count: number;
  latencyUs: number;
  /** Commit/owner events: the transaction id; membership: the epoch. */
  txid: number;
  status: NativeCode | 'OK';
  detail: string;
}

export interface EngineEventBatch {
  events: EngineEvent[];
  /** Pass as `afterSeq` next time. */
  nextSeq: number;
  mask: number;
}

export interface EngineSpanRecord {
  name: string;
  traceId: string;
  spanId: string;
  /** null = a root span (sampled remote faults). */
  parentSpanId: string | null;
  startUnixNs: string;
  endUnixNs: string;
  status: NativeCode | 'OK';
  attributes: Record<string, string | number>;
}

export interface EngineHistogram {
  count: number;
  sumUs: number;
  /** Upper bounds (us) of buckets 0..n-2 (log2: 1, 2, 4, ...); the last bucket is unbounded. */
  boundsUs: number[];
  counts: number[];
}

export interface EngineHistograms {
  fault: EngineHistogram;
  fetch: EngineHistogram;
  commit: EngineHistogram;
  spansDropped: number;
}

export interface EngineRedoView {
  slot: number;
  txid: number;
  datasetId: number;
  committer: number;
  phase: 'prepared' | 'applying' | 'applied' | 'decided' | 'copy' | 'copy-applied' | 'frozen' | 'copy-frozen';
  ranges: number;
  bytes: number;
}

export interface EngineSessionView {
  sessionId: number;
  datasetId: number;
  datasetName: string;
  pid: number;
  uid: number;
}

export interface EngineInspectView {
  redo: EngineRedoView[];
  sessions: EngineSessionView[];
}

interface ObserveAddon {
  engineDrainEvents(h: EngineHandle, afterSeq: number, max: number): EngineEventBatch;
  engineSetDebugMask(h: EngineHandle, mask: number): number;
  engineSetTracing(h: EngineHandle, enabled: boolean, faultSampleOneIn: number): void;
  engineDrainSpans(h: EngineHandle, max: number): EngineSpanRecord[];
  engineHistograms(h: EngineHandle): EngineHistograms;
  engineInspect(h: EngineHandle): EngineInspectView;
}

const observeAddon = addon as unknown as ObserveAddon;

/** Events with seq > afterSeq still in the ring, oldest first (at most `max`, 0..65536). */
export const engineDrainEvents = wrap((h: EngineHandle, afterSeq: number, max: number): EngineEventBatch =>
  observeAddon.engineDrainEvents(h, afterSeq, max),
);
/** Sets the debug mask (bits of services/common/debug-mask.ts); returns the previous one. */
export const engineSetDebugMask = wrap((h: EngineHandle, mask: number): number =>
  observeAddon.engineSetDebugMask(h, mask),
);
/** Span records are kept only with tracing on; one remote fault in `faultSampleOneIn` becomes a span (0 = none). */
export const engineSetTracing = wrap((h: EngineHandle, enabled: boolean, faultSampleOneIn: number): void =>
  observeAddon.engineSetTracing(h, enabled, faultSampleOneIn),
);
/** Takes up to `max` finished span records (timings + W3C context) out of the engine. */
export const engineDrainSpans = wrap((h: EngineHandle, max: number): EngineSpanRecord[] =>
  observeAddon.engineDrainSpans(h, max),
);
export const engineHistograms = wrap((h: EngineHandle): EngineHistograms => observeAddon.engineHistograms(h));
/** Redo records in flight (with their phase) and the apps' open sessions (pid/uid/dataset). */
export const engineInspect = wrap((h: EngineHandle): EngineInspectView => observeAddon.engineInspect(h));

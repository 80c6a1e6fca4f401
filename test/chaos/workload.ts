// What the chaos workers do and what they report: the datasets' layout, the worker roles, and the lines a worker
// writes on stdout (its history). Shared by the worker process (worker.ts) and the harness (workers.ts, checker.ts).
//
// Datasets (chunk size `chunk`, small so that the accounts spread over chunks of every owner):
//   bank  MRMW, `accounts` int32 balances, account i in chunk i % BANK_CHUNKS; chunk BANK_CHUNKS holds one uint32
//         per bank worker (its page = its slot) counting the transfers it moved, bumped in the same transaction.
//   ctr   MRMW, one int64 counter at offset 0 shared by every counter worker; page 1 + slot holds each worker's
//         own int64 count of increments, written in the same commit (a single writer each).
//   mrsw  MRSW, the same layout as ctr, incremented under acquire/commit/release.
export const PAGE = 4096;
export const BANK_CHUNKS = 6;
export const DATASETS = { bank: 'chaos-bank', ctr: 'chaos-ctr', mrsw: 'chaos-mrsw' } as const;
export const INITIAL_BALANCE = 1000;
/** Slots per dataset: one page each, after the counter's page, inside the first chunk. */
export const maxSlots = (chunk: number): number => chunk / PAGE - 1;

export interface Layout {
  chunk: number;
  accounts: number;
}

export function accountOffset(l: Layout, i: number): number {
  const perChunk = Math.ceil(l.accounts / BANK_CHUNKS);
  const spacing = Math.floor(l.chunk / perChunk / 4) * 4;
  return (i % BANK_CHUNKS) * l.chunk + Math.floor(i / BANK_CHUNKS) * spacing;
}
/** Bytes from 0 covering every account: one gRPC snapshot Read (at most 1 MiB) reads them as one state. */
export const bankSpan = (l: Layout): number => BANK_CHUNKS * l.chunk;
export const bankSlotOffset = (l: Layout, slot: number): number => BANK_CHUNKS * l.chunk + slot * PAGE;
export const bankSize = (l: Layout): number => (BANK_CHUNKS + 1) * l.chunk;
export const COUNTER_OFFSET = 0;
export const counterSlotOffset = (slot: number): number => (1 + slot) * PAGE;
export const bankTotal = (l: Layout): number => l.accounts * INITIAL_BALANCE;

export function sumAccounts(l: Layout, mem: Buffer, base = 0): number {
  let s = 0;
  for (let i = 0; i < l.accounts; i++) s += mem.readInt32LE(accountOffset(l, i) - base);
  return s;
}

/**
 * Worker roles. Counter roles differ only in how they commit:
 *   ctr-tx        SDK ds.transaction(fn) without a read set (the read-modify-write relies on the conflict check)
 *   ctr-tx-reads  SDK ds.transaction(fn, { reads: [counter] })
 *   ctr-grpc      gRPC Data Read, Write, Commit without reads; on ABORTED Rollback and retry
 */
export type Role =
  'bank' | 'snap-sdk' | 'snap-grpc' | 'ctr-tx' | 'ctr-tx-reads' | 'ctr-grpc' | 'mrsw' | 'init' | 'final';

export interface WorkerConfig {
  role: Role;
  /** Stable worker name (survives restarts of the process). */
  name: string;
  /** Slot in the role's dataset (bank workers in bank, counter workers in ctr, MRSW workers in mrsw). */
  slot: number;
  seed: number;
  /** The node's unix sockets: the SDK's (node.sock) and gRPC's (`unix:<state-dir>/grpc.sock`). */
  socket: string;
  grpc: string;
  layout: Layout;
  replicas: number;
  /** Upper bound of the random pause between operations, in ms. */
  thinkMs: number;
  /** init: bank slots to clear; final: bank/ctr/mrsw slots to read. */
  slots?: { bank: number; ctr: number; mrsw: number };
}

/** Outcome of one operation, from the worker's point of view. */
export type Status = 'ok' | 'aborted' | 'unavailable' | 'error';

/**
 * Lines a worker writes (one JSON object each). stdout is a pipe, written synchronously on Linux: a line written
 * before the process dies reaches the harness.
 *   inv   an operation starts (n numbers them within one process)
 *   sent  its commit is being sent: from here on a failure may have applied it
 *   ret   it ended; `v` holds its values (sum, moved, ...)
 *   note  something worth counting that is not an operation (a reconnect)
 *   final the state read by a `final` worker
 *   end   the worker stopped when asked
 */
export type Line =
  | { e: 'inv'; n: number; op: string; t: number }
  | { e: 'sent'; n: number; t: number }
  | { e: 'ret'; n: number; t: number; st: Status; code?: string; msg?: string; v?: OpValues }
  | { e: 'note'; t: number; what: string; msg: string }
  | { e: 'final'; t: number; state: FinalState }
  | { e: 'end'; t: number };

export interface OpValues {
  sum?: number;
  moved?: boolean;
  /** Runs of the transaction's function. */
  attempts?: number;
  /** Counter workers: the counter and the worker's own count as read by the run that committed. */
  read?: [number, number];
  /**
   * A snapshot read whose sum was wrong: the accounts whose balance differs in the next snapshot read on the same
   * node that summed right (account, its chunk, the wrong read's balance, the right one's), at most 16.
   */
  differs?: [number, number, number, number][];
  /** A wrong snapshot read: when it returned (unix ms); the op itself ends after the diagnosis that follows it. */
  readAt?: number;
}

/** What a fresh process on one node reads at the end (every value through a snapshot read). */
export interface FinalState {
  bankSum: number;
  bankSumGrpc: number;
  bankSlots: number[];
  negativeBalances: number;
  counter: number;
  counterSlots: number[];
  mrsw: number;
  mrswSlots: number[];
}

export function statusOf(code: string): Status {
  if (code === 'ABORTED') return 'aborted';
  if (code === 'UNAVAILABLE') return 'unavailable';
  return 'error';
}

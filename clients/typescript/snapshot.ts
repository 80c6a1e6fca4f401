// Snapshot reads (docs/api.md "Snapshot reads"): run a read-only function over the mapping between two probes
// of the node's publication state of the dataset; if the state did not change and no commit was partly
// published, the loads saw every commit whole (even commits spanning chunks with different owners). Otherwise
// run it again after a short jittered pause.
//
// A hot read path: begin and end are synchronous loads of the node's shared publication word (no worker thread,
// no Promise; the first call maps it, and a node without it is asked over the socket), and a pause only happens
// when a commit was open or the dataset changed during the read.
import { shimSnapshotBegin, shimSnapshotEnd, type ShimDataset, type ShimSnapshotSeq } from '../../native/index.ts';

export interface SnapshotOptions {
  /** Runs of `fn` before giving up with ABORTED (default 100). */
  attempts?: number;
  /** First pause in ms after a changed read, doubled per attempt up to 20 ms, with full jitter (default 0.2). */
  backoffMs?: number;
}

/** How the SDK turns failures into its typed errors. */
export interface SnapshotErrors {
  /** A failure thrown by the native boundary. */
  convert(e: unknown): Error;
  invalid(message: string): Error;
  /** Every attempt saw the dataset change (code ABORTED). */
  changed(message: string, attempts: number): Error;
  /** A commit stayed partly published on the node (code UNAVAILABLE). */
  stuck(message: string): Error;
}

const DEFAULT_ATTEMPTS = 100;
const DEFAULT_BACKOFF_MS = 0.2;
const MAX_BACKOFF_MS = 20;
// Waiting for open commits to close, as hotpot_snapshot_begin does: 50 us doubling to 2 ms, about 2 s in all.
const OPEN_FIRST_WAIT_MS = 0.05;
const OPEN_MAX_WAIT_MS = 2;
const OPEN_TOTAL_WAIT_MS = 2000;

const yieldOnce = (): Promise<void> => new Promise((r) => setImmediate(r));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// Timers have a 1 ms granularity: shorter pauses only let the event loop turn once.
function pause(ms: number): Promise<void> {
  return ms < 1 ? yieldOnce() : sleep(ms);
}

function isThenable<T>(v: T | PromiseLike<T>): v is PromiseLike<T> {
  return typeof (v as { then?: unknown } | null)?.then === 'function';
}

function probeBegin(handle: ShimDataset, errors: SnapshotErrors): ShimSnapshotSeq | null {
  try {
    return shimSnapshotBegin(handle);
  } catch (e) {
    throw errors.convert(e);
  }
}

function probeEnd(handle: ShimDataset, seq: ShimSnapshotSeq, errors: SnapshotErrors): boolean {
  try {
    return shimSnapshotEnd(handle, seq);
  } catch (e) {
    throw errors.convert(e);
  }
}

async function beginWhenQuiet(handle: ShimDataset, errors: SnapshotErrors): Promise<ShimSnapshotSeq> {
  const deadline = performance.now() + OPEN_TOTAL_WAIT_MS;
  let wait = OPEN_FIRST_WAIT_MS;
  for (;;) {
    await pause(wait);
    const seq = probeBegin(handle, errors);
    if (seq !== null) return seq;
    if (performance.now() >= deadline) {
      throw errors.stuck(
        `a commit stays open on this node: no snapshot could begin within ${String(OPEN_TOTAL_WAIT_MS)} ms`,
      );
    }
    wait = Math.min(wait * 2, OPEN_MAX_WAIT_MS);
  }
}

export function checkSnapshotOptions(opts: SnapshotOptions, errors: SnapshotErrors): void {
  const attempts = opts.attempts ?? DEFAULT_ATTEMPTS;
  if (!Number.isInteger(attempts) || attempts < 1) throw errors.invalid('snapshot: attempts must be an integer >= 1');
  const base = opts.backoffMs ?? DEFAULT_BACKOFF_MS;
  if (!Number.isFinite(base) || base < 0) throw errors.invalid('snapshot: backoffMs must be a finite number >= 0');
}

/**
 * Runs `fn(mem)` until one run happened between two equal publication states of the dataset with no commit
 * open, and returns that run's result. Errors thrown by `fn` propagate at once.
 */
export async function runSnapshot<T>(
  handle: ShimDataset,
  mem: Buffer,
  fn: (mem: Buffer) => T | Promise<T>,
  opts: SnapshotOptions,
  errors: SnapshotErrors,
): Promise<T> {
  checkSnapshotOptions(opts, errors);
  const attempts = opts.attempts ?? DEFAULT_ATTEMPTS;
  const base = opts.backoffMs ?? DEFAULT_BACKOFF_MS;
  for (let i = 0; i < attempts; i++) {
    if (i > 0) await pause(Math.random() * Math.min(MAX_BACKOFF_MS, base * 2 ** (i - 1)));
    const seq = probeBegin(handle, errors) ?? (await beginWhenQuiet(handle, errors));
    const r = fn(mem);
    const value = isThenable(r) ? await r : r;
    if (probeEnd(handle, seq, errors)) return value;
  }
  throw errors.changed(
    `snapshot: the dataset kept changing on this node during all ${String(attempts)} attempts; ` +
      'retry later or allow more attempts',
    attempts,
  );
}

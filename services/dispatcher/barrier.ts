// Named cluster barriers (ARCHITECTURE §5): a call returns when `parties` callers have arrived at the same
// name of the same dataset; each completed round bumps the barrier's generation so the same name is reusable.
// Names are per dataset (by id: a dataset deleted and created again starts afresh), so only callers allowed to read a
// dataset can arrive at, and so complete, its barriers (the dispatcher checks that before arriving). Barrier state is in
// memory only: a dispatcher restart fails the waiting callers (their calls break with UNAVAILABLE) and they
// call again. Idle names are remembered up to MAX_IDLE_BARRIERS, so memory stays bounded however many names are used.
import * as grpc from '@grpc/grpc-js';
import { failedPrecondition, invalidArgument, RpcError } from '../common/errors.ts';

export const MAX_PARTIES = 10_000;
/**
 * Names with nobody waiting that are remembered (for their generation). Past this the least recently completed are
 * forgotten (their next round is generation 0 again): before, every name ever used stayed in memory for good.
 */
export const MAX_IDLE_BARRIERS = 4096;
export const MAX_BARRIER_TIMEOUT_MS = 600_000;
const NAME_RE = /^[A-Za-z0-9._:/-]{1,256}$/;

interface Waiter {
  resolve: (r: { generation: number; arrival: number }) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  arrival: number;
}

interface BarrierState {
  parties: number;
  generation: number;
  waiting: Waiter[];
}

export class Barriers {
  /** Insertion order = least recently completed (or created) first: a completed round moves its name last. */
  private readonly barriers = new Map<string, BarrierState>();
  private idle = 0;

  constructor(private readonly maxIdle = MAX_IDLE_BARRIERS) {}

  /** Names remembered (waiting or idle), for tests and stats. */
  get size(): number {
    return this.barriers.size;
  }

  /** `dataset`: whose barrier `name` is (absent: a name of its own, for tests). */
  arrive(
    name: string,
    parties: number,
    timeoutMs: number,
    dataset?: { id: number; name: string },
  ): Promise<{ generation: number; arrival: number }> {
    if (!NAME_RE.test(name)) throw invalidArgument('barrier name must match [A-Za-z0-9._:/-]{1,256}');
    const key = dataset ? `${String(dataset.id)}\0${name}` : name;
    const what = dataset ? `barrier "${name}" of dataset "${dataset.name}"` : `barrier "${name}"`;
    if (!Number.isInteger(parties) || parties < 1 || parties > MAX_PARTIES) {
      throw invalidArgument(`parties must be 1..${String(MAX_PARTIES)}`);
    }
    if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > MAX_BARRIER_TIMEOUT_MS) {
      throw invalidArgument(`timeout_ms must be 1..${String(MAX_BARRIER_TIMEOUT_MS)}`);
    }
    let b = this.barriers.get(key);
    if (!b) {
      b = { parties, generation: 0, waiting: [] };
      this.barriers.set(key, b);
    } else if (b.waiting.length === 0) {
      b.parties = parties;
      this.idle--;
    } else if (b.parties !== parties) {
      throw failedPrecondition(
        `${what} is waiting for ${String(b.parties)} parties, this caller says ${String(parties)}`,
      );
    }
    const state = b;
    const arrival = state.waiting.length;
    return new Promise((resolve, reject) => {
      const generation = state.generation;
      const w: Waiter = {
        resolve,
        reject,
        arrival,
        timer: setTimeout(() => {
          const i = state.waiting.indexOf(w);
          if (i < 0) return;
          state.waiting.splice(i, 1);
          reject(
            new RpcError(
              grpc.status.DEADLINE_EXCEEDED,
              `${what} (generation ${String(generation)}): only ${String(state.waiting.length + 1)} of ${String(state.parties)} parties arrived within ${String(timeoutMs)} ms`,
            ),
          );
          if (state.waiting.length === 0) {
            if (state.generation === 0) this.barriers.delete(key);
            else this.rest(key, state);
          }
        }, timeoutMs),
      };
      state.waiting.push(w);
      if (state.waiting.length >= state.parties) {
        const done = state.waiting;
        state.waiting = [];
        state.generation++;
        done.forEach((x, i) => {
          clearTimeout(x.timer);
          x.resolve({ generation, arrival: i });
        });
        this.rest(key, state);
      }
    });
  }

  /** `key` has nobody waiting now: it moves last, and the least recently completed idle names past the cap go. */
  private rest(key: string, state: BarrierState): void {
    this.barriers.delete(key);
    this.barriers.set(key, state);
    this.idle++;
    for (const [n, b] of this.barriers) {
      if (this.idle <= this.maxIdle) break;
      if (b.waiting.length > 0) continue;
      this.barriers.delete(n);
      this.idle--;
    }
  }

  /** Fails every waiting caller (shutdown). */
  stop(): void {
    for (const [key, b] of this.barriers) {
      for (const w of b.waiting) {
        clearTimeout(w.timer);
        const name = key.slice(key.indexOf('\0') + 1);
        w.reject(new RpcError(grpc.status.UNAVAILABLE, `barrier "${name}": dispatcher shutting down`));
      }
    }
    this.barriers.clear();
    this.idle = 0;
  }
}

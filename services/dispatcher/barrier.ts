// Named cluster barriers (ARCHITECTURE §5): a call returns when `parties` callers have arrived at the same
// name; each completed round bumps the barrier's generation so the same name is reusable. Barrier state is in
// memory only: a dispatcher restart fails the waiting callers (their calls break with UNAVAILABLE) and they
// call again.
import * as grpc from '@grpc/grpc-js';
import { failedPrecondition, invalidArgument, RpcError } from '../common/errors.ts';

export const MAX_PARTIES = 10_000;
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
  private readonly barriers = new Map<string, BarrierState>();

  arrive(name: string, parties: number, timeoutMs: number): Promise<{ generation: number; arrival: number }> {
    if (!NAME_RE.test(name)) throw invalidArgument('barrier name must match [A-Za-z0-9._:/-]{1,256}');
    if (!Number.isInteger(parties) || parties < 1 || parties > MAX_PARTIES) {
      throw invalidArgument(`parties must be 1..${String(MAX_PARTIES)}`);
    }
    if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > MAX_BARRIER_TIMEOUT_MS) {
      throw invalidArgument(`timeout_ms must be 1..${String(MAX_BARRIER_TIMEOUT_MS)}`);
    }
    let b = this.barriers.get(name);
    if (!b) {
      b = { parties, generation: 0, waiting: [] };
      this.barriers.set(name, b);
    } else if (b.waiting.length === 0) {
      b.parties = parties;
    } else if (b.parties !== parties) {
      throw failedPrecondition(
        `barrier "${name}" is waiting for ${String(b.parties)} parties, this caller says ${String(parties)}`,
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
              `barrier "${name}" (generation ${String(generation)}): only ${String(state.waiting.length + 1)} of ${String(state.parties)} parties arrived within ${String(timeoutMs)} ms`,
            ),
          );
          if (state.waiting.length === 0) this.barriers.delete(name);
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
      }
    });
  }

  /** Fails every waiting caller (shutdown). */
  stop(): void {
    for (const [name, b] of this.barriers) {
      for (const w of b.waiting) {
        clearTimeout(w.timer);
        w.reject(new RpcError(grpc.status.UNAVAILABLE, `barrier "${name}": dispatcher shutting down`));
      }
    }
    this.barriers.clear();
  }
}

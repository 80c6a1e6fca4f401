// Failover figures for the chaos summary: the chunk maps of the workload's datasets, polled at the dispatcher while
// the load runs. A chunk whose owner changes one era up failed over; it is taken over when its new owner no longer
// shows it recovering. Times are ms after the load started; a failover is matched with the fault on its old owner.
import { dispatcherClient } from '../../services/cli/client.ts';
import { unary } from '../../services/common/rpc.ts';
import type { OpenDatasetResponse__Output } from '../../services/generated/hotpot/v1/OpenDatasetResponse.ts';
import type { AppliedFault } from './faults.ts';

export interface FailoverEvent {
  dataset: string;
  chunk: number;
  from: number;
  to: number;
  era: number;
  /** When the poll first saw the new owner, and when it first saw the chunk taken over (null: not within the run). */
  movedAt: number;
  takenOverAt: number | null;
  /** A graceful restart's handoff of the chunk, not a failover (set by `stop`). */
  handoff?: boolean;
  /** The fault on the old owner this failover is matched with (set by `stop`). */
  cause?: { kind: string; began: number; recovered: number };
}

export interface FailoverFigures {
  failovers: number;
  /** Owner changes by a graceful restart's handoff (not counted as failovers). */
  handoffs: number;
  /** Per failover whose old owner was killed or cut off by a fault: fault start -> chunk taken over (ms). */
  faultToTakenOver: number[];
  /** The same failovers: fault start -> new owner named at the dispatcher (ms; the lease and the decision). */
  faultToNamed: number[];
  /** New owner named -> taken over (ms). */
  takeover: number[];
  events: FailoverEvent[];
}

export class FailoverWatch {
  private readonly events: FailoverEvent[] = [];
  private readonly last = new Map<string, { owner: number; era: number; recovering: boolean }>();
  private stopped = false;
  private loop: Promise<void> = Promise.resolve();

  constructor(
    private readonly dispatcher: string,
    private readonly datasets: readonly string[],
    private readonly start: number,
  ) {}

  run(): void {
    this.loop = (async () => {
      const client = dispatcherClient(this.dispatcher);
      try {
        while (!this.stopped) {
          for (const name of this.datasets) {
            // The dispatcher is killed now and then: a failed poll is simply skipped.
            const r = await unary<OpenDatasetResponse__Output>((o, cb) => client.OpenDataset({ name }, o, cb), 1000)
              .then((x) => x)
              .catch(() => null);
            if (r) this.observe(name, r);
          }
          await new Promise((res) => setTimeout(res, 100));
        }
      } finally {
        client.close();
      }
    })();
  }

  private observe(name: string, r: OpenDatasetResponse__Output): void {
    const now = Date.now() - this.start;
    for (const c of r.chunks) {
      const key = `${name}/${String(c.index)}`;
      const prev = this.last.get(key);
      this.last.set(key, { owner: c.ownerNodeId, era: c.era, recovering: c.ownerRecovering });
      if (prev && c.ownerNodeId !== prev.owner && c.era > prev.era) {
        this.events.push({
          dataset: name,
          chunk: c.index,
          from: prev.owner,
          to: c.ownerNodeId,
          era: c.era,
          movedAt: now,
          takenOverAt: c.ownerRecovering ? null : now,
        });
      }
      const open = this.events.findLast((e) => e.dataset === name && e.chunk === c.index);
      if (open && open.takenOverAt === null && !c.ownerRecovering && open.to === c.ownerNodeId) open.takenOverAt = now;
    }
  }

  async stop(applied: AppliedFault[], nodeIds: number[]): Promise<FailoverFigures> {
    this.stopped = true;
    await this.loop;
    const faultToTakenOver: number[] = [];
    const faultToNamed: number[] = [];
    const takeover: number[] = [];
    let handoffs = 0;
    for (const e of this.events) {
      // The last fault on the old owner before the move. A graceful restart hands its chunks off (one era up as
      // well): that is a planned move, not a failover.
      const cause = applied
        .filter((f) => typeof f.target === 'number' && nodeIds[f.target] === e.from && f.began <= e.movedAt)
        .at(-1);
      if (cause?.kind === 'restart' && e.movedAt <= cause.recovered) {
        e.handoff = true;
        handoffs++;
        continue;
      }
      if (e.takenOverAt === null) continue;
      takeover.push(e.takenOverAt - e.movedAt);
      // A node is declared dead only while the fault lasts (it is READY again once it rejoined): a move seen more
      // than a poll's slack after that has another cause (none of the faults on the old owner).
      if (cause && cause.kind !== 'restart' && e.movedAt <= cause.recovered + 2000) {
        e.cause = { kind: cause.kind, began: cause.began, recovered: cause.recovered };
        faultToTakenOver.push(e.takenOverAt - cause.began);
        faultToNamed.push(e.movedAt - cause.began);
      }
    }
    return {
      failovers: this.events.length - handoffs,
      handoffs,
      faultToTakenOver,
      faultToNamed,
      takeover,
      events: this.events,
    };
  }
}

// Faults declared as data (the etcd robustness shape): a schedule is a list of {at, kind, target, ms}, made from a
// seed or given as JSON, printed before the run and applied by one runner that also restarts what it killed.
import type { ChaosCluster } from './cluster.ts';
import { Rng } from './rng.ts';

/**
 *   kill9-node        SIGKILL node `target`, start it again `ms` later (same name, state and pool dirs)
 *   kill9-dispatcher  SIGKILL the dispatcher, start it again `ms` later on the same port and state dir
 *   pause-node        SIGSTOP node `target` for `ms`, then SIGCONT
 *   restart           SIGTERM `target` (a node index or 'dispatcher'), then start it again
 *   partition-node    cut node `target`'s link to the dispatcher (its data links stay up) for `ms`, then heal it:
 *                     longer than the lease, so the node is declared dead while it still runs and reaches its peers
 */
export type FaultKind = 'kill9-node' | 'kill9-dispatcher' | 'pause-node' | 'restart' | 'partition-node';

export interface Fault {
  /** ms after the load started. */
  at: number;
  kind: FaultKind;
  target: number | 'dispatcher';
  ms: number;
}

export interface FaultPlan {
  nodeKills: number;
  dispatcherKills: number;
  pauses: number;
  restarts: number;
  partitions: number;
}

/** A fault as it happened: when it began and when everything it stopped was READY again (ms after load start). */
export interface AppliedFault extends Fault {
  began: number;
  recovered: number;
}

/**
 * Spreads the plan's faults over [10%, 80%] of the load: one per equal slot, starting in the first 40% of its
 * slot, so that each fault is over (restarts included) well before the next one and before the load ends.
 */
export function makeSchedule(
  seed: number,
  p: { durationMs: number; nodes: number; leaseMs: number; plan: FaultPlan },
): Fault[] {
  const rng = new Rng(Rng.derive(seed, 1));
  const kinds: FaultKind[] = [
    ...Array<FaultKind>(p.plan.nodeKills).fill('kill9-node'),
    ...Array<FaultKind>(p.plan.dispatcherKills).fill('kill9-dispatcher'),
    ...Array<FaultKind>(p.plan.pauses).fill('pause-node'),
    ...Array<FaultKind>(p.plan.restarts).fill('restart'),
    ...Array<FaultKind>(p.plan.partitions).fill('partition-node'),
  ];
  for (let i = kinds.length - 1; i > 0; i--) {
    const j = rng.int(0, i);
    [kinds[i], kinds[j]] = [kinds[j] as FaultKind, kinds[i] as FaultKind];
  }
  const from = 0.1 * p.durationMs;
  const slot = kinds.length > 0 ? (0.7 * p.durationMs) / kinds.length : 0;
  return kinds.map((kind, i) => {
    const at = Math.round(from + i * slot + rng.next() * 0.4 * slot);
    const node = rng.int(0, p.nodes - 1);
    switch (kind) {
      case 'kill9-node':
        return { at, kind, target: node, ms: rng.int(300, 3000) };
      case 'kill9-dispatcher':
        return { at, kind, target: 'dispatcher', ms: rng.int(300, 3000) };
      case 'pause-node':
        // Around the membership lease: shorter pauses stall peers, longer ones get the node declared dead.
        return { at, kind, target: node, ms: rng.int(Math.round(p.leaseMs / 2), Math.round(p.leaseMs * 1.5)) };
      case 'restart':
        return { at, kind, target: node, ms: 0 };
      case 'partition-node':
        return { at, kind, target: node, ms: rng.int(Math.round(p.leaseMs * 1.5), Math.round(p.leaseMs * 3)) };
    }
  });
}

function nodeOf(f: Fault): number {
  if (typeof f.target !== 'number') throw new Error(`${f.kind} needs a node index as target`);
  return f.target;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Applies one fault and waits until what it stopped is running (READY) again. */
async function apply(c: ChaosCluster, f: Fault): Promise<void> {
  switch (f.kind) {
    case 'kill9-node':
      await c.killNode(nodeOf(f));
      await sleep(f.ms);
      await c.startNodeAgain(nodeOf(f));
      return;
    case 'kill9-dispatcher':
      await c.killDispatcher();
      await sleep(f.ms);
      await c.startDispatcherAgain();
      return;
    case 'pause-node':
      await c.pauseNode(nodeOf(f), f.ms);
      return;
    case 'restart':
      if (f.target === 'dispatcher') await c.restartDispatcherGracefully();
      else await c.restartNodeGracefully(f.target);
      return;
    case 'partition-node':
      await c.partitionNode(nodeOf(f), f.ms);
      return;
  }
}

/** Runs the schedule from `start` (a Date.now() value), one fault at a time, in order of `at`. */
export async function runSchedule(
  c: ChaosCluster,
  schedule: Fault[],
  start: number,
  log: (line: string) => void,
): Promise<AppliedFault[]> {
  const done: AppliedFault[] = [];
  for (const f of [...schedule].sort((a, b) => a.at - b.at)) {
    const wait = start + f.at - Date.now();
    if (wait > 0) await sleep(wait);
    const began = Date.now() - start;
    await apply(c, f);
    const recovered = Date.now() - start;
    log(`fault ${describe(f)} at +${String(began)} ms, everything READY again at +${String(recovered)} ms`);
    done.push({ ...f, began, recovered });
  }
  return done;
}

export function describe(f: Fault): string {
  const target = f.target === 'dispatcher' ? 'dispatcher' : `n${String(f.target + 1)}`;
  return `${f.kind} ${target}${f.ms > 0 ? ` ${String(f.ms)} ms` : ''}`;
}

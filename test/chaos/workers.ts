// The harness side of the workers: spawns test/chaos/worker.ts processes, turns their stdout lines into a history
// of operations, records every process that dies without being asked to stop (an app death), and starts it again.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { ExecutionContext } from 'ava';
import { projectRoot } from '../../services/common/paths.ts';
import type { FinalState, Line, OpValues, Role, Status, WorkerConfig } from './workload.ts';

const WORKER = join(projectRoot, 'test/chaos/worker.ts');

/** One operation of the history. `st` is 'died' when the process died before it returned. */
export interface OpRecord {
  worker: string;
  role: Role;
  node: number;
  incarnation: number;
  op: string;
  t0: number;
  t1: number | null;
  /** The commit was sent: a failure after this point may have applied it. */
  sent: boolean;
  st: Status | 'died';
  code?: string;
  msg?: string;
  v?: OpValues;
}

export interface AppDeath {
  worker: string;
  role: Role;
  node: number;
  incarnation: number;
  t: number;
  code: number | null;
  signal: string | null;
  /** The operation in flight, if any. */
  during: string | null;
  stderr: string[];
}

export interface WorkerSpec {
  role: Role;
  name: string;
  node: number;
  slot: number;
}

interface Running {
  child: ChildProcessWithoutNullStreams;
  ended: boolean;
  exited: Promise<void>;
}

function spawnWorker(t: ExecutionContext, cfg: WorkerConfig): ChildProcessWithoutNullStreams {
  const child = spawn(process.execPath, ['--import', 'tsx', WORKER, JSON.stringify(cfg)], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, HOTPOT_TRACES_EXPORTER: 'none' },
  });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  child.stdin.on('error', () => undefined); // writing "stop" to a worker that just died
  return child;
}

function parse(line: string): Line | null {
  try {
    return JSON.parse(line) as Line;
  } catch {
    return null;
  }
}

export class WorkerPool {
  readonly ops: OpRecord[] = [];
  readonly deaths: AppDeath[] = [];
  /** Notes by kind (reconnects, retried opens), and lines that were not JSON. */
  readonly notes = new Map<string, number>();
  /** Workers that did not stop within the timeout and were killed (their last operation is 'died'). */
  readonly killedAtStop: string[] = [];
  private readonly running = new Map<string, Running>();
  private stopping = false;

  constructor(
    private readonly t: ExecutionContext,
    private readonly specs: WorkerSpec[],
    private readonly configOf: (spec: WorkerSpec, incarnation: number) => WorkerConfig,
  ) {}

  start(): void {
    for (const s of this.specs) this.launch(s, 0);
  }

  private note(what: string): void {
    this.notes.set(what, (this.notes.get(what) ?? 0) + 1);
  }

  private launch(spec: WorkerSpec, incarnation: number): void {
    const child = spawnWorker(this.t, this.configOf(spec, incarnation));
    const stderr: string[] = [];
    createInterface({ input: child.stderr }).on('line', (l) => {
      stderr.push(l);
      if (stderr.length > 50) stderr.shift();
    });
    const open = new Map<number, OpRecord>();
    const r: Running = { child, ended: false, exited: Promise.resolve() };
    const lines = createInterface({ input: child.stdout });
    lines.on('line', (l) => {
      const m = parse(l);
      if (m === null) return this.note('garbled line');
      switch (m.e) {
        case 'inv': {
          const rec: OpRecord = {
            worker: spec.name,
            role: spec.role,
            node: spec.node,
            incarnation,
            op: m.op,
            t0: m.t,
            t1: null,
            sent: false,
            st: 'died',
          };
          open.set(m.n, rec);
          this.ops.push(rec);
          return;
        }
        case 'sent': {
          const rec = open.get(m.n);
          if (rec) rec.sent = true;
          return;
        }
        case 'ret': {
          const rec = open.get(m.n);
          if (!rec) return;
          open.delete(m.n);
          Object.assign(rec, { t1: m.t, st: m.st }, m.code ? { code: m.code } : {}, m.msg ? { msg: m.msg } : {});
          if (m.v) rec.v = m.v;
          return;
        }
        case 'note':
          return this.note(m.what.split(' ')[0] ?? m.what);
        case 'end':
          r.ended = true;
          return;
        case 'final':
          return;
      }
    });
    // 'close' comes after every stdout line was read, so the history is complete when it fires.
    r.exited = new Promise<void>((resolve) => {
      child.once('close', (code, signal) => {
        this.running.delete(spec.name);
        if (!r.ended && !this.killedAtStop.includes(spec.name)) {
          const during = [...open.values()].at(-1);
          this.deaths.push({
            worker: spec.name,
            role: spec.role,
            node: spec.node,
            incarnation,
            t: Date.now(),
            code,
            signal,
            during: during ? `${during.op}${during.sent ? ' (commit sent)' : ''}` : null,
            stderr: stderr.slice(-8),
          });
          if (!this.stopping) {
            // Restart with a growing pause, in case it dies at once again.
            const again = this.deaths.filter((d) => d.worker === spec.name).length;
            setTimeout(
              () => {
                if (!this.stopping) this.launch(spec, incarnation + 1);
              },
              200 * Math.min(2 ** again, 16),
            );
          }
        }
        resolve();
      });
    });
    this.running.set(spec.name, r);
  }

  /** Asks every worker to stop after its current operation; kills those still running after `timeoutMs`. */
  async stop(timeoutMs: number): Promise<void> {
    this.stopping = true; // pending restarts are dropped
    const all = [...this.running.entries()];
    for (const [, r] of all) r.child.stdin.write('stop\n');
    const deadline = setTimeout(() => {
      for (const [name, r] of this.running) {
        this.killedAtStop.push(name);
        r.child.kill('SIGKILL');
      }
    }, timeoutMs);
    await Promise.all(all.map(([, r]) => r.exited));
    clearTimeout(deadline);
  }
}

/** Runs a one-shot worker (init, final) to its end; resolves with its final state, if it reported one. */
export async function runOnce(
  t: ExecutionContext,
  cfg: WorkerConfig,
  timeoutMs: number,
): Promise<{ final: FinalState | null; notes: string[] }> {
  const child = spawnWorker(t, cfg);
  const stderr: string[] = [];
  createInterface({ input: child.stderr }).on('line', (l) => stderr.push(l));
  let final: FinalState | null = null;
  let ended = false;
  const notes: string[] = [];
  createInterface({ input: child.stdout }).on('line', (l) => {
    const m = parse(l);
    if (m?.e === 'final') final = m.state;
    if (m?.e === 'note') notes.push(`${m.what}: ${m.msg}`);
    if (m?.e === 'end') ended = true;
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const { code, signal } = await new Promise<{ code: number | null; signal: string | null }>((resolve) =>
    child.once('close', (c, s) => resolve({ code: c, signal: s })),
  );
  clearTimeout(timer);
  if (!ended) {
    throw new Error(
      `${cfg.role} worker on ${cfg.socket} did not finish (code ${String(code)}, signal ${String(signal)}): ` +
        `${notes.slice(-5).join('; ')}\n${stderr.slice(-20).join('\n')}`,
    );
  }
  return { final, notes };
}

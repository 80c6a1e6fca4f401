// `hotpot down`: stops the local cluster that `hotpot up` runs for a state directory (./.hotpot by default): SIGTERM
// to the `up` process named in its cluster.json, which stops the nodes, then the dispatcher; waits until it is gone.
// With --clean it then removes the cluster's pools and state, as `hotpot clean --yes` does.
import { resolve } from 'node:path';
import { HotpotError } from '../common/errors.ts';
import { clean, runningUp } from './clean.ts';
import { printJson } from './output.ts';

export interface DownResult {
  stateDir: string;
  /** The pid of the `hotpot up` that was stopped; null when none was running. */
  stopped: number | null;
  /** With --clean: the pools and state directory removed. */
  removed?: string[];
}

/** Stops the cluster under `stateDir` (relative to `cwd`) and, with `clean`, removes it. */
export async function down(opts: {
  stateDir: string;
  cwd: string;
  clean: boolean;
  timeoutMs: number;
}): Promise<DownResult> {
  const stateDir = resolve(opts.cwd, opts.stateDir);
  const pid = runningUp(stateDir);
  if (pid !== null) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EPERM') {
        throw new HotpotError('PERMISSION_DENIED', `hotpot up (pid ${String(pid)}) is another user's: cannot stop it`);
      }
    }
    // `up` waits for its nodes and then its dispatcher to stop (each killed after a grace period if it hangs).
    const until = Date.now() + opts.timeoutMs;
    // Until its cluster.json is gone or no longer names a live `hotpot up` (up removes it as it exits).
    while (runningUp(stateDir) === pid) {
      if (Date.now() > until) {
        throw new HotpotError(
          'DEADLINE_EXCEEDED',
          `hotpot up (pid ${String(pid)}) is still running ${String(opts.timeoutMs / 1000)} s after SIGTERM`,
        );
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const result: DownResult = { stateDir, stopped: pid };
  if (opts.clean) result.removed = clean({ stateDir, yes: true, cwd: opts.cwd }).paths;
  return result;
}

/** The `hotpot down` command: runs `down` and prints what it did. */
export async function runDown(o: { stateDir: string; clean?: boolean }, json: boolean): Promise<void> {
  const r = await down({ stateDir: o.stateDir, cwd: process.cwd(), clean: o.clean === true, timeoutMs: 60_000 });
  if (json) {
    printJson(r);
    return;
  }
  process.stdout.write(
    r.stopped === null
      ? `no cluster is running under ${r.stateDir}\n`
      : `stopped the cluster under ${r.stateDir} (hotpot up, pid ${String(r.stopped)})\n`,
  );
  if (r.removed === undefined) return;
  process.stdout.write(
    r.removed.length === 0 ? 'nothing to clean\n' : `removed:\n${r.removed.map((p) => `  ${p}\n`).join('')}`,
  );
}

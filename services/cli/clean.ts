// `hotpot clean`: removes a stopped local cluster — every node's pool (in /dev/shm, which outlives the cluster until
// a reboot) and the state directory (dispatcher metadata, node identities, data dirs, the cluster secret).
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { POOL_DIR_FILE } from '../common/paths.ts';
import { CLUSTER_FILE, type ClusterFile } from './client.ts';

export class CleanRefused extends Error {}

/** A pool holds only these (pool.cc, dataset_store.cc, redo_log.cc); a directory with anything else is not removed. */
const POOL_FILE = /^(ds-\d+\.(meta|pages)|store\.id|redo\.log)(\.tmp)?$/;

/** The pool directories the nodes under `stateDir` recorded (only ones that hold nothing but pool files). */
export function poolsOf(stateDir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(stateDir, { withFileTypes: true })) {
    const f = join(stateDir, e.name, POOL_DIR_FILE);
    if (!e.isDirectory() || !existsSync(f)) continue;
    const pool = readFileSync(f, 'utf8').trim();
    if (!pool.startsWith('/') || !existsSync(pool) || !statSync(pool).isDirectory()) continue;
    if (readdirSync(pool).every((f) => POOL_FILE.test(f))) out.push(pool);
  }
  return out;
}

/** True if `pid` runs `hotpot up` (not another process that got a dead `up`'s pid). */
function isHotpotUp(pid: number): boolean {
  let args: string[];
  try {
    args = readFileSync(`/proc/${String(pid)}/cmdline`, 'utf8').split('\0');
  } catch {
    // No /proc entry we can read: alive (kill -0 said so), so take it at its word.
    return true;
  }
  const bin = args.findIndex((a) => /(^|\/)hotpot(\.mjs)?$/.test(a));
  return bin >= 0 && args.slice(bin + 1).includes('up');
}

/** `hotpot up` writes its pid here when it starts and removes it when it has stopped its cluster. */
export const UP_PID_FILE = 'up.pid';

/** The pid in `stateDir`'s up.pid, else in its cluster.json (written by an older `hotpot up`), or null. */
function recordedPid(stateDir: string): number | null {
  let pid: unknown = null;
  try {
    pid = Number(readFileSync(join(stateDir, UP_PID_FILE), 'utf8').trim());
  } catch {
    try {
      pid = (JSON.parse(readFileSync(join(stateDir, 'cluster.json'), 'utf8')) as Partial<ClusterFile>).pid;
    } catch {
      // neither
    }
  }
  return typeof pid === 'number' && Number.isInteger(pid) && pid > 0 ? pid : null;
}

/** The pid of the `hotpot up` running (or starting) the cluster under `stateDir`, or null. */
export function runningUp(stateDir: string): number | null {
  const pid = recordedPid(stateDir);
  if (pid === null) return null;
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return null;
  }
  return isHotpotUp(pid) ? pid : null;
}

/** Removes the cluster under `stateDir` (with `yes`), or says what it would remove. Returns the paths. */
export function clean(opts: { stateDir: string; yes: boolean; cwd: string }): { removed: boolean; paths: string[] } {
  const stateDir = resolve(opts.cwd, opts.stateDir);
  if (!existsSync(stateDir)) return { removed: false, paths: [] };
  const pid = runningUp(stateDir);
  if (pid !== null) {
    throw new CleanRefused(`a cluster is running under ${stateDir} (hotpot up, pid ${String(pid)}): stop it first`);
  }
  const paths = [...poolsOf(stateDir), stateDir];
  if (!opts.yes) return { removed: false, paths };
  for (const p of paths) rmSync(p, { recursive: true, force: true });
  // The pointer the CLI and SDK follow, when it points at this cluster.
  const pointer = join(opts.cwd, CLUSTER_FILE);
  try {
    if ((JSON.parse(readFileSync(pointer, 'utf8')) as ClusterFile).stateDir === stateDir) rmSync(pointer);
  } catch {
    // none, or not this cluster's
  }
  return { removed: true, paths };
}

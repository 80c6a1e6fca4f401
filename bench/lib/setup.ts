// The set-up and teardown a benchmark orchestrator (bench/*.ts) wraps around its measurements: temp work and
// /dev/shm pool dirs, a cluster CA with an admin certificate (security on, as deployed), the environment for the
// dispatcher and nodes it starts, and a teardown that runs however the run ends (done, failed or interrupted).
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { initCa, issueCert } from '../../services/common/certs.ts';
import { Procs } from './procs.ts';

export interface BenchRun {
  /** State dirs, certificates and floor files; removed by `cleanup`. */
  work: string;
  /** Node pool dirs (under /dev/shm); removed by `cleanup`. */
  shm: string;
  /** Every child process of the run, so `cleanup` can stop them all. */
  procs: Procs;
  /** The cluster CA and the `admin` client certificate. */
  tlsDir: string;
  /** For the dispatcher and nodes (see startBenchCluster): a fresh cluster secret, no trace export, the TLS dir. */
  env: NodeJS.ProcessEnv;
  /** Stops every process still running, then removes `work` and `shm`. */
  cleanup(): Promise<void>;
}

/**
 * Makes `/tmp/<prefix>XXXXXX` and `/dev/shm/<prefix>XXXXXX`, a cluster CA in `work/tls` with an `admin` client
 * certificate, and points this process's environment at it (HOTPOT_TLS_DIR, HOTPOT_CERT=admin) so the `hotpot` CLI
 * the benchmark runs, which inherits it, is an admin of the run's cluster.
 */
export function startBenchRun(prefix: string): BenchRun {
  const work = mkdtempSync(join('/tmp', prefix));
  const shm = mkdtempSync(join('/dev/shm', prefix));
  const procs = new Procs();
  const tlsDir = join(work, 'tls');
  initCa(tlsDir);
  issueCert(tlsDir, { role: 'admin', name: 'admin' });
  process.env.HOTPOT_TLS_DIR = tlsDir;
  process.env.HOTPOT_CERT = 'admin';
  return {
    work,
    shm,
    procs,
    tlsDir,
    env: {
      HOTPOT_CLUSTER_SECRET: randomBytes(24).toString('hex'),
      HOTPOT_TRACES_EXPORTER: 'none',
      HOTPOT_TLS_DIR: tlsDir,
    },
    cleanup: async () => {
      await procs.stopAll();
      rmSync(work, { recursive: true, force: true });
      rmSync(shm, { recursive: true, force: true });
    },
  };
}

/**
 * Runs a benchmark's `main` and then tears the run down, and exits: 0 when `main` resolved, 1 when it threw (logged
 * with its stack), 130 on SIGINT/SIGTERM (torn down first). `beforeCleanup` runs first on every path, for children
 * the run started outside `run.procs`.
 */
export async function runBenchMain(
  run: BenchRun,
  main: () => Promise<void>,
  opts: { log: (msg: string) => void; beforeCleanup?: () => void },
): Promise<never> {
  const cleanup = async (): Promise<void> => {
    opts.beforeCleanup?.();
    await run.cleanup();
  };
  for (const sig of ['SIGINT', 'SIGTERM'] as const)
    process.once(sig, () => {
      opts.log(`${sig}: tearing down`);
      void cleanup().finally(() => process.exit(130));
    });
  let code = 0;
  try {
    await main();
  } catch (e) {
    opts.log(`FAILED: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    code = 1;
  } finally {
    await cleanup();
  }
  process.exit(code);
}

/** Writes a benchmark's results file: `{ schema: 1, ...body }` as indented JSON, then logs where it went. */
export function writeResults(file: string, body: Record<string, unknown>, log: (line: string) => void): void {
  writeFileSync(file, JSON.stringify({ schema: 1, ...body }, null, 2) + '\n');
  log(`wrote ${file}`);
}

// The machine line every benchmark report starts with: what it ran on and how loaded it was.
import { closeSync, openSync, rmSync, writeSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, release, totalmem } from 'node:os';
import { join } from 'node:path';

export interface Machine {
  nproc: number;
  kernel: string;
  cpuModel: string;
  memoryGiB: number;
  node: string;
  date: string;
  loadAverage1m: number;
}

export function machine(): Machine {
  return {
    nproc: availableParallelism(),
    kernel: release(),
    cpuModel: cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    date: new Date().toISOString(),
    loadAverage1m: Number((loadavg()[0] ?? 0).toFixed(2)),
  };
}

/** "machine: 2 vCPU, CPU "…", kernel …; load average (1 min) at start X, at end Y" */
export function machineLine(m: Machine): string {
  return `machine: ${String(m.nproc)} vCPU, CPU "${m.cpuModel}", kernel ${m.kernel}, ${String(m.memoryGiB)} GiB, node ${m.node}; load average (1 min) at start ${String(m.loadAverage1m)}, at end ${(loadavg()[0] ?? 0).toFixed(2)}`;
}

/**
 * Writes `bytes` into a new file in `dir` (a tmpfs) and deletes it; returns the ns the writes took. On this VM the
 * first write to guest memory the host has not backed yet (never touched, or handed back while idle) costs ~12 µs a
 * page against ~1.4 µs for memory freed a moment ago (docs/benchmarks.md "Fresh memory on this VM"). A benchmark whose
 * system stores what it reads (a node caching fetched pages) calls this right before its timed part, so the pages it
 * allocates come from memory just freed and the run measures the system, not the hypervisor; the time returned shows
 * that cost when the memory was cold. The floors allocate nothing, so they never pay it.
 */
export function warmFreshMemory(dir: string, bytes: number): number {
  const path = join(dir, 'warm-fresh-memory');
  const chunk = Buffer.alloc(1 << 20, 1);
  const t0 = process.hrtime.bigint();
  const fd = openSync(path, 'w');
  try {
    for (let off = 0; off < bytes; off += chunk.length) writeSync(fd, chunk, 0, chunk.length, off);
  } finally {
    closeSync(fd);
  }
  const ns = Number(process.hrtime.bigint() - t0);
  rmSync(path);
  return ns;
}

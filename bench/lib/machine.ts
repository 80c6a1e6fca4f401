// The machine line every benchmark report starts with: what it ran on and how loaded it was.
import { availableParallelism, cpus, loadavg, release, totalmem } from 'node:os';

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

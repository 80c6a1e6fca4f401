// Benchmark app for the consistency workloads (bench/consistency.ts): one SDK process on one node, one job given
// as a JSON argument, one JSON result line on stdout.
//   scal      the paper's commit scalability workload: commit 32 random 4 KiB areas, N=1, `iterations` times
//             (MRSW: acquire the 32 pages, write, commit, release; MRMW: write, commit, retry on ABORTED)
//   conflict  the paper's conflict workload: k processes write 32 sequential 1 KiB areas (the same ones, or
//             disjoint ones) in lock-step rounds (a barrier before each round) and commit once per round
import { connect, CommitConflictError } from '../clients/typescript/index.ts';

const PAGE = 4096;

interface Job {
  mode: 'scal' | 'conflict';
  socket: string;
  name: string;
  mrsw: boolean;
  iterations: number;
  pages: number;
  // conflict
  parties?: number;
  base?: number;
  tag?: string;
}

async function main(): Promise<void> {
  const job = JSON.parse(process.argv[2] ?? '{}') as Job;
  const hp = await connect({ socketPath: job.socket });
  const ds = await hp.open(job.name);
  const mem = ds.map();
  const lat: number[] = [];
  let conflicts = 0;
  const phase = { acquireNs: 0, commitNs: 0, releaseNs: 0 };
  const t0 = process.hrtime.bigint();
  for (let it = 0; it < job.iterations; it++) {
    if (job.mode === 'scal') {
      const set = new Set<number>();
      while (set.size < 32) set.add(Math.floor(Math.random() * job.pages));
      const pages = [...set].sort((a, b) => a - b);
      const v = (it * 13 + process.pid) & 0xff;
      const s = process.hrtime.bigint();
      if (job.mrsw) {
        await ds.acquire(
          pages.map((p) => ({ offset: p * PAGE, length: PAGE })),
          { leaseMs: 10_000, waitMs: 30_000 },
        );
      }
      const a = process.hrtime.bigint();
      phase.acquireNs += Number(a - s);
      for (;;) {
        for (const p of pages) mem.fill(v, p * PAGE, (p + 1) * PAGE);
        try {
          await ds.commit({ replicas: 1 });
          break;
        } catch (e) {
          if (!(e instanceof CommitConflictError)) throw e;
          conflicts++;
          await ds.rollback();
        }
      }
      const c = process.hrtime.bigint();
      phase.commitNs += Number(c - a);
      if (job.mrsw) await ds.release();
      phase.releaseNs += Number(process.hrtime.bigint() - c);
      lat.push(Number(process.hrtime.bigint() - s));
    } else {
      await ds.barrier(`${job.tag ?? 'c'}-${String(it)}`, job.parties ?? 1, { timeoutMs: 60_000 });
      const base = job.base ?? 0;
      const s = process.hrtime.bigint();
      if (job.mrsw) await ds.acquire([{ offset: base, length: 32 * 1024 }], { leaseMs: 10_000, waitMs: 30_000 });
      for (let a = 0; a < 32; a++) mem.fill((it + process.pid + a) & 0xff, base + a * 1024, base + (a + 1) * 1024);
      try {
        await ds.commit({ replicas: 1 });
      } catch (e) {
        if (!(e instanceof CommitConflictError)) throw e;
        conflicts++;
        await ds.rollback();
      }
      if (job.mrsw) await ds.release();
      lat.push(Number(process.hrtime.bigint() - s));
    }
  }
  const wallNs = Number(process.hrtime.bigint() - t0);
  process.stdout.write(JSON.stringify({ lat, conflicts, wallNs, phase }) + '\n');
  hp.close();
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});

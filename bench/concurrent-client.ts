// One committer of bench/concurrent.ts, on Hotpot (the TypeScript SDK on its node's socket, committing its own page
// of the shared dataset) or on Redis (SET of 4 KiB + WAIT 1 0 on its own key). Started with a JSON job; sets up
// (Hotpot: maps the dataset and commits its page a few times, so the timed loop starts warm), prints "READY", then
// for each "go <startAtEpochMs> <ms>" line waits until the wall clock reaches startAtEpochMs — every committer of a
// level gets the same one, so they start together — runs its closed loop until startAt + ms and prints one JSON line
// (ConcurrentResult); "quit" exits.
import { createInterface } from 'node:readline';
import { connect } from '../clients/typescript/index.ts';
import { RespClient } from './lib/resp.ts';

const PAGE = 4096;
const WARMUP = 5;

export type ConcurrentJob =
  | { target: 'hotpot'; socket: string; name: string; page: number; replicas: number; keepSamples: number }
  | { target: 'redis'; port: number; key: string; keepSamples: number };

export interface ConcurrentResult {
  ops: number;
  failures: number;
  /** Hotpot: commits that answered with fewer copies than asked, or other than one page. */
  shortfalls: number;
  /** From startAt to the end of the last operation. */
  elapsedMs: number;
  /** Latencies in ns, a uniform sample of at most keepSamples. */
  samples: number[];
  /** The first few failure messages. */
  errors: string[];
}

/** One durable write of the loop; throws on failure, returns false on a shortfall. */
type Op = () => Promise<boolean>;

async function hotpotOp(job: Extract<ConcurrentJob, { target: 'hotpot' }>): Promise<{ op: Op; close(): void }> {
  const hp = await connect({ socketPath: job.socket });
  const ds = await hp.open(job.name);
  const page = ds.map(job.page * PAGE, PAGE);
  let b = 0;
  const op: Op = async () => {
    // Every byte of the page changes (a full 4 KiB of new data, as the Redis value and the floor's write).
    b = (b % 255) + 1;
    page.fill(b);
    const r = await ds.commit({ replicas: job.replicas });
    return r.copies >= job.replicas && r.pages === 1;
  };
  for (let i = 0; i < WARMUP; i++) await op();
  return { op, close: () => hp.close() };
}

async function redisOp(job: Extract<ConcurrentJob, { target: 'redis' }>): Promise<{ op: Op; close(): void }> {
  const c = await RespClient.open(job.port);
  const value = Buffer.alloc(PAGE, 0x5a);
  let stamp = 0;
  const op: Op = async () => {
    value.writeUInt32LE(stamp++ >>> 0, 0);
    const set = await c.call('SET', job.key, value);
    if (set !== 'OK') throw new Error(`SET answered ${JSON.stringify(set)}`);
    const acks = await c.call('WAIT', '1', '0');
    if (acks !== 1) throw new Error(`WAIT 1 0 answered ${JSON.stringify(acks)}`);
    return true;
  };
  for (let i = 0; i < WARMUP; i++) await op();
  return { op, close: () => c.close() };
}

async function loop(op: Op, startAt: number, ms: number, keep: number): Promise<ConcurrentResult> {
  const wait = startAt - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  const samples: number[] = [];
  const errors: string[] = [];
  let ops = 0;
  let failures = 0;
  let shortfalls = 0;
  const until = startAt + ms;
  while (Date.now() < until) {
    const t0 = process.hrtime.bigint();
    try {
      if (!(await op())) shortfalls++;
    } catch (e) {
      failures++;
      if (errors.length < 3) errors.push(e instanceof Error ? e.message : String(e));
      // A failing target fails fast: do not spin on it.
      await new Promise((r) => setTimeout(r, 10));
      continue;
    }
    const ns = Number(process.hrtime.bigint() - t0);
    ops++;
    if (samples.length < keep) samples.push(ns);
    else {
      const j = Math.floor(Math.random() * ops);
      if (j < keep) samples[j] = ns;
    }
  }
  return { ops, failures, shortfalls, elapsedMs: Date.now() - startAt, samples, errors };
}

const job = JSON.parse(process.argv[2] ?? '{}') as ConcurrentJob;
const target = job.target === 'hotpot' ? await hotpotOp(job) : await redisOp(job);
process.stdout.write('READY\n');
for await (const line of createInterface({ input: process.stdin })) {
  const [cmd, a, b] = line.trim().split(' ');
  if (cmd === 'quit') break;
  if (cmd === 'go') {
    const r = await loop(target.op, Number(a), Number(b), job.keepSamples);
    process.stdout.write(JSON.stringify(r) + '\n');
  }
}
target.close();
process.exit(0);

// The benchmark's application process: one Hotpot app (TypeScript SDK, clients/typescript) doing one job given
// as a JSON argument, printing one JSON result line on stdout. run.ts starts it on the node it wants.
//   fill    write a recognisable pattern into the given pages and commit them
//   fault   time the first touch (one-byte read) of each given page, in the given order
//   scan    fill + commit a whole dataset, fault it in, then time full scans of the mapping and of a plain Buffer
//   commit  time ds.commit() of 1..k freshly dirtied pages for each given configuration
//   seqread time one sequential pass over a page range not yet on this node (one-byte read per page), then verify it
import { connect, type Dataset } from '../clients/typescript/index.ts';

const PAGE = 4096;

/** A run of pages: for datasets whose page list would not fit in one argument (Linux caps one at 128 KiB). */
export interface PageRange {
  first: number;
  count: number;
}
interface FillJob {
  mode: 'fill';
  socket: string;
  name: string;
  pages: number[] | PageRange;
  replicas: number;
}
interface FaultJob {
  mode: 'fault';
  socket: string;
  name: string;
  warmup: number[];
  pages: number[];
}
interface ScanJob {
  mode: 'scan';
  socket: string;
  name: string;
  scans64: number;
  scans32: number;
  /** Snapshot-read iterations (8-byte reads: plain, in ds.snapshot, validated with commit({reads})). */
  reads: number;
}
export interface CommitConfig {
  label: string;
  pages: number[];
  replicas: number;
  iterations: number;
  warmup: number;
}
interface CommitJob {
  mode: 'commit';
  socket: string;
  name: string;
  configs: CommitConfig[];
}
interface SeqReadJob {
  mode: 'seqread';
  socket: string;
  name: string;
  range: PageRange;
  /** Every this many pages, the whole page is checked (every page's first word is). */
  verifyEvery: number;
}
type Job = FillJob | FaultJob | ScanJob | CommitJob | SeqReadJob;

/** The byte pattern of page p: every byte (p*7+1)&0xff, then p as u32 at the start of the page. */
function writePattern(mem: Buffer, p: number): void {
  const off = p * PAGE;
  mem.fill((p * 7 + 1) & 0xff, off, off + PAGE);
  mem.writeUInt32LE(p >>> 0, off);
}

async function withDataset<T>(socket: string, name: string, fn: (ds: Dataset, mem: Buffer) => Promise<T>): Promise<T> {
  const hp = await connect({ socketPath: socket });
  try {
    const ds = await hp.open(name);
    return await fn(ds, ds.map());
  } finally {
    hp.close();
  }
}

async function fill(job: FillJob): Promise<unknown> {
  return withDataset(job.socket, job.name, async (ds, mem) => {
    if (Array.isArray(job.pages)) for (const p of job.pages) writePattern(mem, p);
    else for (let p = job.pages.first; p < job.pages.first + job.pages.count; p++) writePattern(mem, p);
    const r = await ds.commit({ replicas: job.replicas });
    return { pages: r.pages, copies: r.copies, bytes: r.bytes };
  });
}

// One function for warm-up and measurement so the timed loop runs optimised code.
function touchEach(mem: Buffer, pages: readonly number[], out: Float64Array): number {
  let sink = 0;
  for (let i = 0; i < pages.length; i++) {
    const off = (pages[i] ?? 0) * PAGE;
    const t0 = process.hrtime.bigint();
    sink += mem[off] ?? 0;
    const t1 = process.hrtime.bigint();
    out[i] = Number(t1 - t0);
  }
  return sink;
}

async function fault(job: FaultJob): Promise<unknown> {
  return withDataset(job.socket, job.name, (_ds, mem) => {
    touchEach(mem, job.warmup, new Float64Array(job.warmup.length));
    const cold = new Float64Array(job.pages.length);
    touchEach(mem, job.pages, cold);
    // Second touch of the same pages: the timer plus a load of a present page (what the cold numbers include
    // besides the fault itself).
    const warm = new Float64Array(job.pages.length);
    touchEach(mem, job.pages, warm);
    let bad = 0;
    for (const p of job.pages) if (mem.readUInt32LE(p * PAGE) !== p >>> 0) bad++;
    return Promise.resolve({ cold: [...cold], warm: [...warm], badPages: bad });
  });
}

function sum64(b: Buffer): bigint {
  const a = new BigUint64Array(b.buffer, b.byteOffset, b.length >>> 3);
  let s = 0n;
  for (let i = 0; i < a.length; i++) s += a[i] ?? 0n;
  return s;
}

function sum32(b: Buffer): number {
  const a = new Uint32Array(b.buffer, b.byteOffset, b.length >>> 2);
  let s = 0;
  for (let i = 0; i < a.length; i++) s = (s + (a[i] ?? 0)) >>> 0;
  return s;
}

function timed<T>(fn: () => T): { ns: number; value: T } {
  const t0 = process.hrtime.bigint();
  const value = fn();
  return { ns: Number(process.hrtime.bigint() - t0), value };
}

async function scan(job: ScanJob): Promise<unknown> {
  return withDataset(job.socket, job.name, async (ds, mem) => {
    const pages = mem.length / PAGE;
    for (let p = 0; p < pages; p++) writePattern(mem, p);
    const commit = await ds.commit({ replicas: 1 });
    // First pass maps every page (they are in this node's cache after the commit; any that are not get fetched).
    const first = timed(() => sum32(mem));
    const plain = Buffer.allocUnsafeSlow(mem.length);
    mem.copy(plain);
    sum32(plain);
    const res = {
      mapped64: [] as number[],
      plain64: [] as number[],
      mapped32: [] as number[],
      plain32: [] as number[],
    };
    let mismatches = 0;
    // Alternate mapped and plain so drift (other tenants, DAMON) hits both alike.
    for (let i = 0; i < job.scans32; i++) {
      const m = timed(() => sum32(mem));
      const q = timed(() => sum32(plain));
      res.mapped32.push(m.ns);
      res.plain32.push(q.ns);
      if (m.value !== q.value) mismatches++;
    }
    for (let i = 0; i < job.scans64; i++) {
      const m = timed(() => sum64(mem));
      const q = timed(() => sum64(plain));
      res.mapped64.push(m.ns);
      res.plain64.push(q.ns);
      if (m.value !== q.value) mismatches++;
    }
    // Reading 8 bytes that must be consistent: plain load (no guarantee), snapshot() (local check at the node),
    // read-only validation at the owner (commit({ reads })), interleaved so drift hits all alike.
    const reads = { plain8: [] as number[], snapshot8: [] as number[], validated8: [] as number[] };
    let sink = 0n;
    for (let i = 0; i < job.reads; i++) {
      const off = ((i * 7919) % pages) * PAGE;
      let t0 = process.hrtime.bigint();
      sink ^= mem.readBigUInt64LE(off);
      reads.plain8.push(Number(process.hrtime.bigint() - t0));
      t0 = process.hrtime.bigint();
      sink ^= await ds.snapshot((m) => m.readBigUInt64LE(off));
      reads.snapshot8.push(Number(process.hrtime.bigint() - t0));
      t0 = process.hrtime.bigint();
      sink ^= mem.readBigUInt64LE(off);
      await ds.commit({ reads: [{ offset: off, length: 8 }] });
      reads.validated8.push(Number(process.hrtime.bigint() - t0));
    }
    // A whole-dataset scan inside one snapshot, alternated with the same scan plain (its floor), so machine drift
    // between runs hits both alike.
    const snapScan32: number[] = [];
    const mappedScan32: number[] = [];
    let snapRuns = 0;
    for (let i = 0; i < 2 * job.scans32; i++) {
      let t0 = process.hrtime.bigint();
      await ds.snapshot((m) => {
        snapRuns++;
        return sum32(m);
      });
      snapScan32.push(Number(process.hrtime.bigint() - t0));
      t0 = process.hrtime.bigint();
      sum32(mem);
      mappedScan32.push(Number(process.hrtime.bigint() - t0));
    }
    return {
      bytes: mem.length,
      commitPages: commit.pages,
      firstScanNs: first.ns,
      ...res,
      ...reads,
      snapScan32,
      mappedScan32,
      snapRuns,
      sink: sink.toString(),
      mismatches,
    };
  });
}

/** Pages of `range` whose bytes are not writePattern's: every page's first word, whole pages every `every` pages. */
function badPages(mem: Buffer, range: PageRange, every: number): { bad: number; fullyChecked: number } {
  const expected = Buffer.alloc(PAGE);
  let bad = 0;
  let fullyChecked = 0;
  for (let p = range.first; p < range.first + range.count; p++) {
    const off = p * PAGE;
    let ok = mem.readUInt32LE(off) === p >>> 0;
    if (ok && (p - range.first) % every === 0) {
      fullyChecked++;
      expected.fill((p * 7 + 1) & 0xff);
      expected.writeUInt32LE(p >>> 0, 0);
      ok = mem.compare(expected, 0, PAGE, off, off + PAGE) === 0;
    }
    if (!ok) bad++;
  }
  return { bad, fullyChecked };
}

async function seqread(job: SeqReadJob): Promise<unknown> {
  return withDataset(job.socket, job.name, (_ds, mem) => {
    const { first, count } = job.range;
    let sink = 0;
    // One pass, first page to last, one byte per page: the data path's throughput, not the app's arithmetic.
    const t0 = process.hrtime.bigint();
    for (let p = first; p < first + count; p++) sink += mem[p * PAGE] ?? 0;
    const ns = Number(process.hrtime.bigint() - t0);
    const { bad, fullyChecked } = badPages(mem, job.range, job.verifyEvery);
    return Promise.resolve({ ns, pages: count, bytes: count * PAGE, badPages: bad, fullyChecked, sink });
  });
}

async function commit(job: CommitJob): Promise<unknown> {
  return withDataset(job.socket, job.name, async (ds, mem) => {
    const last = new Map<number, number>();
    const out: { label: string; ns: number[]; shortfalls: number; copies: number[] }[] = [];
    for (const cfg of job.configs) {
      const ns: number[] = [];
      const copies = new Set<number>();
      let shortfalls = 0;
      for (let i = -cfg.warmup; i < cfg.iterations; i++) {
        // Every byte of every page changes each iteration (a full 4 KiB of new data per page).
        for (const p of cfg.pages) {
          const b = ((last.get(p) ?? 0) % 255) + 1;
          last.set(p, b);
          mem.fill(b, p * PAGE, (p + 1) * PAGE);
        }
        const t0 = process.hrtime.bigint();
        const r = await ds.commit({ replicas: cfg.replicas });
        const t1 = process.hrtime.bigint();
        if (i >= 0) ns.push(Number(t1 - t0));
        copies.add(r.copies);
        if (r.copies < cfg.replicas || r.pages !== cfg.pages.length) shortfalls++;
      }
      out.push({ label: cfg.label, ns, shortfalls, copies: [...copies].sort() });
    }
    return { configs: out };
  });
}

async function main(): Promise<void> {
  const arg = process.argv[2];
  if (!arg) throw new Error('usage: app.ts <job json>');
  const job = JSON.parse(arg) as Job;
  let result: unknown;
  switch (job.mode) {
    case 'fill':
      result = await fill(job);
      break;
    case 'fault':
      result = await fault(job);
      break;
    case 'scan':
      result = await scan(job);
      break;
    case 'commit':
      result = await commit(job);
      break;
    case 'seqread':
      result = await seqread(job);
      break;
  }
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`bench app: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});

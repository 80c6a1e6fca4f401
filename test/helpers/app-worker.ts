// A test application process: reads one JSON command per stdin line, answers one JSON line on stdout.
// Lets integration tests drive real apps (each its own process, on any node) through the public SDK.
import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import {
  connect,
  CommitConflictError,
  HotpotError,
  type Dataset,
  type Hotpot,
  type Lease,
  type Range,
} from '../../clients/typescript/index.ts';
import { initTelemetry } from '../../services/common/telemetry.ts';

// Apps export their SDK spans like the daemons when asked (tests read them from a JSON-lines file).
if (process.env.HOTPOT_TRACES_EXPORTER) await initTelemetry('hotpot-app');

interface Cmd {
  op: string;
  [k: string]: unknown;
}

let hp: Hotpot | null = null;
let ds: Dataset | null = null;
let mem: Buffer | null = null;
let lease: Lease | null = null;

function need<T>(v: T | null, what: string): T {
  if (v === null) throw new Error(`${what} first`);
  return v;
}

// Deterministic bytes for (seed, offset): lets tests check big ranges without shipping them.
function pattern(seed: number, offset: number, length: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) {
    const x = (offset + i) * 2654435761 + seed * 40503;
    b[i] = (x ^ (x >>> 13) ^ (x >>> 7)) & 0xff;
  }
  return b;
}

async function run(c: Cmd): Promise<unknown> {
  const num = (k: string, d?: number): number => {
    const v = c[k] ?? d;
    if (typeof v !== 'number') throw new Error(`missing number ${k}`);
    return v;
  };
  switch (c.op) {
    case 'connect':
      hp = await connect(typeof c.socket === 'string' ? { socketPath: c.socket } : {});
      return {};
    case 'open':
      ds = await need(hp, 'connect').open(String(c.name), {
        ...(c.create ? { create: c.create as never } : {}),
        ...(c.readOnly === true ? { readOnly: true } : {}),
      });
      return ds.info;
    case 'map':
      mem = need(ds, 'open').map(num('offset', 0), num('length', 0));
      return { length: mem.length };
    case 'write': {
      const m = need(mem, 'map');
      Buffer.from(String(c.hex), 'hex').copy(m, num('offset'));
      return {};
    }
    case 'fill': {
      const m = need(mem, 'map');
      pattern(num('seed'), num('offset'), num('length')).copy(m, num('offset'));
      return {};
    }
    case 'read': {
      const m = need(mem, 'map');
      return { hex: m.subarray(num('offset'), num('offset') + num('length')).toString('hex') };
    }
    case 'check': {
      // Random-access verification of a pattern written by 'fill'.
      const m = need(mem, 'map');
      const off = num('offset');
      const len = num('length');
      const want = pattern(num('seed'), off, len);
      const order = [...Array(Math.ceil(len / 4096)).keys()].sort(() => Math.random() - 0.5);
      let bad = 0;
      for (const p of order) {
        const a = p * 4096;
        const b = Math.min(len, a + 4096);
        if (!m.subarray(off + a, off + b).equals(want.subarray(a, b))) bad++;
      }
      return { badPages: bad, pages: order.length };
    }
    case 'hash': {
      const m = need(mem, 'map');
      return {
        sha256: createHash('sha256')
          .update(m.subarray(num('offset'), num('offset') + num('length')))
          .digest('hex'),
      };
    }
    case 'syscallWrite': {
      // Hands the mapped memory to write(2): kernel-mode faults on unfetched pages must be served too.
      const m = need(mem, 'map');
      const fd = openSync(String(c.path), 'w');
      const n = writeSync(fd, m, num('offset'), num('length'));
      closeSync(fd);
      return {
        written: n,
        sha256: createHash('sha256')
          .update(readFileSync(String(c.path)))
          .digest('hex'),
      };
    }
    case 'commit':
      return await need(ds, 'open').commit(typeof c.replicas === 'number' ? { replicas: c.replicas } : {});
    case 'rollback':
      await need(ds, 'open').rollback();
      return {};
    case 'refresh':
      await need(ds, 'open').refresh();
      return {};
    case 'close':
      need(ds, 'open').close();
      ds = null;
      mem = null;
      return {};
    // ---- consistency (test/integration/consistency.test.ts) ----
    case 'commitReads':
      return await need(ds, 'open').commit({ reads: c.reads as Range[] });
    case 'begin':
      await need(ds, 'open').begin(c.ranges as Range[]);
      return {};
    case 'barrier':
      return await need(ds, 'open').barrier(String(c.name), num('parties'), { timeoutMs: num('timeoutMs') });
    case 'acquire': {
      lease = await need(ds, 'open').acquire(c.ranges as Range[], {
        leaseMs: num('leaseMs'),
        waitMs: num('waitMs', 0),
      });
      return { id: lease.id, fencingEpoch: lease.fencingEpoch, expiresAt: lease.expiresAt };
    }
    case 'release':
      await need(ds, 'open').release();
      lease = null;
      return {};
    case 'transactionWrite': {
      // ds.transaction writing `writes`; `runs` says how often fn ran (> 1: the SDK retried after ABORTED).
      let runs = 0;
      const writes = c.writes as { offset: number; hex: string }[];
      await need(ds, 'open').transaction((m) => {
        runs++;
        for (const w of writes) Buffer.from(w.hex, 'hex').copy(m, w.offset);
      });
      return { runs };
    }
    case 'sleep':
      await new Promise((r) => setTimeout(r, num('ms')));
      return {};
    case 'bankTransfers':
      return await bankTransfers(need(ds, 'open'), num('count'), num('accounts'), num('slot'), num('stride', 4 * MiB));
    case 'bankSnapshot':
      return await bankSnapshot(need(ds, 'open'), num('accounts'), num('tries', 50));
    case 'mrswIncrements': {
      const d = need(ds, 'open');
      const m = d.map();
      const off = num('offset', 0);
      for (let i = 0; i < num('count'); i++) {
        await d.acquire([{ offset: off, length: 8 }], { leaseMs: num('leaseMs'), waitMs: num('waitMs') });
        m.writeUInt32LE(m.readUInt32LE(off) + 1, off);
        await d.commit();
        await d.release();
      }
      return {};
    }
    // ---- snapshot reads: the sum of int32 LE values at `offsets`, inside ds.snapshot and plain ----
    case 'snapshot-sum': {
      const offsets = offsetsOf(c);
      let attempts = 0;
      const sum = await need(ds, 'open').snapshot((m) => {
        attempts++;
        return sumAt(m, offsets);
      });
      return { sum, attempts };
    }
    case 'plain-sum':
      return { sum: sumAt(need(ds, 'open').map(), offsetsOf(c)) };
    case 'increments': {
      // Read-modify-write of one u32 counter with transaction(), with or without a read set (issue 9: no lost
      // update either way). Returns the increments acknowledged and the runs of fn (runs - acked = retries).
      const d = need(ds, 'open');
      const off = num('offset');
      let runs = 0;
      let maxMs = 0;
      for (let i = 0; i < num('count'); i++) {
        const started = performance.now();
        await d.transaction(
          (m) => {
            runs++;
            m.writeUInt32LE(m.readUInt32LE(off) + 1, off);
          },
          { attempts: 10_000, ...(c.reads ? { reads: [{ offset: off, length: 4 }] } : {}) },
        );
        maxMs = Math.max(maxMs, performance.now() - started);
      }
      // maxMs: the longest single increment (retries included), e.g. across a chunk handoff.
      return { acked: num('count'), runs, maxMs: Math.round(maxMs) };
    }
    case 'stampRounds':
      return await stampRounds(need(ds, 'open'), num('rounds'), num('writer'), num('from'), num('to'));
    case 'exit':
      hp?.close();
      process.exit(0);
      break;
    default:
      throw new Error(`unknown op ${c.op}`);
  }
  return {};
}

function offsetsOf(c: Cmd): number[] {
  const o = c.offsets;
  if (!Array.isArray(o) || !o.every((x) => Number.isSafeInteger(x) && (x as number) >= 0))
    throw new Error('offsets must be an array of non-negative integers');
  return o as number[];
}

function sumAt(m: Buffer, offsets: number[]): number {
  let sum = 0;
  for (const o of offsets) sum += m.readInt32LE(o);
  return sum;
}

// Bank accounts: account i lives in chunk i % 3 (three chunks with three owners), 512 bytes apart.
const MiB = 1024 * 1024;
export function accountOffset(i: number, stride = 4 * MiB): number {
  return (i % 3) * stride + Math.floor(i / 3) * 512;
}
// Per-process applied-transfer counters, written in the same transaction as the transfer.
function counterOffset(slot: number): number {
  return 3 * MiB + slot * 4096;
}

// `stride` is the distance between the three account groups: the chunk size puts each group in another chunk.
async function bankTransfers(
  d: Dataset,
  count: number,
  accounts: number,
  slot: number,
  stride: number,
): Promise<unknown> {
  let acked = 0;
  let conflicts = 0;
  const cOff = counterOffset(slot);
  for (let i = 0; i < count; i++) {
    const a = Math.floor(Math.random() * accounts);
    let b = Math.floor(Math.random() * (accounts - 1));
    if (b >= a) b++;
    const amount = 1 + Math.floor(Math.random() * 100);
    const [oa, ob] = [accountOffset(a, stride), accountOffset(b, stride)];
    let runs = 0;
    const moved = await d.transaction(
      (m) => {
        runs++;
        const x = m.readInt32LE(oa);
        if (x < amount) return false;
        m.writeInt32LE(x - amount, oa);
        m.writeInt32LE(m.readInt32LE(ob) + amount, ob);
        m.writeUInt32LE(m.readUInt32LE(cOff) + 1, cOff);
        return true;
      },
      {
        attempts: 1000,
        reads: [
          { offset: oa, length: 4 },
          { offset: ob, length: 4 },
          { offset: cOff, length: 4 },
        ],
      },
    );
    conflicts += runs - 1;
    if (moved) acked++;
    else await d.rollback(); // nothing to move: drop the (absent) changes and resync
    // Think time between transfers, as a real client has: without any gap, four writers keep every page of the
    // accounts changing and a snapshot validated page-by-page (the checker) almost never gets through.
    await new Promise((r) => setTimeout(r, Math.random() * 6));
  }
  return { acked, conflicts };
}

async function bankSnapshot(d: Dataset, accounts: number, tries: number): Promise<unknown> {
  const reads: Range[] = [];
  for (let i = 0; i < accounts; i++) reads.push({ offset: accountOffset(i), length: 4 });
  const m = d.map();
  for (let t = 0; t < tries; t++) {
    await d.rollback(); // sync point: the snapshot is validated against what this process sees from here
    let total = 0;
    for (const r of reads) total += m.readInt32LE(r.offset);
    try {
      await d.commit({ reads }); // read-only validation across the three owners
      return { total, validated: true, tries: t + 1 };
    } catch (e) {
      if (!(e instanceof CommitConflictError)) throw e;
    }
  }
  return { validated: false, tries };
}

// Lost-update check: writer w overwrites [from, to) with a stamp {writer, seq, basedOnWriter, basedOnSeq} at
// bytes 16..32 (inside every writer's range) and filler derived from the stamp elsewhere.
async function stampRounds(d: Dataset, rounds: number, writer: number, from: number, to: number): Promise<unknown> {
  const m = d.map();
  const acked: { seq: number; basedOnWriter: number; basedOnSeq: number }[] = [];
  let conflicts = 0;
  for (let seq = 1; seq <= rounds; seq++) {
    for (;;) {
      await d.rollback();
      const bw = m.readUInt32LE(16);
      const bs = m.readUInt32LE(20);
      for (let i = from; i < to; i++) m[i] = (writer * 31 + seq * 7 + i) & 0xff;
      m.writeUInt32LE(writer, 16);
      m.writeUInt32LE(seq, 20);
      m.writeUInt32LE(bw, 24);
      m.writeUInt32LE(bs, 28);
      try {
        await d.commit();
        acked.push({ seq, basedOnWriter: bw, basedOnSeq: bs });
        break;
      } catch (e) {
        if (!(e instanceof CommitConflictError)) throw e;
        conflicts++;
      }
    }
  }
  return { acked, conflicts };
}

const rl = createInterface({ input: process.stdin });
let chain = Promise.resolve();
rl.on('line', (line) => {
  chain = chain.then(async () => {
    let out: unknown;
    try {
      out = { ok: true, value: await run(JSON.parse(line) as Cmd) };
    } catch (e) {
      out = {
        ok: false,
        error: {
          code: e instanceof HotpotError ? e.code : 'INTERNAL',
          message: e instanceof Error ? e.message : String(e),
          conflicts: e instanceof CommitConflictError ? e.conflicts : undefined,
        },
      };
    }
    process.stdout.write(JSON.stringify(out) + '\n');
  });
});
process.stdout.write(JSON.stringify({ ready: true }) + '\n');

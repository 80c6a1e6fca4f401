// One YCSB client process of bench/ycsb.ts, on Hotpot (examples/kv through the SDK, on its node's socket) or on
// Redis. Started with a JSON job; prints "READY" once connected (and, on Hotpot, with the mapping warmed), then
// for each "go <workload> <ms>" line on stdin runs that workload's closed loop for <ms> and prints one JSON line;
// "load" (Hotpot/Redis loader only) inserts the records first; "quit" exits.
import { createInterface } from 'node:readline';
import { connect } from '../clients/typescript/index.ts';
import { KvStore } from '../examples/kv/index.ts';
import { RespClient } from './lib/resp.ts';
import { permutation, rng, Zipfian } from './lib/zipf.ts';
import { keyOf, WORKLOADS, type ClientJob, type PhaseResult } from './ycsb-workloads.ts';

interface Target {
  read(key: string): Promise<Buffer | string | null | undefined>;
  update(key: string, value: Buffer): Promise<void>;
  rmw(key: string, make: (old: Buffer | string | undefined) => Buffer): Promise<void>;
  load(from: number, to: number, value: (i: number) => Buffer): Promise<void>;
  counters(): PhaseResult['store'];
  /** The floors of one operation, `ms` each: a raw SDK commit of a fresh value (1 page, N=2) and a JS Map get. */
  floor?(ms: number, value: () => Buffer): Promise<{ commit: number[]; mapGet: number[] }>;
  close(): void;
}

async function hotpotTarget(job: ClientJob): Promise<Target> {
  const hp = await connect({ socketPath: job.socket ?? '' });
  const name = job.name ?? 'ycsb';
  const kv = await KvStore.open(
    hp,
    name,
    job.createSize
      ? {
          create: {
            size: job.createSize,
            replicas: 2,
            slots: 2 ** Math.ceil(Math.log2(job.records * 2.5)),
            maxKeyBytes: 32,
            maxValueBytes: job.valueBytes,
          },
        }
      : {},
  );
  // Warm: one load per page, so the timed loop measures a warm node cache and mapping (as Redis holds its data in
  // memory); pages this node does not hold are fetched now.
  const mem = kv.ds.map();
  let sink = 0;
  for (let off = 0; off < mem.length; off += 4096) sink += mem[off] ?? 0;
  if (sink < 0) process.stderr.write('');
  return {
    read: (key) => kv.get(key),
    update: (key, value) => kv.put(key, value),
    rmw: async (key, make) => {
      await kv.update(key, (old) => make(old));
    },
    load: async (from, to, value) => {
      const batch = 256;
      for (let i = from; i < to; i += batch) {
        await kv.batch((b) => {
          for (let j = i; j < Math.min(to, i + batch); j++) b.put(keyOf(j), value(j));
        });
      }
    },
    counters: () => ({ ...kv.counters }),
    floor: async (ms, value) => {
      // 12 chunks of 4 MiB: pages of every node's chunks, as the store's records are spread over owners.
      const ds = await hp.open(`${name}-floor`, { create: { size: 48 << 20, mode: 'mrmw', replicas: 2 } });
      const m = ds.map();
      const commit: number[] = [];
      for (let until = performance.now() + ms; performance.now() < until;) {
        const s = process.hrtime.bigint();
        value().copy(m, Math.floor(Math.random() * 12 * 1024) * 4096);
        await ds.commit();
        commit.push(Number(process.hrtime.bigint() - s));
      }
      ds.close();
      const map = new Map<string, Buffer>();
      for (let i = 0; i < job.records; i++) map.set(keyOf(i), value());
      const mapGet: number[] = [];
      let sink = 0;
      for (let until = performance.now() + ms; performance.now() < until;) {
        const key = keyOf(Math.floor(Math.random() * job.records));
        const s = process.hrtime.bigint();
        sink += Buffer.from(map.get(key) ?? Buffer.alloc(0)).length;
        mapGet.push(Number(process.hrtime.bigint() - s));
      }
      if (sink < 0) process.stderr.write('');
      return { commit, mapGet };
    },
    close: () => hp.close(),
  };
}

async function redisTarget(job: ClientJob): Promise<Target> {
  const c = await RespClient.open(job.port ?? 0);
  const durable = async (): Promise<void> => {
    const acks = await c.call('WAIT', '1', '0');
    if (acks !== 1) throw new Error(`redis WAIT 1 0 answered ${JSON.stringify(acks)}`);
  };
  const str = (r: unknown): string | null => (typeof r === 'string' ? r : null);
  return {
    read: async (key) => str(await c.call('GET', key)),
    update: async (key, value) => {
      if ((await c.call('SET', key, value)) !== 'OK') throw new Error('redis SET failed');
      await durable();
    },
    rmw: async (key, make) => {
      const old = str(await c.call('GET', key));
      if ((await c.call('SET', key, make(old ?? undefined))) !== 'OK') throw new Error('redis SET failed');
      await durable();
    },
    load: async (from, to, value) => {
      const batch = 100;
      for (let i = from; i < to; i += batch) {
        const args: (string | Buffer)[] = [];
        for (let j = i; j < Math.min(to, i + batch); j++) args.push(keyOf(j), value(j));
        if ((await c.call('MSET', ...args)) !== 'OK') throw new Error('redis MSET failed');
      }
      await durable();
    },
    counters: () => undefined,
    close: () => c.close(),
  };
}

const job = JSON.parse(process.argv[2] ?? '{}') as ClientJob;
const target = job.target === 'hotpot' ? await hotpotTarget(job) : await redisTarget(job);
const random = rng(job.seed);
const zipf = new Zipfian(job.records, 0.99, random);
// The same permutation in every client (seed fixed): the popular keys are the same ones for all of them.
const perm = permutation(job.records, 42);
// Values: random bytes, with an operation counter stamped in front so every write changes the record.
const pool = Array.from({ length: 16 }, () => {
  const b = Buffer.alloc(job.valueBytes);
  for (let i = 0; i < b.length; i++) b[i] = Math.floor(random() * 256);
  return b;
});
let stamp = 0;
const freshValue = (): Buffer => {
  const b = Buffer.from(pool[stamp % pool.length] ?? Buffer.alloc(job.valueBytes));
  b.writeUInt32LE(stamp++ >>> 0, 0);
  return b;
};

async function phase(workload: string, ms: number): Promise<PhaseResult> {
  const mix = WORKLOADS[workload];
  if (!mix) throw new Error(`unknown workload ${workload}`);
  const samples = { read: [] as number[], update: [] as number[], rmw: [] as number[] };
  const seen = { read: 0, update: 0, rmw: 0 };
  const keep = (k: 'read' | 'update' | 'rmw', ns: number): void => {
    const n = ++seen[k];
    if (samples[k].length < job.keepSamples) samples[k].push(ns);
    else {
      const j = Math.floor(random() * n);
      if (j < job.keepSamples) samples[k][j] = ns;
    }
  };
  const before = target.counters();
  let ops = 0;
  let errors = 0;
  let notFound = 0;
  const t0 = performance.now();
  const until = t0 + ms;
  while (performance.now() < until) {
    const key = keyOf(perm[zipf.next()] ?? 0);
    const u = random();
    const kind = u < mix.read ? 'read' : u < mix.read + mix.update ? 'update' : 'rmw';
    const s = process.hrtime.bigint();
    try {
      if (kind === 'read') {
        const v = await target.read(key);
        if (v === undefined || v === null) notFound++;
        else if (v.length !== job.valueBytes) errors++;
      } else if (kind === 'update') {
        await target.update(key, freshValue());
      } else {
        await target.rmw(key, (old) => {
          if (old === undefined || old.length !== job.valueBytes) notFound++;
          return freshValue();
        });
      }
    } catch (e) {
      errors++;
      if (errors <= 3) process.stderr.write(`${kind} ${key}: ${e instanceof Error ? e.message : String(e)}\n`);
    }
    keep(kind, Number(process.hrtime.bigint() - s));
    ops++;
  }
  const elapsedMs = performance.now() - t0;
  const after = target.counters();
  const store =
    before && after
      ? {
          commits: after.commits - before.commits,
          conflicts: after.conflicts - before.conflicts,
          torn: after.torn - before.torn,
          snapshotRuns: after.snapshotRuns - before.snapshotRuns,
        }
      : undefined;
  return { workload, ops, elapsedMs, samples, errors, notFound, ...(store ? { store } : {}) };
}

process.stdout.write('READY\n');
for await (const line of createInterface({ input: process.stdin })) {
  const [cmd, a, b] = line.trim().split(' ');
  if (cmd === 'quit') break;
  if (cmd === 'load') {
    const t0 = performance.now();
    await target.load(Number(a), Number(b), () => freshValue());
    process.stdout.write(JSON.stringify({ loaded: Number(b) - Number(a), ms: performance.now() - t0 }) + '\n');
  } else if (cmd === 'floor') {
    if (!target.floor) throw new Error('floor: Hotpot clients only');
    process.stdout.write(JSON.stringify(await target.floor(Number(a), () => freshValue())) + '\n');
  } else if (cmd === 'go') {
    process.stdout.write(JSON.stringify(await phase(a ?? '', Number(b))) + '\n');
  }
}
target.close();
process.exit(0);

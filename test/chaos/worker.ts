// A chaos workload process: one role (workload.ts) on one node, looping until the harness writes "stop" on stdin,
// and writing its history on stdout (one JSON line per event). It keeps going through every error: it retries with
// backoff, and reconnects (a new SDK connection, or a new gRPC Data session) after any error other than ABORTED,
// since a node restart kills the old connection and its sessions. If the process itself dies, the harness
// records an app death and starts it again.
import * as grpc from '@grpc/grpc-js';
import { createInterface } from 'node:readline';
import { connect, type Dataset, type Hotpot } from '../../clients/typescript/index.ts';
import { hotpotV1, type DataClient } from '../../services/common/proto.ts';
import { unary } from '../../services/common/rpc.ts';
import type { DataOpenResponse__Output } from '../../services/generated/hotpot/v1/DataOpenResponse.ts';
import type { DataReadResponse__Output } from '../../services/generated/hotpot/v1/DataReadResponse.ts';
import { Rng } from './rng.ts';
import {
  BANK_CHUNKS,
  COUNTER_OFFSET,
  DATASETS,
  INITIAL_BALANCE,
  accountOffset,
  bankSize,
  bankSlotOffset,
  bankSpan,
  bankTotal,
  counterSlotOffset,
  statusOf,
  sumAccounts,
  type FinalState,
  type Line,
  type OpValues,
  type Status,
  type WorkerConfig,
} from './workload.ts';

const cfg = JSON.parse(process.argv[2] ?? '{}') as WorkerConfig;
const rng = new Rng(cfg.seed);
const layout = cfg.layout;
let stopping = false;

createInterface({ input: process.stdin })
  .on('line', (l) => {
    if (l.trim() === 'stop') stopping = true;
  })
  .on('close', () => (stopping = true)); // the harness is gone

function emit(line: Line): void {
  process.stdout.write(JSON.stringify(line) + '\n');
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function codeOf(e: unknown): string {
  const c = (e as { code?: unknown } | null)?.code;
  return typeof c === 'string' ? c : 'INTERNAL';
}
const messageOf = (e: unknown): string => (e instanceof Error ? e.message : String(e));

class Stopped extends Error {}

// Runs of a transaction before it gives up with ABORTED (the loop then starts a new operation): with the SDK's
// backoff (2 ms doubling, full jitter, capped at 2^10) an operation stays within about 10 s even while its pages
// stay locked, so a worker asked to stop returns well within the harness's stop timeout.
const TX_ATTEMPTS = 12;
// Deadline of every gRPC call but Commit's; Commit gets longer, as an APPLY may be retried for 3 request timeouts.
const RPC_DEADLINE_MS = 10_000;
const COMMIT_DEADLINE_MS = 20_000;

/** Runs `fn` until it succeeds, pausing 50 ms doubling to 1 s (jittered) between failures; Stopped once asked. */
async function retrying<T>(what: string, fn: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    if (stopping) throw new Stopped();
    try {
      return await fn();
    } catch (e) {
      emit({ e: 'note', t: Date.now(), what, msg: `${codeOf(e)}: ${messageOf(e)}` });
      await sleep(Math.min(1000, 50 * 2 ** i) * (0.5 + rng.next() / 2));
    }
  }
}

let seq = 0;
/** One recorded operation: inv, then sent (when `body` calls it, just before a commit), then ret. */
/** Runs one operation; `failed`, when given, adds what it knows of a failed operation (e.g. attempts made). */
async function op(
  name: string,
  body: (sent: () => void) => Promise<OpValues>,
  failed?: () => OpValues,
): Promise<Status> {
  const n = ++seq;
  emit({ e: 'inv', n, op: name, t: Date.now() });
  try {
    const v = await body(() => emit({ e: 'sent', n, t: Date.now() }));
    emit({ e: 'ret', n, t: Date.now(), st: 'ok', v });
    return 'ok';
  } catch (e) {
    const code = codeOf(e);
    const st = statusOf(code);
    emit({ e: 'ret', n, t: Date.now(), st, code, msg: messageOf(e), ...(failed ? { v: failed() } : {}) });
    return st;
  }
}

/** The SDK connection and the opened datasets, made again after a failure. */
class Sdk {
  private hp: Hotpot | null = null;
  private readonly open = new Map<string, Dataset>();

  async dataset(name: string): Promise<Dataset> {
    const have = this.open.get(name);
    if (have) return have;
    return retrying(`open ${name}`, async () => {
      try {
        this.hp ??= await connect({ socketPath: cfg.socket });
        const ds = await this.hp.open(name);
        this.open.set(name, ds);
        return ds;
      } catch (e) {
        this.reset();
        throw e;
      }
    });
  }

  /** Drops the connection (and the mappings with their private pages); the next dataset() reconnects. */
  reset(): void {
    try {
      this.hp?.close();
    } catch {
      // a dead connection may fail to close cleanly: it is dropped either way
    }
    this.hp = null;
    this.open.clear();
  }
}

/** A gRPC Data session on the node's unix socket, opened again after a failure. */
class DataApi {
  private readonly client: DataClient = new hotpotV1.Data(cfg.grpc, grpc.credentials.createInsecure(), {
    // A restarted node must be reached again within a second, not after grpc-js's default backoff (up to 120 s).
    'grpc.initial_reconnect_backoff_ms': 100,
    'grpc.max_reconnect_backoff_ms': 1000,
    'grpc.max_receive_message_length': 4 * 1024 * 1024,
  });
  private session: string | null = null;

  constructor(private readonly dataset: string) {}

  private async open(): Promise<string> {
    if (this.session !== null) return this.session;
    const r = await retrying(`grpc open ${this.dataset}`, () =>
      unary<DataOpenResponse__Output>((o, cb) => this.client.Open({ name: this.dataset }, o, cb)),
    );
    this.session = r.session;
    return r.session;
  }

  async read(offset: number, length: number, snapshot: boolean): Promise<Buffer> {
    const session = await this.open();
    const r = await unary<DataReadResponse__Output>(
      (o, cb) => this.client.Read({ session, offset, length, snapshot }, o, cb),
      RPC_DEADLINE_MS,
    );
    return r.data;
  }

  async write(offset: number, data: Buffer): Promise<void> {
    const session = await this.open();
    await unary((o, cb) => this.client.Write({ session, offset, data }, o, cb), RPC_DEADLINE_MS);
  }

  async commit(): Promise<void> {
    const session = await this.open();
    await unary((o, cb) => this.client.Commit({ session }, o, cb), COMMIT_DEADLINE_MS);
  }

  async rollback(): Promise<void> {
    const session = await this.open();
    await unary((o, cb) => this.client.Rollback({ session }, o, cb), RPC_DEADLINE_MS);
  }

  /** Forgets the session (closing it if the node still knows it); the next call opens a new one. */
  reset(): void {
    const session = this.session;
    this.session = null;
    if (session !== null) void unary((o, cb) => this.client.Close({ session }, o, cb), 2000).catch(() => undefined);
  }
}

const i64 = (v: bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigInt64LE(v);
  return b;
};

function pickTransfer(): { a: number; b: number; amount: number } {
  const a = rng.int(0, layout.accounts - 1);
  let b = rng.int(0, layout.accounts - 2);
  if (b >= a) b++;
  return { a, b, amount: rng.int(1, 100) };
}

async function bank(sdk: Sdk): Promise<Status> {
  const ds = await sdk.dataset(DATASETS.bank);
  const { a, b, amount } = pickTransfer();
  const [oa, ob, os] = [accountOffset(layout, a), accountOffset(layout, b), bankSlotOffset(layout, cfg.slot)];
  return op('transfer', async (sent) => {
    let attempts = 0;
    const moved = await ds.transaction(
      (m) => {
        attempts++;
        const x = m.readInt32LE(oa);
        if (x < amount) return false;
        m.writeInt32LE(x - amount, oa);
        m.writeInt32LE(m.readInt32LE(ob) + amount, ob);
        m.writeUInt32LE(m.readUInt32LE(os) + 1, os);
        sent();
        return true;
      },
      {
        attempts: TX_ATTEMPTS,
        reads: [
          { offset: oa, length: 4 },
          { offset: ob, length: 4 },
          { offset: os, length: 4 },
        ],
      },
    );
    return { moved, attempts };
  });
}

let diagnosed = false;

async function snapSdk(sdk: Sdk): Promise<Status> {
  const ds = await sdk.dataset(DATASETS.bank);
  return op('snap-sdk', async () => {
    let attempts = 0;
    const balances = (m: Buffer): number[] =>
      Array.from({ length: layout.accounts }, (_, i) => m.readInt32LE(accountOffset(layout, i)));
    const seen = await ds.snapshot((m) => {
      attempts++;
      return balances(m);
    });
    const sum = seen.reduce((a, b) => a + b, 0);
    if (sum === bankTotal(layout)) return { sum, attempts };
    // Wrong: which accounts does a right read on this node see otherwise (the partial transfer's, or stale ones)?
    // Asked once per worker process (a wrong state may last), for up to 20 s; readAt keeps when the wrong read was.
    const readAt = Date.now();
    if (diagnosed) return { sum, attempts, readAt };
    diagnosed = true;
    for (const until = Date.now() + 20_000; Date.now() < until;) {
      await new Promise((r) => setTimeout(r, 50));
      const again = await ds.snapshot(balances).catch(() => null);
      if (again?.reduce((a, b) => a + b, 0) !== bankTotal(layout)) continue;
      const differs: [number, number, number, number][] = [];
      for (let k = 0; k < seen.length && differs.length < 16; k++)
        if (seen[k] !== again[k]) differs.push([k, k % BANK_CHUNKS, seen[k] ?? 0, again[k] ?? 0]);
      return { sum, attempts, differs, readAt };
    }
    return { sum, attempts, readAt };
  });
}

async function snapGrpc(api: DataApi): Promise<Status> {
  return op('snap-grpc', async () => ({ sum: sumAccounts(layout, await api.read(0, bankSpan(layout), true)) }));
}

/** Increments the counter and the worker's own count at `slot` in the mapping; returns the values read. */
function bump(m: Buffer, slot: number): [number, number] {
  const c = m.readBigInt64LE(COUNTER_OFFSET);
  const s = m.readBigInt64LE(slot);
  m.writeBigInt64LE(c + 1n, COUNTER_OFFSET);
  m.writeBigInt64LE(s + 1n, slot);
  return [Number(c), Number(s)];
}

/** Read-modify-write of the shared counter and this worker's slot in one SDK transaction. */
async function counterTx(sdk: Sdk, name: string, withReads: boolean): Promise<Status> {
  const ds = await sdk.dataset(name);
  const slot = counterSlotOffset(cfg.slot);
  let attempts = 0;
  return op(
    'incr',
    async (sent) => {
      const read = await ds.transaction(
        (m) => {
          attempts++;
          const r = bump(m, slot);
          sent();
          return r;
        },
        { attempts: TX_ATTEMPTS, ...(withReads ? { reads: [{ offset: COUNTER_OFFSET, length: 8 }] } : {}) },
      );
      return { attempts, read };
    },
    () => ({ attempts }), // the attempts a failed transaction made (conflicts retried before its last error)
  );
}

async function counterGrpc(api: DataApi): Promise<Status> {
  const slot = counterSlotOffset(cfg.slot);
  const st = await op('incr', async (sent) => {
    const c = (await api.read(COUNTER_OFFSET, 8, false)).readBigInt64LE(0);
    const s = (await api.read(slot, 8, false)).readBigInt64LE(0);
    await api.write(COUNTER_OFFSET, i64(c + 1n));
    await api.write(slot, i64(s + 1n));
    sent();
    await api.commit();
    return { read: [Number(c), Number(s)] };
  });
  if (st === 'aborted') await api.rollback(); // a failed rollback is thrown: the caller resets the session
  return st;
}

async function mrswIncrement(sdk: Sdk): Promise<Status> {
  const ds = await sdk.dataset(DATASETS.mrsw);
  const m = ds.map();
  const slot = counterSlotOffset(cfg.slot);
  const st = await op('mrsw-incr', async (sent) => {
    await ds.acquire(
      [
        { offset: COUNTER_OFFSET, length: 8 },
        { offset: slot, length: 8 },
      ],
      { leaseMs: 5000, waitMs: 5000 },
    );
    try {
      const read = bump(m, slot);
      sent();
      await ds.commit();
      return { read };
    } finally {
      await ds.release().catch(() => undefined); // an unreleased lease ends by itself
    }
  });
  if (st !== 'ok') await ds.rollback();
  return st;
}

async function init(): Promise<void> {
  const hp = await connect({ socketPath: cfg.socket });
  const bankDs = await hp.open(DATASETS.bank, {
    create: { size: bankSize(layout), mode: 'mrmw', replicas: cfg.replicas },
  });
  await hp.open(DATASETS.ctr, { create: { size: layout.chunk, mode: 'mrmw', replicas: cfg.replicas } });
  await hp.open(DATASETS.mrsw, { create: { size: layout.chunk, mode: 'mrsw', replicas: cfg.replicas } });
  const m = bankDs.map();
  for (let i = 0; i < layout.accounts; i++) m.writeInt32LE(INITIAL_BALANCE, accountOffset(layout, i));
  await bankDs.commit();
  hp.close();
}

/** The state as a fresh process on this node sees it, every dataset through one snapshot read. */
async function readFinal(sdk: Sdk, api: DataApi): Promise<FinalState> {
  const slots = cfg.slots ?? { bank: 0, ctr: 0, mrsw: 0 };
  const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
  const bankDs = await sdk.dataset(DATASETS.bank);
  const bankState = await bankDs.snapshot((m) => {
    let negative = 0;
    for (let i = 0; i < layout.accounts; i++) if (m.readInt32LE(accountOffset(layout, i)) < 0) negative++;
    return {
      sum: sumAccounts(layout, m),
      negative,
      slots: range(slots.bank).map((s) => m.readUInt32LE(bankSlotOffset(layout, s))),
    };
  });
  const counters = async (name: string, n: number): Promise<{ value: number; slots: number[] }> =>
    (await sdk.dataset(name)).snapshot((m) => ({
      value: Number(m.readBigInt64LE(COUNTER_OFFSET)),
      slots: range(n).map((s) => Number(m.readBigInt64LE(counterSlotOffset(s)))),
    }));
  const ctr = await counters(DATASETS.ctr, slots.ctr);
  const mrsw = await counters(DATASETS.mrsw, slots.mrsw);
  const bankSumGrpc = sumAccounts(layout, await api.read(0, bankSpan(layout), true));
  return {
    bankSum: bankState.sum,
    bankSumGrpc,
    bankSlots: bankState.slots,
    negativeBalances: bankState.negative,
    counter: ctr.value,
    counterSlots: ctr.slots,
    mrsw: mrsw.value,
    mrswSlots: mrsw.slots,
  };
}

async function main(): Promise<void> {
  if (cfg.role === 'init') return init();
  const sdk = new Sdk();
  const api = new DataApi(cfg.role === 'ctr-grpc' ? DATASETS.ctr : DATASETS.bank);
  if (cfg.role === 'final') {
    const state = await retrying('final read', async () => {
      try {
        return await readFinal(sdk, api);
      } catch (e) {
        sdk.reset();
        api.reset();
        throw e;
      }
    });
    emit({ e: 'final', t: Date.now(), state });
    return;
  }
  const step: Record<Exclude<WorkerConfig['role'], 'init' | 'final'>, () => Promise<Status>> = {
    bank: () => bank(sdk),
    'snap-sdk': () => snapSdk(sdk),
    'snap-grpc': () => snapGrpc(api),
    'ctr-tx': () => counterTx(sdk, DATASETS.ctr, false),
    'ctr-tx-reads': () => counterTx(sdk, DATASETS.ctr, true),
    'ctr-grpc': () => counterGrpc(api),
    mrsw: () => mrswIncrement(sdk),
  };
  const run = step[cfg.role];
  while (!stopping) {
    let st: Status;
    try {
      st = await run();
    } catch (e) {
      if (e instanceof Stopped) break;
      // A failure outside a recorded operation (a rollback after a conflict): start over on a new connection.
      emit({ e: 'note', t: Date.now(), what: 'reconnect', msg: `${codeOf(e)}: ${messageOf(e)}` });
      st = 'error';
    }
    // Anything but a conflict may leave the connection (or session) dead, or private pages of an in-doubt commit
    // behind: a later commit must never carry them, so start from a new connection.
    if (st === 'error' || st === 'unavailable') {
      sdk.reset();
      api.reset();
    }
    await sleep(rng.next() * cfg.thinkMs);
  }
  sdk.reset();
  api.reset();
}

await main();
emit({ e: 'end', t: Date.now() });
process.exit(0);

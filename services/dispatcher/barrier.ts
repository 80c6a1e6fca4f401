// Named cluster barriers (ARCHITECTURE §5): a call returns when `parties` callers have arrived at the same
// name of the same dataset; each completed round bumps the barrier's generation so the same name is reusable.
// Names are per dataset (by id: a dataset deleted and created again starts afresh), so only callers allowed to read a
// dataset can arrive at, and so complete, its barriers (the dispatcher checks that before arriving).
//
// The state is in the dispatcher's store (docs/design/consistency.md "Barriers"), so a standby that takes over (etcd)
// or a restarted dispatcher (LMDB) continues every open round and knows every remembered name's generation:
// - table `barriers`, one record per name: the generation of its open (or next) round, the open round's parties, and
//   the generation and parties of the last completed round;
// - table `barrier-arrivals`, one record per arrival (`<name key>#<generation>#<seq>`): its request id and deadline.
//   An arrival is one store commit (its record, plus the name's record when it opens or completes the round), durable
//   before the caller can be answered; a timed-out arrival is removed durably before its caller hears
//   DEADLINE_EXCEEDED, so no dispatcher counts a caller that was told it timed out. The arrivals of the last
//   completed round stay until the next one completes (their ids answer retries); older ones are removed then.
// A caller's request id makes its arrival idempotent: sent again (its answer was lost in a takeover or a broken
// link) it joins its own arrival in the open round, or is answered the generation and arrival index it got in the
// last completed round, instead of arriving at the next round. Idle names are remembered up to MAX_IDLE_BARRIERS
// (least recently completed forgotten first), so the store stays bounded however many names are used.
import * as grpc from '@grpc/grpc-js';
import { failedPrecondition, invalidArgument, RpcError, unavailable } from '../common/errors.ts';
import type { DispatcherStore, Table, TableChange } from './store.ts';

export const MAX_PARTIES = 10_000;
/**
 * Names with nobody waiting that are remembered (for their generation). Past this the least recently completed are
 * forgotten (their next round is generation 0 again): before, every name ever used stayed in memory for good.
 */
export const MAX_IDLE_BARRIERS = 4096;
export const MAX_BARRIER_TIMEOUT_MS = 600_000;
/** Longest BarrierRequest.request_id (as AcquireRequest.request_id). */
export const MAX_REQUEST_ID = 128;
/** Removals per store commit when whole rounds go (etcd takes at most 128 operations in one transaction). */
const REMOVALS_PER_COMMIT = 100;
const NAME_RE = /^[A-Za-z0-9._:/-]{1,256}$/;
export const BARRIERS_TABLE = 'barriers';
export const ARRIVALS_TABLE = 'barrier-arrivals';

/** A name's record in the store. */
export interface BarrierRecord {
  name: string;
  /** The dataset's name when the record was written (for messages); absent for names of no dataset (tests). */
  dataset?: string;
  /** The generation of the open round (of the next one when none is open). */
  generation: number;
  /** Parties of the open round; 0 when none is open. */
  parties: number;
  /** The last completed round (generation - 1), whose arrivals' request ids are remembered. */
  last?: { generation: number; parties: number };
  /** When its last round completed (or it was created): idle names are forgotten oldest first. */
  restedUnixMs: number;
}

/** An arrival's record in the store, under `<name key>#<generation>#<seq>`. */
export interface ArrivalRecord {
  /** '' when the caller sent none (its arrival cannot be recognised when sent again). */
  requestId: string;
  deadlineUnixMs: number;
  /** The caller's timeout_ms (for the message when it runs out). */
  timeoutMs: number;
}

export interface BarrierAnswer {
  generation: number;
  arrival: number;
}

interface Listener {
  resolve: (r: BarrierAnswer) => void;
  reject: (e: Error) => void;
}

interface Arrival {
  key: string;
  seq: number;
  requestId: string;
  deadlineUnixMs: number;
  timeoutMs: number;
  /** Callers waiting for this arrival's round (none after a takeover until the caller sends it again). */
  listeners: Listener[];
  timer?: NodeJS.Timeout;
}

/** A name's state in memory: its record and the arrivals of its open and last completed rounds. */
export interface BarrierState {
  key: string;
  record: BarrierRecord;
  /** The open round's arrivals, in arrival order. */
  open: Arrival[];
  nextSeq: number;
  /** Store keys of the last completed round's arrivals, and the arrival index of each request id among them. */
  lastKeys: string[];
  lastArrivals: Map<string, number>;
  evicting: boolean;
}

/** The store key of a name (dataset id absent: a name of its own, for tests). Names never contain "#". */
export function barrierKey(name: string, datasetId?: number): string {
  return datasetId === undefined ? `:${name}` : `${String(datasetId)}:${name}`;
}

export function arrivalKey(barrier: string, generation: number, seq: number): string {
  return `${barrier}#${String(generation)}#${String(seq)}`;
}

/** The parts of an arrival key, or null when it is not one. */
export function parseArrivalKey(key: string): { barrier: string; generation: number; seq: number } | null {
  const m = /^([^#]+)#(\d+)#(\d+)$/.exec(key);
  if (!m?.[1] || m[2] === undefined || m[3] === undefined) return null;
  return { barrier: m[1], generation: Number(m[2]), seq: Number(m[3]) };
}

/**
 * The state of every name from the store's records (pure: what a new leader or a restarted dispatcher continues
 * from), and the arrival records that belong to no remembered round (left by a crash while a completed round's or a
 * forgotten name's arrivals were being removed), to remove.
 */
export function restoreBarriers(
  records: Iterable<[string, BarrierRecord]>,
  arrivals: Iterable<[string, ArrivalRecord]>,
): { states: Map<string, BarrierState>; garbage: string[] } {
  const states = new Map<string, BarrierState>();
  for (const [key, record] of records) {
    states.set(key, { key, record, open: [], nextSeq: 0, lastKeys: [], lastArrivals: new Map(), evicting: false });
  }
  const garbage: string[] = [];
  const last = new Map<string, { seq: number; key: string; requestId: string }[]>();
  for (const [key, a] of arrivals) {
    const k = parseArrivalKey(key);
    const s = k ? states.get(k.barrier) : undefined;
    if (!k || !s) {
      garbage.push(key);
    } else if (k.generation === s.record.generation && s.record.parties > 0) {
      s.open.push({
        key,
        seq: k.seq,
        requestId: a.requestId,
        deadlineUnixMs: a.deadlineUnixMs,
        timeoutMs: a.timeoutMs,
        listeners: [],
      });
      s.nextSeq = Math.max(s.nextSeq, k.seq + 1);
    } else if (k.generation === s.record.last?.generation) {
      const l = last.get(s.key) ?? [];
      l.push({ seq: k.seq, key, requestId: a.requestId });
      last.set(s.key, l);
    } else {
      garbage.push(key);
    }
  }
  for (const s of states.values()) {
    s.open.sort((a, b) => a.seq - b.seq);
    // The arrival index of a completed round is its rank among the round's arrivals that did not time out (those
    // were removed before the round completed), as it was answered.
    const done = (last.get(s.key) ?? []).sort((a, b) => a.seq - b.seq);
    s.lastKeys = done.map((a) => a.key);
    done.forEach((a, i) => {
      if (a.requestId !== '') s.lastArrivals.set(a.requestId, i);
    });
  }
  return { states, garbage };
}

export class Barriers {
  /** Insertion order = least recently completed (or created) first: a completed round moves its name last. */
  private barriers = new Map<string, BarrierState>();
  /** One chain of store work per name: a name's changes are computed from its state after the previous ones. */
  private readonly chains = new Map<string, Promise<unknown>>();
  private readonly records: Table<BarrierRecord>;
  private readonly arrivals: Table<ArrivalRecord>;
  private idle = 0;
  private stopped = false;

  constructor(
    private readonly store: DispatcherStore,
    private readonly maxIdle = MAX_IDLE_BARRIERS,
  ) {
    this.records = store.table<BarrierRecord>(BARRIERS_TABLE);
    this.arrivals = store.table<ArrivalRecord>(ARRIVALS_TABLE);
  }

  /** Loads the barriers from the store (open rounds go on; their arrivals time out at their deadlines). */
  async init(): Promise<void> {
    const { states, garbage } = restoreBarriers(this.records.entries(), this.arrivals.entries());
    await this.removeKeys(garbage);
    const byRest = [...states.values()].sort((a, b) => a.record.restedUnixMs - b.record.restedUnixMs);
    this.barriers = new Map(byRest.map((s) => [s.key, s]));
    this.idle = 0;
    for (const s of this.barriers.values()) {
      if (s.open.length === 0) this.idle++;
      for (const a of s.open) this.arm(s, a);
    }
    this.trim();
  }

  /** Names remembered (waiting or idle), for tests and stats. */
  get size(): number {
    return this.barriers.size;
  }

  /** Arrival records in the store (open and last completed rounds), for tests and stats. */
  get storedArrivals(): number {
    return this.arrivals.count();
  }

  /**
   * `dataset`: whose barrier `name` is (absent: a name of its own, for tests). `requestId`: the same id sent again is
   * answered as the first time (see the header).
   */
  arrive(
    name: string,
    parties: number,
    timeoutMs: number,
    dataset?: { id: number; name: string },
    requestId = '',
  ): Promise<BarrierAnswer> {
    if (!NAME_RE.test(name)) throw invalidArgument('barrier name must match [A-Za-z0-9._:/-]{1,256}');
    if (!Number.isInteger(parties) || parties < 1 || parties > MAX_PARTIES) {
      throw invalidArgument(`parties must be 1..${String(MAX_PARTIES)}`);
    }
    if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > MAX_BARRIER_TIMEOUT_MS) {
      throw invalidArgument(`timeout_ms must be 1..${String(MAX_BARRIER_TIMEOUT_MS)}`);
    }
    if (typeof requestId !== 'string' || requestId.length > MAX_REQUEST_ID || !/^[!-~]*$/.test(requestId)) {
      throw invalidArgument(`request_id must be at most ${String(MAX_REQUEST_ID)} printable ASCII characters`);
    }
    if (this.stopped) throw unavailable(`barrier "${name}": dispatcher shutting down`);
    const key = barrierKey(name, dataset?.id);
    return new Promise((resolve, reject) => {
      const listener = { resolve, reject };
      this.serial(key, () => this.arriveNow(key, name, parties, timeoutMs, dataset?.name, requestId, listener)).catch(
        reject,
      );
    });
  }

  private async arriveNow(
    key: string,
    name: string,
    parties: number,
    timeoutMs: number,
    dataset: string | undefined,
    requestId: string,
    listener: Listener,
  ): Promise<void> {
    if (this.stopped) throw unavailable(`barrier "${name}": dispatcher shutting down`);
    await this.expire(key);
    let s = this.barriers.get(key);
    const what = dataset === undefined ? `barrier "${name}"` : `barrier "${name}" of dataset "${dataset}"`;
    if (s && requestId !== '') {
      const mine = s.open.find((a) => a.requestId === requestId);
      if (mine) {
        if (s.record.parties !== parties) throw mismatch(what, s.record.parties, parties);
        mine.listeners.push(listener);
        return;
      }
      const arrival = s.lastArrivals.get(requestId);
      const last = s.record.last;
      if (arrival !== undefined && last) {
        if (last.parties !== parties) {
          throw invalidArgument(`request_id ${requestId} arrived at ${what} with ${String(last.parties)} parties`);
        }
        listener.resolve({ generation: last.generation, arrival });
        return;
      }
    }
    const now = Date.now();
    if (!s) {
      s = {
        key,
        record: {
          name,
          ...(dataset === undefined ? {} : { dataset }),
          generation: 0,
          parties: 0,
          restedUnixMs: now,
        },
        open: [],
        nextSeq: 0,
        lastKeys: [],
        lastArrivals: new Map(),
        evicting: false,
      };
    } else if (s.open.length > 0 && s.record.parties !== parties) {
      throw mismatch(what, s.record.parties, parties);
    }
    const generation = s.record.generation;
    const arrival: Arrival = {
      key: arrivalKey(key, generation, s.nextSeq),
      seq: s.nextSeq,
      requestId,
      deadlineUnixMs: now + timeoutMs,
      timeoutMs,
      listeners: [listener],
    };
    const completes = s.open.length + 1 >= parties;
    let record: BarrierRecord | undefined;
    if (completes) {
      record = {
        ...s.record,
        generation: generation + 1,
        parties: 0,
        last: { generation, parties },
        restedUnixMs: now,
      };
    } else if (s.open.length === 0) {
      record = { ...s.record, parties };
    }
    const changes: TableChange[] = [
      this.arrivals.put(arrival.key, { requestId, deadlineUnixMs: arrival.deadlineUnixMs, timeoutMs }),
    ];
    if (record) changes.push(this.records.put(key, record));
    // The round before is no longer the last once this one completes: its arrivals go with it (past the first
    // hundred, in commits of their own after the answers; a crash in between leaves them to the next start).
    const stale = completes ? s.lastKeys : [];
    for (const k of stale.slice(0, REMOVALS_PER_COMMIT)) changes.push(this.arrivals.remove(k));
    await this.store.commit({ tables: changes });
    // Durable: from here on the arrival counts, whatever happens to this dispatcher.
    const known = this.barriers.get(key) === s;
    if (!known) this.barriers.set(key, s);
    else if (s.open.length === 0) this.idle--;
    s.nextSeq++;
    if (record) s.record = record;
    // Shutting down meanwhile: the arrival is durable; the caller sends it again to the next dispatcher.
    if (this.isStopped()) listener.reject(unavailable(`${what}: dispatcher shutting down`));
    if (!completes) {
      s.open.push(arrival);
      this.arm(s, arrival);
      return;
    }
    const done = [...s.open, arrival];
    s.open = [];
    s.nextSeq = 0;
    s.lastKeys = done.map((a) => a.key);
    s.lastArrivals = new Map();
    done.forEach((a, i) => {
      clearTimeout(a.timer);
      if (a.requestId !== '') s.lastArrivals.set(a.requestId, i);
      for (const l of a.listeners) l.resolve({ generation, arrival: i });
    });
    this.rest(s);
    await this.removeKeys(stale.slice(REMOVALS_PER_COMMIT)).catch(() => undefined);
  }

  /** Times out `a` at its deadline (a round that completes first clears the timer). */
  private arm(s: BarrierState, a: Arrival): void {
    a.timer = setTimeout(
      () => {
        this.serial(s.key, () => this.expire(s.key, a)).catch(() => undefined);
      },
      Math.max(0, a.deadlineUnixMs - Date.now()),
    );
  }

  /**
   * Removes the open round's arrivals whose deadline passed, and `due` (whose timer fired: timers may fire a
   * millisecond before the clock reads the deadline), durably, then tells their callers DEADLINE_EXCEEDED. A round
   * left empty closes; a name that never completed a round is forgotten.
   */
  private async expire(key: string, due?: Arrival): Promise<void> {
    const s = this.barriers.get(key);
    if (!s || s.open.length === 0) return;
    const now = Date.now();
    const late = s.open.filter((a) => a === due || a.deadlineUnixMs <= now);
    if (late.length === 0) return;
    const what =
      s.record.dataset === undefined
        ? `barrier "${s.record.name}"`
        : `barrier "${s.record.name}" of dataset "${s.record.dataset}"`;
    const present = s.open.length;
    for (let i = 0; i < late.length; i += REMOVALS_PER_COMMIT) {
      const batch = late.slice(i, i + REMOVALS_PER_COMMIT);
      const emptied = i + batch.length === late.length && late.length === s.open.length;
      const changes = batch.map((a) => this.arrivals.remove(a.key));
      let forget = false;
      if (emptied) {
        forget = s.record.generation === 0 && s.record.last === undefined;
        changes.push(forget ? this.records.remove(key) : this.records.put(key, { ...s.record, parties: 0 }));
      }
      try {
        await this.store.commit({ tables: changes });
      } catch (e) {
        // Still in the store: another dispatcher may yet count them, so they are not told they timed out.
        for (const a of batch) {
          for (const l of a.listeners.splice(0)) {
            l.reject(unavailable(`${what}: ${e instanceof Error ? e.message : String(e)}`));
          }
        }
        throw e;
      }
      s.open = s.open.filter((a) => !batch.includes(a));
      for (const a of batch) {
        clearTimeout(a.timer);
        for (const l of a.listeners) {
          l.reject(
            new RpcError(
              grpc.status.DEADLINE_EXCEEDED,
              `${what} (generation ${String(s.record.generation)}): only ${String(present)} of ${String(s.record.parties)} parties arrived within ${String(a.timeoutMs)} ms`,
            ),
          );
        }
      }
      if (emptied) {
        s.record = { ...s.record, parties: 0 };
        if (forget) this.barriers.delete(key);
        else this.rest(s);
      }
    }
  }

  /** `s` has nobody waiting now: it moves last, and the least recently completed idle names past the cap go. */
  private rest(s: BarrierState): void {
    this.barriers.delete(s.key);
    this.barriers.set(s.key, s);
    this.idle++;
    this.trim();
  }

  private trim(): void {
    let over = this.idle - this.maxIdle;
    for (const b of this.barriers.values()) {
      if (over <= 0) break;
      if (b.open.length > 0 || b.evicting) continue;
      b.evicting = true;
      over--;
      const record = b.record;
      this.serial(b.key, () => this.forget(b, record)).catch(() => {
        b.evicting = false;
      });
    }
  }

  /**
   * Forgets an idle name (its record first, then its last round's arrivals), unless a caller arrived since it was
   * chosen (its record changed: a round opened, or completed and made it the most recent).
   */
  private async forget(s: BarrierState, chosen: BarrierRecord): Promise<void> {
    if (this.barriers.get(s.key) !== s || s.open.length > 0 || s.record !== chosen) {
      s.evicting = false;
      return;
    }
    await this.store.commit({
      tables: [
        this.records.remove(s.key),
        ...s.lastKeys.slice(0, REMOVALS_PER_COMMIT).map((k) => this.arrivals.remove(k)),
      ],
    });
    this.barriers.delete(s.key);
    this.idle--;
    await this.removeKeys(s.lastKeys.slice(REMOVALS_PER_COMMIT));
  }

  private async removeKeys(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += REMOVALS_PER_COMMIT) {
      await this.store.commit({
        tables: keys.slice(i, i + REMOVALS_PER_COMMIT).map((k) => this.arrivals.remove(k)),
      });
    }
  }

  private serial<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const p = (this.chains.get(key) ?? Promise.resolve()).then(fn, fn);
    const tail = p.catch(() => undefined);
    this.chains.set(key, tail);
    void tail.then(() => {
      if (this.chains.get(key) === tail) this.chains.delete(key);
    });
    return p;
  }

  /** Whether stop() was called (a method: a flag read after an await is not the one read before). */
  private isStopped(): boolean {
    return this.stopped;
  }

  /** Resolves once the store work queued so far (arrivals, time-outs, forgetting names) is done (tests, shutdown). */
  async settled(): Promise<void> {
    while (this.chains.size > 0) await Promise.all([...this.chains.values()]);
  }

  /**
   * Fails every waiting caller with UNAVAILABLE (shutdown): their node sends the call again, with its request id, to
   * the next leader or to this dispatcher restarted, which continues the round from the store.
   */
  stop(): void {
    this.stopped = true;
    for (const b of this.barriers.values()) {
      for (const a of b.open) {
        clearTimeout(a.timer);
        for (const l of a.listeners.splice(0)) {
          l.reject(unavailable(`barrier "${b.record.name}": dispatcher shutting down`));
        }
      }
    }
  }
}

function mismatch(what: string, waitingFor: number, says: number): RpcError {
  return failedPrecondition(`${what} is waiting for ${String(waitingFor)} parties, this caller says ${String(says)}`);
}

// A recorded history of dispatcher operations (every attempt, with when it was sent, when it ended and how) and a
// checker of it against the state read afterwards, for the dispatcher failover test. The checker trusts nothing the
// code under test says about itself: it replays each dataset name's attempts into the set of states the name may be
// in (an attempt with no answer may or may not have been applied), and checks the final state is one of them; it
// checks MRSW grants for two holders at once from the recorded times and fencing epochs.
//
// Ops on one dataset name come from one client, one after another (names are per client), so a name's attempts are a
// sequential history: no linearizability search is needed.

/** How an attempt ended: answered OK, refused with a definite status (`code`), or no answer (`unknown`). */
export type Outcome = { kind: 'ok' } | { kind: 'refused'; code: string } | { kind: 'unknown'; code: string };

interface Base {
  client: string;
  /** Attempts of one operation (its retries) share the id. */
  op: string;
  invokedAt: number;
  endedAt: number;
  outcome: Outcome;
}

export type DatasetAttempt = Base &
  (
    | { kind: 'create'; name: string; sizeBytes: number; result?: { id: number; sizeBytes: number } }
    | { kind: 'resize'; name: string; sizeBytes: number; result?: { sizeBytes: number } }
    | { kind: 'rm'; name: string }
  );

export interface PageSpan {
  firstPage: number;
  count: number;
}

export type LeaseAttempt = Base &
  (
    | {
        kind: 'acquire';
        dataset: string;
        requestId: string;
        pages: PageSpan[];
        result?: { leaseId: string; epoch: number; expiresUnixMs: number };
      }
    | { kind: 'release'; leaseId: string }
  );

/**
 * Barriers: another change makes them durable and idempotent; until then they are not exercised here. Their attempts
 * go in the history as `{ kind: 'barrier', name, parties, ... }` and checkBarriers is where they are checked
 * (every party of an acknowledged barrier released exactly once per generation).
 */
export type BarrierAttempt = Base & { kind: 'barrier'; dataset: string; name: string; parties: number };

export type Attempt = DatasetAttempt | LeaseAttempt | BarrierAttempt;

export class History {
  readonly attempts: Attempt[] = [];
  private seq = 0;

  /** A new operation id for `client`. */
  opId(client: string): string {
    this.seq++;
    return `${client}#${String(this.seq)}`;
  }

  record(a: Attempt): void {
    this.attempts.push(a);
  }

  datasets(): DatasetAttempt[] {
    return this.attempts.filter(
      (a): a is DatasetAttempt => a.kind === 'create' || a.kind === 'resize' || a.kind === 'rm',
    );
  }

  leases(): LeaseAttempt[] {
    return this.attempts.filter((a): a is LeaseAttempt => a.kind === 'acquire' || a.kind === 'release');
  }

  /** Attempts by outcome kind, for the figures. */
  counts(): Record<string, { ok: number; refused: number; unknown: number }> {
    const out: Record<string, { ok: number; refused: number; unknown: number }> = {};
    for (const a of this.attempts) {
      const c = (out[a.kind] ??= { ok: 0, refused: 0, unknown: 0 });
      c[a.outcome.kind]++;
    }
    return out;
  }
}

/** A dataset as read back at the end. */
export interface FinalDataset {
  name: string;
  id: number;
  sizeBytes: number;
  chunkCount: number;
}

/** `absent`, or present with a size. */
type DsState = 'absent' | number;

const show = (s: Iterable<DsState>): string => [...s].map((x) => (x === 'absent' ? 'absent' : String(x))).join('|');

/**
 * Checks the dataset attempts against the datasets read at the end (only names some attempt used, and those starting
 * with one of `prefixes`). Returns the violations (empty: the history is consistent).
 */
export function checkDatasets(
  attempts: DatasetAttempt[],
  final: FinalDataset[],
  opts: { chunkSizeBytes: number; prefixes: string[] },
): string[] {
  const bad: string[] = [];
  const byName = new Map<string, DatasetAttempt[]>();
  for (const a of attempts) {
    const list = byName.get(a.name) ?? [];
    list.push(a);
    byName.set(a.name, list);
  }
  const finalByName = new Map(final.map((d) => [d.name, d]));
  const ackedIds = new Map<number, string>();
  for (const [name, list] of byName) {
    list.sort((x, y) => x.invokedAt - y.invokedAt);
    let possible = new Set<DsState>(['absent']);
    let createdId: number | undefined;
    const present = (): boolean => [...possible].some((s) => s !== 'absent');
    for (const a of list) {
      const o = a.outcome;
      const where = `${name}: ${a.kind} (${a.op}) at ${String(a.invokedAt)}`;
      if (a.kind === 'create') {
        if (o.kind === 'ok') {
          if (!possible.has('absent'))
            bad.push(`${where} succeeded while the dataset could only exist (${show(possible)})`);
          if (a.result && a.result.sizeBytes !== a.sizeBytes) {
            bad.push(`${where} answered size ${String(a.result.sizeBytes)}, asked ${String(a.sizeBytes)}`);
          }
          if (a.result) {
            createdId = a.result.id;
            const other = ackedIds.get(a.result.id);
            if (other !== undefined) bad.push(`${where} answered id ${String(a.result.id)}, already given to ${other}`);
            ackedIds.set(a.result.id, name);
          }
          possible = new Set([a.sizeBytes]);
        } else if (o.kind === 'refused' && o.code === 'ALREADY_EXISTS') {
          // Only an earlier attempt of this client's, whose answer was lost, can have created it.
          if (!present()) bad.push(`${where} found the dataset existing, but no earlier attempt may have created it`);
          possible = new Set([...possible].filter((s) => s !== 'absent'));
        } else if (o.kind === 'unknown') {
          if (possible.has('absent')) possible.add(a.sizeBytes);
        }
      } else if (a.kind === 'resize') {
        if (o.kind === 'ok') {
          if (!present()) bad.push(`${where} succeeded on a dataset that cannot exist`);
          if (a.result && a.result.sizeBytes !== a.sizeBytes) {
            bad.push(`${where} answered size ${String(a.result.sizeBytes)}, asked ${String(a.sizeBytes)}`);
          }
          possible = new Set([a.sizeBytes]);
        } else if (o.kind === 'refused' && o.code === 'NOT_FOUND') {
          if (!possible.has('absent')) bad.push(`${where} found no dataset, but it must exist (${show(possible)})`);
          possible = new Set(['absent']);
        } else if (o.kind === 'unknown') {
          // Sizes only grow: a resize applies over any present size below it.
          for (const s of [...possible]) if (s !== 'absent' && s < a.sizeBytes) possible.add(a.sizeBytes);
        }
      } else {
        if (o.kind === 'ok') {
          if (!present()) bad.push(`${where} deleted a dataset that cannot exist`);
          possible = new Set(['absent']);
        } else if (o.kind === 'refused' && o.code === 'NOT_FOUND') {
          // Only an earlier attempt whose answer was lost can have deleted it.
          if (!possible.has('absent')) bad.push(`${where} found no dataset, but it must exist (${show(possible)})`);
          possible = new Set(['absent']);
        } else if (o.kind === 'unknown') {
          possible.add('absent');
        }
      }
    }
    const f = finalByName.get(name);
    const actual: DsState = f ? f.sizeBytes : 'absent';
    if (!possible.has(actual)) {
      bad.push(`${name}: afterwards ${f ? `size ${String(f.sizeBytes)}` : 'absent'}, expected ${show(possible)}`);
    }
    if (f) {
      const chunks = Math.ceil(f.sizeBytes / opts.chunkSizeBytes);
      if (f.chunkCount !== chunks) {
        bad.push(`${name}: ${String(f.chunkCount)} chunks for ${String(f.sizeBytes)} bytes (a half-applied resize)`);
      }
      if (createdId !== undefined && f.id !== createdId) {
        bad.push(`${name}: id ${String(f.id)} afterwards, the acknowledged create answered ${String(createdId)}`);
      }
    }
  }
  for (const f of final) {
    if (byName.has(f.name) || !opts.prefixes.some((p) => f.name.startsWith(p))) continue;
    bad.push(`${f.name}: exists afterwards but no attempt created it`);
  }
  const ids = new Map<number, string>();
  for (const f of final) {
    const other = ids.get(f.id);
    if (other !== undefined) bad.push(`${f.name} and ${other} have the same id ${String(f.id)}`);
    ids.set(f.id, f.name);
  }
  return bad;
}

function overlaps(a: PageSpan[], b: PageSpan[]): boolean {
  return a.some((x) => b.some((y) => x.firstPage < y.firstPage + y.count && y.firstPage < x.firstPage + x.count));
}

/**
 * Checks MRSW grants: a retried acquire (same request id) gets the same lease; one lease, one epoch, one request;
 * epochs grow in real-time order; no two leases of overlapping pages are held at once (a later grant is answered only
 * after the earlier holder's release was sent, or after it expired plus `graceMs`); every lease whose release was
 * acknowledged is gone afterwards (`finalLeaseIds`: the lease ids the dispatcher lists at the end).
 */
export function checkLeases(attempts: LeaseAttempt[], finalLeaseIds: string[], opts: { graceMs: number }): string[] {
  const bad: string[] = [];
  type Grant = Extract<LeaseAttempt, { kind: 'acquire' }> & {
    result: { leaseId: string; epoch: number; expiresUnixMs: number };
  };
  const grants = attempts.filter((a): a is Grant => a.kind === 'acquire' && a.outcome.kind === 'ok' && !!a.result);
  const byRequest = new Map<string, Grant>();
  const byLease = new Map<string, Grant>();
  for (const g of grants) {
    const same = byRequest.get(`${g.dataset}/${g.requestId}`);
    if (same && same.result.leaseId !== g.result.leaseId) {
      bad.push(`request ${g.requestId}: granted lease ${same.result.leaseId} and, on a retry, ${g.result.leaseId}`);
    }
    byRequest.set(`${g.dataset}/${g.requestId}`, g);
    const l = byLease.get(g.result.leaseId);
    if (l && (l.requestId !== g.requestId || l.result.epoch !== g.result.epoch)) {
      bad.push(`lease ${g.result.leaseId} answered to requests ${l.requestId} and ${g.requestId} (or two epochs)`);
    }
    if (!l) byLease.set(g.result.leaseId, g);
  }
  // An acquire may be granted at its first attempt and answered at a retry: it was asked for when that one was sent.
  const askedAt = new Map<string, number>();
  for (const a of attempts) {
    if (a.kind !== 'acquire') continue;
    const k = `${a.dataset}/${a.requestId}`;
    askedAt.set(k, Math.min(askedAt.get(k) ?? Infinity, a.invokedAt));
  }
  const leases = [...byLease.values()].sort((a, b) => a.result.epoch - b.result.epoch);
  const epochs = new Map<number, string>();
  for (const g of leases) {
    const other = epochs.get(g.result.epoch);
    if (other !== undefined)
      bad.push(`leases ${other} and ${g.result.leaseId} have one fencing epoch ${String(g.result.epoch)}`);
    epochs.set(g.result.epoch, g.result.leaseId);
  }
  const releases = attempts.filter((a): a is Extract<LeaseAttempt, { kind: 'release' }> => a.kind === 'release');
  const firstReleaseSent = new Map<string, number>();
  const released = new Set<string>();
  for (const r of releases) {
    firstReleaseSent.set(r.leaseId, Math.min(firstReleaseSent.get(r.leaseId) ?? Infinity, r.invokedAt));
    if (r.outcome.kind === 'ok') released.add(r.leaseId);
  }
  for (let i = 0; i < leases.length; i++) {
    const a = leases[i];
    if (!a) continue;
    const end = Math.min(firstReleaseSent.get(a.result.leaseId) ?? Infinity, a.result.expiresUnixMs + opts.graceMs);
    for (let j = i + 1; j < leases.length; j++) {
      const b = leases[j];
      if (!b || b.dataset !== a.dataset) continue;
      // Epochs follow real time: a grant asked for after another was answered has a higher epoch.
      if ((askedAt.get(`${a.dataset}/${a.requestId}`) ?? a.invokedAt) > b.endedAt) {
        bad.push(`lease ${a.result.leaseId}, asked after ${b.result.leaseId} was granted, has a lower epoch`);
      }
      if (overlaps(a.pages, b.pages) && b.endedAt < end) {
        bad.push(
          `lease ${b.result.leaseId} (epoch ${String(b.result.epoch)}) was granted at ${String(b.endedAt)} while ` +
            `${a.result.leaseId} (epoch ${String(a.result.epoch)}) held the same pages until ${String(end)}`,
        );
      }
    }
  }
  for (const id of finalLeaseIds) {
    if (released.has(id)) bad.push(`lease ${id}: its release was acknowledged, but the dispatcher still lists it`);
  }
  return bad;
}

/** Barriers are not checked yet (see BarrierAttempt): the place their checker goes. */
export function checkBarriers(attempts: BarrierAttempt[]): string[] {
  return attempts.length === 0 ? [] : [`${String(attempts.length)} barrier attempts recorded but no barrier checker`];
}

/** p50 and max of some durations. */
export function p50max(xs: number[]): { p50: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  return { p50: s[Math.floor((s.length - 1) / 2)] ?? 0, max: s[s.length - 1] ?? 0 };
}

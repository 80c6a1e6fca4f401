// Dispatcher failover under load (issue 14): a 3-member etcd on loopback, 3 dispatchers with `--store etcd://…` (one
// leads; each one that dies is started again at once as a standby, as `hotpot up --ha` does), 3 nodes and N = 2.
// Several clients create, resize and delete datasets and acquire and release MRSW pages (with request ids) while the
// leading dispatcher is killed with SIGKILL again and again and one etcd member is killed and restarted; an MRMW
// writer commits and a reader on another node fetches the page throughout. Every attempt goes into a history
// (test/helpers/dispatcher-history.ts), checked afterwards against what the dispatcher then lists: every acknowledged
// operation present exactly once, attempts without an answer either applied or not but never half, no two MRSW holders
// of a page at once; the nodes are the same members as before (none declared dead because the dispatcher changed),
// MRMW commits never failed, and each takeover took less than the election TTL + 1 s + a margin for a loaded machine.
//
// HOTPOT_DCHAOS_KILLS (default 4) sets the number of leader kills: scripts/dispatcher-chaos.sh runs it with many.
import type { ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { dispatcherClient, nodeClient } from '../../services/cli/client.ts';
import { HotpotError } from '../../services/common/errors.ts';
import { unary } from '../../services/common/rpc.ts';
import type { AcquireResponse__Output } from '../../services/generated/hotpot/v1/AcquireResponse.ts';
import type { CreateDatasetResponse__Output } from '../../services/generated/hotpot/v1/CreateDatasetResponse.ts';
import type { ListDatasetsResponse__Output } from '../../services/generated/hotpot/v1/ListDatasetsResponse.ts';
import type { ListLeasesResponse__Output } from '../../services/generated/hotpot/v1/ListLeasesResponse.ts';
import type { ResizeDatasetResponse__Output } from '../../services/generated/hotpot/v1/ResizeDatasetResponse.ts';
import { listNodes, spawnHotpot, startNode, tempDir, waitFor, type NodeProc } from '../helpers/cluster.ts';
import { CallError, dataClient } from '../helpers/data-client.ts';
import { startEtcdCluster } from '../helpers/etcd.ts';
import { freePort } from '../helpers/ports.ts';
import {
  checkBarriers,
  checkDatasets,
  checkLeases,
  History,
  p50max,
  type Attempt,
  type Outcome,
  type PageSpan,
} from '../helpers/dispatcher-history.ts';

const TTL_S = 2;
/**
 * The node lease: longer than a takeover plus a heartbeat interval (a node renews every third of its lease), as
 * `hotpot up --ha` gives its nodes; none may be declared dead because the dispatcher changed.
 */
const LEASE_MS = 10_000;
const PREFIX = '/hotpot-chaos/';
const MiB = 1024 * 1024;
const CHUNK = 4 * MiB;
/** Slack for a loaded CI machine on top of the promised takeover time (election TTL + 1 s). */
const TAKEOVER_MARGIN_MS = 10_000;
/** LEASE_GRACE_MS of services/dispatcher/mrsw.ts: an expired lease's pages stay blocked this long. */
const MRSW_GRACE_MS = 1000;
const KILLS = Number(process.env.HOTPOT_DCHAOS_KILLS ?? '4');
if (!Number.isInteger(KILLS) || KILLS < 1 || KILLS > 1000) throw new Error('HOTPOT_DCHAOS_KILLS must be 1..1000');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const LOST = new Set(['UNAVAILABLE', 'DEADLINE_EXCEEDED']);

function outcomeOf(e: unknown): Outcome {
  if (!(e instanceof HotpotError)) throw e;
  return LOST.has(e.code) ? { kind: 'unknown', code: e.code } : { kind: 'refused', code: e.code };
}

/**
 * Runs one operation's attempts until one is answered (retrying those with no answer, as clients do when the leader
 * died) or `budgetMs` passes; records every attempt. Returns the last outcome and result.
 */
async function attempts<R>(
  history: History,
  base: { client: string },
  describe: (result: R | undefined) => Omit<Attempt, 'client' | 'op' | 'invokedAt' | 'endedAt' | 'outcome'>,
  call: () => Promise<R>,
  budgetMs = 30_000,
): Promise<{ outcome: Outcome; result?: R }> {
  const op = history.opId(base.client);
  const until = Date.now() + budgetMs;
  for (;;) {
    const invokedAt = Date.now();
    let outcome: Outcome;
    let result: R | undefined;
    try {
      result = await call();
      outcome = { kind: 'ok' };
    } catch (e) {
      outcome = outcomeOf(e);
    }
    history.record({
      ...describe(result),
      client: base.client,
      op,
      invokedAt,
      endedAt: Date.now(),
      outcome,
    } as Attempt);
    if (outcome.kind !== 'unknown' || Date.now() > until)
      return result === undefined ? { outcome } : { outcome, result };
    await sleep(100);
  }
}

interface Slot {
  port: number;
  child: ChildProcess | null;
  stderr: string[];
  /** When the current process printed READY (it leads), 0 before. */
  readyAt: number;
  starts: number;
}

/** The three dispatchers: each that exits is started again at once on the same port, as a standby. */
function dispatchers(t: ExecutionContext, etcdEndpoints: string, dir: string, ports: number[]) {
  const slots: Slot[] = ports.map((port) => ({ port, child: null, stderr: [], readyAt: 0, starts: 0 }));
  const allStderr: string[][] = [];
  const unplannedExits: string[] = [];
  const planned = new Set<ChildProcess>();
  let stopping = false;
  t.teardown(() => {
    stopping = true;
  });
  const start = (i: number): void => {
    const s = slots[i];
    if (!s || stopping) return;
    s.starts++;
    s.readyAt = 0;
    const ready = spawnHotpot(
      t,
      [
        ...['dispatcher', '--listen', `127.0.0.1:${String(s.port)}`, '--state-dir', join(dir, `d${String(i)}`)],
        ...['--store', `etcd://${etcdEndpoints}`, '--etcd-prefix', PREFIX, '--election-ttl', String(TTL_S)],
        ...['--lease-ms', String(LEASE_MS)],
      ],
      {
        readyTimeoutMs: 24 * 3600_000,
        onSpawn: (child, stderr) => {
          s.child = child;
          s.stderr = stderr;
          allStderr.push(stderr);
          child.once('exit', (code, signal) => {
            if (!planned.has(child) && !stopping) {
              unplannedExits.push(
                `dispatcher ${String(i)} exited (${String(code ?? signal)}): ${stderr.slice(-3).join(' | ')}`,
              );
            }
            if (s.child === child) s.child = null;
            // Started again at once (as hotpot up --ha does): it waits as a standby.
            setImmediate(() => {
              start(i);
            });
          });
        },
      },
    );
    ready.then(
      () => {
        s.readyAt = Date.now();
      },
      () => undefined,
    );
  };
  return {
    slots,
    allStderr,
    unplannedExits,
    start,
    /** The slot whose process leads now (printed READY and runs), if any. */
    leader(): number | undefined {
      const i = slots.findIndex((s) => s.readyAt > 0 && s.child !== null && s.child.exitCode === null);
      return i < 0 ? undefined : i;
    },
    kill(i: number): void {
      const c = slots[i]?.child;
      if (!c) return;
      planned.add(c);
      c.kill('SIGKILL');
    },
  };
}

test('repeated kill -9 of the leading dispatcher and an etcd member kill: every acknowledged operation is there exactly once', async (t) => {
  t.timeout(Math.max(120_000, KILLS * 30_000));
  const etcd = await startEtcdCluster(t, 3);
  const dir = tempDir(t);
  const ports = [await freePort(), await freePort(), await freePort()];
  const all = ports.map((p) => `127.0.0.1:${String(p)}`).join(',');
  const d = dispatchers(t, etcd.endpoints, dir, ports);
  d.start(0);
  await waitFor('the first dispatcher to lead', () => Promise.resolve(d.leader() === 0 ? true : undefined), 120_000);
  d.start(1);
  d.start(2);
  const nodes: NodeProc[] = [];
  for (const name of ['n1', 'n2', 'n3']) {
    nodes.push(
      await startNode(t, {
        dispatcher: all,
        name,
        stateDir: join(dir, name),
        extra: ['--durability', 'memory'],
      }),
    );
  }
  const before = await listNodes(all);
  t.is(before.nodes.length, 3);

  const history = new History();
  let stop = false;
  const admin = dispatcherClient(all);
  t.teardown(() => {
    admin.close();
  });

  // Datasets used by the MRSW and MRMW loops, made before any fault.
  await unary((o, cb) =>
    admin.CreateDataset({ name: 'locks', sizeBytes: MiB, mode: 'CONSISTENCY_MODE_MRSW', replicas: 2 }, o, cb),
  );

  // ---- dataset clients: create, maybe resize, maybe delete, each with names of its own ----
  const datasetClient = async (k: number): Promise<void> => {
    const client = `c${String(k)}`;
    const c = dispatcherClient(all);
    t.teardown(() => {
      c.close();
    });
    for (let i = 0; !stop; i++) {
      const name = `${client}-${String(i)}`;
      let size = (1 + Math.floor(Math.random() * 3)) * MiB;
      const created = await attempts<CreateDatasetResponse__Output>(
        history,
        { client },
        (r) => ({
          kind: 'create',
          name,
          sizeBytes: size,
          ...(r?.dataset ? { result: { id: r.dataset.id, sizeBytes: r.dataset.sizeBytes } } : {}),
        }),
        () =>
          unary((o, cb) =>
            c.CreateDataset({ name, sizeBytes: size, mode: 'CONSISTENCY_MODE_MRMW', replicas: 2 }, o, cb),
          ),
      );
      if (created.outcome.kind === 'unknown') continue;
      if (Math.random() < 0.6) {
        const to = size + (1 + Math.floor(Math.random() * 5)) * MiB;
        const r = await attempts<ResizeDatasetResponse__Output>(
          history,
          { client },
          (res) => ({
            kind: 'resize',
            name,
            sizeBytes: to,
            ...(res?.dataset ? { result: { sizeBytes: res.dataset.sizeBytes } } : {}),
          }),
          () => unary((o, cb) => c.ResizeDataset({ name, sizeBytes: to }, o, cb)),
        );
        if (r.outcome.kind === 'ok') size = to;
      }
      if (Math.random() < 0.5) {
        await attempts(
          history,
          { client },
          () => ({ kind: 'rm', name }),
          () => unary((o, cb) => c.DeleteDataset({ name }, o, cb)),
        );
      }
      await sleep(20);
    }
  };

  // ---- MRSW clients: acquire one of 4 pages through a node (with a request id), hold it a moment, release ----
  const lockClient = async (k: number, node: NodeProc): Promise<void> => {
    const client = `l${String(k)}`;
    const c = nodeClient(`unix:${join(dirname(node.socket), 'grpc.sock')}`);
    t.teardown(() => {
      c.close();
    });
    for (let i = 0; !stop; i++) {
      const page = Math.floor(Math.random() * 4);
      const pages: PageSpan[] = [{ firstPage: page, count: 1 }];
      const requestId = `${client}-${String(i)}`;
      const got = await attempts<AcquireResponse__Output>(
        history,
        { client },
        (r) => ({
          kind: 'acquire',
          dataset: 'locks',
          requestId,
          pages,
          ...(r?.lease
            ? {
                result: {
                  leaseId: r.lease.leaseId,
                  epoch: r.lease.fencingEpoch,
                  expiresUnixMs: r.lease.expiresUnixMs,
                },
              }
            : {}),
        }),
        () =>
          unary<AcquireResponse__Output>(
            (o, cb) =>
              c.Acquire(
                {
                  dataset: 'locks',
                  ranges: [{ offset: page * 4096, length: 8 }],
                  leaseMs: 60_000,
                  waitMs: 10_000,
                  requestId,
                },
                o,
                cb,
              ),
            20_000,
          ),
      );
      const leaseId = got.result?.lease?.leaseId;
      if (leaseId === undefined) continue;
      await sleep(30);
      await attempts(
        history,
        { client },
        () => ({ kind: 'release', leaseId }),
        () => unary((o, cb) => c.Release({ leaseId }, o, cb)),
        60_000,
      );
    }
  };

  const kills: { at: number; slot: number }[] = [];
  /** When something happened, against the latest kill (for the log). */
  const sinceKill = (): string => {
    const k = kills.at(-1);
    return k ? `[${String(Date.now() - k.at)} ms after kill ${String(kills.length)}]` : '[before any kill]';
  };
  // ---- MRMW: a writer on n1 commits a counter, a reader on n2 fetches it; neither needs the dispatcher ----
  const mrmw = {
    commits: 0,
    commitFailures: [] as string[],
    conflicts: [] as string[],
    gapAt: '',
    reads: 0,
    readFailures: [] as string[],
    gap: 0,
  };
  /** The slowest call of each data-path step and when it ended (a stall shows which step waited). */
  const slowest: Record<string, { ms: number; at: string }> = {};
  const timed = async <T>(step: string, call: () => Promise<T>): Promise<T> => {
    const t0 = Date.now();
    try {
      return await call();
    } finally {
      const ms = Date.now() - t0;
      if (ms > (slowest[step]?.ms ?? -1)) slowest[step] = { ms, at: sinceKill() };
    }
  };
  const [n1, n2] = nodes;
  if (!n1 || !n2) throw new Error('nodes');
  const w = dataClient(t, n1.address);
  const r = dataClient(t, n2.address);
  const ws = (await w.open({ name: 'mrmw', create: true, sizeBytes: MiB, mode: 'CONSISTENCY_MODE_MRMW', replicas: 2 }))
    .session;
  const rs = (await r.open({ name: 'mrmw' })).session;
  /** The last value the writer wrote (committed or not): the reader never sees a newer one. */
  let writing = 0n;
  const writer = async (): Promise<void> => {
    let last = Date.now();
    for (let v = 1n; !stop; v++) {
      const buf = Buffer.alloc(8);
      buf.writeBigUInt64LE(v);
      writing = v;
      try {
        await timed('write', () => w.write({ session: ws, offset: 0, data: buf }));
        await timed('commit', () => w.commit({ session: ws }));
        mrmw.commits++;
        const now = Date.now();
        if (now - last > mrmw.gap) {
          mrmw.gap = now - last;
          mrmw.gapAt = sinceKill();
        }
        last = now;
      } catch (e) {
        // A conflict (ABORTED) is a commit's defined outcome, answered by rolling back and writing again (what
        // transaction() does); it is counted apart. Anything else is a commit that failed.
        const what = `${sinceKill()} ${e instanceof Error ? e.message : String(e)}`;
        if (e instanceof CallError && e.code === 'ABORTED') mrmw.conflicts.push(what);
        else mrmw.commitFailures.push(what);
        await w.rollback({ session: ws }).catch(() => undefined);
      }
      await sleep(25);
    }
  };
  const reader = async (): Promise<void> => {
    let seen = 0n;
    while (!stop) {
      try {
        await timed('refresh', () => r.refresh({ session: rs }));
        const data = await timed('read', () => r.read({ session: rs, offset: 0, length: 8 }));
        const got = data.data.readBigUInt64LE(0);
        // The reader sees a committed value, never older than one it saw, never newer than the last one written.
        if (got < seen || got > writing) {
          mrmw.readFailures.push(`read ${String(got)} after ${String(seen)} (written ${String(writing)})`);
        }
        seen = got;
        mrmw.reads++;
      } catch (e) {
        mrmw.readFailures.push(`${sinceKill()} ${e instanceof Error ? e.message : String(e)}`);
      }
      await sleep(25);
    }
  };

  const loops = [
    datasetClient(0),
    datasetClient(1),
    datasetClient(2),
    lockClient(0, nodes[0] as NodeProc),
    lockClient(1, nodes[1] as NodeProc),
    writer(),
    reader(),
  ];

  // ---- faults: KILLS leader kills; one etcd member (its raft leader) killed midway and restarted later ----
  const takeovers: number[] = [];
  let etcdKilled = -1;
  await sleep(3000);
  for (let k = 0; k < KILLS; k++) {
    if (k === Math.floor(KILLS / 2)) {
      etcdKilled = await etcd.leader();
      await etcd.kill(etcdKilled);
      t.log(`etcd member ${String(etcdKilled)} (its raft leader) killed`);
    }
    const leader = await waitFor('a leading dispatcher', () => Promise.resolve(d.leader()), 60_000);
    const at = Date.now();
    d.kill(leader);
    kills.push({ at, slot: leader });
    const next = await waitFor(
      'a standby to lead',
      () => Promise.resolve(d.slots.findIndex((s) => s.readyAt > at) >= 0 ? true : undefined),
      60_000,
    );
    t.true(next);
    const led = Math.min(...d.slots.filter((s) => s.readyAt > at).map((s) => s.readyAt));
    takeovers.push(led - at);
    if (k === Math.floor(KILLS / 2) && etcdKilled >= 0) {
      etcd.restart(etcdKilled);
      t.log(`etcd member ${String(etcdKilled)} restarted`);
    }
    // Load under the new leader before the next kill.
    await sleep(2500 + Math.floor(Math.random() * 1500));
  }
  stop = true;
  await Promise.all(loops);

  // ---- read back and check ----
  const leader = await waitFor('a leading dispatcher', () => Promise.resolve(d.leader()), 60_000);
  t.log(`leader at the end: dispatcher ${String(leader)}`);
  const listed = await unary<ListDatasetsResponse__Output>((o, cb) => admin.ListDatasets({}, o, cb), 20_000);
  const final = listed.datasets.map((x) => ({
    name: x.name,
    id: x.id,
    sizeBytes: x.sizeBytes,
    chunkCount: x.chunkCount,
  }));
  const leases = await unary<ListLeasesResponse__Output>(
    (o, cb) => admin.ListLeases({ dataset: 'locks' }, o, cb),
    20_000,
  );
  const violations = [
    ...checkDatasets(history.datasets(), final, { chunkSizeBytes: CHUNK, prefixes: ['c0-', 'c1-', 'c2-'] }),
    ...checkLeases(
      history.leases(),
      leases.leases.map((l) => l.leaseId),
      { graceMs: MRSW_GRACE_MS },
    ),
    ...checkBarriers([]),
  ];

  const after = await listNodes(all);
  for (const n of before.nodes) {
    const m = after.nodes.find((x) => x.id === n.id);
    t.is(m?.state, 'NODE_STATE_ALIVE', `node ${String(n.id)} is alive`);
    t.is(m?.stateEpoch, n.stateEpoch, `node ${String(n.id)} was not declared dead nor rejoined`);
  }
  const declaredDead = d.allStderr.flat().filter((l) => l.includes('node lease expired'));

  const tk = p50max(takeovers);
  const counts = history.counts();
  t.log(
    `FIGURES kills=${String(kills.length)} takeover_ms_p50=${String(tk.p50)} takeover_ms_max=${String(tk.max)} ` +
      `unplanned_dispatcher_exits=${String(d.unplannedExits.length)} mrmw_commits=${String(mrmw.commits)} ` +
      `mrmw_commit_failures=${String(mrmw.commitFailures.length)} mrmw_conflicts=${String(mrmw.conflicts.length)} ` +
      `mrmw_longest_gap_ms=${String(mrmw.gap)} ` +
      `page_reads=${String(mrmw.reads)} page_read_failures=${String(mrmw.readFailures.length)} ` +
      `violations=${String(violations.length)}`,
  );
  t.log(`takeovers (ms): ${takeovers.join(' ')}`);
  t.log(`attempts: ${JSON.stringify(counts)}`);
  for (const u of d.unplannedExits) t.log(`unplanned: ${u}`);
  t.log(`longest MRMW commit gap ended ${mrmw.gapAt}; slowest data-path calls: ${JSON.stringify(slowest)}`);
  for (const f of [...mrmw.commitFailures, ...mrmw.conflicts, ...mrmw.readFailures].slice(0, 10)) {
    t.log(`data path: ${f}`);
  }
  for (const v of violations.slice(0, 30)) t.log(`VIOLATION ${v}`);
  // What the nodes warned about (a stalled data path shows there), kinds counted.
  const warned = new Map<string, number>();
  for (const n of nodes) {
    for (const l of n.stderr) {
      const m = /"level":(40|50)[^]*?"msg":"([^"]*)"/.exec(l);
      if (m?.[2] !== undefined) warned.set(m[2], (warned.get(m[2]) ?? 0) + 1);
    }
  }
  t.log(`node warnings: ${JSON.stringify(Object.fromEntries(warned))}`);

  t.deepEqual(violations, []);
  t.deepEqual(declaredDead, [], 'no dispatcher declared a node dead');
  for (const ms of takeovers) t.true(ms < TTL_S * 1000 + 1000 + TAKEOVER_MARGIN_MS, `takeover in ${String(ms)} ms`);
  t.deepEqual(mrmw.commitFailures, [], 'MRMW commits never failed');
  t.true(mrmw.gap < TTL_S * 1000 + 1000 + TAKEOVER_MARGIN_MS, `MRMW commits never stopped for a takeover's length`);
  t.deepEqual(mrmw.readFailures, [], 'page fetches never failed');
  t.true((counts.create?.ok ?? 0) > 0 && (counts.acquire?.ok ?? 0) > 0 && (counts.release?.ok ?? 0) > 0);
});

test('a release acknowledged just before its leader lost etcd stays released under the next leader', async (t) => {
  t.timeout(180_000);
  const etcd = await startEtcdCluster(t, 1);
  const dir = tempDir(t);
  const ports = [await freePort(), await freePort()];
  const all = ports.map((p) => `127.0.0.1:${String(p)}`).join(',');
  const d = dispatchers(t, etcd.endpoints, dir, ports);
  d.start(0);
  await waitFor('the first dispatcher to lead', () => Promise.resolve(d.leader() === 0 ? true : undefined), 120_000);
  d.start(1);
  const n1 = await startNode(t, {
    dispatcher: all,
    name: 'n1',
    stateDir: join(dir, 'n1'),
    extra: ['--durability', 'memory'],
  });
  const admin = dispatcherClient(all);
  t.teardown(() => {
    admin.close();
  });
  await unary((o, cb) =>
    admin.CreateDataset({ name: 'locks', sizeBytes: MiB, mode: 'CONSISTENCY_MODE_MRSW', replicas: 1 }, o, cb),
  );
  const acquire = (requestId: string) =>
    unary<AcquireResponse__Output>((o, cb) =>
      admin.Acquire(
        { dataset: 'locks', ranges: [{ offset: 0, length: 8 }], leaseMs: 120_000, waitMs: 0, nodeId: n1.id, requestId },
        o,
        cb,
      ),
    );
  const leaseId = (await acquire('first')).lease?.leaseId ?? '';
  t.not(leaseId, '');

  // etcd goes away: the leader can no longer make the release durable, and soon steps down.
  await etcd.kill(0);
  const history = new History();
  const sentAt = Date.now();
  const first = await attempts(
    history,
    { client: 'r' },
    () => ({ kind: 'release', leaseId }),
    () => unary((o, cb) => admin.Release({ leaseId }, o, cb), 3000),
    0,
  );
  etcd.restart(0);
  // A release with no answer is sent again (to the next leader) until it is answered.
  if (first.outcome.kind !== 'ok') {
    await attempts(
      history,
      { client: 'r' },
      () => ({ kind: 'release', leaseId }),
      () => unary((o, cb) => admin.Release({ leaseId }, o, cb), 3000),
      120_000,
    );
  }
  await waitFor(
    'a dispatcher to lead after etcd returned',
    () => Promise.resolve(d.slots.some((s) => s.readyAt > sentAt) ? true : undefined),
    60_000,
  );
  t.log(`first release: ${JSON.stringify(first.outcome)}; attempts ${JSON.stringify(history.counts())}`);
  const listed = await unary<ListLeasesResponse__Output>(
    (o, cb) => admin.ListLeases({ dataset: 'locks' }, o, cb),
    20_000,
  );
  t.deepEqual(
    checkLeases(
      history.leases(),
      listed.leases.map((l) => l.leaseId),
      { graceMs: MRSW_GRACE_MS },
    ),
    [],
  );
  // The pages are free: another acquire gets them without waiting for the old lease to run out.
  t.truthy((await acquire('second')).lease?.leaseId);
});

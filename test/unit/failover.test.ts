// Owner failover on the dispatcher: the pure decision (services/dispatcher/failover.ts) and its wiring into the
// Cluster state machine over a real (temp dir) metadata store.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { pino } from 'pino';
import { Cluster, PROTOCOL_VERSION } from '../../services/dispatcher/cluster.ts';
import { planFailover, type FailoverMember } from '../../services/dispatcher/failover.ts';
import type { ChunkRecord, DatasetRecord } from '../../services/dispatcher/store.ts';
import { LmdbStore as MetadataStore } from '../../services/dispatcher/store-lmdb.ts';

const store = (id: number) => String(id).padStart(32, 'a');
const alive = (id: number): FailoverMember => ({ id, state: 'ALIVE', storeId: store(id) });
const dead = (id: number): FailoverMember => ({ id, state: 'DEAD', storeId: store(id) });

function dataset(name: string, replicas: number, chunks: ChunkRecord[], generation = 5): DatasetRecord {
  return {
    name,
    id: 1,
    sizeBytes: chunks.length * 4 * 1024 * 1024,
    mode: 'mrmw',
    replicas,
    chunkSizeBytes: 4 * 1024 * 1024,
    createdUnixMs: 0,
    generation,
    chunks,
  };
}

test('a dead owner’s chunk moves to its first alive replica, one era later and recovering from the old store', (t) => {
  const ds = dataset('d', 2, [
    { owner: 1, ownerStore: store(1), replicas: [1, 3] },
    { owner: 2, ownerStore: store(2), replicas: [2, 1] },
  ]);
  const plan = planFailover([dead(1), alive(2), alive(3)], [ds]);
  t.deepEqual(plan.moves, [{ dataset: 'd', chunk: 0, from: 1, to: 3, era: 1 }]);
  t.deepEqual(plan.blocked, []);
  t.is(plan.datasets.length, 1);
  const updated = plan.datasets[0];
  t.is(updated?.generation, 6);
  // The old owner stays a replica (it holds a copy if it returns); the new owner comes first.
  t.deepEqual(updated?.chunks[0], { owner: 3, ownerStore: store(1), replicas: [3, 1], era: 1 });
  t.not(updated?.chunks[0]?.ownerStore, store(3), 'the new owner’s store differs: the chunk is recovering');
  t.is(updated?.chunks[1], ds.chunks[1], 'a chunk whose owner is alive is untouched');
  t.deepEqual(ds.chunks[0], { owner: 1, ownerStore: store(1), replicas: [1, 3] }, 'the input is not changed');
});

test('a failed-over chunk keeps its lost pages', (t) => {
  const ds = dataset('d', 2, [{ owner: 1, ownerStore: store(1), replicas: [1, 2], lost: [[7, 2]] }]);
  const plan = planFailover([dead(1), alive(2), alive(3)], [ds]);
  t.deepEqual(plan.datasets[0]?.chunks[0]?.lost, [[7, 2]]);
});

test('a chunk that failed over before goes one era further, and a missing owner store falls back', (t) => {
  const ds = dataset('d', 2, [{ owner: 1, replicas: [1, 2], era: 3 }]);
  const plan = planFailover([{ id: 1, state: 'DEAD' }, alive(2), alive(3)], [ds]);
  t.deepEqual(plan.datasets[0]?.chunks[0], { owner: 2, ownerStore: 'failover', replicas: [2, 1], era: 4 });
  const known = planFailover([dead(1), alive(2), alive(3)], [ds]);
  t.is(known.datasets[0]?.chunks[0]?.ownerStore, store(1), 'the old owner’s store when the record names none');
});

test('an owner that left (a stop without handoff) is waited for, not failed over', (t) => {
  const ds = dataset('d', 2, [{ owner: 1, ownerStore: store(1), replicas: [1, 2] }]);
  const plan = planFailover([{ id: 1, state: 'LEFT', storeId: store(1) }, alive(2), alive(3)], [ds]);
  t.deepEqual(plan, { datasets: [], moves: [], blocked: [] });
});

test('every chunk of one dead owner in a dataset goes to the same new owner', (t) => {
  // A commit's part at the old owner may span its chunks: the node that takes them over needs all of them.
  const ds = dataset('d', 2, [
    { owner: 1, ownerStore: store(1), replicas: [1, 2] },
    { owner: 1, ownerStore: store(1), replicas: [1, 3] },
    { owner: 4, ownerStore: store(4), replicas: [4, 3] },
  ]);
  const plan = planFailover([dead(1), alive(2), alive(3), dead(4)], [ds]);
  t.deepEqual(plan.moves, []); // two of four down with N=2: blocked
  const one = planFailover([dead(1), alive(2), alive(3), alive(4)], [ds]);
  t.deepEqual(
    one.moves.map((m) => [m.chunk, m.to]),
    [
      [0, 2],
      [1, 2],
    ],
  );
});

test('no failover while as many members are down as the dataset has replicas', (t) => {
  const ds = dataset('d', 2, [
    { owner: 1, ownerStore: store(1), replicas: [1, 2] },
    { owner: 3, ownerStore: store(3), replicas: [3, 1] },
  ]);
  const plan = planFailover([dead(1), dead(2), alive(3)], [ds]);
  t.deepEqual(plan.moves, []);
  t.deepEqual(plan.datasets, []);
  t.deepEqual(plan.blocked, [
    { dataset: 'd', chunk: 0, owner: 1, reason: 'members-down', down: 2, refilling: [], replicas: 2 },
  ]);
});

test('a member that rejoined with a replaced store after the dead owner last had every page at N counts as down', (t) => {
  // Node 2's store was replaced at epoch 40: it may have held node 1's only other copy of a page.
  const ds = dataset('d', 2, [{ owner: 1, ownerStore: store(1), replicas: [1, 2] }]);
  const replaced: FailoverMember = { ...alive(2), storeReplacedEpoch: 40 };
  const before = planFailover([{ ...dead(1), replicatedThroughEpoch: 39 }, replaced, alive(3)], [ds]);
  t.deepEqual(before.moves, []);
  t.deepEqual(before.blocked, [
    { dataset: 'd', chunk: 0, owner: 1, reason: 'members-down', down: 1, refilling: [2], replicas: 2 },
  ]);
  const unknown = planFailover([dead(1), replaced, alive(3)], [ds]);
  t.deepEqual(unknown.moves, [], 'an owner that never reported: every replaced member counts');
  // Node 1 had reported its pages at N copies at epoch 40 or later: node 2 was refilled (or not needed).
  const after = planFailover([{ ...dead(1), replicatedThroughEpoch: 40 }, replaced, alive(3)], [ds]);
  t.deepEqual(after.moves, [{ dataset: 'd', chunk: 0, from: 1, to: 2, era: 1 }]);
  // With N = 3 on four members, one down and one refilling still leave a live holder.
  const three = dataset('t', 3, [{ owner: 1, ownerStore: store(1), replicas: [1, 2, 3] }]);
  const n3 = planFailover([{ ...dead(1), replicatedThroughEpoch: 39 }, replaced, alive(3), alive(4)], [three]);
  t.deepEqual(n3.moves, [{ dataset: 't', chunk: 0, from: 1, to: 2, era: 1 }]);
});

test('with three replicas, two of four members down still fail over', (t) => {
  const ds = dataset('d', 3, [{ owner: 1, ownerStore: store(1), replicas: [1, 2, 3] }]);
  const plan = planFailover([dead(1), dead(2), alive(3), alive(4)], [ds]);
  t.deepEqual(plan.moves, [{ dataset: 'd', chunk: 0, from: 1, to: 3, era: 1 }]);
  t.deepEqual(plan.datasets[0]?.chunks[0]?.replicas, [3, 1, 2]);
  const three = planFailover([dead(1), dead(2), dead(3), alive(4)], [ds]);
  t.deepEqual(three.moves, [], 'three of four down with N=3: blocked');
});

test('a chunk with a single copy never fails over', (t) => {
  const ds = dataset('one', 1, [{ owner: 1, ownerStore: store(1), replicas: [1] }]);
  const plan = planFailover([dead(1), alive(2), alive(3)], [ds]);
  t.deepEqual(plan.moves, []);
  t.deepEqual(plan.datasets, []);
  t.deepEqual(plan.blocked, [
    { dataset: 'one', chunk: 0, owner: 1, reason: 'single-copy', down: 1, refilling: [], replicas: 1 },
  ]);
});

test('with no alive replica the chunk goes to the alive node owning the fewest chunks, lowest id on ties', (t) => {
  const busy = dataset('busy', 1, [
    { owner: 3, ownerStore: store(3), replicas: [3] },
    { owner: 3, ownerStore: store(3), replicas: [3] },
    { owner: 4, ownerStore: store(4), replicas: [4] },
  ]);
  // Replica 2 is alive but has no known store (it never rejoined since store identities exist): not a target.
  const ds = dataset('d', 3, [
    { owner: 1, ownerStore: store(1), replicas: [1, 2] },
    { owner: 1, ownerStore: store(1), replicas: [1, 2] },
    { owner: 1, ownerStore: store(1), replicas: [1, 2] },
  ]);
  const members: FailoverMember[] = [dead(1), { id: 2, state: 'ALIVE' }, alive(3), alive(4), alive(5)];
  const plan = planFailover(members, [busy, ds]);
  // Loads before: 3 owns 2, 4 owns 1, 5 owns 0: node 5, which then takes all of node 1's chunks of the dataset.
  t.deepEqual(
    plan.moves.map((m) => m.to),
    [5, 5, 5],
  );
  t.deepEqual(plan.datasets[0]?.chunks[0]?.replicas, [5, 1, 2]);
  t.is(plan.datasets.length, 1, 'only the dataset that changed');
});

test('nothing changes while every owner is alive', (t) => {
  const ds = dataset('d', 2, [{ owner: 1, ownerStore: store(1), replicas: [1, 2] }]);
  t.deepEqual(planFailover([alive(1), alive(2)], [ds]), { datasets: [], moves: [], blocked: [] });
});

// ---- the Cluster wiring, over a real metadata store ----

function cluster(t: ExecutionContext, leaseMs = 60_000): { c: Cluster; meta: MetadataStore; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'hotpot-failover-'));
  const meta = new MetadataStore(dir);
  const c = new Cluster(meta, { chunkSizeBytes: 4 * 1024 * 1024, leaseMs, failover: true }, pino({ level: 'silent' }));
  t.teardown(async () => {
    c.stop();
    await meta.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { c, meta, dir };
}

const joinAs = (c: Cluster, name: string, storeId: string, storeIncarnation = 1) =>
  c.join({
    identity: name,
    protocolVersion: PROTOCOL_VERSION,
    chunkSizeBytes: c.chunkSizeBytes,
    controlAddress: '127.0.0.1:1',
    dataAddress: '127.0.0.1:2',
    storeId,
    storeIncarnation,
  });

/** Keeps the named members' leases renewed until `until` resolves (the others run out). */
async function heartbeatWhile(c: Cluster, names: string[], until: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!until()) {
    if (Date.now() > deadline) throw new Error('timed out waiting for the lease expiry');
    for (const n of c.members()) if (names.includes(n.identity) && n.state === 'ALIVE') c.heartbeat(n.id, n.identity);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('a member rejoining with a replaced store holds a dead owner’s chunks back until that owner had reported it refilled', async (t) => {
  const { c } = cluster(t, 300);
  await c.init();
  for (const [i, name] of ['n1', 'n2', 'n3'].entries()) await joinAs(c, name, store(i + 1));
  const ds = await c.createDataset({ name: 'd', sizeBytes: 3 * 4 * 1024 * 1024, mode: 'mrmw', replicas: 2 });
  const victim = ds.chunks[0]?.owner ?? 0;
  const others = c.members().filter((n) => n.id !== victim);
  const [refilled, other] = others;
  if (!refilled || !other) throw new Error('two other members');
  // Another member comes back with an empty store: the epoch of that is kept with its record.
  await joinAs(c, refilled.identity, 'b'.repeat(32));
  const replacedAt = c.epoch;
  t.is(c.members().find((n) => n.id === refilled.id)?.storeReplacedEpoch, replacedAt);
  // The owner's last report predates it (and a report above the dispatcher's epoch is taken as its epoch).
  c.heartbeat(victim, `n${String(victim)}`, replacedAt - 1);
  t.is(c.members().find((n) => n.id === victim)?.replicatedThroughEpoch, replacedAt - 1);
  await heartbeatWhile(c, [refilled.identity, other.identity], () =>
    c.members().some((n) => n.id === victim && n.state === 'DEAD'),
  );
  t.is(c.getDataset('d').chunks[0]?.owner, victim, 'held back: the replaced member may have had its only copy');
  // The owner returns, reports its pages at N copies since the replacement, and dies again: its chunks fail over.
  await joinAs(c, `n${String(victim)}`, store(victim), 2);
  t.is(c.members().find((n) => n.id === victim)?.replicatedThroughEpoch, replacedAt - 1, 'kept across a restart');
  c.heartbeat(victim, `n${String(victim)}`, c.epoch + 100);
  t.is(c.members().find((n) => n.id === victim)?.replicatedThroughEpoch, c.epoch);
  await heartbeatWhile(c, [refilled.identity, other.identity], () => c.getDataset('d').chunks[0]?.owner !== victim);
  t.not(c.getDataset('d').chunks[0]?.owner, victim);
});

test('a member’s replicated-through epoch is stored: a restarted dispatcher still has it', async (t) => {
  const { c, meta } = cluster(t);
  await c.init();
  const n1 = await joinAs(c, 'n1', store(1));
  await joinAs(c, 'n2', store(2));
  c.heartbeat(n1.id, 'n1', c.epoch);
  const reported = c.epoch;
  const stored = async () => {
    for (let i = 0; i < 100; i++) {
      const v = meta.allNodes().find((n) => n.id === n1.id)?.replicatedThroughEpoch;
      if (v === reported) return v;
      await new Promise((r) => setTimeout(r, 10));
    }
    return meta.allNodes().find((n) => n.id === n1.id)?.replicatedThroughEpoch;
  };
  t.is(await stored(), reported);
  c.heartbeat(n1.id, 'n1', reported - 1); // never backwards
  c.stop();
  // Before, it was in memory only: a restarted dispatcher had 0 for every member until its next report, and counted
  // every store ever replaced as one the owner may have counted on.
  const again = new Cluster(
    meta,
    { chunkSizeBytes: 4 * 1024 * 1024, leaseMs: 60_000, failover: true },
    pino({ level: 'silent' }),
  );
  t.teardown(() => {
    again.stop();
  });
  await again.init();
  t.is(again.members().find((n) => n.id === n1.id)?.replicatedThroughEpoch, reported);
  t.is(again.members().find((n) => n.identity === 'n2')?.replicatedThroughEpoch, undefined);
});

test('a dead member’s chunks fail over; it does not get them back, and a restart or handoff raises the era', async (t) => {
  const { c } = cluster(t, 300);
  await c.init();
  const nodes = [];
  for (const [i, name] of ['n1', 'n2', 'n3'].entries()) nodes.push(await joinAs(c, name, store(i + 1)));
  const ds = await c.createDataset({ name: 'd', sizeBytes: 3 * 4 * 1024 * 1024, mode: 'mrmw', replicas: 2 });
  const victim = ds.chunks[0]?.owner ?? 0;
  const owned = ds.chunks.flatMap((ch, i) => (ch.owner === victim ? [i] : []));
  t.true(owned.includes(0));
  t.true(c.chunkView(ds).every((v) => v.era === 0));
  // A member that leaves is waited for.
  const others = nodes.filter((n) => n.id !== victim).map((n) => n.identity);
  await c.leave(victim, `n${String(victim)}`);
  t.is(c.getDataset('d').chunks[0]?.owner, victim, 'no failover on leave');
  await joinAs(c, `n${String(victim)}`, store(victim));

  // Its lease runs out (the others heartbeat): declared dead, its chunks fail over in one new generation.
  const before = c.getDataset('d').generation;
  await heartbeatWhile(c, others, () => c.getDataset('d').chunks[0]?.owner !== victim);
  const after = c.getDataset('d');
  t.is(after.generation, before + 1, 'one new generation for the whole evaluation');
  for (const i of owned) {
    const v = c.chunkView(after)[i];
    t.not(v?.owner, victim);
    t.like(v, { era: 1, ownerAlive: true, ownerRecovering: true });
    t.is(v?.replicas[0], v?.owner);
    t.true(v?.replicas.includes(victim));
  }

  // The victim restarts with its store: it owns none of them; they stay recovering at their new owners.
  await joinAs(c, `n${String(victim)}`, store(victim), 2);
  const back = c.getDataset('d');
  for (const i of owned) t.not(c.chunkView(back)[i]?.owner, victim);

  // The new owner reports the chunk recovered; a handoff raises the era (the new owner gives versions above the
  // old owner's), and so does a restart of the owner.
  const v0 = c.chunkView(back)[0];
  const y = nodes.find((n) => n.id === v0?.owner);
  if (!v0 || !y) throw new Error('chunk 0 has a new owner among the nodes');
  // It found pages no node held (lost): refused outside the chunk or unsorted, kept otherwise (merged).
  const report = (lost: { firstPage: number; count: number }[]) =>
    c.chunkRecovered({ nodeId: y.id, storeId: store(y.id), datasetId: back.id, chunk: 0, lost });
  for (const bad of [
    [{ firstPage: 1024, count: 1 }],
    [{ firstPage: 5, count: 0 }],
    [
      { firstPage: 9, count: 1 },
      { firstPage: 3, count: 1 },
    ],
  ]) {
    await t.throwsAsync(report(bad), { message: /lost page range/ });
  }
  await report([
    { firstPage: 3, count: 2 },
    { firstPage: 5, count: 1 },
    { firstPage: 100, count: 1 },
  ]);
  t.like(c.chunkView(c.getDataset('d'))[0], { owner: y.id, ownerRecovering: false, era: 1 });
  t.deepEqual(c.chunkView(c.getDataset('d'))[0]?.lost, [
    [3, 3],
    [100, 1],
  ]);
  const moved = await c.moveChunk({
    nodeId: y.id,
    identity: y.identity,
    storeId: store(y.id),
    datasetId: back.id,
    chunk: 0,
    toNodeId: victim,
  });
  t.like(moved.chunk, { owner: victim, ownerRecovering: false, era: 2 });
  t.deepEqual(
    moved.chunk.lost,
    [
      [3, 3],
      [100, 1],
    ],
    'lost pages stay lost at the new owner',
  );
  // An operator accepts the loss: gone, in a new generation; a second time there is nothing to forget.
  const gen = c.getDataset('d').generation;
  t.like(await c.forgetLostPages('d'), { pages: 4 });
  t.is(c.getDataset('d').generation, gen + 1);
  t.deepEqual(c.chunkView(c.getDataset('d'))[0]?.lost, []);
  t.like(await c.forgetLostPages('d'), { pages: 0 });
  await t.throwsAsync(c.forgetLostPages('nope'), { message: /nope/ });
  await joinAs(c, `n${String(victim)}`, store(victim), 3);
  t.like(c.chunkView(c.getDataset('d'))[0], { owner: victim, ownerRecovering: false, era: 3 });
  // A rejoin after a lost lease with the same incarnation (no restart) keeps it.
  await joinAs(c, `n${String(victim)}`, store(victim), 3);
  t.like(c.chunkView(c.getDataset('d'))[0], { era: 3 });
});

test('a chunk record written before eras existed loads as era 0 and a blocked failover waits for a return', async (t) => {
  const { c, meta } = cluster(t, 300);
  await c.init();
  for (const [i, name] of ['n1', 'n2', 'n3'].entries()) await joinAs(c, name, store(i + 1));
  // An old record: no era, no owner store.
  const old: DatasetRecord = dataset('legacy', 2, [{ owner: 1, replicas: [1, 2] }], 1);
  await meta.commit({ putDatasets: [old] });
  t.like(c.chunkView(c.getDataset('legacy'))[0], { owner: 1, era: 0, ownerRecovering: false });

  // Two of three dead with N=2: blocked. One of them returning unblocks it.
  const dead = (name: string) => c.members().some((m) => m.identity === name && m.state === 'DEAD');
  await heartbeatWhile(c, ['n1', 'n3'], () => dead('n2'));
  await heartbeatWhile(c, ['n3'], () => dead('n1'));
  t.is(c.getDataset('legacy').chunks[0]?.owner, 1, 'blocked: 2 members down >= 2 replicas');
  await joinAs(c, 'n2', store(2));
  const ds = c.getDataset('legacy');
  t.like(c.chunkView(ds)[0], { owner: 2, era: 1, ownerRecovering: true });
  t.deepEqual(ds.chunks[0], { owner: 2, ownerStore: store(1), replicas: [2, 1], era: 1 });
});

test('a member forgotten stops counting as down, so a blocked failover goes on; refused while alive or owning', async (t) => {
  const { c, meta } = cluster(t, 300);
  await c.init();
  for (const [i, name] of ['n1', 'n2', 'n3'].entries()) await joinAs(c, name, store(i + 1));
  // Chunk 0 is node 1's, chunk 1 node 2's; both kept on N = 2 nodes.
  await meta.commit({
    putDatasets: [
      dataset(
        'two',
        2,
        [
          { owner: 1, replicas: [1, 3], ownerStore: store(1), era: 0 },
          { owner: 2, replicas: [2, 3], ownerStore: store(2), era: 0 },
        ],
        1,
      ),
    ],
  });
  const dead = (name: string) => c.members().some((m) => m.identity === name && m.state === 'DEAD');
  // Node 1 dies for good: its chunk fails over (1 member down < 2). The member is DEAD a moment before the failover
  // that follows in the same step is committed: wait for the owner to change.
  await heartbeatWhile(c, ['n2', 'n3'], () => dead('n1') && c.getDataset('two').chunks[0]?.owner !== 1);
  t.is(c.getDataset('two').chunks[0]?.owner, 3);
  // Then node 2: 2 members down >= N, its chunk waits, as it must while node 1 could still return.
  await heartbeatWhile(c, ['n3'], () => dead('n2'));

  // gRPC status codes: 9 FAILED_PRECONDITION, 5 NOT_FOUND. (Each forget runs after the failover evaluation.)
  const refused = async (id: number, code: number, what: RegExp) => {
    const e = await t.throwsAsync(c.forget(id));
    t.is((e as { code?: number } | undefined)?.code, code);
    t.regex(e?.message ?? '', what);
  };
  await refused(3, 9, /alive/);
  t.is(c.getDataset('two').chunks[1]?.owner, 2, 'blocked: 2 members down');
  await refused(2, 9, /still owns 1 chunk\(s\) \(chunk 1 of "two"\)/);
  await refused(9, 5, /not a member/);

  // Forgetting node 1 (it owns nothing now): it leaves the membership and every replica list; node 2's chunk fails
  // over in the same step.
  const epoch = c.epoch;
  t.is(await c.forget(1), epoch + 1);
  t.false(c.members().some((m) => m.id === 1));
  const ds = c.getDataset('two');
  t.like(c.chunkView(ds)[1], { owner: 3, era: 1, ownerRecovering: true });
  t.false(ds.chunks.some((ch) => ch.replicas.includes(1)));
  // It survives a dispatcher restart (durable), and node 1's identity joining again is a new member.
  c.stop();
  const again = new Cluster(
    meta,
    { chunkSizeBytes: 4 * 1024 * 1024, leaseMs: 300, failover: true },
    pino({ level: 'silent' }),
  );
  t.teardown(() => {
    again.stop();
  });
  t.false(again.members().some((m) => m.id === 1));
  const back = await joinAs(again, 'n1', store(1), 2);
  t.true(back.id > 3, `a new id (${String(back.id)})`);
});

test('Heartbeat and Leave count only with the identity the node joined with, never with an empty one', async (t) => {
  const { c } = cluster(t);
  const j = await joinAs(c, 'n1', 'a'.repeat(32));
  for (const who of ['', 'n2']) {
    t.throws(() => c.heartbeat(j.id, who), { message: /is not a member with identity/ }, `heartbeat as "${who}"`);
    await t.throwsAsync(c.leave(j.id, who), { message: /is not a member with identity/ }, `leave as "${who}"`);
  }
  t.is(c.members().find((n) => n.id === j.id)?.state, 'ALIVE', 'the node is still a member');
  t.notThrows(() => c.heartbeat(j.id, 'n1'));
  await c.leave(j.id, 'n1');
  t.is(c.members().find((n) => n.id === j.id)?.state, 'LEFT');
});

test('joins of new identities are capped and rate-limited; known identities always rejoin', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'hotpot-joins-'));
  const meta = new MetadataStore(dir);
  const c = new Cluster(
    meta,
    { chunkSizeBytes: 4 * 1024 * 1024, leaseMs: 60_000, maxMembers: 5, newMembersPerMinute: 3 },
    pino({ level: 'silent' }),
  );
  t.teardown(async () => {
    c.stop();
    await meta.close();
    rmSync(dir, { recursive: true, force: true });
  });
  for (const n of ['a', 'b', 'c']) await joinAs(c, n, store(1));
  // The bucket (3) is empty: a fourth new identity waits, a known one rejoins.
  await t.throwsAsync(joinAs(c, 'd', store(4)), {
    message: /at most 3 new identities join per minute; retry in \d+ ms/,
  });
  await joinAs(c, 'a', store(1), 2);
  t.is(c.members().length, 3);
  // Past the cap: refused whatever the rate.
  const capped = new Cluster(
    meta,
    { chunkSizeBytes: 4 * 1024 * 1024, leaseMs: 60_000, maxMembers: 3 },
    pino({ level: 'silent' }),
  );
  t.teardown(() => capped.stop());
  await t.throwsAsync(joinAs(capped, 'e', store(5)), { message: /has 3 members, the most it keeps \(3\): forget/ });
  await joinAs(capped, 'b', store(1), 2);
});

test('a member down longer than the idle limit that holds nothing is forgotten on its own; one that holds copies stays', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'hotpot-idle-'));
  const meta = new MetadataStore(dir);
  const c = new Cluster(
    meta,
    { chunkSizeBytes: 4 * 1024 * 1024, leaseMs: 200, failover: true, forgetIdleAfterMs: 300 },
    pino({ level: 'silent' }),
  );
  t.teardown(async () => {
    c.stop();
    await meta.close();
    rmSync(dir, { recursive: true, force: true });
  });
  await c.init();
  for (const n of ['a', 'b']) await joinAs(c, n, store(1));
  // Chunks on a and b only (N = 2 of 2 members); then c joins holding nothing.
  await c.createDataset({ name: 'd', sizeBytes: 4 * 1024 * 1024, mode: 'mrmw', replicas: 2 });
  const ghost = await joinAs(c, 'ghost', store(3));
  // Everyone's lease runs out but a's; ghost and b are declared dead, then ghost (holding nothing) is forgotten.
  await heartbeatWhile(c, ['a'], () => !c.members().some((n) => n.identity === 'ghost'));
  t.false(c.members().some((n) => n.id === ghost.id));
  const b = c.members().find((n) => n.identity === 'b');
  t.is(b?.state, 'DEAD', 'b holds copies of d: it stays a member until an operator forgets it');
});

// A node that lost its store must not serve zeros (issue 9, point 5; docs/design/consistency.md "A node that lost
// its store"). Each node's pool has an identity the dispatcher remembers: a node that rejoins with a new store (a
// replaced machine, a wiped pool and data dir) has its chunks refused until it has recovered them from the nodes
// holding copies; a node that comes back with an older copy of its store is refused.
import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { openApp } from '../helpers/app.ts';
import { listNodes, runCli, startCluster, waitFor } from '../helpers/cluster.ts';
import { dataClient, type CallError } from '../helpers/data-client.ts';
import { dispatcherClient } from '../../services/cli/client.ts';
import { unary } from '../../services/common/rpc.ts';
import type { StatDatasetResponse__Output } from '../../services/generated/hotpot/v1/StatDatasetResponse.ts';

const MiB = 1024 * 1024;

type TestCluster = Awaited<ReturnType<typeof startCluster>>;

/** Node `i` (0-based) is lost with its pool and data dir (a replaced machine, or a reboot with durability memory): it
 * is killed and both are removed; a restart then joins with a new, empty store. */
async function loseStore(c: TestCluster, i: number, prefix: string): Promise<void> {
  const n = c.nodes[i];
  if (!n) throw new Error(`no node ${String(i)}`);
  n.child.kill('SIGKILL');
  await n.exited;
  const name = `n${String(i + 1)}`;
  const pool = readdirSync('/dev/shm').find((d) => d.startsWith(`hotpot-${prefix}-`) && d.endsWith(`-${name}`));
  if (pool) rmSync(join('/dev/shm', pool), { recursive: true, force: true });
  rmSync(join(c.dir, name, 'data'), { recursive: true, force: true });
}

async function stat(dispatcher: string, name: string): Promise<StatDatasetResponse__Output> {
  const c = dispatcherClient(dispatcher);
  try {
    return await unary<StatDatasetResponse__Output>((o, cb) => c.StatDataset({ name }, o, cb));
  } finally {
    c.close();
  }
}

test('a node restarted with an empty pool and data dir recovers its chunks from their holders and never serves zeros', async (t) => {
  t.timeout(170_000);
  const c = await startCluster(t, { nodes: 3, prefix: 'store', durability: 'disk' });
  const [n1, n2, n3] = c.nodes;
  if (!n1 || !n2 || !n3) throw new Error('3 nodes');
  const w = await openApp(t, n1.socket, 'acct', { size: 12 * MiB, mode: 'mrmw', replicas: 2 });
  await w.call({ op: 'fill', offset: 0, length: 12 * MiB, seed: 9 });
  await w.call({ op: 'commit' });
  const before = (await listNodes(c.dispatcher)).nodes.find((x) => x.id === n2.id);
  // Node 2 is lost with its pool and data dir (a replaced machine keeps only its name).
  await loseStore(c, 1, 'store');
  const again = await c.restart(1);
  t.is(again.id, n2.id);
  const after = (await listNodes(c.dispatcher)).nodes.find((x) => x.id === n2.id);
  t.truthy(before?.storeId);
  t.not(after?.storeId, before?.storeId, 'the dispatcher sees a new store');
  t.is(before?.storeReplacedEpoch, 0);
  const replacedAt = after?.storeReplacedEpoch ?? 0;
  t.true(replacedAt > 0, 'the epoch of the replacement is kept');
  // Its chunk is served again once recovered (and reported): never zeros.
  await waitFor(
    'node 2 recovered its chunk',
    async () => ((await stat(c.dispatcher, 'acct')).chunks.some((x) => x.ownerRecovering) ? undefined : true),
    60_000,
  );
  const chunks = (await stat(c.dispatcher, 'acct')).chunks;
  const owned = chunks.filter((x) => x.ownerNodeId === n2.id).map((x) => x.index);
  t.true(owned.length > 0, 'node 2 owns a chunk');
  for (const reader of [await openApp(t, n3.socket, 'acct'), await openApp(t, again.socket, 'acct')]) {
    const r = await reader.call<{ badPages: number; pages: number }>({
      op: 'check',
      offset: 0,
      length: 12 * MiB,
      seed: 9,
    });
    t.is(r.badPages, 0, 'every page reads as committed');
  }
  // The other owners find their pages back at N copies after the replacement and say so with their heartbeats (until
  // then node 2 would count as down for their chunks' failover).
  await waitFor(
    'every other owner reports its pages at N copies since the replacement',
    async () => {
      const nodes = (await listNodes(c.dispatcher)).nodes.filter((x) => x.id !== n2.id);
      return nodes.every((x) => x.replicatedThroughEpoch >= replacedAt) ? true : undefined;
    },
    30_000,
  );
  // It owns them again: a commit to its chunk goes through and a validated read of it passes.
  const off = (owned[0] ?? 0) * 4 * MiB;
  await w.call({ op: 'rollback' });
  await w.call({ op: 'write', offset: off, hex: 'abcd' });
  await w.call({ op: 'commit' });
  await w.call({ op: 'commitReads', reads: [{ offset: off, length: 4096 }] });
});

test('a node that comes back with an older copy of its store is refused with a clear message', async (t) => {
  t.timeout(120_000);
  const c = await startCluster(t, { nodes: 1, prefix: 'store-old', durability: 'disk' });
  const n = c.nodes[0];
  if (!n) throw new Error('1 node');
  const idFile = join(c.dir, 'n1', 'data', 'store.id');
  const backup = readFileSync(idFile, 'utf8'); // a copy of the store taken at its first start (incarnation 1)
  const stop = async (): Promise<void> => {
    c.nodes[0]?.child.kill('SIGKILL');
    await c.nodes[0]?.exited;
  };
  await stop();
  await c.restart(0); // incarnation 2
  await stop();
  await c.restart(0); // incarnation 3: the dispatcher last saw 3
  await stop();
  writeFileSync(idFile, backup); // the backup is restored: it opens as incarnation 2
  const err = await t.throwsAsync(c.restart(0));
  t.regex(err?.message ?? '', /older copy of its store/);
});

// docs/design/engine.md "Pool layout": with durability disk a commit is durable in the node's page journal; the data
// dir's page files are written from it later, in the background. A machine that reboots (the pool in /dev/shm gone,
// the data dir kept) right after commits — before their write-back — gets them from the journal's replay: with N = 1
// on one node there is no other copy to recover them from.
test('a node rebooted right after its commits (pool gone, data dir kept) serves every one of them from its disk', async (t) => {
  t.timeout(120_000);
  const c = await startCluster(t, { nodes: 1, prefix: 'reboot', durability: 'disk' });
  const n = c.nodes[0];
  if (!n) throw new Error('1 node');
  const w = await openApp(t, n.socket, 'disk', { size: 8 * MiB, mode: 'mrmw', replicas: 1 });
  await w.call({ op: 'fill', offset: 0, length: 8 * MiB, seed: 5 });
  await w.call({ op: 'commit' });
  // Small commits, the last one just before the power goes: only the journal holds it.
  for (let i = 0; i < 8; i++) {
    await w.call({ op: 'write', offset: i * 1_048_577, hex: `c0ffee${String(i).padStart(2, '0')}` });
    await w.call({ op: 'commit' });
  }
  n.child.kill('SIGKILL');
  await n.exited;
  const pool = readdirSync('/dev/shm').find((d) => d.startsWith('hotpot-reboot-') && d.endsWith('-n1'));
  t.truthy(pool, 'the pool dir is where the test expects it');
  if (pool) rmSync(join('/dev/shm', pool), { recursive: true, force: true });
  const again = await c.restart(0);
  // The commits came back through the journal's replay (they were not written back yet), not from the page files.
  t.true(
    again.stderr.some((l) => /replayed [1-9]\d* page images from the page journal/.test(l)),
    'the node replayed its page journal',
  );
  const r = await openApp(t, again.socket, 'disk');
  for (let i = 0; i < 8; i++) {
    const got = await r.call<{ hex: string }>({ op: 'read', offset: i * 1_048_577, length: 4 });
    t.is(got.hex, `c0ffee${String(i).padStart(2, '0')}`, `commit ${String(i)} survived the reboot`);
  }
  // Every other byte is the first commit's.
  const check = await r.call<{ badPages: number; pages: number }>({ op: 'check', offset: 0, length: 8 * MiB, seed: 5 });
  t.true(check.pages > 0);
  t.true(check.badPages <= 8, `only the pages the small commits changed differ (${String(check.badPages)})`);
});

// docs/design/availability.md "Lost pages": with N = 1 a page whose one copy was in a lost store survives only if
// another node happened to cache it. The owner that recovers the chunk finds which pages nobody held; they are lost
// — reads and commits of them fail with DATA_LOSS (never zeros), the node logs them, `hotpot stat` lists them — until
// an operator accepts the loss (`hotpot forget-lost`), after which they read as zeros and can be written again.
test('pages whose only copy was in a lost store are reported lost and refused with DATA_LOSS, never read as zeros', async (t) => {
  t.timeout(170_000);
  const c = await startCluster(t, { nodes: 2, prefix: 'lost', durability: 'memory' });
  const [n1, n2] = c.nodes;
  if (!n1 || !n2) throw new Error('2 nodes');
  const PAGE = 4096;
  const a = dataClient(t, n2.address);
  const s2 = await a.open({
    name: 'one',
    create: true,
    sizeBytes: 8 * MiB,
    mode: 'CONSISTENCY_MODE_MRMW',
    replicas: 1,
  });
  const chunk = (await stat(c.dispatcher, 'one')).chunks.find((x) => x.ownerNodeId === n2.id)?.index;
  if (chunk === undefined) throw new Error('node 2 owns a chunk');
  const base = chunk * 1024; // first page of node 2's chunk (4 MiB chunks)
  const page = (k: number) => Buffer.alloc(PAGE, (k % 250) + 1);
  const written = Buffer.concat([...Array(64).keys()].map((k) => page(k)));
  await a.write({ session: s2.session, offset: base * PAGE, data: written });
  await a.commit({ session: s2.session });
  // Node 1 reads (and caches) the chunk's first 4 pages; no other node holds the rest (N = 1).
  const b = dataClient(t, n1.address);
  const s1 = await b.open({ name: 'one' });
  const first = await b.read({ session: s1.session, offset: base * PAGE, length: 4 * PAGE });
  t.deepEqual(first.data, written.subarray(0, 4 * PAGE));

  // Node 2 loses its pool and data dir (a reboot with durability memory) and comes back.
  await loseStore(c, 1, 'lost');
  const again = await c.restart(1);
  const recovered = await waitFor(
    'node 2 recovered its chunk',
    async () => {
      const ch = (await stat(c.dispatcher, 'one')).chunks[chunk];
      return ch && !ch.ownerRecovering ? ch : undefined;
    },
    60_000,
  );
  t.deepEqual(
    recovered.lostPages.map((r) => [r.firstPage, r.count]),
    [[base + 4, 1020]],
    'every page of the chunk but the 4 node 1 cached is lost (written or not: nothing tells them apart)',
  );
  t.true(
    again.stderr.some((l) => l.includes('LOST 1020 pages')),
    'the node logs the lost pages',
  );

  // The surviving pages read as committed everywhere; a lost one fails with DATA_LOSS on both nodes.
  const c2 = dataClient(t, again.address);
  const s2b = await c2.open({ name: 'one' });
  for (const [cl, s] of [
    [b, s1.session],
    [c2, s2b.session],
  ] as const) {
    const ok = await cl.read({ session: s, offset: (base + 1) * PAGE, length: PAGE });
    t.deepEqual(ok.data, page(1));
    const err = await t.throwsAsync(cl.read({ session: s, offset: (base + 10) * PAGE, length: PAGE }));
    t.is((err as CallError | undefined)?.code, 'DATA_LOSS', err?.message);
    t.regex(err?.message ?? '', /is lost/);
  }
  const env = { HOTPOT_DISPATCHER: c.dispatcher };
  const human = await runCli(['stat', 'one'], { env });
  t.is(human.code, 0, human.stderr);
  t.regex(human.stdout, new RegExp(`LOST PAGES: 1020 .*${String(base + 4)}-${String(base + 1023)}`));

  // The operator accepts the loss: zeros from then on, and the page can be written again.
  const forgot = await runCli(['forget-lost', 'one'], { env });
  t.is(forgot.code, 0, forgot.stderr);
  t.regex(forgot.stdout, /1020 lost page\(s\) forgotten/);
  const zeros = await waitFor(
    'node 1 loaded the map without lost pages',
    async () => {
      try {
        return await b.read({ session: s1.session, offset: (base + 10) * PAGE, length: PAGE });
      } catch {
        return undefined;
      }
    },
    20_000,
  );
  t.true(zeros.data.every((x) => x === 0));
  await b.write({ session: s1.session, offset: (base + 10) * PAGE, data: Buffer.from('feed', 'hex') });
  await b.commit({ session: s1.session });
  await c2.refresh({ session: s2b.session });
  const back = await c2.read({ session: s2b.session, offset: (base + 10) * PAGE, length: 2 });
  t.is(back.data.toString('hex'), 'feed');
});

// N stores lost at once (N = 2: two of three nodes rebooted with durability memory): a page whose two copies were on
// those two nodes has no copy left. Its recovering owner must not take it for never written: the other node's store
// was replaced after the owner last reported its pages at N copies, so with itself N members lost their copies, and
// every page no member holds is reported lost. Before, it counted only itself and served such pages as zeros.
test('two stores lost at once with N = 2: pages whose both copies were in them are lost, never zeros', async (t) => {
  t.timeout(170_000);
  const c = await startCluster(t, { nodes: 3, prefix: 'lost2', durability: 'memory' });
  const [n1, n2, n3] = c.nodes;
  if (!n1 || !n2 || !n3) throw new Error('3 nodes');
  const PAGE = 4096;
  // Node 1 commits 16 pages at the start of each chunk: each has a copy at its owner and one more (node 1 itself,
  // the committer, for the chunks of node 2).
  const a = dataClient(t, n1.address);
  const s1 = await a.open({
    name: 'two',
    create: true,
    sizeBytes: 12 * MiB,
    mode: 'CONSISTENCY_MODE_MRMW',
    replicas: 2,
  });
  const page = (k: number) => Buffer.alloc(PAGE, (k % 250) + 1);
  const chunks = (await stat(c.dispatcher, 'two')).chunks;
  for (const ch of chunks) {
    await a.write({
      session: s1.session,
      offset: ch.index * 1024 * PAGE,
      data: Buffer.concat([...Array(16).keys()].map((k) => page(ch.index * 1024 + k))),
    });
  }
  await a.commit({ session: s1.session });
  // Nodes 1 and 2 reboot at once: their pools and data dirs are gone.
  await loseStore(c, 0, 'lost2');
  await loseStore(c, 1, 'lost2');
  const back = [await c.restart(0), await c.restart(1)];
  const after = await waitFor(
    'every chunk recovered',
    async () => {
      const st = (await stat(c.dispatcher, 'two')).chunks;
      return st.every((x) => !x.ownerRecovering && x.ownerAlive) ? st : undefined;
    },
    90_000,
  );
  const isLost = (pg: number) =>
    after.some((x) => x.lostPages.some((r) => pg >= r.firstPage && pg < r.firstPage + r.count));
  // Read from every node: each written page is as committed, or refused with DATA_LOSS and listed lost — never zeros.
  let lostReads = 0;
  for (const n of [n3, ...back]) {
    const r = dataClient(t, n.address);
    const s = await r.open({ name: 'two' });
    for (const ch of chunks) {
      for (const k of [0, 7, 15]) {
        const pg = ch.index * 1024 + k;
        try {
          const got = await r.read({ session: s.session, offset: pg * PAGE, length: PAGE });
          t.deepEqual(got.data, page(pg), `page ${String(pg)} reads as committed`);
        } catch (err) {
          t.is((err as CallError).code, 'DATA_LOSS', (err as Error).message);
          t.true(isLost(pg), `page ${String(pg)} is listed lost`);
          lostReads++;
        }
      }
    }
  }
  t.true(lostReads > 0, 'some page had both copies on nodes 1 and 2');
  const n3chunks = after.filter((x) => x.ownerNodeId === n3.id);
  t.true(n3chunks.length > 0 && n3chunks.every((x) => x.lostPages.length === 0), "node 3's chunks lost nothing");
  t.true(
    back.some((n) =>
      n.stderr.some((l) => /members lost their stores .* every page no member holds is reported lost/.test(l)),
    ),
    'the recovering owner says why it reports pages lost',
  );
});

// Fencing of a node the dispatcher declared dead while it still runs and still reaches its peers: node 3's control
// link to the dispatcher goes through a TCP proxy (test/helpers/tcp-proxy.ts) and is cut, its data-plane links to
// nodes 1 and 2 stay up. Once the dispatcher lists node 3 DEAD (and the owner has seen that), this proves:
//   a. a commit from node 3 is not acknowledged (UNAVAILABLE or FAILED_PRECONDITION) and its bytes are not the
//      committed bytes on nodes 1 and 2: an owner does not accept PREPARE from a fenced node;
//   b. the live nodes go on committing to the page (acknowledged);
// and after the link heals and node 3 is ALIVE again, its apps (a fresh one and the one mapped since before the
// cut) read the bytes committed while it was fenced, never its stale cached copy past a bounded wait, and a
// commit from node 3 is acknowledged again. docs/design/consistency.md "A node whose lease lapsed".
import test, { type ExecutionContext } from 'ava';
import { dispatcherClient } from '../../services/cli/client.ts';
import { unary } from '../../services/common/rpc.ts';
import type { StatDatasetResponse__Output } from '../../services/generated/hotpot/v1/StatDatasetResponse.ts';
import { openApp, type App } from '../helpers/app.ts';
import {
  listNodes,
  nodeStats,
  startCluster,
  startNodeBehindProxy,
  waitFor,
  type NodeProc,
} from '../helpers/cluster.ts';

const CHUNK = 64 * 1024;
const LEASE_MS = 3000;
const DATASET = 'fence';
/** How long node 3 may still show its stale copy (or be UNAVAILABLE) after it is ALIVE again. */
const CATCH_UP_MS = 15_000;

// 16-byte values, ASCII so that a failure message shows whose bytes were seen.
const OLD = 'old: n1, pre-cut';
const FENCED = 'n3 while fenced!';
const NEW = 'new while fenced';
const AFTER = 'n3 after healing';

const hex = (s: string): string => Buffer.from(s, 'latin1').toString('hex');
const text = (h: string): string => JSON.stringify(Buffer.from(h, 'hex').toString('latin1'));

async function readAt(a: App, offset: number): Promise<string> {
  return (await a.call<{ hex: string }>({ op: 'read', offset, length: 16 })).hex;
}

async function statDataset(dispatcher: string, name: string): Promise<StatDatasetResponse__Output> {
  const c = dispatcherClient(dispatcher);
  try {
    return await unary<StatDatasetResponse__Output>((o, cb) => c.StatDataset({ name }, o, cb));
  } finally {
    c.close();
  }
}

async function stateOf(dispatcher: string, id: number): Promise<string | undefined> {
  return (await listNodes(dispatcher)).nodes.find((n) => n.id === id)?.state;
}

/** Reads the page on `node` through a fresh app process (connect, open, map, read), then ends that process. */
async function freshRead(t: ExecutionContext, node: NodeProc, offset: number): Promise<string> {
  const a = await openApp(t, node.socket, DATASET);
  try {
    return await readAt(a, offset);
  } finally {
    a.kill();
  }
}

test('a node cut off from the dispatcher only is fenced', async (t) => {
  t.timeout(120_000);
  const common = { HOTPOT_CHUNK_SIZE: String(CHUNK), HOTPOT_REQUEST_TIMEOUT_MS: '5000' };
  const c = await startCluster(t, { nodes: 2, prefix: 'fence', leaseMs: LEASE_MS, common });
  const [n1, n2] = c.nodes;
  if (!n1 || !n2) throw new Error('2 nodes expected');
  // Node 3 reaches the dispatcher only through the proxy; its data-plane links to nodes 1 and 2 are direct.
  const { node: n3, proxy } = await startNodeBehindProxy(t, c, 'n3', common);

  // Three chunks over three nodes, 2 copies each: pick the chunk that node 3 neither owns nor holds a copy of,
  // so node 3 is only a cacher of its pages.
  const w = await openApp(t, n1.socket, DATASET, { size: 3 * CHUNK, mode: 'mrmw', replicas: 2 });
  const stat = await statDataset(c.dispatcher, DATASET);
  t.is(stat.dataset?.chunkSizeBytes, CHUNK, 'HOTPOT_CHUNK_SIZE reached the dispatcher');
  const chunk = stat.chunks.find((ch) => ch.ownerNodeId !== n3.id && !ch.replicaNodeIds.includes(n3.id));
  if (!chunk) {
    t.fail(`no chunk free of node 3 (${String(n3.id)}): ${JSON.stringify(stat.chunks)}`);
    return;
  }
  const off = chunk.index * CHUNK;
  const byId = new Map([n1, n2].map((n) => [n.id, n]));
  const owner = byId.get(chunk.ownerNodeId);
  const other = [n1, n2].find((n) => n !== owner);
  if (!owner || !other) throw new Error(`owner ${String(chunk.ownerNodeId)} is not node 1 or 2`);
  t.log(
    `page at ${String(off)}: chunk ${String(chunk.index)}, owner ${String(owner.id)}, copies on [${chunk.replicaNodeIds.join(', ')}], node 3 is ${String(n3.id)}`,
  );

  // The owner's app commits OLD; node 3's app maps the dataset and reads the page, so node 3 caches it.
  const ownerApp = owner === n1 ? w : await openApp(t, owner.socket, DATASET);
  await ownerApp.call({ op: 'write', offset: off, hex: hex(OLD) });
  await ownerApp.call({ op: 'commit' });
  const a3 = await openApp(t, n3.socket, DATASET);
  t.is(text(await readAt(a3, off)), text(hex(OLD)), 'node 3 caches the committed page before the cut');

  // Cut node 3's control link only; wait for the dispatcher to declare it dead and for nodes 1 and 2 to know.
  const cutAt = Date.now();
  proxy.cut();
  await waitFor(
    'the dispatcher to list node 3 DEAD',
    async () => ((await stateOf(c.dispatcher, n3.id)) === 'NODE_STATE_DEAD' ? true : undefined),
    30_000,
  );
  for (const n of [n1, n2]) {
    await waitFor(`node ${String(n.id)} to see node 3 DEAD`, async () =>
      (await nodeStats(n.address)).members.find((m) => m.id === n3.id)?.state === 'NODE_STATE_DEAD' ? true : undefined,
    );
  }
  t.log(`node 3 DEAD (dispatcher and nodes 1, 2) ${String(Date.now() - cutAt)} ms after the cut`);

  // a. A commit from the fenced node is not acknowledged, and its bytes are not committed anywhere. What nodes 1
  // and 2 hold is read before asserting, so a failure shows the whole outcome.
  await a3.call({ op: 'write', offset: off, hex: hex(FENCED) });
  const fenced = await a3.attempt({ op: 'commit' });
  const committed = [];
  for (const n of [n1, n2]) committed.push({ node: n.id, bytes: await freshRead(t, n, off) });
  t.log(
    `commit from node 3 while DEAD: ${fenced.ok ? `ACKNOWLEDGED ${JSON.stringify(fenced.value)}` : `${fenced.error.code}: ${fenced.error.message}`}`,
  );
  t.log(`committed bytes then: ${committed.map((c) => `node ${String(c.node)} ${text(c.bytes)}`).join(', ')}`);
  t.false(
    fenced.ok,
    'FENCING BUG: a commit from node 3 was acknowledged while the dispatcher (and nodes 1, 2) listed node 3 DEAD',
  );
  if (!fenced.ok) {
    t.true(
      ['UNAVAILABLE', 'FAILED_PRECONDITION'].includes(fenced.error.code),
      `a fenced commit fails with UNAVAILABLE or FAILED_PRECONDITION, got ${fenced.error.code}: ${fenced.error.message}`,
    );
  }
  for (const { node, bytes } of committed) {
    t.not(bytes, hex(FENCED), `FENCING BUG: node ${String(node)} has node 3's fenced bytes committed`);
    t.is(text(bytes), text(hex(OLD)), `node ${String(node)} keeps the bytes committed before the cut`);
  }
  // Drop node 3's refused change (local to its app: works without the dispatcher).
  const dropped = await a3.attempt({ op: 'rollback' });
  if (!dropped.ok) t.log(`rollback on node 3 while fenced: ${dropped.error.code}: ${dropped.error.message}`);

  // b. The live nodes go on: the owner's app syncs and commits NEW.
  await ownerApp.call({ op: 'refresh' });
  await ownerApp.call({ op: 'write', offset: off, hex: hex(NEW) });
  const b = await ownerApp.attempt({ op: 'commit' });
  t.true(
    b.ok,
    `a commit from node ${String(owner.id)} while node 3 is fenced: ${b.ok ? 'OK' : `${b.error.code}: ${b.error.message}`}`,
  );
  t.is(text(await freshRead(t, other, off)), text(hex(NEW)), `node ${String(other.id)} sees the new commit`);

  // Heal: node 3 rejoins by itself.
  const healAt = Date.now();
  proxy.heal();
  await waitFor(
    'node 3 ALIVE again',
    async () =>
      (await stateOf(c.dispatcher, n3.id)) === 'NODE_STATE_ALIVE' && (await nodeStats(n3.address)).joined
        ? true
        : undefined,
    30_000,
  );
  const aliveAt = Date.now();
  t.log(`node 3 ALIVE again ${String(aliveAt - healAt)} ms after the heal`);

  // Node 3's apps must come to read NEW: briefly UNAVAILABLE (or showing the stale copy) while node 3 rechecks
  // its cached copies is fine, still showing it (or anything else) after CATCH_UP_MS is not.
  const fresh = await catchUp(t, 'a fresh app on node 3', async () => freshRead(t, n3, off), aliveAt);
  t.is(text(fresh), text(hex(NEW)), 'a fresh app on node 3 reads what was committed while it was fenced');
  const mapped = await catchUp(
    t,
    'the app on node 3 mapped before the cut (refresh, then read)',
    async () => {
      await a3.call({ op: 'refresh' });
      return readAt(a3, off);
    },
    aliveAt,
  );
  t.is(text(mapped), text(hex(NEW)), 'the app mapped before the cut reads what was committed while node 3 was fenced');

  // Node 3 commits again (retried while it is still rechecking: UNAVAILABLE, or ABORTED on a stale copy).
  let last = '';
  const again = await waitFor(
    'a commit from node 3 after the heal',
    async () => {
      await a3.call({ op: 'rollback' });
      await a3.call({ op: 'write', offset: off, hex: hex(AFTER) });
      const r = await a3.attempt({ op: 'commit' });
      if (r.ok) return true;
      last = `${r.error.code}: ${r.error.message}`;
      return undefined;
    },
    CATCH_UP_MS,
  ).catch((e: unknown) => `${e instanceof Error ? e.message : String(e)} (last: ${last})`);
  t.is(again, true, 'a commit from node 3 is acknowledged once it is ALIVE again');
  for (const n of [n1, n2]) {
    t.is(
      text(await freshRead(t, n, off)),
      text(hex(AFTER)),
      `node ${String(n.id)} sees node 3's commit after the heal`,
    );
  }
});

/**
 * Polls `read` until it returns NEW or CATCH_UP_MS passes; logs what it saw on the way and how long it took
 * from `since` (node 3 ALIVE again). Returns the last bytes read (hex), or '' if no read succeeded.
 */
async function catchUp(t: ExecutionContext, what: string, read: () => Promise<string>, since: number): Promise<string> {
  const until = Date.now() + CATCH_UP_MS;
  const seen = new Map<string, number>();
  let last = '';
  for (;;) {
    try {
      last = await read();
      seen.set(text(last), (seen.get(text(last)) ?? 0) + 1);
      if (last === hex(NEW)) break;
    } catch (e) {
      const m = e instanceof Error ? (e.message.split('\n')[0] ?? '') : String(e);
      seen.set(`error ${m}`, (seen.get(`error ${m}`) ?? 0) + 1);
    }
    if (Date.now() > until) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  const tally = [...seen].map(([k, n]) => `${k} x${String(n)}`).join(', ');
  t.log(
    `${what}: ${last === hex(NEW) ? 'read the new bytes' : 'did NOT read the new bytes'} ${String(Date.now() - since)} ms after node 3 was ALIVE; saw ${tally}`,
  );
  return last;
}

// MRSW leases of a node that dies: the pages are free once the dispatcher declares the node dead, not when the
// (much longer) MRSW lease runs out, and the next holder's commit is applied on top of the dead holder's last
// acknowledged one. A restarted node's old leases end when it rejoins (its sessions are gone). A node that was only
// cut off from the dispatcher, and whose session still has its certificate, cannot commit under it after it rejoins.
import test from 'ava';
import { CallError, dataClient } from '../helpers/data-client.ts';
import { listNodes, startCluster, startNodeBehindProxy, waitFor } from '../helpers/cluster.ts';

const KiB = 1024;
const MEMBERSHIP_LEASE_MS = 2000;
/** Far longer than the test: a grant before it runs out can only come from the holder's death. */
const MRSW_LEASE_MS = 300_000;

test('a dead holder’s MRSW pages are granted to the next writer once it is declared dead, with its commit kept', async (t) => {
  t.timeout(170_000);
  const c = await startCluster(t, {
    nodes: 3,
    leaseMs: MEMBERSHIP_LEASE_MS,
    common: { HOTPOT_CHUNK_SIZE: String(64 * KiB) },
    prefix: 'mrswf',
  });
  const [n1, n2, n3] = c.nodes;
  if (!n1 || !n2 || !n3) throw new Error('cluster');
  const a = dataClient(t, n1.address);
  const b = dataClient(t, n2.address);
  const o = await a.open({
    name: 'leases',
    create: true,
    sizeBytes: 256 * KiB,
    mode: 'CONSISTENCY_MODE_MRSW',
    replicas: 2,
  });
  const sa = o.session;
  // Pages in every chunk, so some are owned by the node that dies and some by the survivors.
  const ranges = [0, 1, 2, 3].map((i) => ({ offset: i * 64 * KiB, length: 8 }));
  const held = await a.acquire({ session: sa, ranges, leaseMs: MRSW_LEASE_MS });
  for (const r of ranges) await a.write({ session: sa, offset: r.offset, data: Buffer.from('first!!!') });
  await a.commit({ session: sa });

  const sb = (await b.open({ name: 'leases' })).session;
  // Held: refused at once while node 1 lives.
  await t.throwsAsync(b.acquire({ session: sb, ranges, leaseMs: 60_000 }), { message: /held by lease/ });

  n1.child.kill('SIGKILL');
  await n1.exited;
  const killedAt = Date.now();
  // Waits at most 20 s: the old lease has ~5 minutes left, so only its end on the holder's death grants this. Granted
  // as soon as node 1 is declared dead, while its chunks are still failing over: node 2 waits for their new owners
  // to check its cached copies (before, it gave the lease back with UNAVAILABLE, and the caller had to retry).
  const granted = await b.acquire({ session: sb, ranges, leaseMs: 60_000, waitMs: 20_000 });
  t.true(granted.fencingEpoch > held.fencingEpoch, 'the new grant has a newer fencing epoch');
  t.true(granted.expiresUnixMs > 0);
  t.true(Date.now() - killedAt < 45_000);
  const state = (await listNodes(c.dispatcher)).nodes.find((n) => n.id === n1.id)?.state;
  t.is(state, 'NODE_STATE_DEAD', 'the holder is declared dead');

  // The new holder reads the dead holder's acknowledged bytes and writes on top of them (retrying while the dead
  // node's chunks fail over).
  await waitFor(
    'the new holder commits',
    async () => {
      try {
        await b.refresh({ session: sb });
        for (const r of ranges) {
          const got = (await b.read({ session: sb, offset: r.offset, length: 8 })).data;
          t.deepEqual(got, Buffer.from('first!!!'), `offset ${String(r.offset)}`);
          await b.write({ session: sb, offset: r.offset, data: Buffer.from('second!!') });
        }
        await b.commit({ session: sb });
        return true;
      } catch (e) {
        await b.rollback({ session: sb }).catch(() => undefined);
        if (/UNAVAILABLE|owner|recover|failover|moving|retry/i.test(String(e))) return undefined;
        throw e;
      }
    },
    60_000,
  );
  const sc = (await dataClient(t, n3.address).open({ name: 'leases' })).session;
  const cc = dataClient(t, n3.address);
  for (const r of ranges) {
    t.deepEqual((await cc.read({ session: sc, offset: r.offset, length: 8 })).data, Buffer.from('second!!'));
  }
});

test('a node restarted within its membership lease loses its old MRSW leases when it rejoins', async (t) => {
  t.timeout(170_000);
  // A long membership lease: the restarted node rejoins long before it could be declared dead.
  const c = await startCluster(t, { nodes: 2, leaseMs: 30_000, prefix: 'mrswr' });
  const [n1, n2] = c.nodes;
  if (!n1 || !n2) throw new Error('cluster');
  const a = dataClient(t, n1.address);
  const o = await a.open({ name: 'restart', create: true, sizeBytes: 64 * KiB, mode: 'CONSISTENCY_MODE_MRSW' });
  await a.acquire({ session: o.session, ranges: [{ offset: 0, length: 1 }], leaseMs: MRSW_LEASE_MS });
  n1.child.kill('SIGKILL');
  await n1.exited;
  const again = await c.restart(0);
  t.is(again.id, n1.id, 'the same member');
  t.is(
    (await listNodes(c.dispatcher)).nodes.find((n) => n.id === n1.id)?.state,
    'NODE_STATE_ALIVE',
    'never declared dead',
  );
  const b = dataClient(t, n2.address);
  const sb = (await b.open({ name: 'restart' })).session;
  const l = await b.acquire({ session: sb, ranges: [{ offset: 0, length: 1 }], leaseMs: 60_000, waitMs: 25_000 });
  t.true(l.leaseId.length > 0);
});

test('a holder cut off from the dispatcher cannot commit under its ended lease after it rejoins', async (t) => {
  t.timeout(170_000);
  const c = await startCluster(t, { nodes: 2, leaseMs: MEMBERSHIP_LEASE_MS, prefix: 'mrswc' });
  const [n1] = c.nodes;
  if (!n1) throw new Error('cluster');
  // Node 3 reaches the dispatcher through a proxy that the test cuts; its data-plane links stay up.
  const { node: n3, proxy } = await startNodeBehindProxy(t, c, 'n3');
  const a = dataClient(t, n1.address);
  const o = await a.open({ name: 'cut', create: true, sizeBytes: 64 * KiB, mode: 'CONSISTENCY_MODE_MRSW' });
  const x = dataClient(t, n3.address);
  const sx = (await x.open({ name: 'cut' })).session;
  const range = [{ offset: 0, length: 8 }];
  const old = await x.acquire({ session: sx, ranges: range, leaseMs: MRSW_LEASE_MS });

  proxy.cut();
  const granted = await a.acquire({ session: o.session, ranges: range, leaseMs: 60_000, waitMs: 20_000 });
  t.true(granted.fencingEpoch > old.fencingEpoch);
  proxy.heal();
  await waitFor(
    'node 3 to rejoin',
    async () =>
      (await listNodes(c.dispatcher)).nodes.find((n) => n.id === n3.id)?.state === 'NODE_STATE_ALIVE'
        ? true
        : undefined,
    30_000,
  );
  // The session on node 3 still has its certificate (valid for minutes): its commit is refused, nothing applied.
  await x.write({ session: sx, offset: 0, data: Buffer.from('stale!!!') });
  const e = await waitFor(
    'node 3 to refuse the ended lease',
    async () => {
      try {
        await x.commit({ session: sx });
        return new CallError('OK', 'the commit under the ended lease was acknowledged', undefined);
      } catch (err) {
        const ce = err as CallError;
        // Until its lease comes back after the rejoin, node 3 answers UNAVAILABLE: retry.
        return ce.code === 'UNAVAILABLE' ? undefined : ce;
      }
    },
    30_000,
  );
  t.is(e.code, 'FAILED_PRECONDITION', e.details);
  t.regex(e.details, /acquire again/);
  await x.rollback({ session: sx });
  await a.write({ session: o.session, offset: 0, data: Buffer.from('newest!!') });
  await a.commit({ session: o.session });
  t.deepEqual((await a.read({ session: o.session, offset: 0, length: 8 })).data, Buffer.from('newest!!'));
});

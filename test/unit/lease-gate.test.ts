// LeaseGate (services/node/lease-gate.ts): the lease of a join reaches the engine only after a sync of every chunk
// map that began after that join.
import test from 'ava';
import { LeaseGate } from '../../services/node/lease-gate.ts';

test('a join keeps its lease and every renewal back until a sync begun after it succeeds', (t) => {
  const g = new LeaseGate();
  g.joined();
  t.is(g.lease(1000), null, 'the lease of the join is kept back');
  t.is(g.lease(2000), null, 'a renewal before the sync is kept back too');
  const token = g.syncBegins();
  t.is(g.synced(token), 2000, 'the newest deadline is passed on once the maps were read');
  t.is(g.lease(3000), 3000, 'renewals after it pass at once');
});

test('a sync that began before a rejoin does not release the lease of the rejoin', (t) => {
  const g = new LeaseGate();
  g.joined();
  t.is(g.synced(g.syncBegins()), null, 'nothing was held');
  t.is(g.lease(1000), 1000);
  // The lease lapses; a sync is in flight while the node rejoins: that sync may have read the maps from before a
  // failover of this node's chunks.
  const before = g.syncBegins();
  g.joined();
  t.is(g.lease(5000), null, 'the lease of the rejoin is kept back');
  t.is(g.synced(before), null, 'a sync from before the rejoin releases nothing');
  t.is(g.lease(6000), null, 'still kept back');
  const after = g.syncBegins();
  t.is(g.synced(after), 6000, 'a sync begun after the rejoin releases the newest deadline');
  t.is(g.synced(after), null, 'once');
});

test('a failed sync (never reported) keeps the lease back', (t) => {
  const g = new LeaseGate();
  g.joined();
  g.syncBegins(); // fails: `synced` is never called
  t.is(g.lease(1000), null);
  t.is(g.lease(900), null, 'an older deadline does not replace a newer one');
  t.is(g.synced(g.syncBegins()), 1000);
});

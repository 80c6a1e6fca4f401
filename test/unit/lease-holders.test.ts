// The Node service's lease holders (services/node/consistency-service.ts): a lease answers only the caller that
// acquired it through this node, admins excepted; the table stays bounded.
import test from 'ava';
import { LeaseHolders } from '../../services/node/consistency-service.ts';
import type { Principal } from '../../services/common/authz.ts';

const DAEMON = 0;
const alice: Principal = { kind: 'local', uid: 1000, gid: 1000, pid: 10, groups: [] };
const aliceAgain: Principal = { kind: 'local', uid: 1000, gid: 1000, pid: 11, groups: [] };
const bob: Principal = { kind: 'local', uid: 1001, gid: 1001, pid: 12, groups: [] };
const root: Principal = { kind: 'local', uid: 0, gid: 0, pid: 13, groups: [] };

test('a lease answers its holder (any of its processes) and admins, nobody else', (t) => {
  const h = new LeaseHolders();
  h.add('L1', 'uid:1000', Date.now() + 60_000);
  t.notThrows(() => {
    h.check('L1', alice, DAEMON);
  });
  t.notThrows(() => {
    h.check('L1', aliceAgain, DAEMON);
  });
  t.throws(
    () => {
      h.check('L1', bob, DAEMON);
    },
    { message: /lease L1 was not acquired through this node by this caller/ },
  );
  t.notThrows(() => {
    h.check('L1', root, DAEMON);
  });
  // Unknown (or released) leases answer nobody but admins.
  h.remove('L1');
  t.throws(() => {
    h.check('L1', alice, DAEMON);
  });
  t.throws(() => {
    h.check('never', bob, DAEMON);
  });
});

test('the table is bounded: expired leases go first, then the oldest', (t) => {
  const h = new LeaseHolders(3);
  h.add('old', 'uid:1', Date.now() - 1);
  h.add('a', 'uid:1', Date.now() + 60_000);
  h.add('b', 'uid:1', Date.now() + 60_000);
  h.add('c', 'uid:1', Date.now() + 60_000);
  t.is(h.size, 3);
  const u1: Principal = { kind: 'local', uid: 1, gid: 1, pid: 1, groups: [] };
  t.throws(() => {
    h.check('old', u1, DAEMON);
  });
  h.add('d', 'uid:1', Date.now() + 60_000);
  t.is(h.size, 3);
  t.throws(
    () => {
      h.check('a', u1, DAEMON);
    },
    undefined,
    'the oldest went',
  );
  t.notThrows(() => {
    h.check('d', u1, DAEMON);
  });
});

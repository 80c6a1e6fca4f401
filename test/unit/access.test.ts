// Dataset access from app sockets (services/common/access.ts) and the dispatcher's check of the bits it stores.
import test from 'ava';
import { accessRefusal, permString } from '../../services/common/access.ts';
import { validAccess } from '../../services/dispatcher/cluster.ts';
import { findGroup } from '../../services/node/socket-group.ts';

const A = { uid: 1000, gid: 100, perm: 0o640 };

const as = (uid: number, gid: number, groups: number[] = []): { uid: number; gid: number; groups: number[] } => ({
  uid,
  gid,
  groups,
});

test('the owner, then the group, then others: a writer needs read and write; uid 0 always may', (t) => {
  t.is(accessRefusal('d', A, as(1000, 5), 'write'), null, 'owner rw');
  t.regex(
    accessRefusal('d', A, as(2000, 100), 'write') ?? '',
    /uid 2000 \(gid 100\) may not write dataset "d": owner 1000:100, permissions 0640/,
  );
  t.not(accessRefusal('d', A, as(2000, 7), 'write'), null, 'others: nothing');
  t.is(accessRefusal('d', A, as(0, 0), 'write'), null, 'uid 0');
  t.is(accessRefusal('d', { ...A, perm: 0o066 }, as(2000, 7), 'write'), null, 'others rw');
  // The owner's bits decide for the owner even when the group's would allow more.
  t.not(accessRefusal('d', { ...A, perm: 0o460 }, as(1000, 100), 'write'), null);
  t.is(accessRefusal('d', { ...A, perm: 0o060 }, as(2000, 100), 'write'), null, 'group rw');
});

test('read permission is enough for a reader, and not for a writer', (t) => {
  t.is(accessRefusal('d', A, as(2000, 100), 'read'), null, 'group r-- reads');
  t.not(accessRefusal('d', A, as(2000, 100), 'write'), null, 'group r-- does not write');
  t.regex(accessRefusal('d', A, as(2000, 7), 'read') ?? '', /may not read dataset "d"/, 'others --- do not read');
  t.not(accessRefusal('d', { ...A, perm: 0o200 }, as(1000, 100), 'read'), null, 'write-only owner does not read');
  t.is(accessRefusal('d', { ...A, perm: 0o004 }, as(3000, 3), 'read'), null, 'others r-- read');
});

test('a supplementary group counts as the group', (t) => {
  t.is(accessRefusal('d', { ...A, perm: 0o660 }, as(2000, 7, [7, 100]), 'write'), null);
  t.is(accessRefusal('d', A, as(2000, 7, [100]), 'read'), null);
  t.not(accessRefusal('d', { ...A, perm: 0o660 }, as(2000, 7, [7, 8]), 'write'), null);
  // Group bits are not "at least others": a member of the group gets the group's bits only.
  t.not(accessRefusal('d', { ...A, perm: 0o606 }, as(2000, 7, [100]), 'write'), null);
});

test('permission strings read like ls', (t) => {
  t.is(permString(0o640), 'rw-r-----');
  t.is(permString(0o777), 'rwxrwxrwx');
  t.is(permString(0), '---------');
});

test('the dispatcher refuses owner ids and bits out of range', (t) => {
  t.deepEqual(validAccess({ uid: 5, gid: 6, perm: 0o600 }), { uid: 5, gid: 6, perm: 0o600 });
  t.throws(() => validAccess({ uid: -1, gid: 0, perm: 0o600 }), { message: /owner uid/ });
  t.throws(() => validAccess({ uid: 0, gid: 2 ** 32 - 1, perm: 0o600 }), { message: /owner gid/ });
  t.throws(() => validAccess({ uid: 0, gid: 0, perm: 0o1000 }), { message: /permissions must be 0\.\.0777/ });
  t.throws(() => validAccess({ uid: 1.5, gid: 0, perm: 0o600 }), { message: /owner uid/ });
});

test('the app socket group is found by name or number', (t) => {
  const etc = 'root:x:0:\nnogroup:x:65534:\nhotpot:x:998:alice,bob\nbroken:x:\n';
  t.is(findGroup('hotpot', etc), 998);
  t.is(findGroup('nogroup', etc), 65534);
  t.is(findGroup('1234', etc), 1234);
  t.is(findGroup('missing', etc), null);
  t.is(findGroup('broken', etc), null);
  t.is(findGroup('99999999999', etc), null);
});

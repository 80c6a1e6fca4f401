// Dataset access from app sockets (services/common/access.ts) and the dispatcher's check of the bits it stores.
import test from 'ava';
import { openRefusal, permString } from '../../services/common/access.ts';
import { validAccess } from '../../services/dispatcher/cluster.ts';
import { findGroup } from '../../services/node/socket-group.ts';

const A = { uid: 1000, gid: 100, perm: 0o640 };

test('the owner, then the group, then others: an app needs read and write; uid 0 always may', (t) => {
  t.is(openRefusal('d', A, 1000, 5), null, 'owner rw');
  t.regex(
    openRefusal('d', A, 2000, 100) ?? '',
    /uid 2000 \(gid 100\) may not open dataset "d": owner 1000:100, permissions 0640/,
  );
  t.not(openRefusal('d', A, 2000, 7), null, 'others: nothing');
  t.is(openRefusal('d', A, 0, 0), null, 'uid 0');
  t.is(openRefusal('d', { ...A, perm: 0o066 }, 2000, 7), null, 'others rw');
  // The owner's bits decide for the owner even when the group's would allow more.
  t.not(openRefusal('d', { ...A, perm: 0o460 }, 1000, 100), null);
  t.is(openRefusal('d', { ...A, perm: 0o060 }, 2000, 100), null, 'group rw');
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

// `--store`: lmdb:DIR or etcd://host:port[,host:port…] (services/dispatcher/store-open.ts).
import { resolve } from 'node:path';
import test from 'ava';
import { parseStoreSpec } from '../../services/dispatcher/store-open.ts';
import { DispatcherConfig } from '../../services/dispatcher/main.ts';

test('a store is lmdb:DIR (resolved) or etcd:// with one or more host:port endpoints', (t) => {
  t.deepEqual(parseStoreSpec('lmdb:state/d'), { kind: 'lmdb', dir: resolve('state/d') });
  t.deepEqual(parseStoreSpec('etcd://10.0.0.1:2379'), { kind: 'etcd', endpoints: ['10.0.0.1:2379'] });
  t.deepEqual(parseStoreSpec('etcd://a.example:2379, b.example:2379,[::1]:2379'), {
    kind: 'etcd',
    endpoints: ['a.example:2379', 'b.example:2379', '[::1]:2379'],
  });
});

test('a malformed store is refused with a message naming the flag', (t) => {
  t.throws(() => parseStoreSpec('lmdb:'), { message: /needs a directory/ });
  t.throws(() => parseStoreSpec('etcd://host'), { message: /"host" is not host:port/ });
  t.throws(() => parseStoreSpec('redis://x:1'), { message: /--store must be lmdb:DIR or etcd:\/\// });
  const r = DispatcherConfig.safeParse({ store: 'etcd://' });
  t.false(r.success);
  t.regex(JSON.stringify(r.error?.issues), /store must be lmdb:DIR or etcd/);
});

test('the etcd prefix starts and ends with "/" and the election TTL is whole seconds of 1..60', (t) => {
  t.is(DispatcherConfig.parse({}).etcdPrefix, '/hotpot/');
  t.is(DispatcherConfig.parse({}).electionTtlS, 3);
  t.false(DispatcherConfig.safeParse({ etcdPrefix: 'hotpot' }).success);
  t.false(DispatcherConfig.safeParse({ electionTtlS: 0 }).success);
  t.false(DispatcherConfig.safeParse({ electionTtlS: 1.5 }).success);
});

import test from 'ava';
import { formatSize, parseSize } from '../../services/common/sizes.ts';
import { parseHostPort } from '../../services/common/config.ts';

test('sizes accept bytes and binary units', (t) => {
  t.is(parseSize('4096'), 4096);
  t.is(parseSize('64KiB'), 65536);
  t.is(parseSize('64MiB'), 64 * 1024 * 1024);
  t.is(parseSize('1GiB'), 1024 ** 3);
  t.is(parseSize('1.5KiB'), 1536);
  t.is(formatSize(64 * 1024 * 1024), '64MiB');
  t.is(formatSize(1000), '1000B');
});

test('bad sizes are rejected with a clear message', (t) => {
  t.throws(() => parseSize('abc'), { message: /invalid size "abc"/ });
  t.throws(() => parseSize('10XB'), { message: /invalid size unit/ });
  t.throws(() => parseSize('0.3B'), { message: /not a whole number/ });
});

test('host:port parsing names the field', (t) => {
  t.deepEqual(parseHostPort('127.0.0.1:18500', 'listen'), { host: '127.0.0.1', port: 18500 });
  t.deepEqual(parseHostPort('[::1]:0', 'listen'), { host: '::1', port: 0 });
  t.throws(() => parseHostPort('nope', 'listen'), { message: /listen: expected host:port/ });
  t.throws(() => parseHostPort('h:99999', 'listen'), { message: /listen/ });
});

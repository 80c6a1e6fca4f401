import * as grpc from '@grpc/grpc-js';
import test from 'ava';
import { LEADER_TRAILER, redirectOf, validLeaderAddress } from '../../services/common/dispatcher-client.ts';

test('a leader address is host:port or [v6]:port with a port 1-65535, never a wildcard or anything longer', (t) => {
  for (const ok of ['127.0.0.1:7000', 'disp-1.example:18500', '[::1]:7000', '[fd00::5]:1', 'a:65535']) {
    t.true(validLeaderAddress(ok), ok);
  }
  for (const bad of [
    '',
    'x',
    ':7000',
    '127.0.0.1:0',
    '127.0.0.1:65536',
    '0.0.0.0:7000',
    '[::]:7000',
    '[0:0::0]:7000',
    '::1:7000',
    '[nothex]:7000',
    'a b:1',
    '-a:1',
    'unix:/tmp/x',
    `${'a'.repeat(250)}.b:7000`,
  ]) {
    t.false(validLeaderAddress(bad), bad);
  }
});

test('a redirect is an UNAVAILABLE status with a valid hotpot-leader trailer; anything else is none', (t) => {
  const md = (v?: string): grpc.Metadata => {
    const m = new grpc.Metadata();
    if (v !== undefined) m.set(LEADER_TRAILER, v);
    return m;
  };
  t.is(redirectOf({ code: grpc.status.UNAVAILABLE, metadata: md('10.0.0.2:18500') }), '10.0.0.2:18500');
  t.is(redirectOf({ code: grpc.status.UNAVAILABLE, metadata: md() }), null);
  t.is(redirectOf({ code: grpc.status.UNAVAILABLE, metadata: md('0.0.0.0:18500') }), null);
  t.is(redirectOf({ code: grpc.status.UNAVAILABLE, metadata: md('x'.repeat(300)) }), null);
  t.is(redirectOf({ code: grpc.status.INTERNAL, metadata: md('10.0.0.2:18500') }), null);
  t.is(redirectOf({ code: grpc.status.UNAVAILABLE }), null);
  t.is(redirectOf(null), null);
});

import * as grpc from '@grpc/grpc-js';
import test from 'ava';
import { pino } from 'pino';
import { startServer } from '../../services/common/grpc-server.ts';
import { DISPATCHER_SERVICE, hotpotV1 } from '../../services/common/proto.ts';
import { unary } from '../../services/common/rpc.ts';
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

test('a plaintext (--insecure) server with the call-timing interceptor still knows its TCP callers', async (t) => {
  // The timing interceptor wraps each call; the authentication under it must still find the connection.
  const observed: string[] = [];
  const server = await startServer({
    host: '127.0.0.1',
    port: 0,
    serviceNames: [DISPATCHER_SERVICE],
    log: pino({ level: 'silent' }),
    security: { insecure: true },
    observeCall: (method, code) => observed.push(`${method} ${String(code)}`),
    add: (s) => {
      s.addService(hotpotV1.Dispatcher.service, {
        ListDatasets: (_c: unknown, cb: grpc.sendUnaryData<unknown>) => {
          cb(null, { datasets: [] });
        },
      });
    },
  });
  t.teardown(() => server.shutdown(0));
  const c = new hotpotV1.Dispatcher(server.address, grpc.credentials.createInsecure(), {});
  t.teardown(() => {
    c.close();
  });
  t.deepEqual(await unary((o, cb) => c.ListDatasets({}, o, cb)), { datasets: [] });
  t.deepEqual(observed, ['/hotpot.v1.Dispatcher/ListDatasets 0']);
});

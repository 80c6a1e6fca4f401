// A list of dispatcher endpoints as one gRPC target (services/common/endpoints.ts).
import test from 'ava';
import { dispatcherTarget, endpointList } from '../../services/common/endpoints.ts';

test('one dispatcher address is used as given, host names and unix sockets included', (t) => {
  t.is(dispatcherTarget('dispatcher.example:18500'), 'dispatcher.example:18500');
  t.is(dispatcherTarget(' 10.0.0.1:18500 '), '10.0.0.1:18500');
  t.is(dispatcherTarget('unix:/run/d.sock'), 'unix:/run/d.sock');
});

test('several addresses become one IP address list that gRPC connects to in turn', (t) => {
  t.deepEqual(endpointList('10.0.0.1:1, 10.0.0.2:2,,'), ['10.0.0.1:1', '10.0.0.2:2']);
  t.is(dispatcherTarget('10.0.0.1:18500,10.0.0.2:18500'), 'ipv4:10.0.0.1:18500,10.0.0.2:18500');
  t.is(dispatcherTarget('localhost:1,127.0.0.1:2'), 'ipv4:127.0.0.1:1,127.0.0.1:2');
  t.is(dispatcherTarget('[::1]:1,[fe80::2]:2'), 'ipv6:[::1]:1,[fe80::2]:2');
});

test('a list with host names, mixed address families or a missing port is refused with a reason', (t) => {
  t.throws(() => dispatcherTarget('a.example:1,b.example:2'), { message: /IP addresses, not host names/ });
  t.throws(() => dispatcherTarget('10.0.0.1:1,[::1]:2'), { message: /all IPv4 or all IPv6/ });
  t.throws(() => dispatcherTarget('10.0.0.1,10.0.0.2:2'), { message: /not host:port/ });
  t.throws(() => dispatcherTarget(' , '), { message: /empty/ });
});

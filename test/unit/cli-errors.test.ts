// How the CLI says a connection failed (services/cli/errors.ts): one line naming the server and what to try, never
// grpc-js's own text.
import test from 'ava';
import { explainConnectionError } from '../../services/cli/errors.ts';

const tls = { dispatcher: '127.0.0.1:18500', tlsDir: '/x/tls', insecure: false };
const plain = { dispatcher: '127.0.0.1:18500', insecure: true };

test('a refused connection to the dispatcher says to start a cluster or give its address', (t) => {
  const m = explainConnectionError('UNAVAILABLE', 'no connection: connect ECONNREFUSED 127.0.0.1:18500', tls);
  t.is(
    m,
    'cannot reach the dispatcher at 127.0.0.1:18500 (connection refused): is the cluster running? start one with ' +
      '`hotpot up`, or give its address with --dispatcher',
  );
});

test('a node that cannot be reached is named as the node, not the dispatcher', (t) => {
  const m = explainConnectionError('UNAVAILABLE', 'no connection: connect ECONNREFUSED 10.0.0.7:18601', tls);
  t.regex(m ?? '', /^cannot reach the node at 10\.0\.0\.7:18601 \(connection refused\)/);
  const named = explainConnectionError('UNAVAILABLE', 'no connection: Failed to connect (node at 10.0.0.8:1)', plain);
  t.regex(named ?? '', /^cannot talk to the node at 10\.0\.0\.8:1 \(the connection failed\)/);
});

test('TLS failures point at --tls-dir and --insecure, and never show OpenSSL internals', (t) => {
  const wrongVersion =
    'no connection: 80EC28205D7F0000:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:' +
    '../deps/openssl/openssl/ssl/record/ssl3_record.c:350:';
  const m = explainConnectionError('UNAVAILABLE', wrongVersion, tls);
  t.is(
    m,
    "TLS with the dispatcher at 127.0.0.1:18500 failed: check that --tls-dir (now /x/tls) holds this cluster's CA " +
      'and your certificate (--cert), or use --insecure for a cluster run with --insecure',
  );
  t.notRegex(m ?? '', /openssl|0A00010B/);
  const selfSigned = explainConnectionError(
    'UNAVAILABLE',
    'no connection: self-signed certificate in certificate chain',
    tls,
  );
  t.regex(selfSigned ?? '', /^TLS with the dispatcher at 127\.0\.0\.1:18500 failed: check that --tls-dir/);
  // A plaintext client at a TLS cluster only sees the connection fail.
  const insecure = explainConnectionError('UNAVAILABLE', 'no connection: Failed to connect', plain);
  t.regex(insecure ?? '', /the connection failed\): is the cluster running\?.*drop --insecure and give --tls-dir/);
});

test('unknown hosts, timeouts and refused credentials each get their own advice', (t) => {
  t.is(
    explainConnectionError('UNAVAILABLE', 'Name resolution failed for target dns:nosuch.invalid:1', {
      ...plain,
      dispatcher: 'nosuch.invalid:1',
    }),
    "cannot reach the dispatcher at nosuch.invalid:1 (unknown host): check the address (--dispatcher, or the context's)",
  );
  t.regex(
    explainConnectionError('DEADLINE_EXCEEDED', 'Deadline exceeded after 5.001s', tls) ?? '',
    /^no answer from the dispatcher at 127\.0\.0\.1:18500 in time: is the cluster running\?/,
  );
  t.regex(
    explainConnectionError('UNAUTHENTICATED', 'token expired', tls) ?? '',
    /^UNAUTHENTICATED: the dispatcher at 127\.0\.0\.1:18500 did not accept our credentials \(token expired\): .*--tls-dir.*--token-file/,
  );
});

test("errors that are not about the connection keep the server's message", (t) => {
  t.is(explainConnectionError('NOT_FOUND', 'dataset "x" not found', tls), null);
  t.is(explainConnectionError('UNAVAILABLE', 'no alive nodes', tls), null);
  t.is(explainConnectionError('UNAVAILABLE', 'fewer than 2 nodes alive', tls), null);
});

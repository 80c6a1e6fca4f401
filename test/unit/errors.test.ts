import * as grpc from '@grpc/grpc-js';
import test from 'ava';
import {
  decodeStatusDetails,
  HotpotError,
  readableDetails,
  RpcError,
  STATUS_DETAILS_KEY,
  toServiceError,
} from '../../services/common/errors.ts';

/** The shape of the engine's NativeError (native/index.ts), which services/common maps by its code name. */
class EngineLikeError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

test('an RpcError keeps its code, message and trailing metadata', (t) => {
  const md = new grpc.Metadata();
  md.set('hotpot-conflicts', '100+2');
  const s = toServiceError(new RpcError(grpc.status.ABORTED, 'commit conflict', md));
  t.is(s.code, grpc.status.ABORTED);
  t.is(s.details, 'commit conflict');
  t.deepEqual(s.metadata?.get('hotpot-conflicts'), ['100+2']);
  // Beside it, gRPC's rich error model: a google.rpc.Status whose ErrorInfo's reason is the code's name by default.
  const plain = toServiceError(new RpcError(grpc.status.NOT_FOUND, 'x'));
  t.deepEqual(Object.keys(plain.metadata?.getMap() ?? {}), [STATUS_DETAILS_KEY]);
  t.deepEqual(decodeStatusDetails(plain.metadata), {
    code: grpc.status.NOT_FOUND,
    message: 'x',
    info: { reason: 'NOT_FOUND', domain: 'hotpot.dev', metadata: {} },
  });
});

test('errors carrying a gRPC status name (engine errors, HotpotError) keep that status and their message', (t) => {
  const codeAndDetails = (e: unknown) => {
    const { code, details } = toServiceError(e);
    return { code, details };
  };
  t.deepEqual(codeAndDetails(new EngineLikeError('OUT_OF_RANGE', 'page 9 beyond the end')), {
    code: grpc.status.OUT_OF_RANGE,
    details: 'page 9 beyond the end',
  });
  t.deepEqual(codeAndDetails(new HotpotError('UNAVAILABLE', 'dispatcher down')), {
    code: grpc.status.UNAVAILABLE,
    details: 'dispatcher down',
  });
});

test('anything else is INTERNAL with the message, including codes that are not status names', (t) => {
  for (const e of [
    new EngineLikeError('ENOENT', 'no file'),
    new EngineLikeError('OK', 'no file'),
    new EngineLikeError('10', 'no file'),
  ]) {
    t.deepEqual(toServiceError(e), { code: grpc.status.INTERNAL, details: 'internal error: no file' });
  }
  t.deepEqual(toServiceError('boom'), { code: grpc.status.INTERNAL, details: 'internal error: boom' });
});

test("grpc-js's connection failures read plainly: no timestamp, no empty resolution note", (t) => {
  t.is(
    readableDetails(
      'No connection established. Last error: connect ECONNREFUSED 127.0.0.1:1 (2026-12-03T18:15:25.474Z). Resolution note: ',
    ),
    'no connection: connect ECONNREFUSED 127.0.0.1:1',
  );
  t.is(
    readableDetails(
      'No connection established. Last error: Error: connect ECONNREFUSED /tmp/x/grpc.sock (2026-12-03T18:15:25.474Z)',
    ),
    'no connection: connect ECONNREFUSED /tmp/x/grpc.sock',
  );
  t.is(readableDetails('dataset "kv" already exists'), 'dataset "kv" already exists');
  t.is(
    readableDetails('Name resolution failed for target dns:nowhere. Resolution note: bad host'),
    'Name resolution failed for target dns:nowhere. Resolution note: bad host',
  );
});

import test from 'ava';
import { GrpcInstrumentation } from '@opentelemetry/instrumentation-grpc';
import { ConfigError } from '../../services/common/config.ts';
import { instrumentedModules, isBackgroundMethod, traceBackground } from '../../services/common/telemetry.ts';

// The daemons' loader hook wraps only these modules (every other import goes through unwrapped): a module an
// instrumentation patches but the list missed would silently lose its spans.
test('the loader hook is given exactly the modules the instrumentations patch', (t) => {
  const grpc = new GrpcInstrumentation({ enabled: false });
  t.deepEqual(instrumentedModules([grpc]), ['@grpc/grpc-js']);
  t.deepEqual(instrumentedModules([grpc, new GrpcInstrumentation({ enabled: false })]), ['@grpc/grpc-js']);
  t.deepEqual(instrumentedModules([]), []);
});

test('background calls are named, and HOTPOT_TRACE_BACKGROUND is a boolean', (t) => {
  t.true(isBackgroundMethod('Heartbeat'));
  t.false(isBackgroundMethod('Commit'));
  t.false(traceBackground({}));
  t.true(traceBackground({ HOTPOT_TRACE_BACKGROUND: 'true' }));
  t.false(traceBackground({ HOTPOT_TRACE_BACKGROUND: '0' }));
  t.throws(() => traceBackground({ HOTPOT_TRACE_BACKGROUND: 'yes' }), { instanceOf: ConfigError });
});

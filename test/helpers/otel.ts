// ava preload: tracing with an in-memory exporter, installed before any test imports @grpc/grpc-js.
import { initTelemetry } from '../../services/common/telemetry.ts';

await initTelemetry('hotpot-test', 'memory');

import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { SpanKind } from '@opentelemetry/api';
import { memoryExporter } from '../../services/common/telemetry.ts';
import { main } from '../../services/cli/main.ts';
import { startApp } from '../helpers/app.ts';
import { startDispatcher, startNode, tempDir, waitFor } from '../helpers/cluster.ts';

interface JsonSpan {
  name: string;
  kind: number;
  traceId: string;
  spanId: string;
  parentSpanId: string | null;
  service: string;
}

test.serial('a CLI create yields a client span and a dispatcher server span in the same trace', async (t) => {
  t.timeout(60_000);
  const dir = tempDir(t);
  const traces = join(dir, 'dispatcher-spans.jsonl');
  const d = await startDispatcher(t, {
    stateDir: join(dir, 'd'),
    env: { HOTPOT_TRACES_EXPORTER: 'jsonl', HOTPOT_TRACES_FILE: traces },
  });
  await startNode(t, { dispatcher: d.address, name: 'n', stateDir: join(dir, 'n') });
  const exporter = memoryExporter;
  if (!exporter) throw new Error('the test preload did not install the in-memory exporter');
  exporter.reset();
  const code = await main(['node', 'hotpot', '--dispatcher', d.address, 'create', 'traced', '--size', '1MiB']);
  t.is(code, 0);
  const client = exporter
    .getFinishedSpans()
    .find((s) => s.name === 'grpc.hotpot.v1.Dispatcher/CreateDataset' && s.kind === SpanKind.CLIENT);
  if (!client) throw new Error('no client span for CreateDataset');
  const server = await waitFor('dispatcher server span', () =>
    Promise.resolve(
      spansIn(traces).find((s) => s.name === 'grpc.hotpot.v1.Dispatcher/CreateDataset' && s.kind === SpanKind.SERVER),
    ),
  );
  t.is(server.traceId, client.spanContext().traceId, 'same trace');
  t.is(server.parentSpanId, client.spanContext().spanId, 'server span is the child of the client span');
  t.is(server.service, 'hotpot-dispatcher');
  // The node's background calls (a heartbeat a second, the membership and dataset watches) leave no spans.
  await new Promise((r) => setTimeout(r, 1500));
  const names = spansIn(traces).map((s) => s.name);
  t.deepEqual(
    names.filter((n) => BACKGROUND.test(n)),
    [],
  );
});

function spansIn(path: string): JsonSpan[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as JsonSpan);
}

const BACKGROUND =
  /\/(Heartbeat|RenewLease|WatchMembership|WatchDatasets|CheckToken|ListRevokedCertificates|Check|Watch)$/;

test.serial('an idle cluster leaves no background spans, while a commit still yields its trace', async (t) => {
  t.timeout(90_000);
  const dir = tempDir(t);
  const dFile = join(dir, 'dispatcher.jsonl');
  const nFile = join(dir, 'node.jsonl');
  const d = await startDispatcher(t, {
    stateDir: join(dir, 'd'),
    env: { HOTPOT_TRACES_EXPORTER: 'jsonl', HOTPOT_TRACES_FILE: dFile },
  });
  const pool = join('/dev/shm', `hotpot-test-trace-${String(process.pid)}-${dir.slice(-6)}`);
  t.teardown(() => {
    rmSync(pool, { recursive: true, force: true });
  });
  const n = await startNode(t, {
    dispatcher: d.address,
    name: 'traced',
    stateDir: join(dir, 'n'),
    extra: ['--pool-dir', pool],
    env: { HOTPOT_TRACES_EXPORTER: 'jsonl', HOTPOT_TRACES_FILE: nFile },
  });
  const aFile = join(dir, 'app.jsonl');
  const app = await startApp(t, n.socket, { HOTPOT_TRACES_EXPORTER: 'jsonl', HOTPOT_TRACES_FILE: aFile });
  await app.call({ op: 'connect' });
  await app.call({ op: 'open', name: 'idle', create: { size: 4 * 1024 * 1024, mode: 'mrmw', replicas: 1 } });
  await app.call({ op: 'map' });
  await app.call({ op: 'write', offset: 0, hex: '01' });
  await app.call({ op: 'commit' });
  const commit = await waitFor('the commit span', () =>
    Promise.resolve(spansIn(nFile).find((s) => s.name === 'hotpot.node.commit')),
  );
  t.is(commit.service, 'hotpot-node');
  const sdk = spansIn(aFile).find((s) => s.name === 'hotpot.commit');
  t.is<string | undefined, string | undefined>(
    commit.traceId,
    sdk?.traceId,
    "the node's commit span is in the app's commit trace",
  );
  // Let the commit's spans (drained every 200 ms) and the open's calls settle, then watch an idle cluster: heartbeats
  // every second, two watch streams open, no span at all.
  await waitFor('the commit trace exported', () =>
    Promise.resolve(
      spansIn(nFile).some((s) => s.name === 'hotpot.commit.release' || s.name === 'hotpot.commit.one_shot')
        ? true
        : undefined,
    ),
  );
  await new Promise((r) => setTimeout(r, 500));
  const before = spansIn(dFile).length + spansIn(nFile).length;
  await new Promise((r) => setTimeout(r, 3000));
  const idle = [...spansIn(dFile), ...spansIn(nFile)].slice(before);
  t.deepEqual(
    idle.map((s) => s.name),
    [],
    'no span while idle',
  );
  // The node leaves: its watch streams end (a stream's span would be exported then).
  n.child.kill('SIGTERM');
  await n.exited;
  await new Promise((r) => setTimeout(r, 500));
  const names = [...spansIn(dFile), ...spansIn(nFile)].map((s) => s.name);
  t.deepEqual(
    names.filter((x) => BACKGROUND.test(x)),
    [],
  );
});

test.serial('HOTPOT_TRACE_BACKGROUND=1 traces the background calls too', async (t) => {
  t.timeout(60_000);
  const dir = tempDir(t);
  const dFile = join(dir, 'dispatcher.jsonl');
  const d = await startDispatcher(t, {
    stateDir: join(dir, 'd'),
    env: { HOTPOT_TRACES_EXPORTER: 'jsonl', HOTPOT_TRACES_FILE: dFile, HOTPOT_TRACE_BACKGROUND: '1' },
  });
  await startNode(t, { dispatcher: d.address, name: 'n', stateDir: join(dir, 'n') });
  const beat = await waitFor('a heartbeat span', () =>
    Promise.resolve(spansIn(dFile).find((s) => s.name === 'grpc.hotpot.v1.Dispatcher/Heartbeat')),
  );
  t.is(beat.kind, SpanKind.SERVER);
  t.is(beat.service, 'hotpot-dispatcher');
});

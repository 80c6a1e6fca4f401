import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { SpanKind } from '@opentelemetry/api';
import { memoryExporter } from '../../services/common/telemetry.ts';
import { main } from '../../services/cli/main.ts';
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
  const server = await waitFor('dispatcher server span', async () => {
    if (!existsSync(traces)) return undefined;
    const spans = readFileSync(traces, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as JsonSpan);
    return spans.find((s) => s.name === 'grpc.hotpot.v1.Dispatcher/CreateDataset' && s.kind === SpanKind.SERVER);
  });
  t.is(server.traceId, client.spanContext().traceId, 'same trace');
  t.is(server.parentSpanId, client.spanContext().spanId, 'server span is the child of the client span');
  t.is(server.service, 'hotpot-dispatcher');
  // The node's background calls (a heartbeat a second, a chunk-map poll every 250 ms) leave no spans.
  await new Promise((r) => setTimeout(r, 1500));
  const names = readFileSync(traces, 'utf8')
    .trim()
    .split('\n')
    .map((l) => (JSON.parse(l) as JsonSpan).name);
  t.false(
    names.some((n) => /\/(Heartbeat|ListDatasets)$/.test(n)),
    `background spans: ${names.filter((n) => /Heartbeat|ListDatasets/.test(n)).length}`,
  );
});

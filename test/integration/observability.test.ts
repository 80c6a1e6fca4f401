import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { SpanKind } from '@opentelemetry/api';
import type { Histogram, SumMetricData } from '@opentelemetry/sdk-metrics';
import { DataPointType } from '@opentelemetry/sdk-metrics';
import type { StatsResponse__Output } from '../../services/generated/hotpot/v1/StatsResponse.ts';
import { hotpotBin } from '../../services/common/paths.ts';
import { startMetrics } from '../../services/node/observability.ts';
import type { EngineHistogram } from '../../native/index.ts';
import { startApp } from '../helpers/app.ts';
import { freePort } from '../helpers/ports.ts';
import { nodeStats, runCli, startDispatcher, startNode, tempDir, waitFor } from '../helpers/cluster.ts';

const MiB = 1024 * 1024;

interface JsonSpan {
  name: string;
  kind: number;
  traceId: string;
  spanId: string;
  parentSpanId: string | null;
  service: string;
  attributes: Record<string, unknown>;
}

function readSpans(path: string): JsonSpan[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8')
    .trim()
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as JsonSpan);
}

async function cluster(t: ExecutionContext, n: number, env: (i: number) => NodeJS.ProcessEnv) {
  const dir = tempDir(t);
  const d = await startDispatcher(t, { stateDir: join(dir, 'd') });
  const pool = (i: number) => join('/dev/shm', `hotpot-test-obs-${String(process.pid)}-${dir.slice(-6)}-${String(i)}`);
  t.teardown(() => {
    for (let i = 1; i <= n; i++) rmSync(pool(i), { recursive: true, force: true });
  });
  const nodes = [];
  for (let i = 1; i <= n; i++) {
    nodes.push(
      await startNode(t, {
        dispatcher: d.address,
        name: `o${String(i)}`,
        stateDir: join(dir, `o${String(i)}`),
        extra: ['--pool-dir', pool(i)],
        env: env(i),
      }),
    );
  }
  return { dir, d, nodes };
}

const at = <T>(xs: T[], i: number): T => {
  const v = xs[i];
  if (v === undefined) throw new Error(`no element ${String(i)}`);
  return v;
};

test.serial(
  'a multi-owner commit is one trace: SDK span -> node commit span -> prepare/apply/release on each owner',
  async (t) => {
    t.timeout(120_000);
    const traces = tempDir(t);
    const nodeFile = (i: number): string => join(traces, `node${String(i)}.jsonl`);
    const { nodes } = await cluster(t, 2, (i) => ({
      HOTPOT_TRACES_EXPORTER: 'jsonl',
      HOTPOT_TRACES_FILE: nodeFile(i),
      HOTPOT_FAULT_TRACE_SAMPLE: '1',
    }));
    const n1 = at(nodes, 0);
    const n2 = at(nodes, 1);
    const appFile = join(traces, 'app.jsonl');
    const app = await startApp(t, n1.socket, { HOTPOT_TRACES_EXPORTER: 'jsonl', HOTPOT_TRACES_FILE: appFile });
    await app.call({ op: 'connect' });
    await app.call({ op: 'open', name: 'traced', create: { size: 16 * MiB, mode: 'mrmw', replicas: 1 } });
    await app.call({ op: 'map' });
    // One byte range in a chunk owned by node 1 and one in a chunk owned by node 2 (round-robin placement).
    await app.call({ op: 'write', offset: 100, hex: 'cafebabe' });
    await app.call({ op: 'write', offset: 4 * MiB + 8, hex: 'deadbeef' });
    const r = await app.call<{ ranges: number }>({ op: 'commit' });
    t.is(r.ranges, 2);

    const sdk = await waitFor('the SDK commit span', () =>
      Promise.resolve(readSpans(appFile).find((s) => s.name === 'hotpot.commit')),
    );
    t.is(sdk.kind, SpanKind.CLIENT);
    t.is(sdk.service, 'hotpot-app');
    const nodeCommit = await waitFor('the node commit span', () =>
      Promise.resolve(readSpans(nodeFile(1)).find((s) => s.name === 'hotpot.node.commit')),
    );
    t.is(nodeCommit.traceId, sdk.traceId, 'one trace');
    t.is(nodeCommit.parentSpanId, sdk.spanId, 'the node span is the child of the SDK span');
    t.is(nodeCommit.service, 'hotpot-node');
    t.is(nodeCommit.attributes['hotpot.outcome'], 'OK');
    t.is(nodeCommit.attributes['hotpot.ranges'], 2);

    for (const [i, owner] of [
      [1, n1],
      [2, n2],
    ] as const) {
      const steps = await waitFor(`owner spans on node ${String(i)}`, () => {
        const spans = readSpans(nodeFile(i)).filter(
          (s) => s.traceId === sdk.traceId && s.name.startsWith('hotpot.owner.'),
        );
        return Promise.resolve(spans.length >= 3 ? spans : undefined);
      });
      t.deepEqual(
        steps.map((s) => s.name).sort(),
        ['hotpot.owner.apply', 'hotpot.owner.prepare', 'hotpot.owner.release'],
        `node ${String(i)} handled prepare, apply and release`,
      );
      for (const s of steps) {
        t.is(s.parentSpanId, nodeCommit.spanId, `${s.name} on node ${String(i)} is a child of the node commit span`);
        t.is(s.attributes['hotpot.node'], owner.id);
        t.is(s.kind, SpanKind.SERVER);
      }
    }
    const phases = readSpans(nodeFile(1))
      .filter((s) => s.parentSpanId === nodeCommit.spanId && s.name.startsWith('hotpot.commit.'))
      .map((s) => s.name);
    for (const p of ['hotpot.commit.diff', 'hotpot.commit.prepare', 'hotpot.commit.apply', 'hotpot.commit.release'])
      t.true(phases.includes(p), `committer phase ${p} recorded`);

    // A sampled remote page fault is a span with its owner and latency.
    const reader = await startApp(t, n2.socket);
    await reader.call({ op: 'connect' });
    await reader.call({ op: 'open', name: 'traced' });
    await reader.call({ op: 'map' });
    t.is((await reader.call<{ hex: string }>({ op: 'read', offset: 100, length: 4 })).hex, 'cafebabe');
    const fault = await waitFor('a remote fault span', () =>
      Promise.resolve(readSpans(nodeFile(2)).find((s) => s.name === 'hotpot.fault.remote')),
    );
    t.is(fault.attributes['hotpot.owner'], n1.id);
    t.is(fault.parentSpanId, null);
    t.true(typeof fault.attributes['hotpot.latency_us'] === 'number');
  },
);

test.serial('counters and latency move through Stats, Prometheus and the OTel metric exporter', async (t) => {
  t.timeout(120_000);
  const promPort = await freePort();
  const { d, nodes } = await cluster(t, 2, (i) =>
    i === 1 ? { HOTPOT_METRICS_EXPORTER: 'prometheus', HOTPOT_PROMETHEUS_PORT: String(promPort) } : {},
  );
  const n1 = at(nodes, 0);
  const n2 = at(nodes, 1);
  const before = await nodeStats(n1.address);
  const a = await startApp(t, n1.socket);
  await a.call({ op: 'connect' });
  await a.call({ op: 'open', name: 'counted', create: { size: 16 * MiB, mode: 'mrmw', replicas: 2 } });
  await a.call({ op: 'map' });
  await a.call({ op: 'write', offset: 4 * MiB, hex: '0102030405060708' }); // owned by node 2: a remote fault
  for (let i = 0; i < 3; i++) {
    await a.call({ op: 'write', offset: 8 + i, hex: 'ff' });
    await a.call({ op: 'commit' });
  }
  const after = await nodeStats(n1.address);
  const c0 = before.counters;
  const c1 = after.counters;
  if (!c0 || !c1) throw new Error('Stats has no counters');
  t.is(c1.commits - c0.commits, 3, 'three commits');
  t.true(c1.faultsRemote > c0.faultsRemote, 'remote faults counted');
  t.true(c1.faultsLocal > c0.faultsLocal, 'local faults counted');
  t.true(c1.bytesOut > c0.bytesOut && c1.bytesIn > c0.bytesIn, 'bytes counted');
  t.is(after.commitLatency?.count, 3, 'commit latency histogram holds three commits');
  t.is(
    after.commitLatency?.counts.reduce((x, y) => x + y, 0),
    3,
  );
  t.true((after.faultLatency?.count ?? 0) > 0);
  t.true((after.fetchLatency?.count ?? 0) > 0);
  // Operator view: the app's session and open dataset, pool usage, redo (idle: none in flight).
  t.true(after.sessions.some((s) => s.datasetName === 'counted' && s.pid === a.pid));
  t.true(after.poolDatasets.length >= 1);
  t.is(after.redo.length, 0);

  // Prometheus scrape of node 1.
  const text = await waitFor('prometheus metrics', async () => {
    const res = await fetch(`http://127.0.0.1:${String(promPort)}/metrics`);
    const body = await res.text();
    // Histograms are brought up to date with the engine every 200 ms (counters are read at scrape time).
    return /hotpot_commits_total\S* [1-9]/.test(body) && /hotpot_commit_duration_seconds_count\S* [1-9]/.test(body)
      ? body
      : undefined;
  });
  const metric = (name: RegExp): number => {
    const m = text.split('\n').find((l) => name.test(l) && !l.startsWith('#'));
    return m ? Number(m.split(' ').pop()) : NaN;
  };
  const n1Label = `node="${String(n1.id)}"`;
  t.is(metric(new RegExp(`^hotpot_commits_total\\{[^}]*${n1Label}`)), c1.commits, 'commits, labelled with the node id');
  t.true(metric(/^hotpot_faults_remote_total/) >= 1);
  t.true(metric(/^hotpot_network_sent_bytes_total/) > 0);
  t.true(
    metric(new RegExp(`^hotpot_commit_duration_seconds_count\\{[^}]*${n1Label}`)) >= 1,
    text
      .split('\n')
      .filter((l) => l.includes('duration'))
      .join('\n'),
  );
  // Every sample of a node metric carries the node label; no duration is in another unit than seconds.
  const samples = text.split('\n').filter((l) => l.startsWith('hotpot_'));
  t.true(samples.length > 0);
  t.deepEqual(
    samples.filter((l) => !l.includes(n1Label)),
    [],
  );
  t.false(/latency|_us[_{ ]|_ms[_{ ]/.test(samples.join('\n')), 'no latency/us/ms metric names');

  // The same metric mapping through the in-memory OTel exporter, fed from the node's Stats.
  let stats: StatsResponse__Output = after;
  const hist = (h: StatsResponse__Output['commitLatency']): EngineHistogram => ({
    count: h?.count ?? 0,
    sumUs: h?.sumUs ?? 0,
    boundsUs: h?.boundsUs ?? [],
    counts: h?.counts ?? [],
  });
  const m = await startMetrics(
    { metrics: 'memory', prometheusHost: '', prometheusPort: 0, metricsIntervalMs: 60_000 },
    'hotpot-test',
    {
      counters: () => ({ ...stats.counters }),
      histograms: () => ({
        fault: hist(stats.faultLatency),
        fetch: hist(stats.fetchLatency),
        commit: hist(stats.commitLatency),
        spansDropped: 0,
      }),
      underReplicatedChunks: () => (stats.chunks ?? []).filter((c) => c.owned && c.underReplicated).length,
      nodeId: () => n1.id,
    },
    null,
  );
  if (!m?.memory) throw new Error('no memory exporter');
  t.teardown(() => m.shutdown());
  stats = await nodeStats(n1.address);
  m.sync();
  await m.provider.forceFlush();
  const metrics = m.memory.getMetrics().flatMap((rm) => rm.scopeMetrics.flatMap((s) => s.metrics));
  const commits = metrics.find((x) => x.descriptor.name === 'hotpot.commits') as SumMetricData | undefined;
  t.is(commits?.dataPoints.at(-1)?.value, stats.counters?.commits);
  const under = metrics.find((x) => x.descriptor.name === 'hotpot.chunks.under_replicated');
  t.is(under?.dataPoints.at(-1)?.value, 0, 'every chunk has its copies');
  t.is(commits?.dataPoints.at(-1)?.attributes.node, String(n1.id));
  const latency = metrics.find((x) => x.descriptor.name === 'hotpot.commit.duration_seconds');
  t.is(latency?.descriptor.unit, 's');
  t.is(latency?.dataPointType, DataPointType.HISTOGRAM);
  t.is((latency?.dataPoints.at(-1)?.value as Histogram | undefined)?.count, stats.commitLatency?.count);

  // `hotpot stat --node` and `hotpot stat` (every node) show the node view.
  const env = { HOTPOT_DISPATCHER: d.address };
  const js = await runCli(['--json', 'stat', '--node', String(n1.id)], { env });
  t.is(js.code, 0, js.stderr);
  const view = JSON.parse(js.stdout) as {
    nodeId: number;
    sessions: { datasetName: string; pid: number }[];
    counters: { commits: number };
    redo: unknown[];
    pool: { bytesResident: number };
    members: unknown[];
  };
  t.is(view.nodeId, n1.id);
  t.true(view.sessions.some((s) => s.datasetName === 'counted' && s.pid === a.pid));
  t.true(view.counters.commits >= 3);
  t.true(view.pool.bytesResident > 0);
  t.is(view.members.length, 2);
  const human = await runCli(['stat'], { env });
  t.is(human.code, 0, human.stderr);
  t.regex(human.stdout, new RegExp(`node ${String(n1.id)} \\(o1\\)`));
  t.regex(human.stdout, new RegExp(`node ${String(n2.id)} \\(o2\\)`));
  t.regex(human.stdout, /redo in flight: 0/);
  t.regex(human.stdout, /counted\s+\d+\s+\d+/);

  // `hotpot events --json`: faults, commits and the membership change, by default mask.
  const ev = await runCli(['--json', 'events', '--node', String(n1.id)], { env });
  t.is(ev.code, 0, ev.stderr);
  const events = ev.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { kind: string; nodeId: number; peerNodeId: number; status: string });
  const kinds = new Set(events.map((e) => e.kind));
  for (const k of ['fault_remote', 'fault_local', 'commit_start', 'commit_end', 'membership']) t.true(kinds.has(k), k);
  t.true(events.some((e) => e.kind === 'fault_remote' && e.peerNodeId === n2.id));
  t.false(kinds.has('owner'), 'owner events are off by default');
  const onlyCommits = await runCli(['--json', 'events', '--node', String(n1.id), '--mask', 'commits'], { env });
  t.true(
    onlyCommits.stdout
      .trim()
      .split('\n')
      .every((l) => (JSON.parse(l) as { kind: string }).kind.startsWith('commit')),
  );
});

test.serial('the debug mask set at run time decides which events a node records', async (t) => {
  t.timeout(120_000);
  const { d, nodes } = await cluster(t, 1, () => ({}));
  const n1 = at(nodes, 0);
  const env = { HOTPOT_DISPATCHER: d.address };
  const set = await runCli(['--json', 'debug-mask', 'commits,owner', '--node', String(n1.id)], { env });
  t.is(set.code, 0, set.stderr);
  t.like(JSON.parse(set.stdout), { nodeId: n1.id, mask: 4 | 8 });
  const follow = await import('node:child_process').then(({ spawn }) =>
    spawn(process.execPath, [hotpotBin, '--json', 'events', '--follow', '--limit', '4096', '--node', String(n1.id)], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  t.teardown(() => follow.kill('SIGKILL'));
  const lines: string[] = [];
  follow.stdout.setEncoding('utf8');
  follow.stdout.on('data', (chunk: string) => lines.push(...chunk.split('\n').filter((l) => l !== '')));

  const a = await startApp(t, n1.socket);
  await a.call({ op: 'connect' });
  await a.call({ op: 'open', name: 'masked', create: { size: MiB, mode: 'mrmw', replicas: 1 } });
  await a.call({ op: 'map' });
  await a.call({ op: 'write', offset: 0, hex: '01' });
  await a.call({ op: 'commit' });
  // --limit: the stream starts with what the ring kept, so events recorded before it connected are not missed.
  const seen = await waitFor('followed commit and owner events', () => {
    const kinds = lines.map((l) => (JSON.parse(l) as { kind: string }).kind);
    return Promise.resolve(kinds.includes('commit_end') && kinds.includes('owner') ? kinds : undefined);
  });
  t.false(seen.includes('fault_local'), 'faults are masked out');
  // Faults on: the next first touch is recorded; commits off: the next commit is not.
  t.is((await runCli(['debug-mask', 'faults', '--node', String(n1.id)], { env })).code, 0);
  const mark = lines.length;
  await a.call({ op: 'write', offset: 8192, hex: '02' });
  await a.call({ op: 'commit' });
  const later = await waitFor('a followed fault event', () => {
    const kinds = lines.slice(mark).map((l) => (JSON.parse(l) as { kind: string }).kind);
    return Promise.resolve(kinds.includes('fault_local') ? kinds : undefined);
  });
  t.false(
    later.some((k) => k.startsWith('commit')),
    'commits are masked out',
  );
  const bad = await runCli(['debug-mask', 'nonsense'], { env });
  t.is(bad.code, 2);
  t.regex(bad.stderr, /unknown mask bit "nonsense"/);
});

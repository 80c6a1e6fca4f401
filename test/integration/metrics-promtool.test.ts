import { spawnSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { startApp } from '../helpers/app.ts';
import { freePort } from '../helpers/ports.ts';
import { runCli, startDispatcher, startNode, tempDir, waitFor } from '../helpers/cluster.ts';

const MiB = 1024 * 1024;
const PROMTOOL = '/usr/bin/promtool';

async function scrape(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${String(port)}/metrics`);
  return res.text();
}

/** promtool's lint of a scrape: '' when clean, else its complaints. */
function promtoolProblems(text: string): string {
  const r = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8' });
  return r.status === 0 && r.stdout.trim() === '' && r.stderr.trim() === ''
    ? ''
    : `exit ${String(r.status)}\n${r.stdout}${r.stderr}`;
}

/** The value of the first sample line whose start matches `re` (NaN when there is none). */
function sample(text: string, re: RegExp): number {
  const line = text.split('\n').find((l) => !l.startsWith('#') && re.test(l));
  return line ? Number(line.split(' ').pop()) : NaN;
}

test.serial('node and dispatcher metrics are promtool-clean, in seconds and bytes, with a node label', async (t) => {
  if (!existsSync(PROMTOOL)) {
    t.log(`${PROMTOOL} is absent (Debian package "prometheus"; .ci/run installs it): the lint is skipped`);
    t.pass();
    return;
  }
  t.timeout(120_000);
  const dir = tempDir(t);
  const dPort = await freePort();
  const nPort = await freePort();
  const d = await startDispatcher(t, {
    stateDir: join(dir, 'd'),
    env: { HOTPOT_DISPATCHER_METRICS_EXPORTER: 'prometheus', HOTPOT_DISPATCHER_PROMETHEUS_PORT: String(dPort) },
  });
  const pool = join('/dev/shm', `hotpot-test-metrics-${String(process.pid)}-${dir.slice(-6)}`);
  t.teardown(() => {
    rmSync(pool, { recursive: true, force: true });
  });
  const n = await startNode(t, {
    dispatcher: d.address,
    name: 'm1',
    stateDir: join(dir, 'n'),
    extra: ['--pool-dir', pool],
    // The node's variables, as `hotpot up` passes them to every process: the dispatcher does not take them.
    env: { HOTPOT_METRICS_EXPORTER: 'prometheus', HOTPOT_PROMETHEUS_PORT: String(nPort) },
  });
  const a = await startApp(t, n.socket);
  await a.call({ op: 'connect' });
  await a.call({ op: 'open', name: 'measured', create: { size: 4 * MiB, mode: 'mrmw', replicas: 1 } });
  await a.call({ op: 'map' });
  await a.call({ op: 'write', offset: 0, hex: '01020304' });
  await a.call({ op: 'commit' });

  const label = `node="${String(n.id)}"`;
  const nodeText = await waitFor('node metrics with a commit', async () => {
    const body = await scrape(nPort);
    return sample(body, /^hotpot_commit_duration_seconds_count\{/) >= 1 ? body : undefined;
  });
  t.is(promtoolProblems(nodeText), '', 'node scrape lints clean');
  const nodeSamples = nodeText.split('\n').filter((l) => l.startsWith('hotpot_'));
  t.deepEqual(
    nodeSamples.filter((l) => !l.includes(label)),
    [],
    'every node sample carries the node label',
  );
  t.is(sample(nodeText, /^hotpot_commits_total\{/), 1);
  t.true(sample(nodeText, /^hotpot_network_sent_bytes_total\{/) >= 0);
  t.true(sample(nodeText, /^hotpot_fault_duration_seconds_count\{/) >= 1);
  // The engine's first bucket is 1 µs: seconds, not microseconds.
  t.regex(nodeText, /hotpot_commit_duration_seconds_bucket\{[^}]*le="0\.000001"/);

  const created = await runCli(['create', 'other', '--size', '1MiB'], { env: { HOTPOT_DISPATCHER: d.address } });
  t.is(created.code, 0, created.stderr);
  const dispatcherText = await waitFor('dispatcher metrics', async () => {
    const body = await scrape(dPort);
    return sample(body, /^hotpot_dispatcher_datasets[{ ]/) === 2 ? body : undefined;
  });
  t.is(promtoolProblems(dispatcherText), '', 'dispatcher scrape lints clean');
  t.is(sample(dispatcherText, /^hotpot_dispatcher_members\{[^}]*state="alive"/), 1);
  t.is(sample(dispatcherText, /^hotpot_dispatcher_members\{[^}]*state="dead"/), 0);
  t.is(sample(dispatcherText, /^hotpot_dispatcher_chunks_without_owner[{ ]/), 0);
  t.is(sample(dispatcherText, /^hotpot_dispatcher_chunks_under_replicated[{ ]/), 0);
  t.is(sample(dispatcherText, /^hotpot_dispatcher_chunk_failovers_total[{ ]/), 0);
  t.true(
    sample(
      dispatcherText,
      /^hotpot_dispatcher_rpc_duration_seconds_count\{[^}]*method="CreateDataset"[^}]*code="OK"/,
    ) >= 1,
    dispatcherText,
  );
});

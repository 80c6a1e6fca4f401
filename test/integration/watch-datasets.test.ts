import { rmSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import test from 'ava';
import { dispatcherClient } from '../../services/cli/client.ts';
import type { DatasetsEvent__Output } from '../../services/generated/hotpot/v1/DatasetsEvent.ts';
import { freePort } from '../helpers/ports.ts';
import { nodeStats, runCli, startDispatcher, startNode, tempDir, userSecurity, waitFor } from '../helpers/cluster.ts';

const MiB = 1024 * 1024;

/** The chunk indexes of a dataset in a node's engine (its loaded chunk map), by dataset id. */
async function chunksOf(address: string, datasetId: number): Promise<number> {
  const s = await nodeStats(address);
  return (s.chunks ?? []).filter((c) => c.datasetId === datasetId).length;
}

async function datasetId(dispatcher: string, name: string): Promise<number> {
  const r = await runCli(['--json', 'stat', name], { env: { HOTPOT_DISPATCHER: dispatcher } });
  if (r.code !== 0) throw new Error(r.stderr);
  return (JSON.parse(r.stdout) as { dataset: { id: number } }).dataset.id;
}

/** ListDatasets calls the dispatcher answered so far (its RPC latency histogram's count). */
async function listCalls(metricsPort: number): Promise<number> {
  const body = await (await fetch(`http://127.0.0.1:${String(metricsPort)}/metrics`)).text();
  const line = body
    .split('\n')
    .find((l) => l.startsWith('hotpot_dispatcher_rpc_duration_seconds_count{') && l.includes('method="ListDatasets"'));
  return line ? Number(line.split(' ').pop()) : 0;
}

test.serial(
  'nodes see datasets created, resized and deleted through the watch, without polling, also after a dispatcher restart',
  async (t) => {
    t.timeout(180_000);
    const dir = tempDir(t);
    const metricsPort = await freePort();
    const dEnv = {
      HOTPOT_DISPATCHER_METRICS_EXPORTER: 'prometheus',
      HOTPOT_DISPATCHER_PROMETHEUS_PORT: String(metricsPort),
    };
    const d = await startDispatcher(t, { stateDir: join(dir, 'd'), env: dEnv });
    const port = Number(d.address.split(':').at(-1));
    const pools = [1, 2].map((i) =>
      join('/dev/shm', `hotpot-test-watch-${String(process.pid)}-${dir.slice(-6)}-${String(i)}`),
    );
    t.teardown(() => {
      for (const p of pools) rmSync(p, { recursive: true, force: true });
    });
    const nodes: Awaited<ReturnType<typeof startNode>>[] = [];
    for (const [i, pool] of pools.entries()) {
      nodes.push(
        await startNode(t, {
          dispatcher: d.address,
          name: `w${String(i + 1)}`,
          stateDir: join(dir, `w${String(i + 1)}`),
          extra: ['--pool-dir', pool],
        }),
      );
    }
    const env = { HOTPOT_DISPATCHER: d.address };
    const cli = async (args: string[]): Promise<void> => {
      const r = await runCli(args, { env });
      t.is(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    };
    const everyNodeHas = (what: string, id: number, chunks: number) =>
      waitFor(what, async () => {
        for (const n of nodes) if ((await chunksOf(n.address, id)) !== chunks) return undefined;
        return true;
      });

    await cli(['create', 'w', '--size', '8MiB']);
    const id = await datasetId(d.address, 'w');
    await everyNodeHas('both nodes load the new dataset', id, 2);
    await cli(['resize', 'w', '--size', '16MiB']);
    await everyNodeHas('both nodes load the grown chunk map', id, 4);

    // Idle: no node lists the datasets (before, each node called ListDatasets every 250 ms).
    const before = await listCalls(metricsPort);
    await new Promise((r) => setTimeout(r, 2000));
    t.is(await listCalls(metricsPort), before, 'no ListDatasets call in 2 s of idle cluster');

    // Deleted and created again under the same name: the new dataset (a new id, another size) is loaded.
    await cli(['rm', 'w']);
    await cli(['create', 'w', '--size', String(4 * MiB)]);
    const id2 = await datasetId(d.address, 'w');
    t.not(id2, id);
    await everyNodeHas('both nodes load the re-created dataset', id2, 1);

    // kill -9 of the dispatcher and a restart on the same address: the watch reconnects and streams again.
    d.child.kill('SIGKILL');
    await d.exited;
    const restarted = await startDispatcher(t, { stateDir: join(dir, 'd'), port, env: dEnv });
    t.is(restarted.address, d.address);
    await cli(['create', 'after-restart', '--size', '4MiB']);
    const id3 = await datasetId(d.address, 'after-restart');
    await everyNodeHas('both nodes load a dataset created after the restart', id3, 1);
  },
);

test.serial('the dataset watch streams the namespace to nodes and admins only', async (t) => {
  t.timeout(60_000);
  const dir = tempDir(t);
  const d = await startDispatcher(t, { stateDir: join(dir, 'd') });
  const pool = join('/dev/shm', `hotpot-test-watch-${String(process.pid)}-${dir.slice(-6)}`);
  t.teardown(() => {
    rmSync(pool, { recursive: true, force: true });
  });
  const admin = dispatcherClient(d.address);
  t.teardown(() => admin.close());
  const events: DatasetsEvent__Output[] = [];
  const call = admin.WatchDatasets({});
  t.teardown(() => call.cancel());
  call.on('data', (e: DatasetsEvent__Output) => events.push(e));
  call.on('error', () => undefined);
  const names = (e: DatasetsEvent__Output | undefined): string[] => (e?.datasets ?? []).map((x) => x.name).sort();
  await waitFor('the first event', () => Promise.resolve(events.length >= 1 ? true : undefined));
  t.is(events[0]?.revision, 1);
  t.deepEqual(names(events[0]), []);
  await startNode(t, { dispatcher: d.address, name: 'w', stateDir: join(dir, 'w'), extra: ['--pool-dir', pool] });
  const env = { HOTPOT_DISPATCHER: d.address };
  const created = await runCli(['create', 'seen', '--size', '1MiB'], { env });
  t.is(created.code, 0, created.stderr);
  const e = await waitFor('an event with the dataset', () =>
    Promise.resolve(events.find((x) => names(x).includes('seen'))),
  );
  t.true(e.revision > 1);
  t.is(e.datasets.find((x) => x.name === 'seen')?.sizeBytes, 1 * MiB);
  const removed = await runCli(['rm', 'seen'], { env });
  t.is(removed.code, 0, removed.stderr);
  await waitFor('an event without it', () =>
    Promise.resolve(events.length > 0 && !names(events.at(-1)).includes('seen') ? true : undefined),
  );

  // A user certificate may not watch the namespace (the same rule as ListDatasets).
  const user = dispatcherClient(d.address, userSecurity('watcher', 1000, 1000));
  t.teardown(() => user.close());
  const refused = await new Promise<grpc.ServiceError>((resolve) => {
    const c = user.WatchDatasets({});
    c.on('data', () => undefined);
    c.on('error', resolve);
  });
  t.is(refused.code, grpc.status.PERMISSION_DENIED);
});

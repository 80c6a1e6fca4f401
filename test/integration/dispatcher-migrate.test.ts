// `hotpot dispatcher migrate`: a stopped LMDB dispatcher's whole state moves to an empty etcd prefix (and back), and a
// dispatcher started on etcd with the same nodes serves the same datasets, chunk maps, tokens, revocations, leases and
// counters. It refuses a target with state, a prefix a dispatcher holds, and an LMDB directory a dispatcher has open.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { dispatcherClient } from '../../services/cli/client.ts';
import { unary } from '../../services/common/rpc.ts';
import { migrate, snapshot, summarize } from '../../services/dispatcher/migrate.ts';
import type { ChunkRecord, DatasetRecord, Meta } from '../../services/dispatcher/store.ts';
import { EtcdStore } from '../../services/dispatcher/store-etcd.ts';
import { LmdbStore } from '../../services/dispatcher/store-lmdb.ts';
import { createLogger } from '../../services/common/logger.ts';
import type { AcquireResponse__Output } from '../../services/generated/hotpot/v1/AcquireResponse.ts';
import { listNodes, type Proc, runCli, startDispatcher, startNode, tempDir, userSecurity } from '../helpers/cluster.ts';
import { startEtcd, startEtcdDispatcher } from '../helpers/etcd.ts';
import { freePort } from '../helpers/ports.ts';

const MiB = 1024 * 1024;

async function stop(p: Proc): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  p.child.kill('SIGTERM');
  await p.exited;
}

interface DatasetView {
  name: string;
  id: number;
  generation: number;
  mode: string;
  chunks: { index: number; owner: number; replicas: number[] }[];
}

async function datasets(dispatcher: string): Promise<DatasetView[]> {
  const ls = await runCli(['--dispatcher', dispatcher, '--json', 'ls']);
  if (ls.code !== 0) throw new Error(ls.stderr);
  const out: DatasetView[] = [];
  for (const { name } of (JSON.parse(ls.stdout) as { name: string }[]).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const st = await runCli(['--dispatcher', dispatcher, '--json', 'stat', name]);
    if (st.code !== 0) throw new Error(st.stderr);
    const d = (JSON.parse(st.stdout) as { dataset: DatasetView }).dataset;
    out.push({
      name: d.name,
      id: d.id,
      generation: d.generation,
      mode: d.mode,
      chunks: d.chunks.map((c) => ({ index: c.index, owner: c.owner, replicas: c.replicas })),
    });
  }
  return out;
}

test('an LMDB dispatcher state moves to etcd: same datasets, chunk maps, token, revocation, lease and counters', async (t) => {
  t.timeout(300_000);
  const etcd = await startEtcd(t);
  const dir = tempDir(t);
  const lmdbDir = join(dir, 'd');
  const d = await startDispatcher(t, { stateDir: lmdbDir });
  const nodeOpts = (i: number, dispatcher: string) => ({
    dispatcher,
    name: `n${String(i)}`,
    stateDir: join(dir, `n${String(i)}`),
  });
  let n1 = await startNode(t, nodeOpts(1, d.address));
  let n2 = await startNode(t, nodeOpts(2, d.address));
  const env = { HOTPOT_DISPATCHER: d.address };
  for (const args of [
    ['create', 'shared', '--size', '24MiB', '--replicas', '2'],
    ['create', 'locks', '--size', '8MiB', '--mode', 'mrsw'],
  ]) {
    const r = await runCli(args, { env });
    t.is(r.code, 0, r.stderr);
  }
  const admin = dispatcherClient(d.address);
  const acquired = await unary<AcquireResponse__Output>((o, cb) =>
    admin.Acquire(
      { dataset: 'locks', ranges: [{ offset: 0, length: 8 }], leaseMs: 600_000, waitMs: 0, nodeId: n1.id },
      o,
      cb,
    ),
  );
  admin.close();
  const leaseId = acquired.lease?.leaseId ?? '';
  t.not(leaseId, '');
  const tok = await runCli(['--json', 'token', 'create', '--user', 'ops', '--role', 'admin'], {
    env,
  });
  t.is(tok.code, 0, tok.stderr);
  const token = (JSON.parse(tok.stdout) as { token: string }).token;
  const tokenFile = join(dir, 'ops.token');
  writeFileSync(tokenFile, token + '\n', { mode: 0o600 });
  const asOps = await runCli(['--token-file', tokenFile, 'ls'], { env });
  t.is(asOps.code, 0, asOps.stderr);
  userSecurity('mallory', 1006, 1006);
  const rev = await runCli(['--json', 'certs', 'revoke', 'user.mallory'], { env });
  t.is(rev.code, 0, rev.stderr);
  const fingerprint = (JSON.parse(rev.stdout) as { fingerprint: string }).fingerprint;
  const before = await datasets(d.address);
  const members = (await listNodes(d.address)).nodes.map((n) => [n.id, n.identity]).sort();

  // A running dispatcher holds its directory: refused, nothing read.
  const busy = await runCli(['dispatcher', 'migrate', '--from', `lmdb:${lmdbDir}`, '--to', `etcd://${etcd.endpoint}`]);
  t.is(busy.code, 1, busy.stderr);
  t.regex(busy.stderr, /is open in process \d+.*must be stopped first/);

  // The dispatcher stops first, then the nodes die: they do not leave, so n1's lease stays in the table.
  await stop(d);
  for (const p of [n1, n2]) {
    p.child.kill('SIGKILL');
    await p.exited;
  }
  const source = new LmdbStore(lmdbDir);
  const sourceMeta: Meta = source.getMeta(0);
  const sourceState = snapshot(source);
  const sourceKinds = summarize(sourceState);
  await source.close();
  t.true(sourceMeta.epoch > 0);

  const prefix = '/moved/';
  const migrateArgs = [
    'dispatcher',
    'migrate',
    '--from',
    `lmdb:${lmdbDir}`,
    '--to',
    `etcd://${etcd.endpoint}`,
    '--etcd-prefix',
    prefix,
  ];
  // Dry run: counts per kind, exit 2, nothing in etcd (not even the election key it held for a moment).
  const dry = await runCli(migrateArgs);
  t.is(dry.code, 2, dry.stderr);
  t.regex(dry.stdout, /would copy lmdb:.* -> etcd:\/\//);
  t.regex(dry.stdout, /datasets: 2 \(\d+ chunks\)/);
  t.regex(dry.stdout, /tokens: 1,/);
  t.regex(dry.stdout, /revoked-certificates: 1,/);
  t.regex(dry.stdout, /mrsw-leases: 1,/);
  t.regex(dry.stderr, /add --yes/);
  t.deepEqual(await etcd.client.getAll().prefix(prefix).keys(), []);

  const run = await runCli([...migrateArgs, '--yes', '--json']);
  t.is(run.code, 0, run.stderr);
  const result = JSON.parse(run.stdout) as {
    copied: boolean;
    kinds: { kind: string; records: number; digest: string; verified: boolean }[];
  };
  t.true(result.copied);
  t.true(result.kinds.every((k) => k.verified));
  t.deepEqual(
    result.kinds.map((k) => [k.kind, k.records, k.digest]),
    sourceKinds.map((k) => [k.kind, k.records, k.digest]),
  );

  // What etcd holds now, loaded by the etcd store as a dispatcher would: every record as in LMDB.
  const loaded = await EtcdStore.open(
    { endpoints: [etcd.endpoint], prefix, electionTtlS: 3, candidate: { instance: 'test', address: '' } },
    createLogger('test', 'error'),
  );
  const copied = snapshot(loaded);
  await loaded.close();
  t.deepEqual(copied, sourceState);

  // A dispatcher on etcd, and the same nodes (same state directories) again.
  const ed = await startEtcdDispatcher(t, {
    endpoint: etcd.endpoint,
    dir: join(dir, 'e'),
    port: await freePort(),
    prefix,
  });
  const address = ed.fields.address ?? '';
  n1 = await startNode(t, nodeOpts(1, address));
  n2 = await startNode(t, nodeOpts(2, address));
  t.deepEqual((await listNodes(address)).nodes.map((n) => [n.id, n.identity]).sort(), members);
  // The same datasets and chunk maps (rejoining as new processes may raise generations).
  const served = await datasets(address);
  t.deepEqual(
    served.map((x) => ({ ...x, generation: 0 })),
    before.map((x) => ({ ...x, generation: 0 })),
  );
  served.forEach((x, i) => {
    t.true(x.generation >= (before[i]?.generation ?? Infinity));
  });
  const edClient = dispatcherClient(address);
  t.teardown(() => {
    edClient.close();
  });
  // n1 rejoined as a new process, which ended its old lease; the fencing epochs go on above it.
  const next = await unary<AcquireResponse__Output>((o, cb) =>
    edClient.Acquire(
      { dataset: 'locks', ranges: [{ offset: 0, length: 8 }], leaseMs: 60_000, waitMs: 5000, nodeId: n1.id },
      o,
      cb,
    ),
  );
  t.true(Number(next.lease?.fencingEpoch) > Number(acquired.lease?.fencingEpoch));
  const envE = { HOTPOT_DISPATCHER: address };
  const stillOps = await runCli(['--token-file', tokenFile, 'ls'], { env: envE });
  t.is(stillOps.code, 0, `the token still authenticates: ${stillOps.stderr}`);
  const revoked = await runCli(['--json', 'certs', 'revoked'], { env: envE });
  t.true((JSON.parse(revoked.stdout) as { fingerprint: string }[]).some((c) => c.fingerprint === fingerprint));
  const metaNow = JSON.parse((await etcd.client.get(`${prefix}state/meta`).string()) ?? '{}') as Meta;
  t.true(metaNow.epoch >= sourceMeta.epoch);
  // Counters carried over: a new dataset gets the next id, never one in use.
  const created = await runCli(['create', 'after', '--size', '4MiB'], { env: envE });
  t.is(created.code, 0, created.stderr);
  const after = (await datasets(address)).find((x) => x.name === 'after');
  t.is(after?.id, sourceMeta.nextDatasetId);

  // A dispatcher leads on the prefix: migrate refuses after --wait rather than waiting for ever.
  const held = await runCli([...migrateArgs, '--yes', '--wait', '2']);
  t.is(held.code, 1, held.stderr);
  t.regex(held.stderr, /a dispatcher leads there .*stop it first/);
  for (const p of [n1, n2, ed]) await stop(p);
  // The prefix has state now: refused.
  const again = await runCli([...migrateArgs, '--yes']);
  t.is(again.code, 1, again.stderr);
  t.regex(again.stderr, /already holds dispatcher state/);

  // And back: etcd to a new LMDB directory, read back the same.
  const back = await runCli([
    'dispatcher',
    'migrate',
    '--from',
    `etcd://${etcd.endpoint}`,
    '--etcd-prefix',
    prefix,
    '--to',
    `lmdb:${join(dir, 'back')}`,
    '--yes',
  ]);
  t.is(back.code, 0, back.stderr);
  t.regex(back.stdout, /datasets: 3 .*read back: same/);
});

test('a 1 TiB chunk map (262 144 chunks) moves to etcd and back whole', async (t) => {
  t.timeout(300_000);
  const etcd = await startEtcd(t);
  const dir = tempDir(t);
  const src = new LmdbStore(join(dir, 'src'));
  const count = 262_144;
  const chunks: ChunkRecord[] = [];
  for (let i = 0; i < count; i++)
    chunks.push({ owner: 1 + (i % 3), replicas: [1 + ((i + 1) % 3)], era: i % 7 === 0 ? 1 : 0 });
  const big: DatasetRecord = {
    name: 'big',
    id: 7,
    sizeBytes: count * 4 * MiB,
    mode: 'mrmw',
    replicas: 2,
    chunkSizeBytes: 4 * MiB,
    createdUnixMs: 1,
    generation: 42,
    chunks,
  };
  await src.commit({
    meta: { epoch: 9, nextNodeId: 4, nextDatasetId: 8, placementCursor: 5, chunkSizeBytes: 4 * MiB },
    putDatasets: [big],
    tables: [src.table('mrsw-meta').put('nextEpoch', 12)],
  });
  await src.close();
  const etcdCfg = {
    etcdPrefix: '/big/',
    electionTtlS: 3,
    waitS: 10,
  };
  const started = Date.now();
  const r = await migrate({ ...etcdCfg, from: `lmdb:${join(dir, 'src')}`, to: `etcd://${etcd.endpoint}`, yes: true });
  t.log(`LMDB -> etcd, 262 144 chunks, copied and read back in ${String(Date.now() - started)} ms`);
  t.true(r.copied);
  t.is(r.kinds.find((k) => k.kind === 'datasets')?.chunks, count);
  t.true(r.kinds.every((k) => k.verified === true));
  const store = await EtcdStore.open(
    { endpoints: [etcd.endpoint], prefix: '/big/', electionTtlS: 3, candidate: { instance: 'test', address: '' } },
    createLogger('test', 'error'),
  );
  t.teardown(() => store.close());
  t.deepEqual(store.getDataset('big'), big);
  t.is(store.getMeta(0).epoch, 9);
  await store.close();
  const back = await migrate({
    ...etcdCfg,
    from: `etcd://${etcd.endpoint}`,
    to: `lmdb:${join(dir, 'back')}`,
    yes: true,
  });
  t.true(back.kinds.every((k) => k.verified === true));
  t.deepEqual(
    back.kinds.map((k) => k.digest),
    r.kinds.map((k) => k.digest),
  );
});

// `hotpot dispatcher migrate` between LMDB directories (the etcd side is in test/integration/dispatcher-migrate.test.ts):
// what it refuses, that a dry run writes nothing, and that a copy reads back record for record.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { pino } from 'pino';
import { Barriers } from '../../services/dispatcher/barrier.ts';
import { Cluster } from '../../services/dispatcher/cluster.ts';
import {
  DISPATCHER_TABLES,
  MigrateConfig,
  MigrateRefused,
  migrate,
  snapshot,
  summarize,
} from '../../services/dispatcher/migrate.ts';
import { MrswMaster } from '../../services/dispatcher/mrsw.ts';
import { Revocations } from '../../services/dispatcher/revocations.ts';
import { Tokens } from '../../services/dispatcher/tokens.ts';
import type { DatasetRecord } from '../../services/dispatcher/store.ts';
import { LmdbStore } from '../../services/dispatcher/store-lmdb.ts';

function dir(t: ExecutionContext): string {
  const d = mkdtempSync(join(tmpdir(), 'hotpot-migrate-'));
  t.teardown(() => {
    rmSync(d, { recursive: true, force: true });
  });
  return d;
}

const cfg = (from: string, to: string, yes: boolean): MigrateConfig =>
  MigrateConfig.parse({ from: `lmdb:${from}`, to: `lmdb:${to}`, yes });

const dataset: DatasetRecord = {
  name: 'a',
  id: 3,
  sizeBytes: 8 << 20,
  mode: 'mrsw',
  replicas: 2,
  chunkSizeBytes: 4 << 20,
  createdUnixMs: 5,
  generation: 6,
  chunks: [
    { owner: 1, replicas: [2], era: 1, ownerStore: 's1', lost: [[3, 2]] },
    { owner: 2, replicas: [1] },
  ],
  access: { uid: 1000, gid: 1000, perm: 0o640 },
};

async function sourceIn(d: string): Promise<void> {
  const s = new LmdbStore(d);
  await s.commit({
    meta: { epoch: 4, nextNodeId: 3, nextDatasetId: 4, placementCursor: 1, chunkSizeBytes: 4 << 20 },
    nodes: [
      {
        id: 1,
        identity: 'n1',
        controlAddress: 'h:1',
        dataAddress: 'h:2',
        state: 'ALIVE',
        joinedUnixMs: 1,
        stateEpoch: 2,
        storeId: 's1',
        storeIncarnation: 1,
      },
      {
        id: 2,
        identity: 'n2',
        controlAddress: 'h:3',
        dataAddress: 'h:4',
        state: 'DEAD',
        joinedUnixMs: 1,
        stateEpoch: 4,
      },
    ],
    putDatasets: [dataset],
    tables: [
      s.table('tokens').put('t1', { user: 'ops', role: 'admin', hash: 'x' }),
      s.table('revoked-certificates').put('AA:BB', { subject: 'CN=eve', revokedUnixMs: 1 }),
      s.table('barrier-arrivals').put('b/1', { at: 2 }),
    ],
  });
  await s.close();
}

/** A source directory with state and a target path that does not exist yet. */
async function prepared(t: ExecutionContext): Promise<{ from: string; to: string }> {
  const d = dir(t);
  await sourceIn(join(d, 'from'));
  return { from: join(d, 'from'), to: join(d, 'to') };
}

test('a copy between LMDB directories reads back the same records of every kind', async (t) => {
  const { from, to } = await prepared(t);
  const r = await migrate(cfg(from, to, true));
  t.true(r.copied);
  t.true(r.kinds.every((k) => k.verified === true));
  t.deepEqual(
    r.kinds.filter((k) => k.records > 0).map((k) => k.kind),
    ['meta', 'members', 'datasets', 'tokens', 'revoked-certificates', 'barrier-arrivals'],
  );
  const [a, b] = [new LmdbStore(from), new LmdbStore(to)];
  t.deepEqual(snapshot(b), snapshot(a));
  t.deepEqual(summarize(snapshot(b)), summarize(snapshot(a)));
  await a.close();
  await b.close();
});

test('a dry run changes nothing, not even creating the target directory', async (t) => {
  const { from, to } = await prepared(t);
  const r = await migrate(cfg(from, to, false));
  t.false(r.copied);
  t.is(r.kinds.find((k) => k.kind === 'datasets')?.chunks, 2);
  t.false(existsSync(to));
});

test('migrate refuses a source without state and a target that has some', async (t) => {
  const d = dir(t);
  const none = await t.throwsAsync(migrate(cfg(join(d, 'nothing'), join(d, 'to'), true)), {
    instanceOf: MigrateRefused,
  });
  t.regex(none.message, /has no dispatcher state/);
  // An environment that exists but was never written: no state either.
  await new LmdbStore(join(d, 'empty')).close();
  const empty = await t.throwsAsync(migrate(cfg(join(d, 'empty'), join(d, 'to'), true)), {
    instanceOf: MigrateRefused,
  });
  t.regex(empty.message, /has no dispatcher state/);
  await sourceIn(join(d, 'from'));
  await sourceIn(join(d, 'full'));
  const full = await t.throwsAsync(migrate(cfg(join(d, 'from'), join(d, 'full'), true)), {
    instanceOf: MigrateRefused,
  });
  t.regex(full.message, /already holds dispatcher state/);
  // A target with only a token is not empty either.
  const tok = new LmdbStore(join(d, 'token-only'));
  await tok.commit({ tables: [tok.table('tokens').put('t', { x: 1 })] });
  await tok.close();
  await t.throwsAsync(migrate(cfg(join(d, 'from'), join(d, 'token-only'), false)), { instanceOf: MigrateRefused });
});

test('migrate refuses etcd to etcd and store specs it cannot parse', async (t) => {
  await t.throwsAsync(migrate(MigrateConfig.parse({ from: 'etcd://a:1', to: 'etcd://b:2' })), {
    instanceOf: MigrateRefused,
    message: /both stores are etcd/,
  });
  t.false(MigrateConfig.safeParse({ from: 'lmdb:', to: 'etcd://a:1' }).success);
  t.false(MigrateConfig.safeParse({ from: 'lmdb:/x', to: 'http://a:1' }).success);
});

test('the tables migrate copies are every table the dispatcher opens (a new one must be added to the list)', async (t) => {
  const store = new LmdbStore(dir(t));
  const opened = new Set<string>();
  const watched = new Proxy(store, {
    get(target, p, receiver) {
      if (p === 'table') {
        return (name: string) => {
          opened.add(name);
          return target.table(name);
        };
      }
      const v: unknown = Reflect.get(target, p, receiver);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  const log = pino({ level: 'silent' });
  const cluster = new Cluster(watched, { chunkSizeBytes: 4 << 20, leaseMs: 3000, failover: true }, log);
  await cluster.init();
  const mrsw = new MrswMaster(watched, cluster, 'migrate-test-secret-0123', log);
  mrsw.init();
  const barriers = new Barriers(watched);
  await barriers.init();
  new Tokens(watched);
  new Revocations(watched);
  t.teardown(async () => {
    barriers.stop();
    mrsw.stop();
    cluster.stop();
    await store.close();
  });
  t.true(opened.size >= 7, [...opened].join(', '));
  t.deepEqual(
    [...opened].filter((n) => !(DISPATCHER_TABLES as readonly string[]).includes(n)),
    [],
    'tables the dispatcher opens that migrate would not copy',
  );
});

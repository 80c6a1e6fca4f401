// An MRSW acquire that waits for pages held by another lease is granted only to the node process that asked, and only
// while its caller still waits: a node declared dead, gone or restarted meanwhile — or a caller that went away — gets
// no lease. Before, the wait ended in a grant to nobody, which held the pages for a whole lease (chaos: an MRSW worker
// whose node daemon was killed while its acquire waited was refused by that lost grant for 5 s after its restart).
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { pino } from 'pino';
import * as grpc from '@grpc/grpc-js';
import { RpcError } from '../../services/common/errors.ts';
import { Cluster, PROTOCOL_VERSION } from '../../services/dispatcher/cluster.ts';
import { MrswMaster } from '../../services/dispatcher/mrsw.ts';
import { LmdbStore } from '../../services/dispatcher/store-lmdb.ts';

const CHUNK = 4 * 1024 * 1024;
const log = pino({ level: 'silent' });

async function dispatcher(t: ExecutionContext) {
  const dir = mkdtempSync(join(tmpdir(), 'hotpot-mrsw-'));
  const store = new LmdbStore(dir);
  const cluster = new Cluster(store, { chunkSizeBytes: CHUNK, leaseMs: 60_000, failover: true }, log);
  await cluster.init();
  const mrsw = new MrswMaster(store, cluster, 'a'.repeat(64), log);
  mrsw.init();
  t.teardown(async () => {
    cluster.stop();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const join1 = (identity: string, storeId: string) =>
    cluster.join({
      identity,
      protocolVersion: PROTOCOL_VERSION,
      chunkSizeBytes: CHUNK,
      controlAddress: '127.0.0.1:1',
      dataAddress: '127.0.0.1:2',
      storeId,
      storeIncarnation: 1,
    });
  const stores = { a: randomBytes(16).toString('hex'), b: randomBytes(16).toString('hex') };
  const a = await join1('a', stores.a);
  const b = await join1('b', stores.b);
  await cluster.createDataset({ name: 'locks', sizeBytes: CHUNK, mode: 'mrsw', replicas: 1 });
  const acquire = (nodeId: number, waitMs: number, cancelled?: () => boolean) =>
    mrsw.acquire({
      dataset: 'locks',
      ranges: [{ offset: 0, length: 8 }],
      leaseMs: 60_000,
      waitMs,
      nodeId,
      holder: `node ${String(nodeId)}`,
      ...(cancelled ? { cancelled } : {}),
    });
  return { cluster, mrsw, a, b, acquire, rejoinB: () => join1('b', stores.b) };
}

const held = (mrsw: MrswMaster, nodeId: number) => mrsw.list('locks').filter((l) => l.nodeId === nodeId).length;

test('an acquire that waited is not granted to a node that left meanwhile', async (t) => {
  const { cluster, mrsw, a, b, acquire } = await dispatcher(t);
  const first = await acquire(a.id, 0);
  const waiting = acquire(b.id, 10_000);
  await new Promise((r) => setTimeout(r, 50));
  await cluster.leave(b.id, 'b');
  await mrsw.release(first.id);
  const err = await t.throwsAsync(waiting);
  t.true(err instanceof RpcError && err.code === grpc.status.UNAVAILABLE, String(err));
  t.regex(err?.message ?? '', /node \d+ was gone \(left\) while its acquire waited: no lease was granted/);
  t.is(held(mrsw, b.id), 0, 'no lease of the node that left');
  t.truthy(await acquire(a.id, 0), 'the pages are free');
});

test('an acquire that waited is not granted to a node that restarted meanwhile (the asking process is gone)', async (t) => {
  const { mrsw, a, b, acquire, rejoinB } = await dispatcher(t);
  const first = await acquire(a.id, 0);
  const waiting = acquire(b.id, 10_000);
  await new Promise((r) => setTimeout(r, 50));
  await rejoinB(); // a new process of node b joins within its membership lease
  await mrsw.release(first.id);
  const err = await t.throwsAsync(waiting);
  t.regex(err?.message ?? '', /node \d+ was rejoined while its acquire waited/);
  t.is(held(mrsw, b.id), 0);
  t.truthy(await acquire(b.id, 0), 'the restarted node acquires at once');
});

test('an acquire whose caller went away is not granted', async (t) => {
  const { mrsw, a, b, acquire } = await dispatcher(t);
  const first = await acquire(a.id, 0);
  let gone = false;
  const waiting = acquire(b.id, 10_000, () => gone);
  await new Promise((r) => setTimeout(r, 50));
  gone = true;
  await mrsw.release(first.id);
  const err = await t.throwsAsync(waiting);
  t.true(err instanceof RpcError && err.code === grpc.status.CANCELLED, String(err));
  t.is(held(mrsw, b.id), 0);
  t.truthy(await acquire(a.id, 0));
});

import { randomFillSync } from 'node:crypto';
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { nodeClient } from '../../services/cli/client.ts';
import { HotpotError } from '../../services/common/errors.ts';
import { unary } from '../../services/common/rpc.ts';
import type { DumpPageResponse__Output } from '../../services/generated/hotpot/v1/DumpPageResponse.ts';
import { startApp } from '../helpers/app.ts';
import { startDispatcher, startNode, tempDir, waitFor } from '../helpers/cluster.ts';

const MiB = 1024 * 1024;

async function cluster(t: ExecutionContext, n: number, opts: { leaseMs?: number } = {}) {
  const dir = tempDir(t);
  const d = await startDispatcher(t, { stateDir: join(dir, 'd'), leaseMs: opts.leaseMs ?? 4000 });
  const nodes = [];
  for (let i = 1; i <= n; i++) {
    nodes.push(
      await startNode(t, {
        dispatcher: d.address,
        name: `n${String(i)}`,
        stateDir: join(dir, `n${String(i)}`),
        extra: ['--pool-dir', join('/dev/shm', `hotpot-test-${String(process.pid)}-${dir.slice(-6)}-n${String(i)}`)],
      }),
    );
  }
  t.teardown(async () => {
    const { rmSync } = await import('node:fs');
    for (let i = 1; i <= n; i++) {
      rmSync(join('/dev/shm', `hotpot-test-${String(process.pid)}-${dir.slice(-6)}-n${String(i)}`), {
        recursive: true,
        force: true,
      });
    }
  });
  return { dir, d, nodes };
}

async function dumpPage(address: string, datasetId: number, page: number): Promise<DumpPageResponse__Output> {
  const c = nodeClient(address);
  try {
    return await unary<DumpPageResponse__Output>((o, cb) => c.DumpPage({ datasetId, page }, o, cb));
  } finally {
    c.close();
  }
}

const node = <T>(xs: T[], i: number): T => {
  const v = xs[i];
  if (v === undefined) throw new Error(`no node ${String(i)}`);
  return v;
};

test('a commit on one node is visible on another, and not before', async (t) => {
  t.timeout(120_000);
  const { nodes } = await cluster(t, 2);
  const a = await startApp(t, node(nodes, 0).socket);
  const b = await startApp(t, node(nodes, 1).socket);
  await a.call({ op: 'connect' });
  await b.call({ op: 'connect' });
  const info = await a.call<{ id: number; size: number }>({
    op: 'open',
    name: 'vis',
    create: { size: 16 * MiB, mode: 'mrmw', replicas: 2 },
  });
  t.is(info.size, 16 * MiB);
  await b.call({ op: 'open', name: 'vis' });
  await a.call({ op: 'map' });
  await b.call({ op: 'map' });
  // Both offsets: one in a chunk owned by node 1, one in a chunk owned by node 2.
  for (const off of [100, 4 * MiB + 8]) {
    t.is((await b.call<{ hex: string }>({ op: 'read', offset: off, length: 4 })).hex, '00000000');
    await a.call({ op: 'write', offset: off, hex: 'cafebabe' });
    t.is((await a.call<{ hex: string }>({ op: 'read', offset: off, length: 4 })).hex, 'cafebabe');
    t.is(
      (await b.call<{ hex: string }>({ op: 'read', offset: off, length: 4 })).hex,
      '00000000',
      'uncommitted writes are private',
    );
    const r = await a.call<{ copies: number; ranges: number }>({ op: 'commit' });
    t.true(r.copies >= 2);
    t.is(r.ranges, 1);
    const seen = await waitFor('B sees the commit', async () => {
      await b.call({ op: 'refresh' });
      const h = (await b.call<{ hex: string }>({ op: 'read', offset: off, length: 4 })).hex;
      return h === 'cafebabe' ? h : undefined;
    });
    t.is(seen, 'cafebabe');
  }
});

test("two processes on one node do not see each other's uncommitted writes", async (t) => {
  t.timeout(120_000);
  const { nodes } = await cluster(t, 1);
  const p = await startApp(t, node(nodes, 0).socket);
  const q = await startApp(t, node(nodes, 0).socket);
  for (const x of [p, q]) await x.call({ op: 'connect' });
  await p.call({ op: 'open', name: 'iso', create: { size: MiB, mode: 'mrmw', replicas: 1 } });
  await q.call({ op: 'open', name: 'iso' });
  await p.call({ op: 'map' });
  await q.call({ op: 'map' });
  await p.call({ op: 'write', offset: 0, hex: '11223344' });
  t.is((await q.call<{ hex: string }>({ op: 'read', offset: 0, length: 4 })).hex, '00000000');
  await p.call({ op: 'rollback' });
  t.is((await p.call<{ hex: string }>({ op: 'read', offset: 0, length: 4 })).hex, '00000000', 'rollback drops changes');
  await p.call({ op: 'write', offset: 0, hex: '55667788' });
  await p.call({ op: 'commit' });
  t.is((await q.call<{ hex: string }>({ op: 'read', offset: 0, length: 4 })).hex, '55667788');
});

test('a 64 MiB dataset filled on one node reads back exactly on another with random access', async (t) => {
  t.timeout(300_000);
  const { nodes } = await cluster(t, 3);
  const a = await startApp(t, node(nodes, 0).socket);
  const b = await startApp(t, node(nodes, 2).socket);
  await a.call({ op: 'connect' });
  await b.call({ op: 'connect' });
  await a.call({ op: 'open', name: 'big', create: { size: 64 * MiB, mode: 'mrmw', replicas: 1 } });
  await a.call({ op: 'map' });
  await a.call({ op: 'fill', offset: 0, length: 64 * MiB, seed: 7 });
  const r = await a.call<{ pages: number }>({ op: 'commit' });
  t.is(r.pages, 16384);
  await b.call({ op: 'open', name: 'big' });
  await b.call({ op: 'map' });
  const check = await b.call<{ badPages: number; pages: number }>({
    op: 'check',
    offset: 0,
    length: 64 * MiB,
    seed: 7,
  });
  t.is(check.pages, 16384);
  t.is(check.badPages, 0);
});

test('non-overlapping writes to one page from two nodes both land; overlapping ones abort and merge after redo', async (t) => {
  t.timeout(120_000);
  const { nodes } = await cluster(t, 2);
  const a = await startApp(t, node(nodes, 0).socket);
  const b = await startApp(t, node(nodes, 1).socket);
  for (const x of [a, b]) await x.call({ op: 'connect' });
  await a.call({ op: 'open', name: 'mw', create: { size: MiB, mode: 'mrmw', replicas: 1 } });
  await b.call({ op: 'open', name: 'mw' });
  for (const x of [a, b]) await x.call({ op: 'map' });
  // Both read the page first (so both hold the same base), then write disjoint bytes.
  for (const x of [a, b]) await x.call({ op: 'read', offset: 0, length: 16 });
  await a.call({ op: 'write', offset: 0, hex: 'aaaa' });
  await b.call({ op: 'write', offset: 8, hex: 'bbbb' });
  await a.call({ op: 'commit' });
  await b.call({ op: 'commit' });
  for (const x of [a, b]) {
    await x.call({ op: 'refresh' });
    t.is((await x.call<{ hex: string }>({ op: 'read', offset: 0, length: 10 })).hex, 'aaaa000000000000bbbb');
  }
  // Overlap: both change byte 100 from its committed value.
  await a.call({ op: 'write', offset: 100, hex: '01' });
  await b.call({ op: 'write', offset: 100, hex: '02' });
  await a.call({ op: 'commit' });
  const r = await b.attempt({ op: 'commit' });
  t.false(r.ok);
  if (!r.ok) {
    t.is(r.error.code, 'ABORTED');
    t.deepEqual(r.error.conflicts, [{ offset: 100, length: 1 }]);
  }
  t.is(
    (await a.call<{ hex: string }>({ op: 'read', offset: 100, length: 1 })).hex,
    '01',
    'nothing of the aborted commit applied',
  );
  await b.call({ op: 'rollback' });
  t.is((await b.call<{ hex: string }>({ op: 'read', offset: 100, length: 1 })).hex, '01');
  await b.call({ op: 'write', offset: 101, hex: '02' });
  await b.call({ op: 'commit' });
  await a.call({ op: 'refresh' });
  t.is((await a.call<{ hex: string }>({ op: 'read', offset: 100, length: 2 })).hex, '0102');
});

test('a commit with N=3 on 4 nodes puts the bytes in 3 pools, survives kill -9 of one, and a restarted node serves its pages', async (t) => {
  t.timeout(180_000);
  const { nodes, d, dir } = await cluster(t, 4);
  const a = await startApp(t, node(nodes, 0).socket);
  await a.call({ op: 'connect' });
  const info = await a.call<{ id: number }>({
    op: 'open',
    name: 'rep',
    create: { size: 16 * MiB, mode: 'mrmw', replicas: 3 },
  });
  await a.call({ op: 'map' });
  // Page 1024 = first page of chunk 1 (owned by node 2 with round-robin placement).
  const off = 4 * MiB;
  await a.call({ op: 'write', offset: off, hex: 'deadbeef' });
  const r = await a.call<{ copies: number }>({ op: 'commit', replicas: 3 });
  t.true(r.copies >= 3);
  const holders = [];
  for (const n of nodes) {
    // A node that has not loaded the dataset yet (it learns new datasets within 250 ms) holds no copy.
    const p = await dumpPage(n.address, info.id, off / 4096).catch((e: unknown) => {
      if (e instanceof HotpotError && e.code === 'NOT_FOUND') return null;
      throw e;
    });
    if (p && p.state !== 'absent' && p.data.subarray(0, 4).toString('hex') === 'deadbeef') holders.push(n);
  }
  t.true(holders.length >= 3, `copies on ${String(holders.length)} nodes`);
  // kill -9 one holder that is not the committer's node: the others keep their copies.
  const victim = holders.find((h) => h !== nodes[0]);
  if (!victim) throw new Error('no victim');
  victim.child.kill('SIGKILL');
  await victim.exited;
  for (const h of holders.filter((x) => x !== victim)) {
    const p = await dumpPage(h.address, info.id, off / 4096);
    t.is(p.data.subarray(0, 4).toString('hex'), 'deadbeef');
  }
  // Restart the victim on the same pool directory: it still holds and serves the page.
  const idx = nodes.indexOf(victim);
  const again = await startNode(t, {
    dispatcher: d.address,
    name: `n${String(idx + 1)}`,
    stateDir: join(dir, `n${String(idx + 1)}`),
    extra: ['--pool-dir', join('/dev/shm', `hotpot-test-${String(process.pid)}-${dir.slice(-6)}-n${String(idx + 1)}`)],
  });
  t.is(again.id, victim.id);
  const p = await dumpPage(again.address, info.id, off / 4096).catch((e: unknown) => {
    throw new Error(`${String(e)}\n${again.stderr.slice(-30).join('\n')}`);
  });
  t.is(p.data.subarray(0, 4).toString('hex'), 'deadbeef');
  const reader = await startApp(t, again.socket);
  await reader.call({ op: 'connect' });
  await reader.call({ op: 'open', name: 'rep' });
  await reader.call({ op: 'map' });
  t.is((await reader.call<{ hex: string }>({ op: 'read', offset: off, length: 4 })).hex, 'deadbeef');
});

test('a commit that cannot reach N live nodes fails and applies nothing', async (t) => {
  t.timeout(120_000);
  const { nodes } = await cluster(t, 2);
  const a = await startApp(t, node(nodes, 0).socket);
  await a.call({ op: 'connect' });
  await a.call({ op: 'open', name: 'few', create: { size: MiB, mode: 'mrmw', replicas: 1 } });
  await a.call({ op: 'map' });
  await a.call({ op: 'write', offset: 0, hex: '77' });
  const r = await a.attempt({ op: 'commit', replicas: 3 });
  t.false(r.ok);
  if (!r.ok) {
    t.is(r.error.code, 'FAILED_PRECONDITION');
    t.regex(r.error.message, /3/);
  }
  await a.call({ op: 'rollback' });
  t.is((await a.call<{ hex: string }>({ op: 'read', offset: 0, length: 1 })).hex, '00');
});

test('mapped memory handed to write(2) is faulted in by the daemon, and a dead daemon fails loudly', async (t) => {
  t.timeout(120_000);
  const { nodes, dir } = await cluster(t, 2);
  const w = await startApp(t, node(nodes, 1).socket);
  await w.call({ op: 'connect' });
  await w.call({ op: 'open', name: 'sys', create: { size: 8 * MiB, mode: 'mrmw', replicas: 1 } });
  await w.call({ op: 'map' });
  await w.call({ op: 'fill', offset: 0, length: 8 * MiB, seed: 3 });
  await w.call({ op: 'commit' });
  // The reader waits for its daemon to come back for 0.5 s only (not the default 15 s) before failing loudly.
  const r = await startApp(t, node(nodes, 0).socket, { HOTPOT_RECONNECT_WAIT_MS: '500' });
  await r.call({ op: 'connect' });
  await r.call({ op: 'open', name: 'sys' });
  await r.call({ op: 'map' });
  const direct = await w.call<{ sha256: string }>({ op: 'hash', offset: 0, length: 8 * MiB });
  const viaSyscall = await r.call<{ written: number; sha256: string }>({
    op: 'syscallWrite',
    offset: 0,
    length: 4 * MiB,
    path: join(dir, 'out.bin'),
  });
  t.is(viaSyscall.written, 4 * MiB);
  const expect = await w.call<{ sha256: string }>({ op: 'hash', offset: 0, length: 4 * MiB });
  t.is(viaSyscall.sha256, expect.sha256);
  t.truthy(direct.sha256);
  // Kill the reader's node daemon: touching a page it never fetched must not read zeros.
  node(nodes, 0).child.kill('SIGKILL');
  await node(nodes, 0).exited;
  // The app dies of SIGBUS before it can answer (the attempt rejects when it exits).
  const res = await r.attempt({ op: 'read', offset: 6 * MiB, length: 16 }).catch(() => null);
  t.is(res, null, 'no answer, in particular no zeros');
  const ex = await r.exited;
  t.is(ex.signal, 'SIGBUS');
});

/** CRC32C (Castagnoli), the frame checksum (native/src/common/crc32c.h). */
function crc32c(buf: Buffer): number {
  let c = 0xffffffff;
  for (const byte of buf) {
    c ^= byte;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

/** A data-plane frame (native/src/wire/frame.h): 64-byte little-endian header, then the payload. */
function frame(type: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(64);
  h.write('HPOT', 0, 'latin1');
  h.writeUInt16LE(1, 4); // version
  h.writeUInt16LE(type, 6);
  h.writeUInt32LE(payload.length, 8);
  h.writeUInt32LE(crc32c(payload), 12);
  h.writeBigUInt64LE(1n, 16); // request id
  return Buffer.concat([h, payload]);
}

test('a holder of the cluster secret without a node certificate is refused on the data plane; a malformed frame closes only that connection', async (t) => {
  t.timeout(120_000);
  const { nodes } = await cluster(t, 1);
  const a = await startApp(t, node(nodes, 0).socket);
  await a.call({ op: 'connect' });
  await a.call({ op: 'open', name: 'sec', create: { size: 4 * MiB, mode: 'mrmw', replicas: 1 } });
  await a.call({ op: 'map' });
  await a.call({ op: 'write', offset: 0, hex: '5ec12e75' });
  await a.call({ op: 'commit' });
  // Malformed frames on the data port: the server closes that connection, keeps serving.
  const [host, port] = node(nodes, 0).data.split(':');
  const closed = await new Promise<boolean>((resolve) => {
    const s = netConnect(Number(port), host, () => {
      s.write(Buffer.alloc(64, 0x41));
    });
    s.on('close', () => resolve(true));
    s.on('error', () => undefined);
    setTimeout(() => resolve(false), 10_000).unref();
  });
  t.true(closed, 'server closed the malformed connection');
  const again = await startApp(t, node(nodes, 0).socket);
  await again.call({ op: 'connect' });
  await again.call({ op: 'open', name: 'sec' });
  await again.call({ op: 'map' });
  t.is((await again.call<{ hex: string }>({ op: 'read', offset: 0, length: 4 })).hex, '5ec12e75');
  // The cluster-secret handshake (what a node with --insecure speaks, and what any holder of the secret could):
  // a node with certificates answers its HELLO with UNAUTHENTICATED, saying why, and closes.
  const answer = await new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = netConnect(Number(port), host, () => {
      const hello = Buffer.alloc(36);
      hello.writeUInt32LE(2, 0); // "I am node 2"
      randomFillSync(hello, 4);
      s.write(frame(1, hello));
    });
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('close', () => {
      resolve(Buffer.concat(chunks));
    });
    s.on('error', reject);
    setTimeout(() => {
      reject(new Error('no answer to HELLO'));
    }, 10_000).unref();
  });
  t.true(answer.length > 64, 'an answer, then the close');
  t.is(answer.readUInt32LE(24) & 2, 2, 'an error response');
  t.is(answer.readUInt32LE(28) & 0xff, 16, 'UNAUTHENTICATED');
  t.regex(answer.subarray(64).toString(), /authenticates the data plane with certificates/);
  // The node keeps serving its peers and apps.
  t.is((await again.call<{ hex: string }>({ op: 'read', offset: 0, length: 4 })).hex, '5ec12e75');
});

// The gRPC Data session's private pages over a fake engine: no native addon, no network.
import * as grpc from '@grpc/grpc-js';
import test from 'ava';
import { RpcError } from '../../services/common/errors.ts';
import { Overlay, type OverlayEngine, PrivateBudget } from '../../services/node/data/overlay.ts';
import { PAGE_SIZE } from '../../services/common/page.ts';
import type { EngineCommitResult, EngineDirtyPage, EngineReadRange } from '../../native/index.ts';

/** Pages filled with one byte value each; absent ones are zeros. */
const filled = (v: number): Buffer => Buffer.alloc(PAGE_SIZE, v);

/**
 * One engine session as the overlay sees it: `committed` is the node's latest committed state, `base` the pages
 * as of the session's sync point (copied from `committed` at each resync). Base images of pages not made present
 * first throw, as the engine does.
 */
class FakeEngine implements OverlayEngine {
  committed = new Map<number, Buffer>();
  base = new Map<number, Buffer>();
  present = new Set<number>();
  commits: { pages: EngineDirtyPage[]; replicas: number; reads: EngineReadRange[]; lease: Buffer | null }[] = [];
  readCommittedCalls: [number, number][] = [];
  resyncs = 0;
  refuseCommit = false;

  constructor(pages: Record<number, number>) {
    for (const [p, v] of Object.entries(pages)) this.committed.set(Number(p), filled(v));
    this.resync();
    this.resyncs = 0;
  }

  ensurePages(first: number, count: number): Promise<void> {
    for (let p = first; p < first + count; p++) this.present.add(p);
    return Promise.resolve();
  }

  baseImage(first: number, count: number): Buffer {
    const out: Buffer[] = [];
    for (let p = first; p < first + count; p++) {
      if (!this.present.has(p)) throw new Error(`page ${String(p)} not present`);
      out.push(this.base.get(p) ?? filled(0));
    }
    return Buffer.concat(out);
  }

  readCommitted(first: number, count: number): Promise<Buffer> {
    this.readCommittedCalls.push([first, count]);
    const out: Buffer[] = [];
    for (let p = first; p < first + count; p++) out.push(this.committed.get(p) ?? filled(0));
    return Promise.resolve(Buffer.concat(out));
  }

  commit(
    pages: EngineDirtyPage[],
    replicas: number,
    reads: EngineReadRange[],
    lease: Buffer | null,
  ): Promise<EngineCommitResult> {
    this.commits.push({
      pages: pages.map((d) => ({ page: d.page, data: Buffer.from(d.data) })),
      replicas,
      reads,
      lease,
    });
    if (this.refuseCommit) return Promise.reject(new Error('conflict'));
    for (const d of pages) this.committed.set(d.page, Buffer.from(d.data));
    this.resync();
    return Promise.resolve({
      copies: 1,
      replicas: 1,
      underReplicated: false,
      pages: pages.length,
      ranges: pages.length,
      bytes: pages.length * PAGE_SIZE,
    });
  }

  resync(): void {
    this.resyncs++;
    this.base = new Map([...this.committed].map(([p, b]) => [p, Buffer.from(b)]));
  }
}

test('a first write copies the base image into a private page; reads show it over base images', async (t) => {
  const engine = new FakeEngine({ 0: 0x11, 1: 0x22 });
  const o = new Overlay(engine, 1 << 20);
  await o.write(10, Buffer.from('abcd'));
  t.is(o.size, 1);
  const got = await o.read(0, 2 * PAGE_SIZE);
  const want = Buffer.concat([filled(0x11), filled(0x22)]);
  want.write('abcd', 10);
  t.deepEqual(got, want, 'private bytes over the base image of page 0; page 1 is its base image');
  t.deepEqual(engine.base.get(0), filled(0x11), 'the write stayed private');
  // A second write to the page changes the same private copy.
  await o.write(12, Buffer.from('ZZ'));
  t.is(o.size, 1);
  t.is((await o.read(8, 8)).toString('latin1'), '\x11\x11abZZ\x11\x11');
});

test('a write across a page boundary makes a private copy of each page it touches', async (t) => {
  const engine = new FakeEngine({ 2: 0x33 });
  const o = new Overlay(engine, 1 << 20);
  await o.write(2 * PAGE_SIZE - 1, Buffer.from('xy'));
  t.is(o.size, 2);
  const got = await o.read(2 * PAGE_SIZE - 2, 4);
  t.deepEqual(got, Buffer.from([0, 'x'.charCodeAt(0), 'y'.charCodeAt(0), 0x33]));
});

test('a snapshot read lays private pages over one readCommitted of the whole span, not over base images', async (t) => {
  const engine = new FakeEngine({ 0: 1, 1: 1, 2: 1 });
  const o = new Overlay(engine, 1 << 20);
  await o.write(PAGE_SIZE, Buffer.from([9]));
  engine.committed.set(0, filled(7)); // a newer commit the sync point does not show
  engine.committed.set(2, filled(8));
  const snap = await o.readSnapshot(PAGE_SIZE - 1, PAGE_SIZE + 2);
  t.deepEqual(snap, Buffer.concat([Buffer.from([7, 9]), filled(1).subarray(0, PAGE_SIZE - 1), Buffer.from([8])]));
  t.deepEqual(engine.readCommittedCalls, [[0, 3]], 'one call for every page of the span');
  t.deepEqual(await o.read(0, 1), Buffer.from([1]), 'a plain read still shows the sync point');
  engine.readCommittedCalls = [];
  t.deepEqual(await o.readSnapshot(PAGE_SIZE, 1), Buffer.from([9]));
  t.deepEqual(engine.readCommittedCalls, [], 'a span of private pages only needs no engine read');
});

test('a commit hands the engine exactly the private pages in page order, then holds none', async (t) => {
  const engine = new FakeEngine({ 5: 0x55 });
  const o = new Overlay(engine, 1 << 20);
  await o.write(5 * PAGE_SIZE + 1, Buffer.from([1]));
  await o.write(0, Buffer.from([2]));
  await o.write(5 * PAGE_SIZE + 2, Buffer.from([3]));
  await o.read(0, 8 * PAGE_SIZE); // reads make no private pages
  const lease = Buffer.from('cert');
  const r = await o.commit({ replicas: 2, reads: [{ offset: 0, len: 1 }], lease });
  t.is(r.pages, 2);
  t.is(o.size, 0);
  const [c] = engine.commits;
  t.deepEqual(
    c?.pages.map((d) => d.page),
    [0, 5],
  );
  const page5 = filled(0x55);
  page5[1] = 1;
  page5[2] = 3;
  t.deepEqual(c?.pages[1]?.data, page5, 'the whole private copy: base image plus the written bytes');
  t.is(c?.replicas, 2);
  t.deepEqual(c?.reads, [{ offset: 0, len: 1 }]);
  t.is(c?.lease, lease);
  t.deepEqual(await o.read(5 * PAGE_SIZE, 3), Buffer.from([0x55, 1, 3]), 'reads show the committed bytes');
});

test('a refused commit keeps the private pages', async (t) => {
  const engine = new FakeEngine({});
  const o = new Overlay(engine, 1 << 20);
  await o.write(100, Buffer.from([4]));
  engine.refuseCommit = true;
  await t.throwsAsync(o.commit({ replicas: 0, reads: [], lease: null }), { message: 'conflict' });
  t.is(o.size, 1);
  t.deepEqual(await o.read(100, 1), Buffer.from([4]));
  engine.refuseCommit = false;
  await o.commit({ replicas: 0, reads: [], lease: null });
  t.deepEqual(
    engine.commits[1]?.pages.map((d) => d.page),
    [0],
  );
});

test('rollback drops every private page and moves the sync point', async (t) => {
  const engine = new FakeEngine({ 0: 1 });
  const o = new Overlay(engine, 1 << 20);
  await o.write(0, Buffer.from([9]));
  await o.write(3 * PAGE_SIZE, Buffer.from([9]));
  engine.committed.set(0, filled(2)); // another session's commit
  t.is(o.rollback(), 2);
  t.is(o.size, 0);
  t.is(engine.resyncs, 1);
  t.deepEqual(await o.read(0, 1), Buffer.from([2]), 'reads show the latest commit after the rollback');
  await o.commit({ replicas: 0, reads: [], lease: null });
  t.deepEqual(engine.commits[0]?.pages, [], 'nothing left to commit');
});

test('refresh drops pages equal to their base image and moves the sync point only when none is left', async (t) => {
  const engine = new FakeEngine({ 0: 1 });
  const o = new Overlay(engine, 1 << 20);
  await o.write(0, Buffer.from([1])); // the same byte: no change
  await o.write(PAGE_SIZE, Buffer.from([5]));
  t.deepEqual(o.refresh(), { pagesKept: 1, pagesDropped: 1 });
  t.is(engine.resyncs, 0, 'a kept change keeps the sync point it is diffed against');
  o.rollback();
  await o.write(0, Buffer.from([1]));
  t.deepEqual(o.refresh(), { pagesKept: 0, pagesDropped: 1 });
  t.is(engine.resyncs, 2);
});

test('a write past the private-byte limit is refused with RESOURCE_EXHAUSTED and writes nothing', async (t) => {
  const engine = new FakeEngine({});
  const o = new Overlay(engine, 2 * PAGE_SIZE);
  await o.write(0, Buffer.alloc(PAGE_SIZE + 1, 1)); // two pages
  const e = await t.throwsAsync(o.write(PAGE_SIZE * 2 - 1, Buffer.from([7, 7])), { instanceOf: RpcError });
  t.is(e?.code, grpc.status.RESOURCE_EXHAUSTED);
  t.regex(e?.message ?? '', /more than 8192 private bytes: commit or roll back first/);
  t.is(o.size, 2);
  t.deepEqual(
    await o.read(PAGE_SIZE * 2 - 1, 1),
    Buffer.from([0]),
    'the part inside held pages was not written either',
  );
  await o.write(PAGE_SIZE, Buffer.from([3])); // pages already held cost nothing more
  t.deepEqual(await o.read(PAGE_SIZE, 1), Buffer.from([3]));
  t.is(o.drop(), 2);
  await o.write(5 * PAGE_SIZE, Buffer.from([1]));
  t.is(o.size, 1, 'dropped pages free the budget');
});

test("the node's sessions share one private-byte budget: past it a write is refused, and what they drop frees it", async (t) => {
  const budget = new PrivateBudget(3 * PAGE_SIZE);
  const a = new Overlay(new FakeEngine({}), 2 * PAGE_SIZE, budget);
  const b = new Overlay(new FakeEngine({}), 2 * PAGE_SIZE, budget);
  await a.write(0, Buffer.alloc(2 * PAGE_SIZE, 1));
  await b.write(0, Buffer.from([2]));
  t.is(budget.bytes, 3 * PAGE_SIZE);
  // Within b's own cap, past the node's.
  const e = await t.throwsAsync(b.write(PAGE_SIZE, Buffer.from([2])), { instanceOf: RpcError });
  t.is(e?.code, grpc.status.RESOURCE_EXHAUSTED);
  t.regex(e?.message ?? '', /sessions would hold more than 12288 private bytes together/);
  t.is(b.size, 1);
  // A commit, a rollback, a refresh and a close each give their pages back.
  await a.commit({ replicas: 0, reads: [], lease: null });
  t.is(budget.bytes, PAGE_SIZE);
  await b.write(PAGE_SIZE, Buffer.from([2]));
  t.is(b.rollback(), 2);
  t.is(budget.bytes, 0);
  await a.write(5 * PAGE_SIZE, Buffer.from([0])); // equal to its base image: refresh drops it
  t.is(budget.bytes, PAGE_SIZE);
  a.refresh();
  t.is(budget.bytes, 0);
  await b.write(0, Buffer.alloc(PAGE_SIZE, 9));
  t.is(b.drop(), 1);
  t.is(budget.bytes, 0);
});

test('a write that fails part way keeps in the budget only the pages it made private', async (t) => {
  const budget = new PrivateBudget(100 * PAGE_SIZE);
  const engine = new FakeEngine({});
  engine.ensurePages = (first: number, count: number) => {
    if (first >= 2) return Promise.reject(new Error('owner down'));
    for (let p = first; p < first + count; p++) engine.present.add(p);
    return Promise.resolve();
  };
  const o = new Overlay(engine, 100 * PAGE_SIZE, budget);
  await o.write(PAGE_SIZE, Buffer.from([1])); // page 1 private: the next write reads pages 0, then 2-3 apart
  await t.throwsAsync(o.write(0, Buffer.alloc(4 * PAGE_SIZE, 1)), { message: 'owner down' });
  t.is(o.size, 2, 'page 0 was made private before pages 2-3 failed');
  t.is(budget.bytes, 2 * PAGE_SIZE);
});

test("a caller's budget takes from the node's too: one caller past its own cap is refused while another still writes", async (t) => {
  const node = new PrivateBudget(4 * PAGE_SIZE);
  const alice = new PrivateBudget(2 * PAGE_SIZE, "this caller's sessions on this node", node);
  const bob = new PrivateBudget(3 * PAGE_SIZE, "this caller's sessions on this node", node);
  const a1 = new Overlay(new FakeEngine({}), 2 * PAGE_SIZE, alice);
  const a2 = new Overlay(new FakeEngine({}), 2 * PAGE_SIZE, alice);
  const b1 = new Overlay(new FakeEngine({}), 4 * PAGE_SIZE, bob);
  await a1.write(0, Buffer.alloc(2 * PAGE_SIZE, 1));
  // Within the session's cap and the node's, past Alice's: refused, naming the caller's cap; nothing taken.
  const e = await t.throwsAsync(a2.write(0, Buffer.from([1])), { instanceOf: RpcError });
  t.is(e?.code, grpc.status.RESOURCE_EXHAUSTED);
  t.regex(e?.message ?? '', /this caller's sessions on this node would hold more than 8192 private bytes/);
  t.is(node.bytes, 2 * PAGE_SIZE);
  await b1.write(0, Buffer.alloc(2 * PAGE_SIZE, 2));
  t.is(node.bytes, 4 * PAGE_SIZE);
  // Bob is within his own cap but the node is full: the node's cap is named.
  const full = await t.throwsAsync(b1.write(3 * PAGE_SIZE, Buffer.from([2])), { instanceOf: RpcError });
  t.regex(full?.message ?? '', /this node's sessions would hold more than 16384/);
  t.is(bob.bytes, 2 * PAGE_SIZE);
  t.is(a1.drop(), 2);
  t.deepEqual([alice.bytes, node.bytes], [0, 2 * PAGE_SIZE]);
  await a2.write(0, Buffer.from([1]));
  t.deepEqual([alice.bytes, bob.bytes, node.bytes], [PAGE_SIZE, 2 * PAGE_SIZE, 3 * PAGE_SIZE]);
});

// Named barriers at the dispatcher (services/dispatcher/barrier.ts): rounds, generations, and the memory they keep.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { Barriers } from '../../services/dispatcher/barrier.ts';
import { LmdbStore } from '../../services/dispatcher/store-lmdb.ts';

async function barriers(t: ExecutionContext, maxIdle?: number): Promise<Barriers> {
  const dir = mkdtempSync(join(tmpdir(), 'hotpot-barrier-'));
  const store = new LmdbStore(dir);
  const b = new Barriers(store, maxIdle);
  await b.init();
  t.teardown(async () => {
    b.stop();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return b;
}

test('a round completes when every party arrived; the name is reusable with the next generation', async (t) => {
  const b = await barriers(t);
  const first = [b.arrive('x', 2, 1000), b.arrive('x', 2, 1000)];
  t.deepEqual(
    (await Promise.all(first)).map((r) => r.generation),
    [0, 0],
  );
  const second = await Promise.all([b.arrive('x', 2, 1000), b.arrive('x', 2, 1000)]);
  t.deepEqual(
    second.map((r) => [r.generation, r.arrival]),
    [
      [1, 0],
      [1, 1],
    ],
  );
});

test('completed names are remembered up to the cap, least recently completed forgotten first', async (t) => {
  const b = await barriers(t, 20);
  for (let i = 0; i < 300; i++) await b.arrive(`n${String(i)}`, 1, 1000);
  await b.settled();
  t.is(b.size, 20, 'only the last 20 completed names are kept');
  t.is(b.storedArrivals, 20, 'a forgotten name leaves no arrival in the store');
  // A kept name goes on counting; a forgotten one starts again at generation 0.
  t.is((await b.arrive('n299', 1, 1000)).generation, 1);
  t.is((await b.arrive('n0', 1, 1000)).generation, 0);
  // A name with callers waiting is never dropped to make room.
  const waiting = b.arrive('held', 2, 5000);
  for (let i = 0; i < 100; i++) await b.arrive(`m${String(i)}`, 1, 1000);
  const other = b.arrive('held', 2, 5000);
  t.deepEqual(
    (await Promise.all([waiting, other])).map((r) => r.arrival),
    [0, 1],
  );
  t.true(b.size <= 21);
});

test('a round that timed out leaves nothing behind for a name never completed', async (t) => {
  const b = await barriers(t);
  await t.throwsAsync(b.arrive('late', 2, 20), { message: /only 1 of 2 parties arrived within 20 ms/ });
  t.is(b.size, 0);
  t.is(b.storedArrivals, 0);
});

test('a barrier name belongs to its dataset: the same name on two datasets is two barriers', async (t) => {
  const b = await barriers(t);
  const one = { id: 1, name: 'one' };
  const two = { id: 2, name: 'two' };
  const apart = await Promise.allSettled([b.arrive('meet', 2, 50, one), b.arrive('meet', 2, 50, two)]);
  t.deepEqual(
    apart.map((r) => r.status),
    ['rejected', 'rejected'],
  );
  t.regex(apart[0]?.status === 'rejected' ? String(apart[0].reason) : '', /barrier "meet" of dataset "one"/);
  const together = await Promise.all([b.arrive('meet', 2, 1000, two), b.arrive('meet', 2, 1000, two)]);
  t.deepEqual(
    together.map((r) => r.generation),
    [0, 0],
  );
});

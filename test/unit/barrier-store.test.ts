// Barriers kept in the dispatcher's store (services/dispatcher/barrier.ts): a restarted dispatcher (or a standby that
// took over) continues open rounds, and a caller's request id makes its arrival idempotent.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import test, { type ExecutionContext } from 'ava';
import { RpcError } from '../../services/common/errors.ts';
import {
  arrivalKey,
  barrierKey,
  Barriers,
  parseArrivalKey,
  restoreBarriers,
  type ArrivalRecord,
  type BarrierRecord,
} from '../../services/dispatcher/barrier.ts';
import { LmdbStore } from '../../services/dispatcher/store-lmdb.ts';

/** A dispatcher's barriers on a store in `dir`, closed at teardown (or earlier by `restart`). */
async function open(t: ExecutionContext, dir: string): Promise<{ b: Barriers; close: () => Promise<void> }> {
  const store = new LmdbStore(dir);
  const b = new Barriers(store);
  await b.init();
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    b.stop();
    await store.close();
  };
  t.teardown(close);
  return { b, close };
}

async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 5));
}

function tempDir(t: ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'hotpot-barrier-'));
  t.teardown(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

test('arrival keys name their barrier, generation and sequence; a name never contains the separator', (t) => {
  const k = arrivalKey(barrierKey('step/1:a', 7), 3, 12);
  t.is(k, '7:step/1:a#3#12');
  t.deepEqual(parseArrivalKey(k), { barrier: '7:step/1:a', generation: 3, seq: 12 });
  t.is(parseArrivalKey('7:x#3'), null);
  t.is(parseArrivalKey('#1#2'), null);
});

test('restoring the store continues the open round and ranks the last round as it was answered', (t) => {
  const key = barrierKey('x', 1);
  const record: BarrierRecord = {
    name: 'x',
    dataset: 'd',
    generation: 5,
    parties: 3,
    last: { generation: 4, parties: 2 },
    restedUnixMs: 1,
  };
  const a = (requestId: string): ArrivalRecord => ({ requestId, deadlineUnixMs: 10, timeoutMs: 5 });
  const { states, garbage } = restoreBarriers(
    [[key, record]],
    [
      [arrivalKey(key, 5, 4), a('late')],
      [arrivalKey(key, 5, 2), a('early')],
      // The last round: seq 1 timed out before it completed (removed), so seq 3 was answered arrival 1.
      [arrivalKey(key, 4, 3), a('second')],
      [arrivalKey(key, 4, 0), a('first')],
      // Left by a crash: the round before the last, and a name no longer remembered.
      [arrivalKey(key, 3, 0), a('old')],
      [arrivalKey(barrierKey('gone', 1), 0, 0), a('orphan')],
      ['not an arrival key', a('junk')],
    ],
  );
  const s = states.get(key);
  t.truthy(s);
  t.deepEqual(
    s?.open.map((o) => o.requestId),
    ['early', 'late'],
  );
  t.is(s?.nextSeq, 5);
  t.deepEqual(
    [...(s?.lastArrivals ?? [])],
    [
      ['first', 0],
      ['second', 1],
    ],
  );
  t.deepEqual(
    garbage.sort(),
    [arrivalKey(key, 3, 0), arrivalKey(barrierKey('gone', 1), 0, 0), 'not an arrival key'].sort(),
  );
});

test('a restarted dispatcher continues an open round, and the first caller sent again gets its own answer', async (t) => {
  const dir = tempDir(t);
  let d = await open(t, dir);
  const first = d.b.arrive('step', 2, 30_000, { id: 1, name: 'd' }, 'caller-a');
  // Its caller sees its call break (UNAVAILABLE) once the arrival is durable and the dispatcher goes.
  const broken = t.throwsAsync(first, { instanceOf: RpcError });
  await until(() => d.b.storedArrivals === 1);
  await d.b.settled();
  await d.close();
  t.is((await broken)?.code, grpc.status.UNAVAILABLE);
  d = await open(t, dir);
  const second = await d.b.arrive('step', 2, 30_000, { id: 1, name: 'd' }, 'caller-b');
  t.deepEqual(second, { generation: 0, arrival: 1 }, 'the round had the first caller already');
  t.deepEqual(await d.b.arrive('step', 2, 30_000, { id: 1, name: 'd' }, 'caller-a'), { generation: 0, arrival: 0 });
  // Still the round after a second restart; the name's next round is generation 1.
  await d.close();
  d = await open(t, dir);
  t.deepEqual(await d.b.arrive('step', 2, 30_000, { id: 1, name: 'd' }, 'caller-b'), { generation: 0, arrival: 1 });
  const next = await Promise.all([
    d.b.arrive('step', 2, 30_000, { id: 1, name: 'd' }, 'caller-a2'),
    d.b.arrive('step', 2, 30_000, { id: 1, name: 'd' }, 'caller-b2'),
  ]);
  t.deepEqual(
    next.map((r) => r.generation),
    [1, 1],
  );
});

test('the same request id sent again while its round is open joins its arrival instead of counting twice', async (t) => {
  const { b } = await open(t, tempDir(t));
  const a1 = b.arrive('x', 2, 30_000, undefined, 'a');
  const a2 = b.arrive('x', 2, 30_000, undefined, 'a');
  await until(() => b.storedArrivals === 1);
  const other = await b.arrive('x', 2, 30_000, undefined, 'b');
  t.deepEqual(other, { generation: 0, arrival: 1 });
  t.deepEqual(await a1, { generation: 0, arrival: 0 });
  t.deepEqual(await a2, { generation: 0, arrival: 0 });
  // A retry saying other parties than its round had is another call, not a retry.
  await t.throwsAsync(b.arrive('x', 3, 30_000, undefined, 'a'), { message: /request_id a arrived .* with 2 parties/ });
});

test('the store keeps the arrivals of the open and the last completed round only', async (t) => {
  const { b } = await open(t, tempDir(t));
  for (let round = 0; round < 4; round++) {
    const all = await Promise.all(
      ['p', 'q', 'r'].map((p) => b.arrive('loop', 3, 30_000, undefined, `${p}${String(round)}`)),
    );
    t.deepEqual(new Set(all.map((r) => r.generation)), new Set([round]));
  }
  t.is(b.storedArrivals, 3);
  // The last round's ids are answered; the ones before are not remembered (such an id arrives anew).
  t.deepEqual(await b.arrive('loop', 3, 30_000, undefined, 'q3'), { generation: 3, arrival: 1 });
  await t.throwsAsync(b.arrive('loop', 3, 20, undefined, 'q2'), { message: /only 1 of 3 parties arrived/ });
  t.is(b.storedArrivals, 3);
});

test('an arrival that timed out is gone from the store, and its id sent again arrives anew', async (t) => {
  const dir = tempDir(t);
  let d = await open(t, dir);
  await Promise.all([d.b.arrive('x', 2, 1000, undefined, 'a'), d.b.arrive('x', 2, 1000, undefined, 'b')]);
  await t.throwsAsync(d.b.arrive('x', 2, 20, undefined, 'c'), { message: /only 1 of 2 parties arrived/ });
  t.is(d.b.storedArrivals, 2, 'only the completed round is left');
  await d.close();
  d = await open(t, dir);
  const again = await Promise.all([d.b.arrive('x', 2, 5000, undefined, 'c'), d.b.arrive('x', 2, 5000)]);
  t.deepEqual(again, [
    { generation: 1, arrival: 0 },
    { generation: 1, arrival: 1 },
  ]);
});

test('a request id is at most 128 printable ASCII characters', async (t) => {
  const { b } = await open(t, tempDir(t));
  t.throws(() => b.arrive('x', 1, 1000, undefined, 'x'.repeat(129)), { message: /request_id must be at most 128/ });
  t.throws(() => b.arrive('x', 1, 1000, undefined, 'a b'), { message: /printable ASCII/ });
  t.deepEqual(await b.arrive('x', 1, 1000, undefined, '~'.repeat(128)), { generation: 0, arrival: 0 });
});

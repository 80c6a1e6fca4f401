// retryLostAnswers: an idempotent call is sent again only while its answer may have been lost (UNAVAILABLE,
// DEADLINE_EXCEEDED, by name or by gRPC status number), within its time budget.
import * as grpc from '@grpc/grpc-js';
import test from 'ava';
import { HotpotError, RpcError } from '../../services/common/errors.ts';
import { retryLostAnswers } from '../../services/common/rpc.ts';

/** A clock that the sleeps move, so the test runs at once. */
function fakeTime(): { now: () => number; sleep: (ms: number) => Promise<void>; slept: number[] } {
  let t = 1_000_000;
  const slept: number[] = [];
  return {
    now: () => t,
    sleep: (ms) => {
      slept.push(ms);
      t += ms;
      return Promise.resolve();
    },
    slept,
  };
}

test('retries lost answers until one comes, backing off 100 ms doubling to 1 s', async (t) => {
  const clock = fakeTime();
  const errors = [
    new HotpotError('UNAVAILABLE', 'dispatcher restarting'),
    new RpcError(grpc.status.DEADLINE_EXCEEDED, 'no answer'),
    new HotpotError('UNAVAILABLE', 'x'),
    new HotpotError('UNAVAILABLE', 'x'),
    new HotpotError('UNAVAILABLE', 'x'),
    new HotpotError('UNAVAILABLE', 'x'),
  ];
  const budgets: number[] = [];
  const r = await retryLostAnswers(
    (remaining) => {
      budgets.push(remaining);
      const e = errors.shift();
      return e ? Promise.reject(e) : Promise.resolve('granted');
    },
    clock.now() + 10_000,
    clock.sleep,
    clock.now,
  );
  t.is(r, 'granted');
  t.deepEqual(clock.slept, [100, 200, 400, 800, 1000, 1000]);
  t.is(budgets[0], 10_000);
  t.is(budgets.at(-1), 10_000 - 3500);
});

test('a refusal is thrown at once, and the last lost answer once the budget is spent', async (t) => {
  const clock = fakeTime();
  let calls = 0;
  const refused = await t.throwsAsync(
    retryLostAnswers(
      () => {
        calls++;
        return Promise.reject(new RpcError(grpc.status.ABORTED, 'held by lease L'));
      },
      clock.now() + 10_000,
      clock.sleep,
      clock.now,
    ),
  );
  t.is(calls, 1);
  t.regex(refused.message, /held by lease/);

  calls = 0;
  const lost = await t.throwsAsync(
    retryLostAnswers(
      () => {
        calls++;
        return Promise.reject(new HotpotError('UNAVAILABLE', `attempt ${String(calls)}`));
      },
      clock.now() + 1000,
      clock.sleep,
      clock.now,
    ),
  );
  // 100 + 200 + 400 = 700 ms slept; the next pause (800 ms) would pass the budget.
  t.is(calls, 4);
  t.is(lost.message, 'attempt 4');
});

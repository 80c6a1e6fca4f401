// Assertions on typed errors (HotpotError), shared by the integration tests.
import type { ExecutionContext } from 'ava';
import { HotpotError } from '../../services/common/errors.ts';

/** `p` rejects with a HotpotError of `code` whose message matches `re`. */
export async function expectCode(
  t: ExecutionContext,
  p: Promise<unknown>,
  code: HotpotError['code'],
  re: RegExp,
): Promise<void> {
  const e: unknown = await t.throwsAsync(p);
  if (!(e instanceof HotpotError)) throw new Error(`expected a HotpotError, got ${String(e)}`);
  t.is(e.code, code, e.message);
  t.regex(e.message, re);
}

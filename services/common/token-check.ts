// The check of the bearer tokens a node's (or a standby dispatcher's) gRPC clients present: asked of the leading
// dispatcher (which keeps the tokens), answers cached briefly so a busy client costs the dispatcher one check per
// token every few seconds. A revoked token stops working here within TOKEN_CACHE_MS.
import { createHash } from 'node:crypto';
import { tokenPrincipal, type Principal } from './authz.ts';
import { HotpotError } from './errors.ts';
import type { DispatcherClient } from './proto.ts';
import { unary } from './rpc.ts';
import type { CheckTokenResponse__Output } from '../generated/hotpot/v1/CheckTokenResponse.ts';

export const TOKEN_CACHE_MS = 10_000;
/** A refused token is remembered this long (a client retrying a bad token does not hammer the dispatcher). */
const REFUSED_CACHE_MS = 2_000;
const MAX_CACHED = 4096;

export class TokenChecker {
  private readonly cache = new Map<string, { p: Principal | null; until: number }>();

  constructor(private readonly dispatcher: () => DispatcherClient | null) {}

  async check(token: string): Promise<Principal | null> {
    // Keyed by a hash: the cache never holds a token itself.
    const key = createHash('sha256').update(token).digest('base64');
    const now = Date.now();
    const hit = this.cache.get(key);
    if (hit && hit.until > now) return hit.p;
    const c = this.dispatcher();
    if (!c) throw new HotpotError('UNAVAILABLE', 'the node has not joined the cluster yet');
    let p: Principal | null;
    try {
      const r = await unary<CheckTokenResponse__Output>((o, cb) => c.CheckToken({ token }, o, cb), 3000);
      p = tokenPrincipal(r.info);
    } catch (e) {
      if (!(e instanceof HotpotError && e.code === 'UNAUTHENTICATED')) throw e;
      p = null;
    }
    if (this.cache.size >= MAX_CACHED) this.cache.clear();
    this.cache.set(key, { p, until: now + (p ? TOKEN_CACHE_MS : REFUSED_CACHE_MS) });
    return p;
  }
}

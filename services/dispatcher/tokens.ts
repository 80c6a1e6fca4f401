// Bearer tokens for remote clients without a certificate (docs/security.md): `hotpot token create` makes one,
// the dispatcher keeps only its SHA-256 (durably, in its store), `hotpot token revoke` removes it. A token is
// "hpt_<id>.<secret>": the id is public (listing, revoking), the secret is 32 random bytes.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { HotpotError, invalidArgument, notFound } from '../common/errors.ts';
import type { DispatcherStore, Table } from './store.ts';

export type TokenRole = 'admin' | 'user';

export interface TokenInfo {
  id: string;
  user: string;
  role: TokenRole;
  uid: number;
  gid: number;
  createdUnixMs: number;
  /** 0: never. */
  expiresUnixMs: number;
}

interface TokenRecord extends TokenInfo {
  /** hex SHA-256 of the secret part. */
  hash: string;
}

const USER = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/;
const TOKEN = /^hpt_([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$/;
/** Tokens kept at most (a bound on the store an admin's mistake can fill). */
/** The store table of bearer tokens (migrate.ts copies every table by name). */
export const TOKENS_TABLE = 'tokens';
export const MAX_TOKENS = 10_000;

const sha256 = (s: string): Buffer => createHash('sha256').update(s).digest();

/** The id of a well-formed token, else null (no lookup: for logs and caches). */
export function tokenId(token: string): string | null {
  return TOKEN.exec(token)?.[1] ?? null;
}

export class Tokens {
  private readonly db: Table<TokenRecord>;

  constructor(private readonly store: DispatcherStore) {
    this.db = store.table<TokenRecord>(TOKENS_TABLE);
  }

  async create(req: { user: string; role: string; uid: number; gid: number; ttlMs: number }): Promise<{
    token: string;
    info: TokenInfo;
  }> {
    if (!USER.test(req.user))
      throw invalidArgument('user must be 1-128 of A-Z a-z 0-9 . _ @ - (not starting with . _ @ -)');
    if (req.role !== 'admin' && req.role !== 'user') throw invalidArgument('role must be "admin" or "user"');
    for (const [k, v] of [
      ['uid', req.uid],
      ['gid', req.gid],
    ] as const) {
      if (!Number.isInteger(v) || v < 0 || v > 0xfffffffe) throw invalidArgument(`${k} must be 0..4294967294`);
    }
    if (!Number.isSafeInteger(req.ttlMs) || req.ttlMs < 0 || req.ttlMs > 10 * 365 * 86_400_000) {
      throw invalidArgument('ttl_ms must be 0 (no expiry) .. 10 years');
    }
    if (this.db.count() >= MAX_TOKENS) {
      throw new HotpotError('RESOURCE_EXHAUSTED', `at most ${String(MAX_TOKENS)} tokens: revoke some first`);
    }
    const id = randomBytes(8).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    const now = Date.now();
    const rec: TokenRecord = {
      id,
      user: req.user,
      role: req.role,
      uid: req.role === 'admin' ? 0 : req.uid,
      gid: req.role === 'admin' ? 0 : req.gid,
      createdUnixMs: now,
      expiresUnixMs: req.ttlMs > 0 ? now + req.ttlMs : 0,
      hash: sha256(secret).toString('hex'),
    };
    await this.store.commit({ tables: [this.db.put(id, rec)] });
    return { token: `hpt_${id}.${secret}`, info: info(rec) };
  }

  list(): TokenInfo[] {
    return this.db
      .entries()
      .map(([, v]) => info(v))
      .sort((a, b) => a.createdUnixMs - b.createdUnixMs);
  }

  async revoke(id: string): Promise<void> {
    if (typeof id !== 'string' || !/^[0-9a-f]{16}$/.test(id)) throw invalidArgument('id must be 16 hex digits');
    if (this.db.get(id) === undefined) throw notFound(`no token ${id}`);
    await this.store.commit({ tables: [this.db.remove(id)] });
  }

  /** The token's holder, or null when it is malformed, unknown, revoked or expired. Constant time in the secret. */
  check(token: string): TokenInfo | null {
    const m = TOKEN.exec(token);
    if (!m?.[1] || !m[2]) return null;
    const rec = this.db.get(m[1]);
    if (!rec) return null;
    if (!timingSafeEqual(sha256(m[2]), Buffer.from(rec.hash, 'hex'))) return null;
    if (rec.expiresUnixMs !== 0 && rec.expiresUnixMs <= Date.now()) return null;
    return info(rec);
  }
}

function info(r: TokenRecord): TokenInfo {
  return {
    id: r.id,
    user: r.user,
    role: r.role,
    uid: r.uid,
    gid: r.gid,
    createdUnixMs: r.createdUnixMs,
    expiresUnixMs: r.expiresUnixMs,
  };
}

// Certificates revoked before they expire (docs/security.md, `hotpot certs revoke`): the dispatcher keeps their
// SHA-256 fingerprints durably in its store, refuses them on every RPC, and hands the list to nodes, which refuse
// them too (they list it again when a heartbeat shows a new generation). An entry is dropped once its certificate
// has expired anyway. Bounded.
import { HotpotError, invalidArgument } from '../common/errors.ts';
import type { DispatcherStore, Table } from './store.ts';

export interface RevokedCert {
  fingerprint: string;
  subject: string;
  revokedUnixMs: number;
  /** 0: unknown (kept). */
  expiresUnixMs: number;
}

/** Upper-case hex pairs separated by colons: the SHA-256 fingerprint as openssl and Node print it. */
const FINGERPRINT = /^[0-9A-F]{2}(:[0-9A-F]{2}){31}$/;
/** The store tables of revoked certificates and their generation (migrate.ts copies every table by name). */
export const REVOKED_TABLE = 'revoked-certificates';
export const REVOKED_META_TABLE = 'revoked-certificates-meta';
export const MAX_REVOKED = 100_000;
const GENERATION_KEY = 'generation';

/** The canonical form of a fingerprint (upper case, colons), or null when it is not a SHA-256 fingerprint. */
export function canonicalFingerprint(s: string): string | null {
  const hex = s.replace(/:/g, '').toUpperCase();
  if (!/^[0-9A-F]{64}$/.test(hex)) return null;
  const out = (hex.match(/../g) ?? []).join(':');
  return FINGERPRINT.test(out) ? out : null;
}

export class Revocations {
  private readonly db: Table<RevokedCert>;
  private readonly meta: Table<number>;
  private readonly revoked = new Set<string>();

  constructor(private readonly store: DispatcherStore) {
    this.db = store.table<RevokedCert>(REVOKED_TABLE);
    this.meta = store.table<number>(REVOKED_META_TABLE);
    for (const [key] of this.db.entries()) this.revoked.add(key);
  }

  /** Changes with every revocation (and every purge of expired entries). */
  get generation(): number {
    return this.meta.get(GENERATION_KEY) ?? 0;
  }

  has(fingerprint: string): boolean {
    return this.revoked.has(fingerprint);
  }

  async revoke(req: { fingerprint: string; subject: string; expiresUnixMs: number }): Promise<RevokedCert> {
    const fingerprint = canonicalFingerprint(req.fingerprint);
    if (fingerprint === null) throw invalidArgument('fingerprint must be a SHA-256 fingerprint (64 hex digits)');
    if (!Number.isSafeInteger(req.expiresUnixMs) || req.expiresUnixMs < 0) {
      throw invalidArgument('expires_unix_ms must be a non-negative integer');
    }
    const existing = this.db.get(fingerprint);
    if (existing) return existing;
    await this.purgeExpired();
    if (this.revoked.size >= MAX_REVOKED) {
      throw new HotpotError('RESOURCE_EXHAUSTED', `at most ${String(MAX_REVOKED)} revoked certificates are kept`);
    }
    const rec: RevokedCert = {
      fingerprint,
      subject: req.subject.slice(0, 512),
      revokedUnixMs: Date.now(),
      expiresUnixMs: req.expiresUnixMs,
    };
    const generation = this.generation + 1;
    await this.store.commit({ tables: [this.db.put(fingerprint, rec), this.meta.put(GENERATION_KEY, generation)] });
    this.revoked.add(fingerprint);
    return rec;
  }

  list(): RevokedCert[] {
    return this.db
      .entries()
      .map(([, v]) => v)
      .sort((a, b) => a.revokedUnixMs - b.revokedUnixMs);
  }

  /** Drops entries whose certificate has expired (no one can present it any more). */
  private async purgeExpired(): Promise<void> {
    const now = Date.now();
    const gone = this.list().filter((r) => r.expiresUnixMs !== 0 && r.expiresUnixMs <= now);
    if (gone.length === 0) return;
    const generation = this.generation + 1;
    await this.store.commit({
      tables: [...gone.map((r) => this.db.remove(r.fingerprint)), this.meta.put(GENERATION_KEY, generation)],
    });
    for (const r of gone) this.revoked.delete(r.fingerprint);
  }
}

// The dispatcher's certificate revocation list (services/dispatcher/revocations.ts): canonical fingerprints, durable
// across a restart, bounded by dropping entries whose certificates expired anyway.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { canonicalFingerprint, Revocations } from '../../services/dispatcher/revocations.ts';
import { LmdbStore as MetadataStore } from '../../services/dispatcher/store-lmdb.ts';

const FP = Array.from({ length: 32 }, (_, i) => (i * 7).toString(16).padStart(2, '0').toUpperCase()).join(':');

test('a fingerprint is 32 hex pairs; any case or colons are accepted and printed one way', (t) => {
  t.is(canonicalFingerprint(FP), FP);
  t.is(canonicalFingerprint(FP.toLowerCase().replace(/:/g, '')), FP);
  t.is(canonicalFingerprint('AB:CD'), null);
  t.is(canonicalFingerprint(`${FP}:00`), null);
  t.is(canonicalFingerprint('zz'.repeat(32)), null);
});

test('revocations survive a restart, bump the generation once each, and expired ones are dropped', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'hotpot-revoked-'));
  t.teardown(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  let store = new MetadataStore(dir);
  let r = new Revocations(store);
  t.is(r.generation, 0);
  await r.revoke({ fingerprint: FP.toLowerCase(), subject: 'CN=eve', expiresUnixMs: Date.now() + 60_000 });
  await r.revoke({ fingerprint: FP, subject: 'again', expiresUnixMs: 0 });
  t.is(r.generation, 1, 'revoking the same certificate again changes nothing');
  t.true(r.has(FP));
  const old = FP.replace(/^00/, 'FF');
  await r.revoke({ fingerprint: old, subject: 'CN=old', expiresUnixMs: Date.now() + 50 });
  t.is(r.generation, 2);
  await t.throwsAsync(r.revoke({ fingerprint: 'nope', subject: '', expiresUnixMs: 0 }), {
    message: /SHA-256 fingerprint/,
  });
  await store.close();
  store = new MetadataStore(dir);
  r = new Revocations(store);
  t.true(r.has(FP) && r.has(old));
  t.is(r.generation, 2);
  await new Promise((res) => setTimeout(res, 80));
  // The next revocation drops the one whose certificate has expired meanwhile.
  await r.revoke({ fingerprint: FP.replace(/^00/, '11'), subject: 'CN=x', expiresUnixMs: 0 });
  t.false(r.has(old));
  t.deepEqual(
    r.list().map((x) => x.subject),
    ['CN=eve', 'CN=x'],
  );
  await store.close();
});

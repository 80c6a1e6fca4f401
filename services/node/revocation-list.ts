// The certificates this node refuses (docs/security.md, `hotpot certs revoke`): the dispatcher's revocation list,
// listed again whenever a heartbeat shows a new generation, so a revoked client is cut off here within a heartbeat
// or two. Until the first list arrives (and while the dispatcher cannot be reached) the last one known stays.
import type { Logger } from '../common/logger.ts';
import type { DispatcherClient } from '../common/proto.ts';
import { unary } from '../common/rpc.ts';
import type { ListRevokedCertificatesResponse__Output } from '../generated/hotpot/v1/ListRevokedCertificatesResponse.ts';

export class RevocationList {
  private revoked = new Set<string>();
  private generation = -1;
  private fetching: Promise<void> | null = null;

  constructor(
    private readonly dispatcher: () => DispatcherClient | null,
    private readonly log: Logger,
    /** Told every list that differs from the last (the data plane refuses those certificates too). */
    private readonly onChange: (fingerprints: string[]) => void = () => undefined,
  ) {}

  has(fingerprint256: string): boolean {
    return this.revoked.has(fingerprint256);
  }

  /** The dispatcher's list is at `generation`: list it again unless this node has it. */
  seen(generation: number): Promise<void> {
    if (generation === this.generation) return Promise.resolve();
    return this.refresh();
  }

  /** Lists the revoked certificates now (one call at a time; failures keep the last list and are logged). */
  refresh(): Promise<void> {
    this.fetching ??= (async () => {
      const c = this.dispatcher();
      if (!c) return;
      try {
        const r = await unary<ListRevokedCertificatesResponse__Output>(
          (o, cb) => c.ListRevokedCertificates({}, o, cb),
          5000,
        );
        const next = new Set(r.certificates.map((x) => x.fingerprint));
        const changed = next.size !== this.revoked.size || [...next].some((f) => !this.revoked.has(f));
        this.revoked = next;
        if (changed) this.onChange([...next]);
        if (r.generation !== this.generation && this.generation >= 0) {
          this.log.info(
            { revoked: this.revoked.size, generation: r.generation },
            'certificate revocation list updated',
          );
        }
        this.generation = r.generation;
      } catch (e) {
        this.log.warn({ err: e instanceof Error ? e.message : String(e) }, 'cannot list revoked certificates');
      }
    })().finally(() => {
      this.fetching = null;
    });
    return this.fetching;
  }
}

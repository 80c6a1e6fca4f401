// When a membership lease may reach the engine. A node whose lease lapsed may have lost its chunks to a failover
// while it was away; with the chunk maps it had, it would accept commits as their owner next to the new owner (chaos,
// pause-node past the lease: a resumed node committed counter increments and half transfers on chunks it no longer
// owned for ~60 ms after it rejoined). So the lease a join grants — and every renewal after it — is kept back until a
// sync of every chunk map that began after that join has succeeded. Pure: the engine host feeds it events.
export class LeaseGate {
  private joins = 0;
  private syncedFor = 0;
  private held: number | null = null;

  /** A join or rejoin was accepted: leases are kept back until a sync that begins after it succeeds. */
  joined(): void {
    this.joins++;
  }

  /** A sync of the chunk maps begins: the token to hand to `synced` when it succeeds. */
  syncBegins(): number {
    return this.joins;
  }

  /** A sync that began with `token` read every chunk map: the deadline to pass on now (null: none). */
  synced(token: number): number | null {
    if (token <= this.syncedFor) return null;
    this.syncedFor = token;
    if (token !== this.joins) return null;
    const held = this.held;
    this.held = null;
    return held;
  }

  /** A lease deadline arrived (join or renewal): the deadline to pass on now, or null if it is kept back. */
  lease(unixMs: number): number | null {
    if (this.syncedFor < this.joins) {
      this.held = Math.max(this.held ?? 0, unixMs);
      return null;
    }
    return unixMs;
  }
}

// A small seeded PRNG (mulberry32): the fault schedule and every worker's choices follow from the run's seed, so a
// run is replayed by giving the same seed (timing still differs between runs; the decisions do not).
export class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let x = this.state;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  }

  /** Integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  /** A seed for a sub-stream (a worker, an incarnation), independent of how much this stream was used. */
  static derive(seed: number, ...path: number[]): number {
    let h = seed >>> 0;
    for (const p of path) h = Math.imul(h ^ (p + 0x9e3779b9), 0x85ebca6b) >>> 0;
    return (h ^ (h >>> 16)) >>> 0;
  }
}

/** A fresh random seed for runs that were not given one. */
export function randomSeed(): number {
  return Math.floor(Math.random() * 2 ** 32);
}

// YCSB's Zipfian request distribution (Gray et al., "Quickly generating billion-record synthetic databases", as in
// YCSB's ZipfianGenerator): item i in [0, n) with probability proportional to 1 / (i + 1)^theta.

/** A deterministic PRNG (mulberry32) so runs draw the same sequences for the same seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function zeta(n: number, theta: number): number {
  let s = 0;
  for (let i = 1; i <= n; i++) s += 1 / Math.pow(i, theta);
  return s;
}

export class Zipfian {
  private readonly alpha: number;
  private readonly zetan: number;
  private readonly eta: number;
  private readonly half: number;

  constructor(
    readonly n: number,
    readonly theta = 0.99,
    private readonly random: () => number = Math.random,
  ) {
    if (!Number.isInteger(n) || n < 2) throw new Error('Zipfian: n must be an integer >= 2');
    this.zetan = zeta(n, theta);
    const zeta2 = zeta(2, theta);
    this.alpha = 1 / (1 - theta);
    this.eta = (1 - Math.pow(2 / n, 1 - theta)) / (1 - zeta2 / this.zetan);
    this.half = 1 + Math.pow(0.5, theta);
  }

  next(): number {
    const u = this.random();
    const uz = u * this.zetan;
    if (uz < 1) return 0;
    if (uz < this.half) return 1;
    return Math.min(this.n - 1, Math.floor(this.n * Math.pow(this.eta * u - this.eta + 1, this.alpha)));
  }
}

/** A fixed pseudo-random permutation of [0, n): scatters the popular items over the key space (YCSB scrambles
 * them with a hash for the same reason). */
export function permutation(n: number, seed: number): Uint32Array {
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  const r = rng(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    const x = p[i] ?? 0;
    p[i] = p[j] ?? 0;
    p[j] = x;
  }
  return p;
}

// Human sizes: "64MiB", "4KiB", "1GiB", "4096". Binary units only (KiB = 1024).
const UNITS: Record<string, number> = { '': 1, b: 1, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, tib: 1024 ** 4 };

export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  if (!m) throw new Error(`invalid size "${text}" (examples: 4096, 64KiB, 64MiB, 1GiB)`);
  const unit = UNITS[(m[2] ?? '').toLowerCase()];
  if (unit === undefined) throw new Error(`invalid size unit in "${text}" (use B, KiB, MiB, GiB or TiB)`);
  const v = Number(m[1]) * unit;
  if (!Number.isSafeInteger(v)) throw new Error(`invalid size "${text}": not a whole number of bytes`);
  return v;
}

export function formatSize(bytes: number): string {
  for (const [u, f] of [
    ['TiB', 1024 ** 4],
    ['GiB', 1024 ** 3],
    ['MiB', 1024 ** 2],
    ['KiB', 1024],
  ] as const) {
    if (bytes >= f && bytes % f === 0) return `${String(bytes / f)}${u}`;
  }
  return `${String(bytes)}B`;
}

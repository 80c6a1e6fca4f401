// The engine's debug mask (the original's dbgmask): which internal events a node records. Bits mirror
// native/src/engine/observe.h; names are what `hotpot events --mask` and `hotpot debug-mask` accept.
export const DEBUG_MASK_BITS = {
  faults: 1 << 0,
  fetch: 1 << 1,
  commits: 1 << 2,
  owner: 1 << 3,
  coherence: 1 << 4,
  replicas: 1 << 5,
  membership: 1 << 6,
} as const;

export type DebugMaskName = keyof typeof DEBUG_MASK_BITS;
export const DEBUG_MASK_ALL_BITS = (1 << 7) - 1;

/** "faults,commits" | "all" | "none" | a number (decimal or 0x hex) -> mask; throws with a clear message. */
export function parseDebugMask(text: string): number {
  const t = text.trim().toLowerCase();
  if (t === 'all') return DEBUG_MASK_ALL_BITS;
  if (t === 'none' || t === '') return 0;
  if (/^(0x[0-9a-f]+|\d+)$/.test(t)) {
    const n = Number(t);
    if (!Number.isInteger(n) || n < 0 || n > DEBUG_MASK_ALL_BITS) {
      throw new Error(`mask ${text} is outside 0..${String(DEBUG_MASK_ALL_BITS)}`);
    }
    return n;
  }
  let mask = 0;
  for (const part of t.split(',')) {
    const name = part.trim();
    if (!(name in DEBUG_MASK_BITS)) {
      throw new Error(`unknown mask bit "${name}" (known: ${Object.keys(DEBUG_MASK_BITS).join(', ')}, all, none)`);
    }
    mask |= DEBUG_MASK_BITS[name as DebugMaskName];
  }
  return mask;
}

/** mask -> "faults,commits" (or "none"). */
export function formatDebugMask(mask: number): string {
  const names = Object.entries(DEBUG_MASK_BITS)
    .filter(([, bit]) => (mask & bit) !== 0)
    .map(([n]) => n);
  return names.length ? names.join(',') : 'none';
}

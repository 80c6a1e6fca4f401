// The on-dataset format of the key-value store, as pure functions of a Buffer: the header, the hash, the size
// classes of the record allocator and the planning of a dataset's regions. Nothing here talks to Hotpot, so the
// unit tests run it over plain Buffers.
//
//   page 0 ...   header (64 B), then one arena header per arena (tag, bump, end, a free-list head per size class)
//   next page    slot table: `slots` × 8 B (u32 fingerprint: 0 empty, 1 tombstone, else the key's hash; u32 record
//                offset / 8)
//   next page    heap, cut into `arenas` equal arenas; records are 8-byte aligned blocks of a size class:
//                tag (8 B), capacity u32, key length u16, flags u16 (1 live), value length u32, next free u32
//                (offset / 8), then the key and the value
//
// All integers are little-endian. Offsets inside the dataset are stored divided by 8 in a u32, so a store is at most
// 32 GiB. A *tag* is 8 bytes that every change of a record or of an arena header rewrites so that each byte differs
// from the old one (see table.ts: it turns any two concurrent changes of one record into a byte-level commit
// conflict).

export const PAGE = 4096;
export const MAGIC = Buffer.from('HOTPOTKV', 'latin1');
export const VERSION = 1;
export const HEADER_BYTES = 64;
export const SLOT_BYTES = 8;
export const RECORD_HEADER_BYTES = 24;
export const TAG_BYTES = 8;
/** Smallest size class (a record with a 1-byte key and up to 7 value bytes). */
export const MIN_CLASS = 32;
export const MAX_STORE_BYTES = 32 * 2 ** 30;
export const FP_EMPTY = 0;
export const FP_TOMBSTONE = 1;

// Header field offsets.
const H_VERSION = 8;
const H_SLOTS = 12;
const H_MAX_PROBE = 16;
const H_ARENAS = 20;
const H_MAX_KEY = 24;
const H_MAX_VALUE = 28;
const H_SLOTS_AT = 32; // /8
const H_HEAP_AT = 36; // /8
const H_HEAP_END = 40; // /8
const H_ARENA_BYTES = 44;

// Arena header field offsets (after the tag).
export const A_BUMP = 8;
export const A_END = 12;
export const A_HEADS = 16;

// Record field offsets.
export const R_CAPACITY = 8;
export const R_KEY_LEN = 12;
export const R_FLAGS = 14;
export const R_VALUE_LEN = 16;
export const R_NEXT = 20;
export const FLAG_LIVE = 1;

/** A bad argument or a store that cannot hold more: code like the SDK's errors. */
export class KvError extends Error {
  override readonly name = 'KvError';
  constructor(
    readonly code: 'INVALID_ARGUMENT' | 'RESOURCE_EXHAUSTED' | 'FAILED_PRECONDITION' | 'DATA_LOSS',
    message: string,
  ) {
    super(message);
  }
}

export interface CreateOptions {
  /** Hash-table slots, a power of two (default: about twice the records that fit, at most 2^24). */
  slots?: number;
  /** Longest probe sequence: a key lives at most this many slots after its home slot (default 256). */
  maxProbe?: number;
  /** Independent allocator arenas (default 16): inserts in different arenas do not conflict. */
  arenas?: number;
  /** Longest key in bytes (default 256, at most 1024). */
  maxKeyBytes?: number;
  /** Longest value in bytes (default 64 KiB, at most 1 MiB). */
  maxValueBytes?: number;
}

export interface Layout {
  slots: number;
  maxProbe: number;
  arenas: number;
  maxKeyBytes: number;
  maxValueBytes: number;
  slotsAt: number;
  heapAt: number;
  heapEnd: number;
  arenaBytes: number;
  classes: number[];
}

const roundUp = (n: number, to: number): number => Math.ceil(n / to) * to;

/** Size classes from MIN_CLASS up to `maxRecord`: four per doubling (x, 1.25x, 1.5x, 1.75x), 8-byte multiples. */
export function sizeClasses(maxRecord: number): number[] {
  const out: number[] = [];
  for (let base = MIN_CLASS; ; base *= 2) {
    for (const f of [1, 1.25, 1.5, 1.75]) {
      const c = roundUp(base * f, 8);
      if (out[out.length - 1] !== c) out.push(c);
      if (c >= maxRecord) return out;
    }
  }
}

/** The index of the smallest class holding `bytes`, or -1. */
export function classFor(classes: readonly number[], bytes: number): number {
  let lo = 0;
  let hi = classes.length - 1;
  if (hi < 0 || bytes > (classes[hi] ?? 0)) return -1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((classes[mid] ?? 0) >= bytes) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

export function recordBytes(keyLen: number, valueLen: number): number {
  return RECORD_HEADER_BYTES + keyLen + valueLen;
}

function checkInt(what: string, v: number, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new KvError('INVALID_ARGUMENT', `${what} must be an integer in ${String(min)}..${String(max)}`);
  }
  return v;
}

/** Plans the regions of a store in a dataset of `size` bytes; INVALID_ARGUMENT if they do not fit. */
export function planLayout(size: number, opts: CreateOptions = {}): Layout {
  checkInt('dataset size', size, 3 * PAGE, MAX_STORE_BYTES);
  const maxKeyBytes = checkInt('maxKeyBytes', opts.maxKeyBytes ?? 256, 1, 1024);
  const maxValueBytes = checkInt('maxValueBytes', opts.maxValueBytes ?? 64 * 1024, 0, 1024 * 1024);
  const arenas = checkInt('arenas', opts.arenas ?? 16, 1, 1024);
  const classes = sizeClasses(recordBytes(maxKeyBytes, maxValueBytes));
  const arenaBytes = roundUp(A_HEADS + 4 * classes.length, 8);
  const slotsAt = roundUp(HEADER_BYTES + arenas * arenaBytes, PAGE);
  let slots = opts.slots;
  if (slots === undefined) {
    // About two slots per small record that fits (records of 1 KiB fill a store long before its table).
    const guess = Math.max(64, Math.floor((size - slotsAt) / 256));
    slots = Math.min(2 ** 24, 2 ** Math.floor(Math.log2(guess)));
  }
  checkInt('slots', slots, 8, 2 ** 28);
  if ((slots & (slots - 1)) !== 0) throw new KvError('INVALID_ARGUMENT', 'slots must be a power of two');
  const maxProbe = checkInt('maxProbe', opts.maxProbe ?? Math.min(256, slots), 1, slots);
  const heapAt = roundUp(slotsAt + slots * SLOT_BYTES, PAGE);
  const heapEnd = Math.floor(size / 8) * 8;
  const perArena = Math.floor((heapEnd - heapAt) / arenas / 8) * 8;
  if (perArena < PAGE) {
    throw new KvError(
      'INVALID_ARGUMENT',
      `a dataset of ${String(size)} bytes is too small for ${String(slots)} slots and ${String(arenas)} arenas of at least ${String(PAGE)} bytes each`,
    );
  }
  return { slots, maxProbe, arenas, maxKeyBytes, maxValueBytes, slotsAt, heapAt, heapEnd, arenaBytes, classes };
}

/** The bytes of the header and the empty arena headers (everything else of a fresh store is zero). */
export function formatBytes(l: Layout): Buffer {
  const b = Buffer.alloc(HEADER_BYTES + l.arenas * l.arenaBytes);
  MAGIC.copy(b, 0);
  b.writeUInt32LE(VERSION, H_VERSION);
  b.writeUInt32LE(l.slots, H_SLOTS);
  b.writeUInt32LE(l.maxProbe, H_MAX_PROBE);
  b.writeUInt32LE(l.arenas, H_ARENAS);
  b.writeUInt32LE(l.maxKeyBytes, H_MAX_KEY);
  b.writeUInt32LE(l.maxValueBytes, H_MAX_VALUE);
  b.writeUInt32LE(l.slotsAt / 8, H_SLOTS_AT);
  b.writeUInt32LE(l.heapAt / 8, H_HEAP_AT);
  b.writeUInt32LE(l.heapEnd / 8, H_HEAP_END);
  b.writeUInt32LE(l.arenaBytes, H_ARENA_BYTES);
  const perArena = Math.floor((l.heapEnd - l.heapAt) / l.arenas / 8) * 8;
  for (let a = 0; a < l.arenas; a++) {
    const at = HEADER_BYTES + a * l.arenaBytes;
    // A non-zero tag from the start: the first allocation rewrites it like every later one.
    for (let i = 0; i < TAG_BYTES; i++) b[at + i] = 0x5a;
    b.writeUInt32LE((l.heapAt + a * perArena) / 8, at + A_BUMP);
    b.writeUInt32LE((l.heapAt + (a + 1) * perArena) / 8, at + A_END);
  }
  return b;
}

/** The layout recorded in `mem`, or null when the header is all zero (a fresh dataset). */
export function readLayout(mem: Buffer): Layout | null {
  if (mem.length < PAGE) throw new KvError('FAILED_PRECONDITION', 'the dataset is smaller than one page');
  const magic = mem.subarray(0, MAGIC.length);
  if (!magic.equals(MAGIC)) {
    if (mem.subarray(0, HEADER_BYTES).every((x) => x === 0)) return null;
    throw new KvError('FAILED_PRECONDITION', 'the dataset does not hold a key-value store (bad magic)');
  }
  const version = mem.readUInt32LE(H_VERSION);
  if (version !== VERSION) {
    throw new KvError(
      'FAILED_PRECONDITION',
      `store format version ${String(version)}, this code reads ${String(VERSION)}`,
    );
  }
  const maxKeyBytes = mem.readUInt32LE(H_MAX_KEY);
  const maxValueBytes = mem.readUInt32LE(H_MAX_VALUE);
  const l: Layout = {
    slots: mem.readUInt32LE(H_SLOTS),
    maxProbe: mem.readUInt32LE(H_MAX_PROBE),
    arenas: mem.readUInt32LE(H_ARENAS),
    maxKeyBytes,
    maxValueBytes,
    slotsAt: mem.readUInt32LE(H_SLOTS_AT) * 8,
    heapAt: mem.readUInt32LE(H_HEAP_AT) * 8,
    heapEnd: mem.readUInt32LE(H_HEAP_END) * 8,
    arenaBytes: mem.readUInt32LE(H_ARENA_BYTES),
    classes: sizeClasses(recordBytes(maxKeyBytes, maxValueBytes)),
  };
  const sane =
    l.slots >= 8 &&
    (l.slots & (l.slots - 1)) === 0 &&
    l.maxProbe >= 1 &&
    l.maxProbe <= l.slots &&
    l.arenas >= 1 &&
    l.arenaBytes === roundUp(A_HEADS + 4 * l.classes.length, 8) &&
    l.slotsAt >= HEADER_BYTES + l.arenas * l.arenaBytes &&
    l.heapAt >= l.slotsAt + l.slots * SLOT_BYTES &&
    l.heapEnd > l.heapAt &&
    l.heapEnd <= mem.length;
  if (!sane) throw new KvError('DATA_LOSS', 'the store header is inconsistent');
  return l;
}

export function arenaAt(l: Layout, arena: number): number {
  return HEADER_BYTES + arena * l.arenaBytes;
}

/** The arena whose heap range holds `offset`. */
export function arenaOf(l: Layout, offset: number): number {
  const perArena = Math.floor((l.heapEnd - l.heapAt) / l.arenas / 8) * 8;
  return Math.min(l.arenas - 1, Math.floor((offset - l.heapAt) / perArena));
}

/** MurmurHash3 (x86, 32-bit) of `key`: the home slot is its low bits, the slot fingerprint the whole value. */
export function hashKey(key: Uint8Array, seed = 0x9747b28c): number {
  let h = seed >>> 0;
  const n = key.length;
  const blocks = n & ~3;
  for (let i = 0; i < blocks; i += 4) {
    let k = (key[i] ?? 0) | ((key[i + 1] ?? 0) << 8) | ((key[i + 2] ?? 0) << 16) | ((key[i + 3] ?? 0) << 24);
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  const rest = n & 3;
  if (rest > 0) {
    let k = 0;
    if (rest === 3) k ^= (key[blocks + 2] ?? 0) << 16;
    if (rest >= 2) k ^= (key[blocks + 1] ?? 0) << 8;
    k ^= key[blocks] ?? 0;
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
  }
  h ^= n;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The slot fingerprint of a hash: never FP_EMPTY or FP_TOMBSTONE. */
export function fingerprint(h: number): number {
  return h <= FP_TOMBSTONE ? h + 2 : h;
}

/** Rewrites the 8-byte tag at `at` so that every byte differs from its old value. */
export function retag(mem: Buffer, at: number): void {
  for (let i = 0; i < TAG_BYTES; i++) {
    const old = mem[at + i] ?? 0;
    mem[at + i] = (old + 1 + Math.floor(Math.random() * 255)) & 0xff;
  }
}

// The hash table and the record allocator as operations on a Buffer (the mapping of the dataset, or a plain Buffer
// in the unit tests). Reads are plain loads; writes go into the Buffer (private until the caller commits) and a
// Txn records what the commit must validate.
//
// Why each operation is safe against concurrent writers in other processes (docs/design/consistency.md):
// - A commit validates the old bytes of every byte it changes. Each change of a record (value written, record moved
//   or freed) and of an arena header rewrites its 8-byte tag so that every byte differs (layout.ts retag), so two
//   concurrent changes of one record or arena always overlap and the later commit is ABORTED. This covers a
//   read-modify-write of a value and an in-place put without validating any page: the mapping key -> record only
//   changes through a delete or a move, which rewrite the old record's tag.
// - A decision based on slots (a key is absent, this slot is free, the next slot is empty) is validated by listing
//   the slots read in the commit's `reads` (page versions).
// - A view can be torn while a commit lands page by page: anything out of bounds throws TornView, and the caller
//   rolls back and runs the operation again (its commit would have been ABORTED anyway).
import {
  A_BUMP,
  A_END,
  A_HEADS,
  arenaAt,
  arenaOf,
  classFor,
  fingerprint,
  FLAG_LIVE,
  FP_EMPTY,
  FP_TOMBSTONE,
  hashKey,
  KvError,
  PAGE,
  R_CAPACITY,
  R_FLAGS,
  R_KEY_LEN,
  R_NEXT,
  R_VALUE_LEN,
  RECORD_HEADER_BYTES,
  recordBytes,
  retag,
  SLOT_BYTES,
  type Layout,
} from './layout.ts';

export interface Range {
  offset: number;
  length: number;
}

/** The view was inconsistent (a concurrent commit was landing): roll back and run the operation again. */
export class TornView extends Error {
  override readonly name = 'TornView';
}

/** A RESOURCE_EXHAUSTED decision (table or heap full) to validate with a read-only commit before reporting it. */
export class FullError extends KvError {
  constructor(message: string) {
    super('RESOURCE_EXHAUSTED', message);
  }
}

/** What one transaction read (to validate) and whether it wrote. */
export class Txn {
  private readonly pages = new Set<number>();
  wrote = false;
  constructor(
    readonly mem: Buffer,
    readonly l: Layout,
  ) {}

  read(offset: number, length: number): void {
    for (let p = Math.floor(offset / PAGE); p * PAGE < offset + length; p++) this.pages.add(p);
  }

  /** The pages read, as merged ranges (validation is per page anyway). */
  reads(): Range[] {
    const ps = [...this.pages].sort((a, b) => a - b);
    const out: Range[] = [];
    for (const p of ps) {
      const last = out[out.length - 1];
      if (last && last.offset + last.length === p * PAGE) last.length += PAGE;
      else out.push({ offset: p * PAGE, length: PAGE });
    }
    return out;
  }
}

export function checkKey(l: Layout, key: Uint8Array): void {
  if (!(key instanceof Uint8Array)) throw new KvError('INVALID_ARGUMENT', 'a key is a string or bytes');
  if (key.length < 1 || key.length > l.maxKeyBytes) {
    throw new KvError(
      'INVALID_ARGUMENT',
      `a key must be 1..${String(l.maxKeyBytes)} bytes (this one has ${String(key.length)})`,
    );
  }
}

export function checkValue(l: Layout, value: Uint8Array): void {
  if (!(value instanceof Uint8Array)) throw new KvError('INVALID_ARGUMENT', 'a value is a string or bytes');
  if (value.length > l.maxValueBytes) {
    throw new KvError(
      'INVALID_ARGUMENT',
      `a value must be at most ${String(l.maxValueBytes)} bytes (this one has ${String(value.length)})`,
    );
  }
}

const slotAt = (l: Layout, s: number): number => l.slotsAt + s * SLOT_BYTES;

/** Checks that `rec` is a live record inside the heap; TornView otherwise. Returns its key length. */
function liveRecord(mem: Buffer, l: Layout, rec: number): number {
  if (rec < l.heapAt || rec + RECORD_HEADER_BYTES > l.heapEnd || rec % 8 !== 0) throw new TornView('record offset');
  const cap = mem.readUInt32LE(rec + R_CAPACITY);
  const keyLen = mem.readUInt16LE(rec + R_KEY_LEN);
  const valueLen = mem.readUInt32LE(rec + R_VALUE_LEN);
  if (
    mem.readUInt16LE(rec + R_FLAGS) !== FLAG_LIVE ||
    classFor(l.classes, cap) < 0 ||
    l.classes[classFor(l.classes, cap)] !== cap ||
    rec + cap > l.heapEnd ||
    keyLen < 1 ||
    keyLen > l.maxKeyBytes ||
    recordBytes(keyLen, valueLen) > cap
  ) {
    throw new TornView('record header');
  }
  return keyLen;
}

export interface Lookup {
  found: boolean;
  /** Slot index of the key when found. */
  slot: number;
  /** Record offset when found. */
  rec: number;
  /** First reusable slot (tombstone or empty) on the probe path, or -1. */
  free: number;
  home: number;
  /** Slots examined from `home`. */
  probed: number;
}

export function lookup(mem: Buffer, l: Layout, key: Uint8Array, h = hashKey(key)): Lookup {
  const mask = l.slots - 1;
  const home = h & mask;
  const fp = fingerprint(h);
  let free = -1;
  for (let d = 0; d < l.maxProbe; d++) {
    const s = (home + d) & mask;
    const at = slotAt(l, s);
    const f = mem.readUInt32LE(at);
    if (f === FP_EMPTY) return { found: false, slot: -1, rec: 0, free: free < 0 ? s : free, home, probed: d + 1 };
    if (f === FP_TOMBSTONE) {
      if (free < 0) free = s;
      continue;
    }
    if (f !== fp) continue;
    const rec = mem.readUInt32LE(at + 4) * 8;
    const keyLen = liveRecord(mem, l, rec);
    if (
      keyLen === key.length &&
      mem.compare(key, 0, key.length, rec + RECORD_HEADER_BYTES, rec + RECORD_HEADER_BYTES + keyLen) === 0
    ) {
      return { found: true, slot: s, rec, free, home, probed: d + 1 };
    }
  }
  return { found: false, slot: -1, rec: 0, free, home, probed: l.maxProbe };
}

/** Records the slots [home, home + count) (wrapping) as read. */
export function readSlots(t: Txn, home: number, count: number): void {
  const l = t.l;
  const first = Math.min(count, l.slots - home);
  t.read(slotAt(l, home), first * SLOT_BYTES);
  if (count > first) t.read(slotAt(l, 0), (count - first) * SLOT_BYTES);
}

/** The value of a found record (a view into `mem`). */
export function valueOf(mem: Buffer, rec: number): Buffer {
  const keyLen = mem.readUInt16LE(rec + R_KEY_LEN);
  const valueLen = mem.readUInt32LE(rec + R_VALUE_LEN);
  const at = rec + RECORD_HEADER_BYTES + keyLen;
  return mem.subarray(at, at + valueLen);
}

/** A copy of the value of `key`, or undefined. Plain loads: may throw TornView while a commit lands. */
export function get(mem: Buffer, l: Layout, key: Uint8Array): Buffer | undefined {
  const r = lookup(mem, l, key);
  return r.found ? Buffer.from(valueOf(mem, r.rec)) : undefined;
}

/** Takes a block of class `cls` from arena `pref` or the next arena with room. */
function alloc(t: Txn, cls: number, pref: number): number {
  const { mem, l } = t;
  const size = l.classes[cls] ?? 0;
  for (let i = 0; i < l.arenas; i++) {
    const a = (pref + i) % l.arenas;
    const at = arenaAt(l, a);
    const headAt = at + A_HEADS + 4 * cls;
    const head = mem.readUInt32LE(headAt) * 8;
    if (head !== 0) {
      if (head < l.heapAt || head + size > l.heapEnd || mem.readUInt32LE(head + R_CAPACITY) !== size) {
        throw new TornView('free list');
      }
      mem.writeUInt32LE(mem.readUInt32LE(head + R_NEXT), headAt);
      retag(mem, at);
      t.wrote = true;
      return head;
    }
    let bump = mem.readUInt32LE(at + A_BUMP) * 8;
    const end = mem.readUInt32LE(at + A_END) * 8;
    if (bump < l.heapAt || end > l.heapEnd || bump > end) throw new TornView('arena header');
    // A record that fits in a page does not straddle two: a write of it then commits one page.
    if (size <= PAGE && Math.floor(bump / PAGE) !== Math.floor((bump + size - 1) / PAGE)) {
      bump = Math.ceil(bump / PAGE) * PAGE;
    }
    if (bump + size <= end) {
      mem.writeUInt32LE((bump + size) / 8, at + A_BUMP);
      retag(mem, at);
      t.wrote = true;
      return bump;
    }
    t.read(at, l.arenaBytes); // "this arena is full" is a decision to validate
  }
  throw new FullError(
    `store full: no arena has room for a ${String(size)}-byte record (create a bigger store or delete keys)`,
  );
}

/** Puts a record on its arena's free list. */
function release(t: Txn, rec: number): void {
  const { mem, l } = t;
  const cap = mem.readUInt32LE(rec + R_CAPACITY);
  const cls = classFor(l.classes, cap);
  if (cls < 0 || l.classes[cls] !== cap) throw new TornView('record capacity');
  const at = arenaAt(l, arenaOf(l, rec));
  const headAt = at + A_HEADS + 4 * cls;
  retag(mem, rec);
  mem.writeUInt16LE(0, rec + R_FLAGS);
  mem.writeUInt32LE(0, rec + R_VALUE_LEN);
  mem.writeUInt32LE(mem.readUInt32LE(headAt), rec + R_NEXT);
  mem.writeUInt32LE(rec / 8, headAt);
  retag(mem, at);
  t.wrote = true;
}

function writeRecord(t: Txn, rec: number, cap: number, key: Uint8Array, value: Uint8Array): void {
  const mem = t.mem;
  retag(mem, rec);
  mem.writeUInt32LE(cap, rec + R_CAPACITY);
  mem.writeUInt16LE(key.length, rec + R_KEY_LEN);
  mem.writeUInt16LE(FLAG_LIVE, rec + R_FLAGS);
  mem.writeUInt32LE(value.length, rec + R_VALUE_LEN);
  mem.writeUInt32LE(0, rec + R_NEXT);
  mem.set(key, rec + RECORD_HEADER_BYTES);
  mem.set(value, rec + RECORD_HEADER_BYTES + key.length);
  t.wrote = true;
}

/** Writes `value` for `key` given its lookup `at` (made in this transaction). */
function putAt(t: Txn, key: Uint8Array, value: Uint8Array, h: number, at: Lookup): void {
  const { mem, l } = t;
  const need = recordBytes(key.length, value.length);
  const cls = classFor(l.classes, need);
  if (cls < 0) throw new KvError('INVALID_ARGUMENT', `a record of ${String(need)} bytes is too big for this store`);
  if (at.found) {
    const cap = mem.readUInt32LE(at.rec + R_CAPACITY);
    if (need <= cap) {
      // In place: the tag rewrite makes any concurrent change of this record conflict.
      retag(mem, at.rec);
      mem.writeUInt32LE(value.length, at.rec + R_VALUE_LEN);
      mem.set(value, at.rec + RECORD_HEADER_BYTES + key.length);
      t.wrote = true;
      return;
    }
    readSlots(t, at.home, at.probed);
    const rec = alloc(t, cls, h % l.arenas);
    writeRecord(t, rec, l.classes[cls] ?? 0, key, value);
    mem.writeUInt32LE(rec / 8, slotAt(l, at.slot) + 4);
    release(t, at.rec);
    return;
  }
  readSlots(t, at.home, at.probed);
  if (at.free < 0) {
    throw new FullError(
      `hash table full: no free slot within ${String(l.maxProbe)} slots of the key's home slot (${String(l.slots)} slots; create a store with more slots)`,
    );
  }
  const rec = alloc(t, cls, h % l.arenas);
  writeRecord(t, rec, l.classes[cls] ?? 0, key, value);
  mem.writeUInt32LE(rec / 8, slotAt(l, at.free) + 4);
  mem.writeUInt32LE(fingerprint(h), slotAt(l, at.free));
}

/** Removes the key of lookup `at` (found). */
function deleteAt(t: Txn, at: Lookup): void {
  const { mem, l } = t;
  const mask = l.slots - 1;
  readSlots(t, at.home, at.probed);
  const next = (at.slot + 1) & mask;
  t.read(slotAt(l, next), SLOT_BYTES);
  if (mem.readUInt32LE(slotAt(l, next)) === FP_EMPTY) {
    // Nothing probes past an empty slot: this slot and the tombstones right before it can become empty too.
    mem.writeUInt32LE(FP_EMPTY, slotAt(l, at.slot));
    mem.writeUInt32LE(0, slotAt(l, at.slot) + 4);
    for (let d = 1, s = (at.slot - 1) & mask; d < l.maxProbe; d++, s = (s - 1) & mask) {
      t.read(slotAt(l, s), SLOT_BYTES);
      if (mem.readUInt32LE(slotAt(l, s)) !== FP_TOMBSTONE) break;
      mem.writeUInt32LE(FP_EMPTY, slotAt(l, s));
    }
  } else {
    mem.writeUInt32LE(FP_TOMBSTONE, slotAt(l, at.slot));
    mem.writeUInt32LE(0, slotAt(l, at.slot) + 4);
  }
  release(t, at.rec);
}

export function put(t: Txn, key: Uint8Array, value: Uint8Array): void {
  checkKey(t.l, key);
  checkValue(t.l, value);
  const h = hashKey(key);
  putAt(t, key, value, h, lookup(t.mem, t.l, key, h));
}

/** Deletes `key`; false if it was absent (a decision validated like a read). */
export function del(t: Txn, key: Uint8Array): boolean {
  checkKey(t.l, key);
  const at = lookup(t.mem, t.l, key);
  if (!at.found) {
    readSlots(t, at.home, at.probed);
    return false;
  }
  deleteAt(t, at);
  return true;
}

/**
 * Read-modify-write: `fn` gets a copy of the current value (undefined when absent) and returns the new one
 * (undefined deletes). Returns what `fn` returned.
 */
export function update(
  t: Txn,
  key: Uint8Array,
  fn: (old: Buffer | undefined) => Uint8Array | undefined,
): Uint8Array | undefined {
  checkKey(t.l, key);
  const h = hashKey(key);
  const at = lookup(t.mem, t.l, key, h);
  const next = fn(at.found ? Buffer.from(valueOf(t.mem, at.rec)) : undefined);
  if (next === undefined) {
    if (at.found) deleteAt(t, at);
    else readSlots(t, at.home, at.probed);
    return undefined;
  }
  checkValue(t.l, next);
  putAt(t, key, next, h, at);
  return next;
}

export interface Entry {
  key: Buffer;
  value: Buffer;
}

/** Every live entry whose key starts with `prefix`, in slot order, at most `limit` (copies). */
export function scan(mem: Buffer, l: Layout, prefix: Uint8Array = Buffer.alloc(0), limit = Infinity): Entry[] {
  const out: Entry[] = [];
  for (let s = 0; s < l.slots && out.length < limit; s++) {
    const f = mem.readUInt32LE(slotAt(l, s));
    if (f === FP_EMPTY || f === FP_TOMBSTONE) continue;
    const rec = mem.readUInt32LE(slotAt(l, s) + 4) * 8;
    const keyLen = liveRecord(mem, l, rec);
    const k = mem.subarray(rec + RECORD_HEADER_BYTES, rec + RECORD_HEADER_BYTES + keyLen);
    if (prefix.length > 0 && (keyLen < prefix.length || k.compare(prefix, 0, prefix.length, 0, prefix.length) !== 0)) {
      continue;
    }
    out.push({ key: Buffer.from(k), value: Buffer.from(valueOf(mem, rec)) });
  }
  return out;
}

export interface TableStats {
  slots: number;
  live: number;
  tombstones: number;
  heapBytes: number;
  /** Bytes handed out by the arenas' bump pointers (records in use or on free lists). */
  heapAllocated: number;
}

export function stats(mem: Buffer, l: Layout): TableStats {
  let live = 0;
  let tombstones = 0;
  for (let s = 0; s < l.slots; s++) {
    const f = mem.readUInt32LE(slotAt(l, s));
    if (f === FP_TOMBSTONE) tombstones++;
    else if (f !== FP_EMPTY) live++;
  }
  const perArena = Math.floor((l.heapEnd - l.heapAt) / l.arenas / 8) * 8;
  let heapAllocated = 0;
  for (let a = 0; a < l.arenas; a++) {
    heapAllocated += mem.readUInt32LE(arenaAt(l, a) + A_BUMP) * 8 - (l.heapAt + a * perArena);
  }
  return { slots: l.slots, live, tombstones, heapBytes: l.heapEnd - l.heapAt, heapAllocated };
}

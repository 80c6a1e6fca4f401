// The CLI's data commands (docs/cli.md "Data"): get, put, cat, dump, load, backup, restore. They reach the bytes
// through a node's gRPC Data service (one session per command), the node picked with --node or the first alive
// member the dispatcher lists.
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { HotpotError } from '../common/errors.ts';
import { unary } from '../common/rpc.ts';
import type { CreateDatasetRequest } from '../generated/hotpot/v1/CreateDatasetRequest.ts';
import type { CreateDatasetResponse__Output } from '../generated/hotpot/v1/CreateDatasetResponse.ts';
import type { Dataset__Output } from '../generated/hotpot/v1/Dataset.ts';
import type { StatDatasetResponse__Output } from '../generated/hotpot/v1/StatDatasetResponse.ts';
import {
  BackupFormatError,
  encodeHeader,
  encodeTrailer,
  FIXED_HEADER_BYTES,
  MAX_META_BYTES,
  parseHeader,
  parseTrailer,
  TRAILER_BYTES,
  type BackupMeta,
} from './backup-format.ts';
import { dispatcherClient } from './client.ts';
import { DataSession, MAX_MESSAGE_BYTES } from './data-client.ts';
import { resolveNodes } from './node-views.ts';
import { Progress } from './progress.ts';

/** A bad argument or input file: the CLI answers it as a usage error (exit 2). */
export class DataUsageError extends Error {}

export interface Target {
  dispatcher: string;
  /** Node id to serve the data; default the first alive member. */
  node?: number | undefined;
}

/** Largest `put` (one atomic commit; a session holds at most 256 MiB of private pages on its node). */
export const MAX_PUT_BYTES = 64 * 1024 * 1024;
/** Default bytes per commit of `load` and `restore`. */
export const DEFAULT_COMMIT_BYTES = 64 * 1024 * 1024;
/** MRSW writes: the lease a batch takes and how long it waits for pages held by someone else. */
const LEASE_MS = 600_000;
const LEASE_WAIT_MS = 30_000;
/** `dump`/`backup` to a file: reads of a dataset that kept changing before giving up. */
const DEFAULT_DUMP_ATTEMPTS = 5;

async function nodeAddress(t: Target): Promise<string> {
  const [n] = await resolveNodes(t.dispatcher, t.node);
  if (!n) throw new HotpotError('UNAVAILABLE', 'no alive nodes');
  return n.address;
}

async function withSession<T>(
  t: Target,
  req: { name: string; readOnly?: boolean },
  fn: (s: DataSession) => Promise<T>,
): Promise<T> {
  const s = await DataSession.open(await nodeAddress(t), { name: req.name, readOnly: req.readOnly ?? false });
  try {
    return await fn(s);
  } finally {
    await s.end();
  }
}

const isMrsw = (s: DataSession): boolean => s.info.mode === 'CONSISTENCY_MODE_MRSW';

/** Where a command's output bytes go: stdout or a file, with backpressure. */
interface Sink {
  write(b: Buffer): Promise<void>;
}

export const stdoutSink: Sink = {
  write: (b) =>
    new Promise<void>((resolve, reject) => {
      process.stdout.write(b, (e) => {
        if (e) reject(e);
        else resolve();
      });
    }),
};

function fileSink(fh: FileHandle): Sink {
  return {
    async write(b) {
      let done = 0;
      while (done < b.length) done += (await fh.write(b, done, b.length - done)).bytesWritten;
    },
  };
}

/** Checks a byte range against the dataset's size; returns [offset, length]. */
export function checkRange(
  name: string,
  size: number,
  offset: number | undefined,
  length: number | undefined,
): [number, number] {
  const off = offset ?? 0;
  if (off > size) {
    throw new DataUsageError(`--offset ${String(off)} is past the end of dataset ${name} (${String(size)} bytes)`);
  }
  const len = length ?? size - off;
  if (off + len > size) {
    throw new DataUsageError(
      `--offset ${String(off)} --length ${String(len)} passes the end of dataset ${name} (${String(size)} bytes; ` +
        `at most ${String(size - off)} from that offset)`,
    );
  }
  return [off, len];
}

/** `xxd`-like lines: offset, 16 bytes in hex. */
export function hexLines(data: Buffer, base: number): string {
  let out = '';
  for (let i = 0; i < data.length; i += 16) {
    const row = data.subarray(i, i + 16);
    out += `${(base + i).toString(16).padStart(8, '0')}  ${[...row].map((b) => b.toString(16).padStart(2, '0')).join(' ')}\n`;
  }
  return out;
}

export async function get(
  t: Target,
  name: string,
  o: { offset?: number | undefined; length?: number | undefined; hex?: boolean; json?: boolean },
): Promise<void> {
  await withSession(t, { name, readOnly: true }, async (s) => {
    const [off, len] = checkRange(name, s.info.sizeBytes, o.offset, o.length);
    if (o.json) {
      if (len > MAX_PUT_BYTES) throw new DataUsageError('--json output is limited to 64 MiB: give --length');
      const parts: Buffer[] = [];
      for await (const b of s.read(off, len, true)) parts.push(b);
      process.stdout.write(
        JSON.stringify({ dataset: name, offset: off, length: len, hex: Buffer.concat(parts).toString('hex') }) + '\n',
      );
      return;
    }
    let at = off;
    for await (const b of s.read(off, len, true)) {
      await stdoutSink.write(o.hex ? Buffer.from(hexLines(b, at)) : b);
      at += b.length;
    }
  });
}

/** Reads all of stdin, refusing more than `max` bytes. */
export async function readAllBounded(src: AsyncIterable<Buffer>, max: number, what: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const b of src) {
    n += b.length;
    if (n > max) throw new DataUsageError(`${what} is over ${String(max)} bytes (use \`hotpot load\` for more)`);
    parts.push(b);
  }
  return Buffer.concat(parts);
}

/** Cuts a byte stream into pieces of exactly `size` bytes (the last may be shorter). */
export async function* pieces(
  src: AsyncIterable<Buffer | string> | Iterable<Buffer | string>,
  size = MAX_MESSAGE_BYTES,
): AsyncGenerator<Buffer> {
  let held: Buffer[] = [];
  let heldBytes = 0;
  for await (const x of src) {
    let b = typeof x === 'string' ? Buffer.from(x) : x;
    while (b.length > 0) {
      const take = Math.min(size - heldBytes, b.length);
      held.push(b.subarray(0, take));
      heldBytes += take;
      b = b.subarray(take);
      if (heldBytes === size) {
        yield held.length === 1 && held[0] ? held[0] : Buffer.concat(held);
        held = [];
        heldBytes = 0;
      }
    }
  }
  if (heldBytes > 0) yield Buffer.concat(held);
}

export interface WriteSummary {
  dataset: string;
  offset: number;
  bytes: number;
  commits: number;
  copies: number;
  underReplicated: boolean;
}

/**
 * Writes `src` at `offset` in commits of at most `commitBytes` (each commit atomic; an MRSW dataset's pages are
 * acquired per commit). `skipZeros`: pieces of only zeros are not sent (a freshly created dataset reads zeros).
 */
async function writeInCommits(
  s: DataSession,
  name: string,
  src: AsyncIterable<Buffer> | Iterable<Buffer>,
  o: { offset: number; commitBytes: number; progress: Progress; skipZeros?: boolean },
  committed: { bytes: number } = { bytes: 0 },
): Promise<WriteSummary> {
  const size = s.info.sizeBytes;
  const it = pieces(src)[Symbol.asyncIterator]();
  let at = o.offset;
  let pending = await it.next();
  const sum: WriteSummary = {
    dataset: name,
    offset: o.offset,
    bytes: 0,
    commits: 0,
    copies: 0,
    underReplicated: false,
  };
  while (!pending.done) {
    const batchStart = at;
    const batchEnd = Math.min(size, batchStart + o.commitBytes);
    let sent = 0;
    async function* batch(): AsyncGenerator<{ offset: number; data: Buffer }> {
      while (!pending.done && at < batchEnd) {
        const data = pending.value.subarray(0, batchEnd - at);
        const rest = pending.value.subarray(data.length);
        const piece = { offset: at, data };
        at += data.length;
        pending = rest.length > 0 ? { done: false, value: rest } : await it.next();
        o.progress.add(data.length);
        if (o.skipZeros && isZero(data)) continue;
        sent += data.length;
        yield piece;
      }
    }
    if (batchStart >= size) {
      throw new DataUsageError(
        `the input is larger than dataset ${name} (${String(size)} bytes from offset ${String(o.offset)}); ` +
          `${String(sum.bytes)} byte(s) were committed`,
      );
    }
    if (isMrsw(s)) await s.acquire(batchStart, batchEnd - batchStart, LEASE_MS, LEASE_WAIT_MS);
    // The stream is opened only when a piece is to be sent (an all-zero batch of a restore sends nothing).
    const gen = batch();
    const first = await gen.next();
    if (!first.done) {
      await s.write(
        (async function* () {
          yield first.value;
          yield* gen;
        })(),
        batchEnd - batchStart,
      );
    }
    if (sent > 0) {
      const c = await s.commit();
      sum.commits++;
      sum.copies = sum.commits === 1 ? c.copies : Math.min(sum.copies, c.copies);
      sum.underReplicated ||= c.underReplicated;
    }
    if (isMrsw(s)) await s.release();
    sum.bytes = at - o.offset;
    committed.bytes = sum.bytes;
  }
  return sum;
}

/** writeInCommits, with how much was committed before a failure in the error (the commits made before stay). */
async function writeInCommitsSaying(
  s: DataSession,
  name: string,
  src: AsyncIterable<Buffer> | Iterable<Buffer>,
  o: { offset: number; commitBytes: number; progress: Progress; skipZeros?: boolean },
): Promise<WriteSummary> {
  const committed = { bytes: 0 };
  try {
    return await writeInCommits(s, name, src, o, committed);
  } catch (e) {
    if (committed.bytes === 0 || e instanceof DataUsageError) throw e;
    const note = ` (${String(committed.bytes)} byte(s) from offset ${String(o.offset)} were committed before this)`;
    if (e instanceof HotpotError) throw Object.assign(new HotpotError(e.code, e.message + note), { cause: e });
    throw new Error((e instanceof Error ? e.message : String(e)) + note, { cause: e });
  }
}

function isZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

export async function put(t: Target, name: string, data: Buffer, offset: number | undefined): Promise<WriteSummary> {
  if (data.length === 0) throw new DataUsageError('nothing to write: the data is empty');
  if (data.length > MAX_PUT_BYTES) {
    throw new DataUsageError(`put writes at most ${String(MAX_PUT_BYTES)} bytes in one commit (use \`hotpot load\`)`);
  }
  return withSession(t, { name }, async (s) => {
    const [off] = checkRange(name, s.info.sizeBytes, offset, data.length);
    return writeInCommits(s, name, [data], {
      offset: off,
      commitBytes: data.length,
      progress: new Progress('put', data.length, { isTTY: false }),
    });
  });
}

export async function cat(t: Target, name: string): Promise<void> {
  await withSession(t, { name, readOnly: true }, async (s) => {
    for await (const b of s.read(0, s.info.sizeBytes, true)) await stdoutSink.write(b);
  });
}

/**
 * Streams the whole dataset to `sink` and then validates that no page changed since the session's sync point (a
 * read-only commit with the whole dataset as its read set): true when what was streamed is one consistent state.
 */
async function readConsistent(s: DataSession, sink: Sink, progress: Progress): Promise<boolean> {
  const size = s.info.sizeBytes;
  for await (const b of s.read(0, size, false)) {
    await sink.write(b);
    progress.add(b.length);
  }
  try {
    await s.commit([{ offset: 0, length: size }]);
    return true;
  } catch (e) {
    if (e instanceof HotpotError && e.code === 'ABORTED') return false;
    throw e;
  }
}

const CHANGED =
  'the dataset changed while it was read, so the output is not one consistent snapshot; run it again when it is ' +
  'quieter';

/**
 * Writes `prefix`, one consistent snapshot of the dataset and `suffix(hash)` to FILE (through a temporary file renamed
 * at the end, retried while the dataset kept changing) or to stdout (`-`: one attempt; a changed dataset is an error
 * after the bytes went out).
 */
async function snapshotToFile(
  s: DataSession,
  file: string,
  what: string,
  frame?: { header: Buffer; trailer: (sha256: Buffer) => Buffer },
): Promise<{ bytes: number; attempts: number }> {
  const size = s.info.sizeBytes;
  const progress = new Progress(what, size);
  const framed = (sink: Sink): { sink: Sink; hash: Hash | null } => {
    if (!frame) return { sink, hash: null };
    const hash = createHash('sha256');
    return {
      hash,
      sink: {
        write: (b) => {
          hash.update(b);
          return sink.write(b);
        },
      },
    };
  };
  if (file === '-') {
    const { sink, hash } = framed(stdoutSink);
    if (frame) await sink.write(frame.header);
    const ok = await readConsistent(s, sink, progress);
    progress.finish();
    if (!ok) throw new HotpotError('ABORTED', CHANGED);
    if (frame && hash) await stdoutSink.write(frame.trailer(hash.digest()));
    return { bytes: size, attempts: 1 };
  }
  const tmp = `${file}.partial-${String(process.pid)}`;
  try {
    for (let attempt = 1; attempt <= DEFAULT_DUMP_ATTEMPTS; attempt++) {
      if (attempt > 1) {
        await s.rollback(); // moves the session's sync point to now
        progress.reset();
      }
      const fh = await open(tmp, 'w', 0o600);
      let ok = false;
      try {
        const { sink, hash } = framed(fileSink(fh));
        if (frame) await sink.write(frame.header);
        ok = await readConsistent(s, sink, progress);
        if (ok && frame && hash) await fileSink(fh).write(frame.trailer(hash.digest()));
        if (ok) await fh.sync();
      } finally {
        await fh.close();
      }
      if (ok) {
        progress.finish();
        await rename(tmp, file);
        return { bytes: size, attempts: attempt };
      }
    }
  } finally {
    await rm(tmp, { force: true });
  }
  progress.finish();
  throw new HotpotError('ABORTED', `${CHANGED} (${String(DEFAULT_DUMP_ATTEMPTS)} attempts)`);
}

export async function dump(t: Target, name: string, file: string): Promise<{ bytes: number; attempts: number }> {
  // Read-only: the consistency check is a commit that writes nothing, which a read-only session may make.
  return withSession(t, { name, readOnly: true }, (s) => snapshotToFile(s, file, `dump ${name}`));
}

/** A file (or stdin for `-`) as a byte stream, and its size when known. */
async function inputOf(file: string): Promise<{ src: AsyncIterable<Buffer>; bytes: number | null }> {
  if (file === '-') return { src: process.stdin, bytes: null };
  let st;
  try {
    st = await stat(file);
  } catch (e) {
    throw new DataUsageError(`cannot read ${file}: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (!st.isFile()) throw new DataUsageError(`${file} is not a regular file`);
  return { src: createReadStream(file, { highWaterMark: MAX_MESSAGE_BYTES }), bytes: st.size };
}

export async function load(
  t: Target,
  file: string,
  name: string,
  o: {
    create?: { sizeBytes?: number | undefined; mode: string; replicas: number } | undefined;
    commitBytes: number;
  },
): Promise<WriteSummary> {
  const input = await inputOf(file);
  if (input.bytes === 0) throw new DataUsageError(`${file} is empty: nothing to load`);
  let created = false;
  if (o.create) {
    const sizeBytes = o.create.sizeBytes ?? input.bytes;
    if (sizeBytes === null) throw new DataUsageError('--create from stdin needs --size (the input size is unknown)');
    created = await createIfMissing(t.dispatcher, {
      name,
      sizeBytes,
      mode: o.create.mode === 'mrsw' ? 'CONSISTENCY_MODE_MRSW' : 'CONSISTENCY_MODE_MRMW',
      replicas: o.create.replicas,
    });
  }
  return withSession(t, { name }, async (s) => {
    if (input.bytes !== null && input.bytes > s.info.sizeBytes) {
      throw new DataUsageError(
        `${file} (${String(input.bytes)} bytes) is larger than dataset ${name} (${String(s.info.sizeBytes)} bytes)` +
          (created ? '' : '; `hotpot resize` it first'),
      );
    }
    const progress = new Progress(`load ${name}`, input.bytes ?? s.info.sizeBytes);
    try {
      return await writeInCommitsSaying(s, name, input.src, { offset: 0, commitBytes: o.commitBytes, progress });
    } finally {
      progress.finish();
    }
  });
}

async function createIfMissing(dispatcher: string, req: CreateDatasetRequest): Promise<boolean> {
  const c = dispatcherClient(dispatcher);
  try {
    await unary<CreateDatasetResponse__Output>((opt, cb) => c.CreateDataset(req, opt, cb));
    return true;
  } catch (e) {
    if (e instanceof HotpotError && e.code === 'ALREADY_EXISTS') return false;
    throw e;
  } finally {
    c.close();
  }
}

async function statDataset(dispatcher: string, name: string): Promise<Dataset__Output> {
  const c = dispatcherClient(dispatcher);
  try {
    const r = await unary<StatDatasetResponse__Output>((opt, cb) => c.StatDataset({ name }, opt, cb));
    if (!r.dataset) throw new HotpotError('NOT_FOUND', `dataset "${name}" not found`);
    return r.dataset;
  } finally {
    c.close();
  }
}

export function metaOf(d: Dataset__Output, version: string): BackupMeta {
  return {
    name: d.name,
    sizeBytes: d.sizeBytes,
    mode: d.mode === 'CONSISTENCY_MODE_MRSW' ? 'mrsw' : 'mrmw',
    replicas: d.replicas,
    chunkSizeBytes: d.chunkSizeBytes,
    ownerUid: d.ownerUid,
    ownerGid: d.ownerGid,
    permissions: d.permissions,
    createdUnixMs: Date.now(),
    hotpotVersion: version,
  };
}

export async function backup(
  t: Target,
  name: string,
  file: string,
  version: string,
): Promise<{ meta: BackupMeta; bytes: number }> {
  const d = await statDataset(t.dispatcher, name);
  const meta = metaOf(d, version);
  return withSession(t, { name, readOnly: true }, async (s) => {
    if (s.info.sizeBytes !== meta.sizeBytes) {
      throw new HotpotError('ABORTED', `dataset ${name} was resized while the backup began; run it again`);
    }
    await snapshotToFile(s, file, `backup ${name}`, { header: encodeHeader(meta), trailer: encodeTrailer });
    return { meta, bytes: meta.sizeBytes };
  });
}

/** Reads and checks a backup file whole (header, length, checksum) before anything is created. */
export async function checkBackup(file: string): Promise<{ meta: BackupMeta; dataOffset: number }> {
  let fh: FileHandle;
  try {
    fh = await open(file, 'r');
  } catch (e) {
    throw new DataUsageError(`cannot read ${file}: ${e instanceof Error ? e.message : String(e)}`);
  }
  try {
    const { size } = await fh.stat();
    const head = Buffer.alloc(Math.min(size, FIXED_HEADER_BYTES + MAX_META_BYTES));
    await fh.read(head, 0, head.length, 0);
    const h = parseHeader(head, size);
    const trailer = Buffer.alloc(TRAILER_BYTES);
    await fh.read(trailer, 0, TRAILER_BYTES, h.trailerOffset);
    const want = parseTrailer(trailer);
    const hash = createHash('sha256');
    const progress = new Progress(`check ${file}`, h.trailerOffset);
    for await (const b of fh.createReadStream({ start: 0, end: h.trailerOffset - 1, autoClose: false })) {
      hash.update(b as Buffer);
      progress.add((b as Buffer).length);
    }
    progress.finish();
    if (!hash.digest().equals(want)) {
      throw new BackupFormatError('corrupt backup: the checksum does not match (the file was altered or damaged)');
    }
    return { meta: h.meta, dataOffset: h.dataOffset };
  } finally {
    await fh.close();
  }
}

export async function restore(
  t: Target,
  file: string,
  name: string | undefined,
  o: { commitBytes: number },
): Promise<{ meta: BackupMeta; dataset: string; bytes: number; chunkSizeDiffers: boolean }> {
  const { meta, dataOffset } = await checkBackup(file);
  const target = name ?? meta.name;
  const c = dispatcherClient(t.dispatcher);
  let d: Dataset__Output | null;
  try {
    d = (
      await unary<CreateDatasetResponse__Output>((opt, cb) =>
        c.CreateDataset(
          {
            name: target,
            sizeBytes: meta.sizeBytes,
            mode: meta.mode === 'mrsw' ? 'CONSISTENCY_MODE_MRSW' : 'CONSISTENCY_MODE_MRMW',
            replicas: meta.replicas,
            ownerUid: meta.ownerUid,
            ownerGid: meta.ownerGid,
            permissions: meta.permissions,
          },
          opt,
          cb,
        ),
      )
    ).dataset;
    // The dispatcher may default the owner fields; set them as the backup says.
    if (d && (d.ownerUid !== meta.ownerUid || d.ownerGid !== meta.ownerGid || d.permissions !== meta.permissions)) {
      await unary((opt, cb) =>
        c.SetDatasetAccess(
          {
            name: target,
            setOwner: true,
            ownerUid: meta.ownerUid,
            ownerGid: meta.ownerGid,
            setPermissions: true,
            permissions: meta.permissions,
          },
          opt,
          cb,
        ),
      );
    }
  } finally {
    c.close();
  }
  try {
    const bytes = await withSession(t, { name: target }, async (s) => {
      const progress = new Progress(`restore ${target}`, meta.sizeBytes);
      const src = createReadStream(file, {
        start: dataOffset,
        end: dataOffset + meta.sizeBytes - 1,
        highWaterMark: MAX_MESSAGE_BYTES,
      });
      try {
        return (
          await writeInCommits(s, target, src, { offset: 0, commitBytes: o.commitBytes, progress, skipZeros: true })
        ).bytes;
      } finally {
        progress.finish();
      }
    });
    return { meta, dataset: target, bytes, chunkSizeDiffers: (d?.chunkSizeBytes ?? 0) !== meta.chunkSizeBytes };
  } catch (e) {
    // A half-restored dataset would look like a good one: it goes.
    const rmClient = dispatcherClient(t.dispatcher);
    try {
      await unary((opt, cb) => rmClient.DeleteDataset({ name: target }, opt, cb));
    } catch {
      // The original error matters more; the message below says what to check.
    } finally {
      rmClient.close();
    }
    const why = e instanceof Error ? e.message : String(e);
    throw e instanceof HotpotError
      ? new HotpotError(e.code, `${why} (restore failed; dataset ${target} was deleted again)`)
      : new Error(`${why} (restore failed; dataset ${target} was deleted again)`);
  }
}

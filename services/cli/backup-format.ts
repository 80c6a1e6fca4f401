// The file `hotpot backup` writes and `hotpot restore` reads (docs/cli.md "Backup file format"):
//
//   0       8 bytes   magic "HOTPOTBK"
//   8       u32 LE    format version (1)
//   12      u32 LE    metadata length M (1..65536)
//   16      M bytes   metadata, UTF-8 JSON (BackupMeta: what CreateDataset and SetDatasetAccess take)
//   16+M    sizeBytes the dataset's bytes (one consistent snapshot)
//   end-40  8 bytes   trailer magic "HOTPOTSM"
//   end-32  32 bytes  SHA-256 of every byte before the trailer
//
// The checksum is in a trailer so the file can be written in one pass to a pipe; restore checks it in a first pass
// before it creates anything.
import { z } from 'zod';

export const MAGIC = Buffer.from('HOTPOTBK', 'latin1');
export const TRAILER_MAGIC = Buffer.from('HOTPOTSM', 'latin1');
export const VERSION = 1;
export const FIXED_HEADER_BYTES = 16;
export const MAX_META_BYTES = 65536;
export const TRAILER_BYTES = TRAILER_MAGIC.length + 32;

export const BackupMeta = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9._-]{1,128}$/, 'a dataset name ([A-Za-z0-9._-]{1,128})'),
  sizeBytes: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
  mode: z.enum(['mrmw', 'mrsw']),
  replicas: z.number().int().min(1).max(64),
  chunkSizeBytes: z.number().int().positive(),
  ownerUid: z.number().int().min(0).max(4294967295),
  ownerGid: z.number().int().min(0).max(4294967295),
  permissions: z.number().int().min(0).max(0o777),
  createdUnixMs: z.number().int().min(0),
  hotpotVersion: z.string().max(64),
});
export type BackupMeta = z.infer<typeof BackupMeta>;

/** The file is not a usable backup: what is wrong with it, said so a person can act on it. */
export class BackupFormatError extends Error {}

export function encodeHeader(meta: BackupMeta): Buffer {
  const json = Buffer.from(JSON.stringify(BackupMeta.parse(meta)), 'utf8');
  if (json.length > MAX_META_BYTES) throw new BackupFormatError('backup metadata over 64 KiB');
  const fixed = Buffer.alloc(FIXED_HEADER_BYTES);
  MAGIC.copy(fixed, 0);
  fixed.writeUInt32LE(VERSION, 8);
  fixed.writeUInt32LE(json.length, 12);
  return Buffer.concat([fixed, json]);
}

export function encodeTrailer(sha256: Buffer): Buffer {
  if (sha256.length !== 32) throw new Error('a SHA-256 digest is 32 bytes');
  return Buffer.concat([TRAILER_MAGIC, sha256]);
}

export interface ParsedHeader {
  meta: BackupMeta;
  /** File offset of the dataset's first byte. */
  dataOffset: number;
  /** File offset of the trailer (= dataOffset + meta.sizeBytes). */
  trailerOffset: number;
}

/**
 * Parses the header from the file's first bytes (`head`: at least its first FIXED_HEADER_BYTES + MAX_META_BYTES bytes,
 * or the whole file if shorter) and checks the file's length against it.
 */
export function parseHeader(head: Buffer, fileBytes: number): ParsedHeader {
  if (head.length < FIXED_HEADER_BYTES || !head.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw new BackupFormatError(
      head.length < MAGIC.length
        ? `not a hotpot backup: the file has only ${String(fileBytes)} bytes`
        : 'not a hotpot backup: bad magic (the file does not start with HOTPOTBK)',
    );
  }
  const version = head.readUInt32LE(8);
  if (version !== VERSION) {
    throw new BackupFormatError(
      `unsupported backup format version ${String(version)} (this hotpot reads ${String(VERSION)})`,
    );
  }
  const metaLen = head.readUInt32LE(12);
  if (metaLen < 1 || metaLen > MAX_META_BYTES) {
    throw new BackupFormatError(`corrupt backup header: metadata length ${String(metaLen)} is not 1..65536`);
  }
  if (head.length < FIXED_HEADER_BYTES + metaLen) {
    throw new BackupFormatError(`truncated backup: the file ends inside its header (${String(fileBytes)} bytes)`);
  }
  let json: unknown;
  try {
    json = JSON.parse(head.subarray(FIXED_HEADER_BYTES, FIXED_HEADER_BYTES + metaLen).toString('utf8'));
  } catch {
    throw new BackupFormatError('corrupt backup header: the metadata is not JSON');
  }
  const parsed = BackupMeta.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = issue?.path.join('.') ?? '';
    throw new BackupFormatError(`corrupt backup header: metadata field "${field}": ${issue?.message ?? 'invalid'}`);
  }
  const dataOffset = FIXED_HEADER_BYTES + metaLen;
  const trailerOffset = dataOffset + parsed.data.sizeBytes;
  const expected = trailerOffset + TRAILER_BYTES;
  if (fileBytes < expected) {
    throw new BackupFormatError(
      `truncated backup: ${String(fileBytes)} bytes, the header promises ${String(expected)} ` +
        `(a ${String(parsed.data.sizeBytes)}-byte dataset)`,
    );
  }
  if (fileBytes > expected) {
    throw new BackupFormatError(
      `corrupt backup: ${String(fileBytes - expected)} byte(s) after the end the header promises (${String(expected)})`,
    );
  }
  return { meta: parsed.data, dataOffset, trailerOffset };
}

/** The SHA-256 the trailer holds; BackupFormatError if it is not a trailer. */
export function parseTrailer(trailer: Buffer): Buffer {
  if (trailer.length !== TRAILER_BYTES || !trailer.subarray(0, TRAILER_MAGIC.length).equals(TRAILER_MAGIC)) {
    throw new BackupFormatError('corrupt backup: no checksum trailer at the end (truncated or altered file)');
  }
  return trailer.subarray(TRAILER_MAGIC.length);
}

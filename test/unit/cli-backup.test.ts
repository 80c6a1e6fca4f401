// The backup file's header and trailer (services/cli/backup-format.ts) and the data commands' pure helpers.
import { createHash } from 'node:crypto';
import test from 'ava';
import {
  BackupFormatError,
  encodeHeader,
  encodeTrailer,
  parseHeader,
  parseTrailer,
  TRAILER_BYTES,
  type BackupMeta,
} from '../../services/cli/backup-format.ts';
import { checkRange, hexLines, pieces } from '../../services/cli/data.ts';
import { progressLine, roughSize } from '../../services/cli/progress.ts';

const meta: BackupMeta = {
  name: 'kv',
  sizeBytes: 8192,
  mode: 'mrsw',
  replicas: 2,
  chunkSizeBytes: 4 << 20,
  ownerUid: 1000,
  ownerGid: 100,
  permissions: 0o640,
  createdUnixMs: 1_700_000_000_000,
  hotpotVersion: '0.1.0',
};

function file(m: BackupMeta = meta): Buffer {
  const header = encodeHeader(m);
  const data = Buffer.alloc(m.sizeBytes, 7);
  const sum = createHash('sha256').update(header).update(data).digest();
  return Buffer.concat([header, data, encodeTrailer(sum)]);
}

test('a header parses back to the metadata it was made from, with the data and trailer offsets', (t) => {
  const f = file();
  const h = parseHeader(f, f.length);
  t.deepEqual(h.meta, meta);
  t.is(h.trailerOffset, h.dataOffset + 8192);
  t.is(f.length, h.trailerOffset + TRAILER_BYTES);
  const sum = parseTrailer(f.subarray(h.trailerOffset));
  t.true(sum.equals(createHash('sha256').update(f.subarray(0, h.trailerOffset)).digest()));
});

test('bad magic, another version, truncation, extra bytes and bad metadata are refused with what is wrong', (t) => {
  const f = file();
  const err = (b: Buffer, size = b.length): string =>
    t.throws(() => parseHeader(b, size), { instanceOf: BackupFormatError }).message;
  t.regex(err(Buffer.concat([Buffer.from('NOTHOTPO'), f.subarray(8)])), /bad magic/);
  t.regex(err(Buffer.from('HOT')), /only 3 bytes/);
  const v2 = Buffer.from(f);
  v2.writeUInt32LE(2, 8);
  t.regex(err(v2), /unsupported backup format version 2/);
  t.regex(err(f.subarray(0, f.length - 1)), /truncated backup: \d+ bytes, the header promises \d+/);
  t.regex(err(f.subarray(0, 20)), /ends inside its header/);
  t.regex(err(Buffer.concat([f, Buffer.alloc(3)])), /3 byte\(s\) after the end/);
  const huge = Buffer.from(f);
  huge.writeUInt32LE(70000, 12);
  t.regex(err(huge), /metadata length 70000/);
  const badJson = Buffer.from(f);
  badJson[16] = 0x7b + 1; // '{' -> '|'
  t.regex(err(badJson), /not JSON/);
  const badField = encodeHeader(meta);
  const text = badField.subarray(16).toString().replace('"mrsw"', '"xxxx"');
  const patched = Buffer.concat([badField.subarray(0, 16), Buffer.from(text)]);
  t.regex(err(patched, patched.length + 8192 + TRAILER_BYTES), /metadata field "mode"/);
  t.throws(() => parseTrailer(Buffer.alloc(TRAILER_BYTES)), { message: /no checksum trailer/ });
});

test('byte ranges are checked against the dataset size with the size in the message', (t) => {
  t.deepEqual(checkRange('d', 100, undefined, undefined), [0, 100]);
  t.deepEqual(checkRange('d', 100, 40, undefined), [40, 60]);
  t.deepEqual(checkRange('d', 100, 100, undefined), [100, 0]);
  t.throws(() => checkRange('d', 100, 101, undefined), {
    message: /--offset 101 is past the end of dataset d \(100 bytes\)/,
  });
  t.throws(() => checkRange('d', 100, 90, 11), { message: /passes the end of dataset d \(100 bytes; at most 10/ });
});

test('input is cut into exact 1 MiB pieces whatever sizes it arrives in', async (t) => {
  const got: number[] = [];
  const parts = [Buffer.alloc(5), Buffer.alloc(2 << 20), Buffer.alloc(3)];
  for await (const p of pieces(parts, 1 << 20)) got.push(p.length);
  t.deepEqual(got, [1 << 20, 1 << 20, 8]);
  const joined: Buffer[] = [];
  const src = [Buffer.from('abc'), Buffer.from('defg')];
  for await (const p of pieces(src, 3)) joined.push(p);
  t.deepEqual(joined.map(String), ['abc', 'def', 'g']);
});

test('hex lines show the dataset offset and 16 bytes each; the progress line shows percent and throughput', (t) => {
  t.is(
    hexLines(Buffer.from('0123456789abcdefXY'), 4096),
    '00001000  30 31 32 33 34 35 36 37 38 39 61 62 63 64 65 66\n00001010  58 59\n',
  );
  t.is(roughSize(1536), '1.5KiB');
  t.is(roughSize(12), '12B');
  const line = progressLine('dump kv', 50 << 20, 100 << 20, 2000);
  t.regex(line, /^dump kv \[#{15} {15}\] {2}50% 50\.0MiB\/100\.0MiB 25\.0MiB\/s$/);
});

// The CLI's data commands against a live cluster: get, put, cat, dump, load, backup, restore, byte-exact.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { hotpotBin } from '../../services/common/paths.ts';
import { DataSession } from '../../services/cli/data-client.ts';
import { HotpotError } from '../../services/common/errors.ts';
import { startCluster } from '../helpers/cluster.ts';

const MiB = 1024 * 1024;

/** Runs the CLI with `input` on stdin; stdout as bytes. */
function cli(
  args: string[],
  env: NodeJS.ProcessEnv,
  input?: Buffer,
): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [hotpotBin, ...args], {
      stdio: [input ? 'pipe' : 'ignore', 'pipe', 'pipe'] as const,
      env: { ...process.env, HOTPOT_TRACES_EXPORTER: 'none', ...env },
    });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    if (input && child.stdin) child.stdin.end(input);
    child.once('exit', (code) => {
      resolve({ code, stdout: Buffer.concat(out), stderr });
    });
  });
}

test('get, put, cat, dump, load, backup and restore move the exact bytes, and bad input is refused', async (t) => {
  t.timeout(300_000);
  const c = await startCluster(t, { nodes: 2, prefix: 'clidata' });
  const env = { HOTPOT_DISPATCHER: c.dispatcher };
  const same = (got: Buffer, want: Buffer, what: string): void => {
    const at = got.findIndex((b, i) => b !== want[i]);
    t.true(
      got.equals(want),
      `${what}: ${String(got.length)} bytes, want ${String(want.length)}; first difference at ${String(at)}`,
    );
  };
  const ok = async (args: string[], input?: Buffer): Promise<Buffer> => {
    const r = await cli(args, env, input);
    t.is(r.code, 0, `hotpot ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };

  // put / get: a write across a page boundary, from --data and from stdin; reads through either node.
  await ok(['create', 'small', '--size', '12MiB', '--replicas', '2']);
  t.regex((await ok(['put', 'small', '--offset', '4094', '--data', 'hello'])).toString(), /wrote 5 byte\(s\)/);
  t.is((await ok(['get', 'small', '--offset', '4094', '--length', '5'])).toString(), 'hello');
  const blob = randomBytes(3 * MiB + 17);
  await ok(['put', 'small', '--offset', String(8 * MiB - 5)], blob);
  const n2 = String(c.nodes[1]?.id ?? '');
  t.not(n2, '');
  same(
    await ok(['get', 'small', '--offset', String(8 * MiB - 5), '--length', String(blob.length), '--node', n2]),
    blob,
    'get through the other node',
  );
  t.is((await ok(['get', 'small', '--offset', '4096', '--length', '3', '--hex'])).toString(), `00001000  6c 6c 6f\n`);
  const whole = await ok(['cat', 'small']);
  t.is(whole.length, 12 * MiB);
  t.deepEqual(whole.subarray(4094, 4099), Buffer.from('hello'));
  same(whole.subarray(8 * MiB - 5, 8 * MiB - 5 + blob.length), blob, 'cat small');

  // A reader that stops early ends `cat` quietly (exit 0, no EPIPE trace).
  const head = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    const sh = spawn(
      'bash',
      ['-o', 'pipefail', '-c', `"${process.execPath}" "${hotpotBin}" cat small | head -c 100 >/dev/null`],
      {
        env: { ...process.env, ...env, HOTPOT_TRACES_EXPORTER: 'none' },
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let stderr = '';
    sh.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    sh.once('exit', (code) => {
      resolve({ code, stderr });
    });
  });
  t.is(head.code, 0, head.stderr);
  t.is(head.stderr, '');
  // An unreachable dispatcher is one line saying what to try.
  const down = await cli(['get', 'small'], { HOTPOT_DISPATCHER: '127.0.0.1:1' });
  t.is(down.code, 1);
  t.is(
    down.stderr,
    'hotpot: cannot reach the dispatcher at 127.0.0.1:1 (connection refused): is the cluster running? start one with ' +
      '`hotpot up`, or give its address with --dispatcher\n',
  );

  // Ranges past the end are usage errors that say the size.
  const past = await cli(['get', 'small', '--offset', String(12 * MiB - 2), '--length', '3'], env);
  t.is(past.code, 2);
  t.regex(past.stderr, /passes the end of dataset small \(12582912 bytes; at most 2 from that offset\)/);
  const putPast = await cli(['put', 'small', '--offset', String(12 * MiB - 1), '--data', 'xy'], env);
  t.is(putPast.code, 2);
  t.regex(putPast.stderr, /passes the end of dataset small/);
  t.is((await cli(['get', 'nosuch'], env)).code, 1);

  // load --create from a file, in several commits; dump to a file and to stdout.
  const dir = c.dir;
  const src = join(dir, 'src.bin');
  const content = randomBytes(5 * MiB + 123);
  writeFileSync(src, content);
  // A dataset's size is whole 4 KiB pages: the created one reads zeros after the file's bytes.
  const padded = Buffer.concat([content, Buffer.alloc(4096 - (content.length % 4096))]);
  const loaded = await ok(['load', src, 'big', '--create', '--replicas', '2', '--commit-size', '2MiB']);
  t.regex(loaded.toString(), /loaded 5243003 bytes of .* into big in 3 commit\(s\)/);
  same(await ok(['cat', 'big']), padded, 'cat big');
  const dumped = join(dir, 'dump.bin');
  t.regex((await ok(['dump', 'big', dumped])).toString(), /one consistent snapshot/);
  same(readFileSync(dumped), padded, 'dump to a file');
  same(await ok(['dump', 'big', '-']), padded, 'dump to stdout');
  const tooBig = await cli(['load', src, 'small-one'], env);
  t.is(tooBig.code, 1, 'a missing dataset without --create');
  await ok(['create', 'tiny', '--size', '1MiB']);
  const over = await cli(['load', src, 'tiny'], env);
  t.is(over.code, 2);
  t.regex(over.stderr, /larger than dataset tiny/);
  // load from stdin into an MRSW dataset (its pages are acquired per commit).
  await ok(['create', 'single', '--size', '8MiB', '--mode', 'mrsw']);
  await ok(['load', '-', 'single'], content);
  same((await ok(['cat', 'single'])).subarray(0, content.length), content, 'load from stdin');

  // backup keeps the metadata; restore recreates it under another name, byte-exact.
  await ok(['chown', '1234:567', 'big']);
  await ok(['chmod', '0640', 'big']);
  const bk = join(dir, 'big.hpbk');
  await ok(['backup', 'big', bk]);
  const restored = await ok(['restore', bk, 'big2']);
  t.regex(restored.toString(), /restored big2 .*5246976 bytes, mrmw, 2 replica\(s\), owner 1234:567 0640/);
  const st = JSON.parse((await ok(['--json', 'stat', 'big2'])).toString()) as {
    dataset: { sizeBytes: number; replicas: number; owner: { uid: number; gid: number }; permissions: string };
  };
  t.deepEqual(
    [st.dataset.sizeBytes, st.dataset.replicas, st.dataset.owner, st.dataset.permissions],
    [padded.length, 2, { uid: 1234, gid: 567 }, '0640'],
  );
  same(await ok(['cat', 'big2']), padded, 'restored');
  const again = await cli(['restore', bk, 'big2'], env);
  t.is(again.code, 1);
  t.regex(again.stderr, /already exists/);

  // Damaged backups are refused before anything is created.
  const file = readFileSync(bk);
  const flipped = Buffer.from(file);
  flipped[flipped.length - 1000] = (flipped[flipped.length - 1000] ?? 0) ^ 0x01;
  const cases: [string, Buffer, RegExp][] = [
    ['flipped', flipped, /checksum does not match/],
    ['truncated', file.subarray(0, file.length - 7), /truncated backup/],
    ['magic', Buffer.concat([Buffer.from('NOTHOTPO'), file.subarray(8)]), /bad magic/],
  ];
  for (const [what, bytes, message] of cases) {
    const p = join(dir, `${what}.hpbk`);
    writeFileSync(p, bytes);
    const r = await cli(['restore', p, `bad-${what}`], env);
    t.is(r.code, 1, what);
    t.regex(r.stderr, message, what);
    t.regex(r.stderr, /nothing was created/, what);
  }
  // What makes dump and backup one snapshot: the read-only check after a whole read fails when a commit landed since
  // the session's sync point, and passes when none did.
  const addr = c.nodes[0]?.address ?? '';
  const reader = await DataSession.open(addr, { name: 'small' });
  t.teardown(() => reader.end());
  const readAll = async (): Promise<number> => {
    let n = 0;
    for await (const b of reader.read(0, 12 * MiB, false)) n += b.length;
    return n;
  };
  t.is(await readAll(), 12 * MiB);
  await ok(['put', 'small', '--offset', String(11 * MiB), '--data', 'changed', '--node', String(c.nodes[1]?.id ?? '')]);
  const check = await reader.commit([{ offset: 0, length: 12 * MiB }]).then(
    () => 'passed',
    (e: unknown) => (e instanceof HotpotError ? e.code : String(e)),
  );
  t.is(check, 'ABORTED', 'a commit after the sync point fails the check');
  await reader.rollback();
  t.is(await readAll(), 12 * MiB);
  await reader.commit([{ offset: 0, length: 12 * MiB }]);
  t.pass('no commit since the sync point: the check passes');

  const names = (JSON.parse((await ok(['--json', 'ls'])).toString()) as { name: string }[]).map((d) => d.name);
  t.deepEqual(names.sort(), ['big', 'big2', 'single', 'small', 'tiny']);
});

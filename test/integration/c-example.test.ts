// The C ABI as apps use it: examples/c linked statically in-tree, and the shared libhotpot.so installed into a
// staging DESTDIR and found through pkg-config, each run against a live cluster.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { projectRoot } from '../../services/common/paths.ts';
import { startApp } from '../helpers/app.ts';
import { startDispatcher, startNode, tempDir } from '../helpers/cluster.ts';

const lib = join(projectRoot, 'native/lib');
const example = join(projectRoot, 'examples/c');

// One build for both tests: they share native/lib/out, so two concurrent makes there would race.
test.before(() => {
  execFileSync('make', ['-s', '-C', lib, '-j2'], { stdio: 'inherit' });
  execFileSync('make', ['-s', '-C', example], { stdio: 'inherit' });
});

/** A dispatcher and two nodes with their pools in /dev/shm (removed on teardown). */
async function twoNodes(t: ExecutionContext, tag: string) {
  const dir = tempDir(t);
  const d = await startDispatcher(t, { stateDir: join(dir, 'd') });
  const pool = (i: number) =>
    join('/dev/shm', `hotpot-test-${tag}-${String(process.pid)}-${dir.slice(-6)}-${String(i)}`);
  t.teardown(() => {
    for (const i of [1, 2]) rmSync(pool(i), { recursive: true, force: true });
  });
  const node = (i: number) =>
    startNode(t, {
      dispatcher: d.address,
      name: `${tag}${String(i)}`,
      stateDir: join(dir, `n${String(i)}`),
      extra: ['--pool-dir', pool(i)],
    });
  return { dir, n1: await node(1), n2: await node(2) };
}

/** Runs a built example on n1 (committing to 2 nodes) and reads the bytes back through a TypeScript app on n2. */
async function runExample(
  t: ExecutionContext,
  binary: string,
  dataset: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<void> {
  const { n1, n2 } = await twoNodes(t, dataset);
  const r = spawnSync(binary, [dataset, '2', n1.socket], { encoding: 'utf8', env });
  t.is(r.status, 0, `${r.stdout}\n${r.stderr}`);
  t.regex(r.stdout, /committed: 2 copies/);
  t.regex(r.stdout, /read back: "hello from the hotpot C example" \(snapshot, \d+ runs?\)/);
  const app = await startApp(t, n2.socket);
  await app.call({ op: 'connect' });
  await app.call({ op: 'open', name: dataset });
  await app.call({ op: 'map' });
  const { hex } = await app.call<{ hex: string }>({ op: 'read', offset: 0, length: 32 });
  t.is(Buffer.from(hex, 'hex').toString('latin1'), 'hello from the hotpot C example\0');
}

/** The functions hotpot.h declares (comments and macros left out). */
function declaredFunctions(): string[] {
  const header = readFileSync(join(projectRoot, 'native/include/hotpot.h'), 'utf8')
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/\/\/.*$/gm, '')
    .split('\n')
    .filter((line) => !line.trimStart().startsWith('#'))
    .join('\n');
  return [...header.matchAll(/\b(hotpot_\w+)\s*\(/g)].map((m) => m[1] ?? '').sort();
}

test('the C example maps a dataset, commits through the C ABI, and a TypeScript app reads its bytes', async (t) => {
  t.timeout(180_000);
  await runExample(t, join(example, 'hotpot_example'), 'from-c');
});

test('libhotpot.so installs into a DESTDIR, exports only the C ABI, and the example built with pkg-config runs against it', async (t) => {
  t.timeout(180_000);
  const stage = join(tempDir(t), 'stage');
  const prefix = '/opt/hotpot';
  execFileSync('make', ['-s', '-C', lib, 'install', `PREFIX=${prefix}`, `DESTDIR=${stage}`], { stdio: 'inherit' });
  const libdir = join(stage, prefix, 'lib');
  t.true(existsSync(join(stage, prefix, 'include/hotpot.h')));
  t.is(readlinkSync(join(libdir, 'libhotpot.so')), 'libhotpot.so.0');
  t.is(readlinkSync(join(libdir, 'libhotpot.so.0')), 'libhotpot.so.0.1.0');
  const pc = readFileSync(join(libdir, 'pkgconfig/hotpot.pc'), 'utf8');
  t.regex(pc, /^prefix=\/opt\/hotpot$/m, 'the .pc names the install prefix, not the staging dir');

  const real = join(libdir, 'libhotpot.so.0.1.0');
  t.regex(execFileSync('readelf', ['-d', real], { encoding: 'utf8' }), /Library soname: \[libhotpot\.so\.0\]/);
  const exported = execFileSync('nm', ['-D', '--defined-only', '--format=posix', real], { encoding: 'utf8' })
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => line.split(' ')[0] ?? '')
    .sort();
  const declared = declaredFunctions();
  t.true(declared.length >= 15, `hotpot.h declarations found: ${declared.join(', ')}`);
  t.deepEqual(exported, declared);

  // PKG_CONFIG_SYSROOT_DIR maps the .pc's /opt/hotpot paths into the staging dir (as when cross-packaging).
  const env = { ...process.env, PKG_CONFIG_PATH: join(libdir, 'pkgconfig'), PKG_CONFIG_SYSROOT_DIR: stage };
  const flags = execFileSync('pkg-config', ['--cflags', '--libs', 'hotpot'], { encoding: 'utf8', env })
    .trim()
    .split(/\s+/);
  t.deepEqual(flags, [`-I${join(stage, prefix, 'include')}`, `-L${libdir}`, '-lhotpot']);
  const binary = join(tempDir(t), 'hotpot_example');
  execFileSync(
    'cc',
    ['-std=c11', '-Wall', '-Wextra', '-Werror', join(example, 'hotpot_example.c'), '-o', binary, ...flags],
    { stdio: 'inherit' },
  );
  t.regex(execFileSync('readelf', ['-d', binary], { encoding: 'utf8' }), /Shared library: \[libhotpot\.so\.0\]/);
  // The Makefile's pkg-config target builds the same program.
  rmSync(join(example, 'hotpot_example_shared'), { force: true });
  execFileSync('make', ['-s', '-C', example, 'shared'], { stdio: 'inherit', env });
  t.true(existsSync(join(example, 'hotpot_example_shared')));

  await runExample(t, binary, 'from-libhotpot', { ...process.env, LD_LIBRARY_PATH: libdir });
});

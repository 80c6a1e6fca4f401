// The TypeScript SDK as a package: packed with `npm pack` (clients/typescript, @hotpot-dspm/client), installed from
// the tarball into a fresh project outside the repository, type-checked there by the user's own tsc (strict,
// NodeNext) and run as compiled JavaScript against a real cluster: one process writes and commits, another reads.
import { execFile } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { projectRoot } from '../../services/common/paths.ts';
import { startDispatcher, startNode, tempDir } from '../helpers/cluster.ts';

const PACKAGE = '@hotpot-dspm/client';

/** This environment without HOTPOT_* settings: the user's program knows nothing of the test's. */
function userEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('HOTPOT_')) env[k] = v;
  return env;
}

function run(cmd: string, args: string[], cwd: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd, env: userEnv(), timeout: 240_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

function versionOf(pkg: string): string {
  const file = join(projectRoot, 'node_modules', pkg, 'package.json');
  return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
}

// The user's program: argv write|read SOCKET NAME [TEXT].
const APP = `import { connect, CommitConflictError, HotpotError, type Dataset } from '${PACKAGE}';

const [mode, socketPath, name, text] = process.argv.slice(2);
if (!socketPath || !name) throw new Error('usage: app write|read SOCKET NAME [TEXT]');
const hp = await connect({ socketPath });
try {
  const ds: Dataset = await hp.open(name, { create: { size: 1 << 20, mode: 'mrmw', replicas: 2 } });
  const mem: Buffer = ds.map();
  if (mode === 'write') {
    mem.write(text ?? '', 4096, 'utf8');
    const r = await ds.commit();
    console.log(JSON.stringify({ copies: r.copies, size: ds.info.size }));
  } else {
    const end = mem.indexOf(0, 4096);
    console.log(JSON.stringify({ text: mem.toString('utf8', 4096, end) }));
  }
  ds.close();
} catch (e) {
  if (e instanceof CommitConflictError) console.error('conflict', e.conflicts);
  else if (e instanceof HotpotError) console.error('hotpot error', e.code);
  throw e;
} finally {
  hp.close();
}
`;

test('the SDK packed as @hotpot-dspm/client installs in a fresh project, type-checks there and commits to a cluster', async (t) => {
  t.timeout(360_000);
  const dir = tempDir(t, 'hotpot-sdk-package-');
  const npm = process.env.npm_execpath;
  const npmCmd = npm ? process.execPath : 'npm';
  const npmArgs = (args: string[]): string[] => (npm ? [npm, ...args] : args);

  // npm pack runs the package's prepack (scripts/build-sdk.mjs): the tarball is what `npm publish` would upload.
  const packDir = join(dir, 'pack');
  mkdirSync(packDir);
  await run(npmCmd, npmArgs(['pack', '--workspace', 'clients/typescript', '--pack-destination', packDir]), projectRoot);
  const tarballs = readdirSync(packDir).filter((f) => f.endsWith('.tgz'));
  t.deepEqual(tarballs, ['hotpot-dspm-client-0.1.0.tgz']);
  const tarball = join(packDir, tarballs[0] ?? '');

  // A user's project: the tarball and @types/node, dependencies from npm's cache when it has them.
  const app = join(dir, 'app');
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'user-app', private: true, type: 'module' }));
  await run(
    npmCmd,
    npmArgs([
      'install',
      '--prefer-offline',
      '--no-audit',
      '--no-fund',
      tarball,
      `@types/node@${versionOf('@types/node')}`,
    ]),
    app,
  );
  const installed = join(app, 'node_modules', '@hotpot-dspm', 'client');
  t.false(lstatSync(installed).isSymbolicLink(), 'installed as files, not linked to the repository');
  t.true(realpathSync(installed).startsWith(realpathSync(app)));
  for (const f of [
    'dist/clients/typescript/index.js',
    'dist/clients/typescript/index.d.ts',
    'dist/native/index.js',
    'dist/native/binding.gyp',
    'dist/native/include/hotpot.h',
    'dist/native/build/Release/hotpot_native.node',
    'dist/proto/hotpot/v1/data.proto',
    'README.md',
  ]) {
    t.true(existsSync(join(installed, f)), `${f} in the installed package`);
  }

  // The user's tsc (strict, NodeNext) type-checks a program importing the package and compiles it.
  writeFileSync(join(app, 'app.ts'), APP);
  writeFileSync(
    join(app, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        strict: true,
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        target: 'ES2022',
        types: ['node'],
        outDir: 'out',
      },
      include: ['app.ts'],
    }),
  );
  await run(process.execPath, [join(projectRoot, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', app], app);
  t.true(existsSync(join(app, 'out', 'app.js')));

  const d = await startDispatcher(t, { stateDir: join(dir, 'd') });
  const a = await startNode(t, { dispatcher: d.address, name: 'a', stateDir: join(dir, 'a') });
  const b = await startNode(t, { dispatcher: d.address, name: 'b', stateDir: join(dir, 'b') });
  const text = `written through ${PACKAGE} at ${String(Date.now())}`;
  const wrote = JSON.parse(await run(process.execPath, ['out/app.js', 'write', a.socket, 'pkg', text], app)) as {
    copies: number;
    size: number;
  };
  t.deepEqual(wrote, { copies: 2, size: 1 << 20 });
  // Another process, on the other node, reads the committed bytes.
  const read = JSON.parse(await run(process.execPath, ['out/app.js', 'read', b.socket, 'pkg'], app)) as {
    text: string;
  };
  t.is(read.text, text);
});

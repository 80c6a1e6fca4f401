// Builds the SDK package (clients/typescript, @hotpot-dspm/client) into clients/typescript/dist: its `prepack`, and
// part of `npm run build` so that `import '@hotpot-dspm/client'` works in the repository (an npm workspace).
//
// dist/ mirrors the repository, so the SDK's sources run unchanged (native/index.ts finds the addon and
// services/common/paths.ts the .proto files by walking up from their own folder):
//   dist/clients/typescript/  the SDK (JS + .d.ts), the package's entry point
//   dist/native/index.*       the typed boundary to the addon
//   dist/services/common/     what the SDK uses of it (gRPC client, errors), and services/generated (types)
//   dist/proto/               the .proto files the gRPC client loads at run time
//   dist/native/{binding.gyp,src,include}  the addon's sources (the shim lives in the engine's addon)
//   dist/native/build/Release/hotpot_native.node  the addon built here, with its stamp: the install script keeps
//                              it where it loads (same sources, platform and N-API) and builds from the sources
//                              otherwise
//   dist/install-native.mjs   scripts/install-native.mjs, run by the package's install script
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = join(root, 'clients', 'typescript');
const dist = join(pkg, 'dist');

function run(args, what, quiet = false) {
  const r = spawnSync(process.execPath, args, {
    cwd: root,
    stdio: ['ignore', quiet ? 'ignore' : 'inherit', 'inherit'],
  });
  if (r.status !== 0) {
    process.stderr.write(`build-sdk: ${what} failed\n`);
    process.exit(r.status ?? 1);
  }
}

// The generated gRPC types the SDK's declarations refer to (npm run build and npm test make them first: not made
// again under tests that may be reading them), and an addon built from the current sources.
if (!existsSync(join(root, 'services', 'generated', 'hotpot', 'v1'))) {
  run([join(root, 'scripts', 'gen-proto.mjs')], 'gen:proto');
}
run([join(root, 'scripts', 'install-native.mjs')], 'the native addon', true);

rmSync(dist, { recursive: true, force: true });
const tsc = join(dirname(createRequire(import.meta.url).resolve('typescript/package.json')), 'bin', 'tsc');
run([tsc, '-p', join(pkg, 'tsconfig.json')], 'tsc');

cpSync(join(root, 'proto'), join(dist, 'proto'), { recursive: true });
for (const f of ['binding.gyp', 'src', 'include']) {
  cpSync(join(root, 'native', f), join(dist, 'native', f), { recursive: true });
}
cpSync(join(root, 'scripts', 'install-native.mjs'), join(dist, 'install-native.mjs'));

const from = join(root, 'native', 'build', 'Release');
const to = join(dist, 'native', 'build', 'Release');
mkdirSync(to, { recursive: true });
cpSync(join(from, 'hotpot_native.node'), join(to, 'hotpot_native.node'));
const stamp = JSON.parse(readFileSync(join(from, 'hotpot-build.json'), 'utf8'));
writeFileSync(join(to, 'hotpot-build.json'), JSON.stringify({ ...stamp, targets: ['hotpot_native'] }, null, 2) + '\n');

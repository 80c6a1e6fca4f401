// `npm run build` (after gen:proto): compiles the daemons, the CLI and the SDK sources to dist/ (tsconfig.build.json),
// copies the dashboard's static files beside the compiled server, and stamps dist/ with the state of the sources so
// that bin/hotpot.mjs runs the compiled JavaScript only while it matches them (scripts/build-status.mjs).
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { distDir, root, sourceState, stampFile, stampText } from './build-status.mjs';

let tsc;
try {
  tsc = join(dirname(createRequire(import.meta.url).resolve('typescript/package.json')), 'bin', 'tsc');
} catch {
  // Installed without dev dependencies: nothing to compile with; bin/hotpot.mjs runs the sources through tsx.
  process.stdout.write('build: typescript is not installed; hotpot runs from the TypeScript sources\n');
  process.exit(0);
}
const state = sourceState();
rmSync(stampFile, { force: true });
const r = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { stdio: 'inherit' });
if (r.status !== 0) process.exit(r.status ?? 1);
const staticDir = join(distDir, 'services', 'dashboard', 'static');
rmSync(staticDir, { recursive: true, force: true });
cpSync(join(root, 'services', 'dashboard', 'static'), staticDir, { recursive: true });
if (!existsSync(join(distDir, 'services', 'cli', 'main.js'))) {
  process.stderr.write('build: dist/services/cli/main.js was not emitted\n');
  process.exit(1);
}
writeFileSync(stampFile, stampText(state));

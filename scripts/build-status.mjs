// Whether dist/ (npm run build) is the compiled form of the sources as they are now. bin/hotpot.mjs asks this at
// every start, so it only lists and stats the source files (about 80): no hashing, no reading.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const distDir = join(root, 'dist');
const stampFile = join(distDir, 'build.json');

// What tsconfig.build.json compiles (services/**, clients/typescript/*.ts, native/index.ts), the files the build
// copies (services/dashboard/static) and the compiler options. services/generated is left out: it holds types only
// (nothing of it runs), and `npm test` regenerates it before every run. The rest of clients/typescript (the SDK
// package's README, manifest, build output) is not part of dist/.
const SOURCE_FILES = ['native/index.ts', 'tsconfig.json', 'tsconfig.build.json'];
const SKIP = new Set(['services/generated']);

/** The number of source files and the newest modification time among them. */
export function sourceState() {
  let files = 0;
  let newestMs = 0;
  const count = (rel) => {
    files++;
    // Whole milliseconds: a copy that keeps timestamps (cp -p) keeps no finer ones.
    newestMs = Math.max(newestMs, Math.floor(statSync(join(root, rel)).mtimeMs));
  };
  const visit = (rel) => {
    if (SKIP.has(rel)) return;
    for (const e of readdirSync(join(root, rel), { withFileTypes: true })) {
      if (e.isDirectory()) visit(`${rel}/${e.name}`);
      else count(`${rel}/${e.name}`);
    }
  };
  visit('services');
  for (const e of readdirSync(join(root, 'clients', 'typescript'), { withFileTypes: true })) {
    if (e.isFile() && e.name.endsWith('.ts')) count(`clients/typescript/${e.name}`);
  }
  for (const f of SOURCE_FILES) count(f);
  return { files, newestMs };
}

/** Records that dist/ was built from the sources in `state` (taken before the compiler ran). */
export function stampText(state) {
  return JSON.stringify(state) + '\n';
}
export { stampFile };

/** True when dist/ was built and no source was added, removed or changed since. */
export function builtIsCurrent() {
  let stamp;
  try {
    stamp = JSON.parse(readFileSync(stampFile, 'utf8'));
  } catch {
    return false;
  }
  const now = sourceState();
  return stamp.files === now.files && stamp.newestMs === now.newestMs;
}

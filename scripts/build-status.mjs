// Whether dist/ (npm run build) is the compiled form of the sources as they are now. bin/hotpot.mjs asks this at
// every start, so it only lists and stats the source files (about 80): no hashing, no reading.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const distDir = join(root, 'dist');
const stampFile = join(distDir, 'build.json');

// What tsconfig.build.json compiles, plus the files the build copies and the compiler options. services/generated
// is left out: it holds types only (nothing of it runs), and `npm test` regenerates it before every run.
const SOURCE_DIRS = ['services', 'clients/typescript'];
const SOURCE_FILES = ['native/index.ts', 'tsconfig.json', 'tsconfig.build.json'];
const SKIP = new Set(['services/generated', 'clients/typescript/dist', 'clients/typescript/node_modules']);

/** The number of source files and the newest modification time among them. */
export function sourceState() {
  let files = 0;
  let newestMs = 0;
  const visit = (rel) => {
    const st = statSync(join(root, rel));
    if (st.isDirectory()) {
      if (SKIP.has(rel)) return;
      for (const name of readdirSync(join(root, rel))) visit(`${rel}/${name}`);
      return;
    }
    files++;
    // Whole milliseconds: a copy that keeps timestamps (cp -p) keeps no finer ones.
    newestMs = Math.max(newestMs, Math.floor(st.mtimeMs));
  };
  for (const d of SOURCE_DIRS) visit(d);
  for (const f of SOURCE_FILES) visit(f);
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

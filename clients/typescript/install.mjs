// The package's install script: builds the native addon from the sources it ships (dist/native) unless the build
// it ships matches this machine (dist/install-native.mjs is scripts/install-native.mjs of the repository).
// In the repository (an npm workspace) there is no dist/ until the package is built: the root's install builds
// native/ there, so this does nothing.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const script = fileURLToPath(new URL('./dist/install-native.mjs', import.meta.url));
const dir = fileURLToPath(new URL('./dist/native', import.meta.url));
if (existsSync(script)) {
  const r = spawnSync(process.execPath, [script, '--dir', dir, '--target', 'hotpot_native'], { stdio: 'inherit' });
  process.exitCode = r.status ?? 1;
}

import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

// The project root is found by walking up to package.json: the same code runs from source under tsx and from
// any other location, so paths must not be relative to this file's folder depth.
function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'proto'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('hotpot: cannot find the project root (package.json)');
    dir = up;
  }
}

export const projectRoot = findRoot();
export const hotpotBin = join(projectRoot, 'bin', 'hotpot.mjs');
/** In a node's state dir: the path of its pool (`hotpot clean` removes the pools of a local cluster). */
export const POOL_DIR_FILE = 'pool-dir';
/** Where the cluster CA and the certificates of a local cluster live (`hotpot up`, `hotpot certs`). */
export const DEFAULT_TLS_DIR = '.hotpot/tls';

import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

// The project root is found by walking up to the folder holding the .proto files (proto/hotpot/v1): the same code
// runs from the sources (tsx), compiled from dist/ (npm run build: the root is the repository's), and from the
// installed SDK package (its dist/ holds a copy of proto/), so paths must not be relative to this file's depth.
function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'proto', 'hotpot', 'v1'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('hotpot: cannot find the project root (proto/hotpot/v1)');
    dir = up;
  }
}

export const projectRoot = findRoot();
export const hotpotBin = join(projectRoot, 'bin', 'hotpot.mjs');
/** In a node's state dir: the path of its pool (`hotpot clean` removes the pools of a local cluster). */
export const POOL_DIR_FILE = 'pool-dir';
/** Where the cluster CA and the certificates of a local cluster live (`hotpot up`, `hotpot certs`). */
export const DEFAULT_TLS_DIR = '.hotpot/tls';

// The Python client (clients/python) from tests: its generated stubs, and one call of it as a subprocess.
import { execFile, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { projectRoot } from '../../services/common/paths.ts';

export const PYTHON = '/usr/bin/python3';
export const PY_DIR = join(projectRoot, 'clients', 'python');

/** Generates the stubs when this checkout has none (they are gitignored build output; CI makes them in .ci/run). */
export function ensurePythonStubs(): void {
  if (!existsSync(join(PY_DIR, 'hotpot', '_gen', 'dispatcher_pb2.py'))) {
    const r = spawnSync('bash', [join(PY_DIR, 'gen.sh')], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`clients/python/gen.sh failed: ${r.stderr}`);
  }
}

/** The dataset names `hotpot.Client(dispatcher=…).ls()` lists, sorted, in the caller's environment. */
export function pythonLs(dispatcher: string): Promise<string[]> {
  return new Promise((resolve, reject) => {
    execFile(
      PYTHON,
      [
        '-c',
        'import sys, hotpot\nprint(",".join(sorted(d.name for d in hotpot.Client(dispatcher=sys.argv[1]).ls())))',
        dispatcher,
      ],
      { env: { ...process.env, PYTHONPATH: PY_DIR } },
      (err, stdout, stderr) => (err ? reject(new Error(stderr)) : resolve(stdout.trim().split(',').filter(Boolean))),
    );
  });
}

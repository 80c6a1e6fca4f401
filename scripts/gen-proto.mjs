// Generates TypeScript types for proto/hotpot/v1/*.proto into services/generated (type-only, never edited).
import { spawnSync } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const protoDir = join(root, 'proto');
const outDir = join(root, 'services', 'generated');
const files = readdirSync(join(protoDir, 'hotpot', 'v1'))
  .filter((f) => f.endsWith('.proto'))
  .map((f) => `hotpot/v1/${f}`);
const require = createRequire(import.meta.url);
const bin = join(
  dirname(require.resolve('@grpc/proto-loader/package.json')),
  'build',
  'bin',
  'proto-loader-gen-types.js',
);
rmSync(outDir, { recursive: true, force: true });
const r = spawnSync(
  process.execPath,
  [
    bin,
    '--longs=Number',
    '--enums=String',
    '--defaults',
    '--oneofs',
    '--includeComments',
    '--grpcLib=@grpc/grpc-js',
    '--importFileExtension=.js',
    '--includeDirs',
    protoDir,
    '--outDir',
    outDir,
    ...files,
  ],
  { stdio: 'inherit' },
);
process.exit(r.status ?? 1);

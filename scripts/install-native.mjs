#!/usr/bin/env node
// Builds the native addon (native/binding.gyp) unless a matching build is already in place.
//
//   node scripts/install-native.mjs            the root's `install` script (npm ci): build only when needed
//   node scripts/install-native.mjs --force    `npm run build:native`: always build
//   --dir DIR      the folder holding binding.gyp, src/ and include/ (default: native/ beside this script's folder)
//   --target NAME  build only this target (repeatable; default: every target of binding.gyp)
//
// A build matches when every wanted .node file is in DIR/build/Release, its stamp names the same sources (a hash of
// binding.gyp, src/ and include/) and platform, and the addon loads in this node (which is the ABI check: the addon
// uses N-API, so any node with the N-API version it was built for loads it).
//
// It never leaves the addon missing: it builds in a fresh folder in DIR (a copy of the sources), then renames
// each .node file over the old one (atomic on one file system) and writes the stamp last. A build that fails or is
// interrupted leaves the previous addon and its stamp as they were.
//
// The SDK package (@hotpot-dspm/client) ships this script and a copy of the sources, and runs it at install.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const STAMP = 'hotpot-build.json';
const BUILD_DIR_PREFIX = '.build-';

function parseArgs(argv) {
  const opts = { force: false, dir: join(dirname(fileURLToPath(import.meta.url)), '..', 'native'), targets: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--force') opts.force = true;
    else if (a === '--dir' && i + 1 < argv.length) opts.dir = argv[++i];
    else if (a === '--target' && i + 1 < argv.length) opts.targets.push(argv[++i]);
    else {
      process.stderr.write(`install-native: unknown argument ${a}\n`);
      process.exit(2);
    }
  }
  return opts;
}

/** The targets binding.gyp declares (its target_name entries, in order). */
function gypTargets(dir) {
  const text = readFileSync(join(dir, 'binding.gyp'), 'utf8');
  return [...text.matchAll(/"target_name"\s*:\s*"([^"]+)"/g)].map((m) => m[1]);
}

/** A hash of what the build compiles: binding.gyp and every file under src/ and include/, by path and content. */
function sourcesHash(dir) {
  const files = ['binding.gyp'];
  const walk = (rel) => {
    for (const e of readdirSync(join(dir, rel), { withFileTypes: true })) {
      const r = `${rel}/${e.name}`;
      if (e.isDirectory()) walk(r);
      else if (e.isFile()) files.push(r);
    }
  };
  walk('src');
  walk('include');
  files.sort();
  const h = createHash('sha256');
  for (const f of files) {
    h.update(`${f}\0`);
    h.update(readFileSync(join(dir, f)));
    h.update('\0');
  }
  return h.digest('hex');
}

function platformTag() {
  return `${process.platform}-${process.arch}`;
}

function readStamp(release) {
  try {
    return JSON.parse(readFileSync(join(release, STAMP), 'utf8'));
  } catch {
    return null;
  }
}

/** Loads the addon in a child process: a file that does not load (other ABI, missing library) does not match. */
function loads(file) {
  const r = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(file)}).engineInfo()`], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  return r.status === 0;
}

/** Why the build in DIR/build/Release does not match (null: it matches). */
function mismatch(dir, targets, hash) {
  const release = join(dir, 'build', 'Release');
  const stamp = readStamp(release);
  if (!stamp) return 'no build';
  if (stamp.sources !== hash) return 'the sources changed since the last build';
  if (stamp.platform !== platformTag()) return `built for ${String(stamp.platform)}`;
  for (const t of targets) {
    const file = join(release, `${t}.node`);
    if (!existsSync(file) || !(stamp.targets ?? []).includes(t)) return `${t}.node missing`;
    if (!loads(file)) return `${t}.node does not load in node ${process.version}`;
  }
  return null;
}

function pidAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === 'EPERM';
  }
}

/** Removes build folders left by interrupted builds (their process is gone). */
function removeStale(dir) {
  for (const name of readdirSync(dir)) {
    const m = /^\.build-(\d+)-/.exec(name);
    if (m && !pidAlive(Number(m[1]))) rmSync(join(dir, name), { recursive: true, force: true });
  }
}

function run(cmd, args, cwd) {
  const r = spawnSync(cmd, args, { cwd, stdio: 'inherit' });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (exit ${String(r.status ?? r.signal)})`);
}

/** node-gyp: the one npm runs scripts with (npm_config_node_gyp), else the one npm bundles beside this node, else
 * the one on PATH. */
function nodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    join(
      dirname(process.execPath),
      '..',
      'lib',
      'node_modules',
      'npm',
      'node_modules',
      'node-gyp',
      'bin',
      'node-gyp.js',
    ),
  ];
  for (const js of candidates) if (js && existsSync(js)) return { cmd: process.execPath, pre: [js] };
  return { cmd: 'node-gyp', pre: [] };
}

function build(dir, targets, hash) {
  const work = mkdtempSync(join(dir, `${BUILD_DIR_PREFIX}${String(process.pid)}-`));
  try {
    for (const f of ['binding.gyp', 'src', 'include']) cpSync(join(dir, f), join(work, f), { recursive: true });
    const gyp = nodeGyp();
    // Run outside npm, node-gyp does not see npm's nodedir: the headers installed with this node serve (else it
    // downloads them).
    const headers = join(dirname(process.execPath), '..');
    const nodedir =
      !process.env.npm_config_nodedir && existsSync(join(headers, 'include', 'node', 'common.gypi'))
        ? [`--nodedir=${headers}`]
        : [];
    run(gyp.cmd, [...gyp.pre, 'configure', ...nodedir], work);
    // make directly (Linux only, as the engine is): it can build just the wanted targets.
    run('make', ['-C', 'build', 'BUILDTYPE=Release', '-j', process.env.HOTPOT_BUILD_JOBS ?? '2', ...targets], work);
    const release = join(dir, 'build', 'Release');
    mkdirSync(release, { recursive: true });
    // Stamp removed first: between the renames the folder may hold a mix of old and new files, never a stamp
    // that vouches for them; it is written again once every file is in place.
    rmSync(join(release, STAMP), { force: true });
    for (const t of targets) renameSync(join(work, 'build', 'Release', `${t}.node`), join(release, `${t}.node`));
    const stampTmp = join(release, `${STAMP}.${String(process.pid)}`);
    writeFileSync(
      stampTmp,
      JSON.stringify({ sources: hash, platform: platformTag(), targets, node: process.version }, null, 2) + '\n',
    );
    renameSync(stampTmp, join(release, STAMP));
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (!existsSync(join(opts.dir, 'binding.gyp'))) {
    process.stderr.write(`install-native: no binding.gyp in ${opts.dir}\n`);
    return 2;
  }
  removeStale(opts.dir);
  const targets = opts.targets.length ? opts.targets : gypTargets(opts.dir);
  const hash = sourcesHash(opts.dir);
  const where = relative(process.cwd(), join(opts.dir, 'build', 'Release')) || '.';
  if (!opts.force) {
    const why = mismatch(opts.dir, targets, hash);
    if (why === null) {
      process.stdout.write(`native addon up to date (${targets.join(', ')} in ${where})\n`);
      return 0;
    }
    process.stdout.write(`building the native addon: ${why}\n`);
  }
  const started = Date.now();
  try {
    build(opts.dir, targets, hash);
  } catch (e) {
    process.stderr.write(`install-native: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
  const secs = ((Date.now() - started) / 1000).toFixed(0);
  process.stdout.write(`native addon built (${targets.join(', ')} in ${where}, ${secs} s)\n`);
  return 0;
}

process.exitCode = main();

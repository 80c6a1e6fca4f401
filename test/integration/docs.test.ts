// Every command and sample in README.md and docs/**/*.md runs as written: the shell (sh, bash, shell, console),
// TypeScript and Python blocks run in order against a local cluster started the README's way (`npm start`), in a
// copy of the repository made of links (so paths like ./clients/typescript/index.ts and ./.hotpot/cluster.json mean
// what they mean in a checkout) with its own HOME and a `hotpot` command on PATH. Markers in the Markdown
// (test/helpers/doc-blocks.ts) skip a block with a reason, give it a cluster of its own, or say it fails.
import { spawn, type ChildProcess } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import test, { type ExecutionContext } from 'ava';
import { hotpotBin, projectRoot } from '../../services/common/paths.ts';
import {
  extractBlocks,
  hasMarker,
  lastCommandLine,
  shellScript,
  skipReason,
  type DocBlock,
} from '../helpers/doc-blocks.ts';

const BLOCK_TIMEOUT_MS = 120_000;

/** README.md first, then docs/**\/*.md in path order. */
function docFiles(): string[] {
  const docs = readdirSync(join(projectRoot, 'docs'), { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.md'))
    .map((f) => join('docs', f))
    .sort();
  return ['README.md', ...docs];
}

/** A directory that looks like the repository (links to its entries) but has its own .hotpot, .venv and HOME. */
class Sandbox {
  readonly dir: string;
  readonly env: NodeJS.ProcessEnv;
  private up: { child: ChildProcess; exited: Promise<number | null> } | undefined;
  private n = 0;

  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), 'hotpot-docs-'));
    linkTree(projectRoot, this.dir, '');
    const home = join(this.dir, '.docs-test', 'home');
    const bin = join(this.dir, '.docs-test', 'bin');
    mkdirSync(home, { recursive: true });
    mkdirSync(bin, { recursive: true });
    // The README's `hotpot`: node bin/hotpot.mjs (npm link would install the same).
    writeFileSync(join(bin, 'hotpot'), `#!/bin/sh\nexec "${process.execPath}" "${hotpotBin}" "$@"\n`, { mode: 0o755 });
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) {
      if (!k.startsWith('HOTPOT_') && !k.startsWith('OTEL_') && k !== 'PYTHONPATH' && k !== 'VIRTUAL_ENV') env[k] = v;
    }
    this.env = { ...env, HOME: home, PATH: `${bin}:${process.env.PATH ?? ''}` };
  }

  /** `npm start` here, as the README says, unless the cluster it started is still running; waits for READY. */
  async ensureCluster(): Promise<void> {
    if (this.up && this.up.child.exitCode === null && existsSync(join(this.dir, '.hotpot', 'cluster.json'))) return;
    const child = spawn('npm', ['start'], { cwd: this.dir, env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const stderr: string[] = [];
    createInterface({ input: child.stderr }).on('line', (l) => stderr.push(l));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    this.up = { child, exited };
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`npm start printed no READY line in 90 s: ${stderr.slice(-20).join('\n')}`));
      }, 90_000);
      createInterface({ input: child.stdout }).on('line', (l) => {
        if (l.startsWith('READY hotpot up ')) {
          clearTimeout(timer);
          resolve();
        }
      });
      void exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`npm start exited ${String(code)}: ${stderr.slice(-20).join('\n')}`));
      });
    });
  }

  /**
   * Runs one block here; resolves with its exit code and output. Each page is one reader's terminal: its own HOME
   * (contexts, ~/.local) and the shell state its previous blocks left; the copy and its cluster are shared.
   */
  async run(b: DocBlock): Promise<{ code: number | null; out: string }> {
    const page = join(this.dir, '.docs-test', b.file.replaceAll('/', '_'));
    mkdirSync(join(page, 'home'), { recursive: true });
    this.n += 1;
    const base = `docs-block-${String(this.n)}`;
    let cmd: string;
    let args: string[];
    if (b.lang === 'sh') {
      const file = join(this.dir, '.docs-test', `${base}.sh`);
      writeFileSync(file, shellScript(b));
      [cmd, args] = ['bash', [file]];
    } else if (b.lang === 'zsh') {
      // Lines for a zsh user's shell (e.g. its completion): zsh without rc files, stopping at the first failure.
      const file = join(this.dir, '.docs-test', `${base}.zsh`);
      writeFileSync(file, `setopt err_exit\n${b.code}`);
      [cmd, args] = ['zsh', ['-f', file]];
    } else if (b.lang === 'ts') {
      // At the top of the copy, so ./clients/typescript/index.ts and package imports resolve as from the checkout.
      const file = join(this.dir, `${base}.ts`);
      writeFileSync(file, b.code);
      [cmd, args] = ['npx', ['tsx', file]];
    } else {
      const file = join(this.dir, '.docs-test', `${base}.py`);
      writeFileSync(file, b.code);
      const venv = join(this.dir, '.venv', 'bin', 'python');
      [cmd, args] = [existsSync(venv) ? venv : '/usr/bin/python3', [file]];
    }
    const child = spawn(cmd, args, {
      cwd: this.dir,
      env: { ...this.env, HOME: join(page, 'home'), DOCS_TEST_SHELL_STATE: join(page, 'shell-state') },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => {
      out += `\ndocs-test: killed after ${String(BLOCK_TIMEOUT_MS / 1000)} s\n`;
      killGroup(child);
    }, BLOCK_TIMEOUT_MS);
    const code = await new Promise<number | null>((r) => child.once('close', (c) => r(c)));
    clearTimeout(timer);
    killGroup(child); // anything the block left running in the background
    return { code, out };
  }

  /** Stops the cluster the README's way (`hotpot down --clean`), SIGKILLs whatever still runs here, removes it. */
  async dispose(): Promise<void> {
    const down = spawn('hotpot', ['down', '--clean'], { cwd: this.dir, env: this.env, stdio: 'ignore' });
    await new Promise((r) => down.once('close', r));
    for (const p of processesIn(this.dir)) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
    if (this.up?.child.exitCode === null) this.up.child.kill('SIGKILL');
    const clean = spawn('hotpot', ['clean', '--yes'], { cwd: this.dir, env: this.env, stdio: 'ignore' });
    await new Promise((r) => clean.once('close', r));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

// Made here rather than linked: what the docs' commands create or build (state, venv, build outputs), so a run
// neither races another test building the same directory (c-example.test.ts: native/lib, examples/c) nor leaves
// files in the checkout. Directories on the way to a copied one are made here too, their other entries linked.
const NOT_LINKED = new Set(['.hotpot', '.git', '.venv', 'dist', 'kv.bin', 'kv.hpbk']);
const COPIED = ['native/lib', 'examples/c', 'clients/python'];
const BUILD_OUTPUTS = /(^|\/)(out|build|dist|[^/]*\.egg-info|__pycache__|hotpot_example(_shared)?)$/;

function linkTree(from: string, to: string, rel: string): void {
  for (const e of readdirSync(join(from, rel))) {
    const r = rel === '' ? e : `${rel}/${e}`;
    if (NOT_LINKED.has(r)) continue;
    if (COPIED.includes(r)) {
      cpSync(join(from, r), join(to, r), { recursive: true, filter: (src) => !BUILD_OUTPUTS.test(src) });
    } else if (COPIED.some((c) => c.startsWith(`${r}/`))) {
      mkdirSync(join(to, r));
      linkTree(from, to, r);
    } else symlinkSync(join(from, r), join(to, r));
  }
}

function killGroup(child: ChildProcess): void {
  try {
    if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
  } catch {
    // the group is gone
  }
}

/** The processes whose working directory is `dir` (the cluster `npm start` ran there, and anything a block left). */
function processesIn(dir: string): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d) && Number(d) !== process.pid)
    .filter((d) => {
      try {
        return readlinkSync(`/proc/${d}/cwd`).startsWith(dir);
      } catch {
        return false;
      }
    })
    .map(Number);
}

let shared: Sandbox | undefined;
const skipped: string[] = [];

test.after.always(async () => {
  await shared?.dispose();
  if (skipped.length > 0) console.log(`docs blocks skipped (${String(skipped.length)}):\n  ${skipped.join('\n  ')}`);
});

// The markers' form is checked by test/unit/doc-blocks.test.ts (every page, without a cluster).

async function runDoc(t: ExecutionContext, file: string): Promise<void> {
  t.timeout(600_000);
  const { blocks } = extractBlocks(readFileSync(join(projectRoot, file), 'utf8'), file);
  const failures: string[] = [];
  for (const b of blocks) {
    const where = `${b.file}:${String(b.line)} (${b.info})`;
    const reason = skipReason(b);
    if (reason !== undefined) {
      skipped.push(`${where}: ${reason}`);
      t.log(`skipped ${where}: ${reason}`);
      continue;
    }
    const fresh = hasMarker(b, 'fresh-cluster');
    const box = fresh ? new Sandbox() : (shared ??= new Sandbox());
    try {
      await box.ensureCluster();
      const started = Date.now();
      const { code, out } = await box.run(b);
      const ok = !hasMarker(b, 'fails')
        ? code === 0
        : code !== 0 &&
          code !== null &&
          (b.lang !== 'sh' || out.includes(`docs-test: ${b.file}:${String(lastCommandLine(b))} exited`));
      const took = ((Date.now() - started) / 1000).toFixed(1);
      const tail = out.trimEnd().split('\n').slice(-3).join('\n');
      t.log(
        `${ok ? 'ok' : 'FAILED'} ${where}${fresh ? ' (own cluster)' : ''}: exit ${String(code)}, ${took} s\n${tail}`,
      );
      if (!ok) {
        failures.push(where);
        t.log(`${where} exit ${String(code)}; the end of its output:\n${out.slice(-3000)}`);
      }
    } finally {
      if (fresh) await box.dispose();
    }
  }
  t.deepEqual(failures, [], 'these blocks did not run as written (their output is logged above)');
}

for (const file of docFiles()) {
  if (extractBlocks(readFileSync(join(projectRoot, file), 'utf8'), file).blocks.length === 0) continue;
  test(`every runnable block of ${file} runs as written`, runDoc, file);
}

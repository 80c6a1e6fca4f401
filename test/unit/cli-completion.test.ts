// `hotpot completion bash|zsh` (services/cli/completion.ts): the script is generated from the commander program, and
// bash loads it and completes commands, subcommands, options and choices with it.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { completionScript } from '../../services/cli/completion.ts';
import { buildProgram } from '../../services/cli/main.ts';

/** Sources the script in bash and completes the words (the last one is the word being completed). */
function complete(script: string, words: string[]): { registered: string; candidates: string[] } {
  const arr = words.map((w) => `'${w}'`).join(' ');
  const r = spawnSync(
    'bash',
    [
      '-c',
      `source "$0"; complete -p hotpot; COMP_WORDS=(${arr}); COMP_CWORD=${String(words.length - 1)}; ` +
        '_hotpot; printf "%s\\n" "${COMPREPLY[@]}"',
      scriptFile,
    ],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`bash failed: ${r.stderr}`);
  const [registered = '', ...candidates] = r.stdout.trim().split('\n');
  return { registered, candidates: candidates.filter((c) => c !== '') };
}

const script = completionScript(buildProgram(), 'bash');
const dir = mkdtempSync(join(tmpdir(), 'hotpot-completion-'));
const scriptFile = join(dir, 'hotpot.bash');
writeFileSync(scriptFile, script);
test.after.always(() => {
  rmSync(dir, { recursive: true, force: true });
});

test('the bash script registers a completion function for hotpot', (t) => {
  t.is(complete(script, ['hotpot', '']).registered, 'complete -o default -F _hotpot hotpot');
});

test('commands, subcommands, options and option choices complete from the program', (t) => {
  const top = complete(script, ['hotpot', '']).candidates;
  for (const c of ['get', 'put', 'cat', 'dump', 'load', 'backup', 'restore', 'completion', 'create', 'token']) {
    t.true(top.includes(c), c);
  }
  t.deepEqual(complete(script, ['hotpot', 'du']).candidates, ['dump']);
  t.deepEqual(complete(script, ['hotpot', 'get', 'kv', '--o']).candidates, ['--offset']);
  // A global option's value is skipped, and the word after `token` is its subcommand.
  t.deepEqual(complete(script, ['hotpot', '--dispatcher', 'h:1', 'token', 'c']).candidates, ['create']);
  t.deepEqual(complete(script, ['hotpot', 'token', 'create', '--ro']).candidates, ['--role']);
  t.deepEqual(complete(script, ['hotpot', 'load', 'f', 'kv', '--mode', '']).candidates, ['mrmw', 'mrsw']);
  t.deepEqual(complete(script, ['hotpot', 'bogus', '--x']).candidates, []);
});

test('the zsh script loads bash completion compatibility and the same function', (t) => {
  const zsh = completionScript(buildProgram(), 'zsh');
  t.true(zsh.startsWith('#compdef hotpot\n'));
  t.regex(zsh, /autoload -U \+X bashcompinit && bashcompinit/);
  t.true(zsh.includes(script));
});

/**
 * Sources the zsh script in zsh (Debian's zsh, installed by .ci/run) and runs the function as zsh's bash layer runs
 * it (sh emulation: 0-based arrays). zsh's own matching filters by the typed prefix afterwards, so the candidates
 * here are every word of the level, not only the matching ones.
 */
function completeZsh(words: string[]): { registered: string; candidates: string[] } {
  const file = join(dir, 'hotpot.zsh');
  writeFileSync(file, completionScript(buildProgram(), 'zsh'));
  const r = spawnSync(
    'zsh',
    [
      '-fc',
      'autoload -U compinit && compinit -u -D; source "$0"; print -r -- "$_comps[hotpot]"; ' +
        't() { emulate -L sh; setopt kshglob noshglob braceexpand; COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); ' +
        '_hotpot; printf "%s\\n" "${COMPREPLY[@]}"; }; t "$@"',
      file,
      ...words,
    ],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`zsh failed: ${r.stderr}`);
  const lines = r.stdout.trim().split('\n');
  const [registered = ''] = lines;
  return { registered, candidates: lines.slice(1).filter((c) => c !== '') };
}

test('zsh registers the completion and completes commands, subcommands and choices with it', (t) => {
  const top = completeZsh(['hotpot', 'du']);
  t.is(top.registered, '_bash_complete -o default -F _hotpot');
  t.true(top.candidates.includes('dump'));
  t.true(top.candidates.includes('backup'));
  const sub = completeZsh(['hotpot', '--dispatcher', 'h:1', 'token', 'c']).candidates;
  t.true(sub.includes('create') && !sub.includes('dump'), sub.join(' '));
  t.deepEqual(completeZsh(['hotpot', 'load', 'f', 'kv', '--mode', '']).candidates, ['mrmw', 'mrsw']);
});

// The extraction of runnable code blocks from Markdown and their docs-test markers (test/helpers/doc-blocks.ts), on
// small made-up pages and on the repository's own docs; test/integration/docs.test.ts runs what this extracts.
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { projectRoot } from '../../services/common/paths.ts';
import {
  consoleCommands,
  extractBlocks,
  lastCommandLine,
  parseMarker,
  shellScript,
  skipReason,
  type DocBlock,
} from '../helpers/doc-blocks.ts';

const page = [
  '# Title', // 1
  '', // 2
  '```sh', // 3
  'hotpot ls', // 4
  '```', // 5
  '', // 6
  '<!-- docs-test: skip — needs a second machine -->', // 7
  '```bash', // 8
  'ssh db2 hotpot nodes', // 9
  '```', // 10
  '', // 11
  '```json', // 12
  '{ "a": 1 }', // 13
  '```', // 14
  '', // 15
  '<!-- docs-test: fresh-cluster — it stops the cluster -->', // 16
  '', // 17
  '<!-- docs-test: fails — the doc shows the error -->', // 18
  '```console', // 19
  '$ hotpot down', // 20
  'stopped the cluster', // 21
  '$ hotpot stat \\', // 22
  '  kv', // 23
  'hotpot: cannot reach the dispatcher', // 24
  '```', // 25
  '', // 26
  '````typescript', // 27
  'const a = 1;', // 28
  '```', // 29
  'console.log(a);', // 30
  '````', // 31
  '```python', // 32
  'print(1)', // 33
  '```', // 34
].join('\n');

test('sh, bash, console, typescript and python blocks are extracted in order with their markers; others are not', (t) => {
  const { blocks, errors } = extractBlocks(page, 'p.md');
  t.deepEqual(errors, []);
  t.deepEqual(
    blocks.map((b) => [b.line, b.lang, b.info, b.markers.map((m) => m.kind)]),
    [
      [3, 'sh', 'sh', []],
      [8, 'sh', 'bash', ['skip']],
      [19, 'sh', 'console', ['fresh-cluster', 'fails']],
      [27, 'ts', 'typescript', []],
      [32, 'python', 'python', []],
    ],
  );
  t.is(blocks[0]?.code, 'hotpot ls');
  t.is(skipReason(blocks[1] as DocBlock), 'needs a second machine');
  t.is(skipReason(blocks[0] as DocBlock), undefined);
  t.is(blocks[2]?.code, 'hotpot down\nhotpot stat \\\n  kv', 'a console block runs only its $ lines');
  t.is(blocks[3]?.code, 'const a = 1;\n```\nconsole.log(a);', 'a longer fence holds a shorter one');
});

test('a console block keeps the lines a backslash continues and drops the output', (t) => {
  t.is(consoleCommands('$ a \\\n  b\nout\n$ c\nmore out\n'), 'a \\\n  b\nc');
  t.is(consoleCommands('no prompt here'), '');
});

test('markers parse with their reason; interrupt takes a command in backticks', (t) => {
  t.deepEqual(parseMarker('<!-- docs-test: skip — needs systemd -->', 4), {
    kind: 'skip',
    reason: 'needs systemd',
    line: 4,
  });
  t.deepEqual(parseMarker('<!-- docs-test: interrupt `hotpot events --follow` — until Ctrl-C -->', 9), {
    kind: 'interrupt',
    reason: 'until Ctrl-C',
    command: 'hotpot events --follow',
    line: 9,
  });
});

test('a marker without a reason, of an unknown kind, or with a stray argument is an error naming its line', (t) => {
  const bad = [
    ['<!-- docs-test: skip -->', /needs a reason/],
    ['<!-- docs-test: skip —  -->', /needs a reason/],
    ['<!-- docs-test: skip - hyphen is not the separator -->', /needs a reason/],
    ['<!-- docs-test: ignore — why not -->', /unknown docs-test marker "ignore"/],
    ['<!-- docs-test skip — no colon -->', /write "<!-- docs-test: KIND — REASON -->"/],
    ['<!-- docs-test: interrupt hotpot events — no backticks -->', /interrupt `COMMAND`/],
    ['<!-- docs-test: fails now — the doc says so -->', /takes no argument/],
  ] as const;
  for (const [text, message] of bad) {
    const r = parseMarker(text, 12);
    t.true(r instanceof Error, text);
    t.regex((r as Error).message, message, text);
    t.regex((r as Error).message, /^line 12: /, text);
  }
});

test('a marker not right before a runnable block, a skip with other markers, and an unclosed fence are errors', (t) => {
  const errors = (md: string): string[] => extractBlocks(md, 'x.md').errors;
  t.deepEqual(errors('<!-- docs-test: skip — why -->\nsome text\n```sh\nls\n```'), [
    'x.md:1: docs-test marker not right before a code block',
  ]);
  t.deepEqual(errors('<!-- docs-test: skip — why -->\n```json\n{}\n```'), [
    'x.md:1: docs-test marker not right before a code block',
  ]);
  t.deepEqual(errors('text\n<!-- docs-test: skip — why -->'), [
    'x.md:2: docs-test marker not right before a code block',
  ]);
  t.deepEqual(errors('<!-- docs-test: skip — a -->\n<!-- docs-test: fails — b -->\n```sh\nls\n```'), [
    'x.md:3: a skipped block takes no other docs-test marker',
  ]);
  t.deepEqual(errors('<!-- docs-test: interrupt `x` — y -->\n```ts\nx\n```'), [
    'x.md:1: docs-test interrupt is for shell blocks',
  ]);
  t.deepEqual(errors('```sh\nls\n'), ['x.md:1: code block never closed']);
  t.deepEqual(errors('<!-- docs-test: skip -->\n```sh\nls\n```'), [
    'x.md:line 1: a docs-test marker needs a reason after " — ": <!-- docs-test: skip -->',
  ]);
});

test('every marker in README.md and docs/ is well formed and every skip has a reason', (t) => {
  const files = [
    'README.md',
    ...readdirSync(join(projectRoot, 'docs'), { recursive: true, encoding: 'utf8' })
      .filter((f) => f.endsWith('.md'))
      .map((f) => join('docs', f)),
  ];
  let blocks = 0;
  for (const f of files) {
    const r = extractBlocks(readFileSync(join(projectRoot, f), 'utf8'), f);
    t.deepEqual(r.errors, [], f);
    blocks += r.blocks.length;
    for (const b of r.blocks) if (skipReason(b) !== undefined) t.true((skipReason(b) ?? '').length > 10, f);
  }
  t.true(blocks > 10, 'the docs have runnable blocks');
});

/** Runs a block's script with bash in the current directory. */
function bash(b: DocBlock): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('bash', ['-c', shellScript(b)], {
    encoding: 'utf8',
    env: { ...process.env, DOCS_TEST_SHELL_STATE: '' },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const shBlock = (code: string, extra: Partial<DocBlock> = {}): DocBlock => ({
  file: 'd.md',
  line: 10,
  lang: 'sh',
  info: 'sh',
  code,
  markers: [],
  ...extra,
});

test('a shell block stops at its first failing command and the error names its line in the doc', (t) => {
  const r = bash(shBlock('echo one\nfalse   # fails here\necho two'));
  t.is(r.status, 1);
  t.is(r.stdout, 'one\n');
  t.regex(r.stderr, /docs-test: d\.md:12 exited 1: false/);
  t.is(bash(shBlock('true | false | true')).status, 1, 'pipefail');
});

test('lines of an interrupt command get Ctrl-C; one that exits by itself before it fails', (t) => {
  const interrupt = (command: string): DocBlock['markers'] => [{ kind: 'interrupt', reason: 'r', command, line: 9 }];
  // Prints, then would run for a minute; the SIGINT ends it with 130.
  const follow = shBlock("sh -c 'echo following; exec sleep 60'\necho after", {
    markers: interrupt("sh -c 'echo following; exec sleep 60'"),
  });
  const r = bash(follow);
  t.is(r.status, 0, r.stderr);
  t.is(r.stdout, 'following\nafter\n');
  const quits = bash(shBlock('sh -c "echo x; exit 3"', { markers: interrupt('sh -c "echo x; exit 3"') }));
  t.is(quits.status, 1);
  t.regex(quits.stderr, /exited before Ctrl-C/);
});

test('a fails block is checked at its last command line, a continued command at its first line', (t) => {
  t.is(lastCommandLine(shBlock('a\nb\n# comment\n')), 12);
  t.is(lastCommandLine(shBlock('a\nb \\\n  --flag\n')), 12);
  t.is(lastCommandLine(shBlock('a')), 11);
});

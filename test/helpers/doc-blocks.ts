// The code blocks of the Markdown docs that test/integration/docs.test.ts runs, and the markers that say how: pure
// text processing, so the rules are unit-tested (test/unit/doc-blocks.test.ts) apart from any cluster.
//
// A block runs if its fence says sh, bash, shell or console (a shell script; console: only its `$ ` lines), zsh, ts or
// typescript, or python. An HTML comment right before the block (blank lines and other markers may sit between)
// changes how it runs; every marker carries a reason after an em dash:
//
//   <!-- docs-test: skip — needs a second machine -->                  not run (the test lists it with its reason)
//   <!-- docs-test: fresh-cluster — it stops the cluster -->           run against a new cluster of its own
//   <!-- docs-test: fails — the doc shows the error -->                must exit non-zero
//   <!-- docs-test: interrupt `hotpot events --follow` — until Ctrl-C -->
//       the block's lines that start with that command run until they print a first line, then get Ctrl-C (SIGINT)

export type BlockLang = 'sh' | 'zsh' | 'ts' | 'python';

export const MARKER_KINDS = ['skip', 'fresh-cluster', 'fails', 'interrupt'] as const;
export type MarkerKind = (typeof MARKER_KINDS)[number];

export interface Marker {
  kind: MarkerKind;
  reason: string;
  /** interrupt: the command whose lines are stopped with Ctrl-C after their first output line. */
  command?: string;
  /** 1-based line of the comment in its file. */
  line: number;
}

export interface DocBlock {
  file: string;
  /** 1-based line of the opening fence. */
  line: number;
  lang: BlockLang;
  /** The fence's info string as written (`sh`, `console`, `typescript`, ...). */
  info: string;
  /** What runs: the block's text; for console blocks only the commands of its `$ ` lines. */
  code: string;
  markers: Marker[];
}

const LANGS: Record<string, BlockLang> = {
  sh: 'sh',
  bash: 'sh',
  shell: 'sh',
  console: 'sh',
  zsh: 'zsh',
  ts: 'ts',
  typescript: 'ts',
  python: 'python',
  py: 'python',
};

const MARKER_LINE = /^<!--\s*docs-test\b(.*?)-->\s*$/;
const FENCE = /^( {0,3})(`{3,}|~{3,})(.*)$/;

/** Parses the text of one `<!-- docs-test: ... -->` comment (line given for messages); an error says what is wrong. */
export function parseMarker(text: string, line: number): Marker | Error {
  const m = MARKER_LINE.exec(text.trim());
  if (!m) return new Error(`line ${String(line)}: not a docs-test marker: ${text}`);
  const body = (m[1] ?? '').trim();
  if (!body.startsWith(':')) return new Error(`line ${String(line)}: write "<!-- docs-test: KIND — REASON -->"`);
  const dash = body.indexOf(' — ');
  if (dash < 0 || body.slice(dash + 3).trim() === '') {
    return new Error(`line ${String(line)}: a docs-test marker needs a reason after " — ": ${text.trim()}`);
  }
  const head = body.slice(1, dash).trim();
  const reason = body.slice(dash + 3).trim();
  const kind = head.split(/\s/)[0] ?? '';
  const arg = head.slice(kind.length).trim();
  if (!(MARKER_KINDS as readonly string[]).includes(kind)) {
    return new Error(`line ${String(line)}: unknown docs-test marker "${kind}" (known: ${MARKER_KINDS.join(', ')})`);
  }
  if (kind === 'interrupt') {
    const cmd = /^`([^`]+)`$/.exec(arg);
    if (!cmd?.[1]) return new Error(`line ${String(line)}: write "docs-test: interrupt \`COMMAND\` — REASON"`);
    return { kind, reason, command: cmd[1].trim(), line };
  }
  if (arg !== '') return new Error(`line ${String(line)}: docs-test ${kind} takes no argument (got "${arg}")`);
  return { kind: kind as MarkerKind, reason, line };
}

/** A console block's commands: the `$ ` lines (and the lines a trailing backslash continues), without the prompt. */
export function consoleCommands(text: string): string {
  const out: string[] = [];
  let continued = false;
  for (const l of text.split('\n')) {
    if (continued) out.push(l);
    else if (l.startsWith('$ ')) out.push(l.slice(2));
    else continue;
    continued = l.endsWith('\\');
  }
  return out.join('\n');
}

/**
 * The runnable blocks of one Markdown file in order, with their markers, and every misplaced or malformed marker
 * as an error (a marker on a block that does not run is one too).
 */
export function extractBlocks(markdown: string, file: string): { blocks: DocBlock[]; errors: string[] } {
  const lines = markdown.split('\n');
  const blocks: DocBlock[] = [];
  const errors: string[] = [];
  let pending: Marker[] = [];
  const misplaced = (): void => {
    for (const m of pending) errors.push(`${file}:${String(m.line)}: docs-test marker not right before a code block`);
    pending = [];
  };
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i] ?? '';
    const fence = FENCE.exec(l);
    if (fence) {
      const [, indent = '', ticks = '', rest = ''] = fence;
      const info = rest.trim();
      const body: string[] = [];
      let j = i + 1;
      for (; j < lines.length; j++) {
        const c = lines[j] ?? '';
        const t = c.trimStart();
        if (t.startsWith(ticks[0]?.repeat(ticks.length) ?? '```') && t.replace(/^[`~]+/, '').trim() === '') break;
        body.push(c.startsWith(indent) ? c.slice(indent.length) : c.trimStart());
      }
      if (j >= lines.length) errors.push(`${file}:${String(i + 1)}: code block never closed`);
      const lang = LANGS[(info.split(/\s/)[0] ?? '').toLowerCase()];
      if (lang) {
        const text = body.join('\n');
        blocks.push({
          file,
          line: i + 1,
          lang,
          info,
          code: info.toLowerCase().startsWith('console') ? consoleCommands(text) : text,
          markers: pending,
        });
        for (const m of pending) {
          if (m.kind === 'interrupt' && lang !== 'sh') {
            errors.push(`${file}:${String(m.line)}: docs-test interrupt is for shell blocks`);
          }
        }
        pending = [];
      } else misplaced();
      i = j;
      continue;
    }
    if (/^<!--\s*docs-test\b/.test(l.trim())) {
      const m = parseMarker(l, i + 1);
      if (m instanceof Error) errors.push(`${file}:${m.message}`);
      else pending.push(m);
      continue;
    }
    if (l.trim() !== '') misplaced();
  }
  misplaced();
  for (const b of blocks) {
    const kinds = b.markers.map((m) => m.kind);
    if (kinds.includes('skip') && kinds.length > 1) {
      errors.push(`${file}:${String(b.line)}: a skipped block takes no other docs-test marker`);
    }
  }
  return { blocks, errors };
}

/** The reason a block is not run, if it is not. */
export function skipReason(b: DocBlock): string | undefined {
  return b.markers.find((m) => m.kind === 'skip')?.reason;
}

export function hasMarker(b: DocBlock, kind: MarkerKind): boolean {
  return b.markers.some((m) => m.kind === kind);
}

/**
 * The doc line of a shell block's last command (a `fails` block must fail there, not before: the runner's error
 * line names it). Console blocks keep only their commands, so this holds for sh/bash/shell blocks.
 */
export function lastCommandLine(b: DocBlock): number {
  const lines = b.code.split('\n');
  let last = lines.length - 1;
  while (last > 0 && /^\s*(#.*)?$/.test(lines[last] ?? '')) last--;
  // A command continued over several lines fails at its first line.
  while (last > 0 && (lines[last - 1] ?? '').trimEnd().endsWith('\\')) last--;
  return b.line + 1 + last;
}

/**
 * A shell block as the bash script that runs it: stops at the first failing command (set -e, pipefail) and says
 * which line of the doc it was; lines starting with an `interrupt` marker's command run through docs_interrupt.
 */
export function shellScript(b: DocBlock): string {
  const interrupts = b.markers.flatMap((m) => (m.kind === 'interrupt' && m.command ? [m.command] : []));
  const firstLine = b.line + 1;
  const preamble = [
    'set -eo pipefail',
    'shopt -s expand_aliases',
    // One reader's terminal per page: a block starts with the exported variables and the directory the page's
    // previous shell block ended with (when the runner names a state file).
    'if [ -n "$DOCS_TEST_SHELL_STATE" ]; then',
    '  if [ -f "$DOCS_TEST_SHELL_STATE" ]; then . "$DOCS_TEST_SHELL_STATE"; fi',
    `  trap '{ export -p; printf "cd %q\\n" "$PWD"; } >"$DOCS_TEST_SHELL_STATE"' EXIT`,
    'fi',
    // LINENO counts the preamble's lines too: the doc's line is the block's first line plus LINENO - 1 - preamble.
    `trap 'rc=$?; echo "docs-test: ${b.file}:$((LINENO + ${String(firstLine)} - 1 - __pre)) exited $rc: $BASH_COMMAND" >&2' ERR`,
    // A command that runs until Ctrl-C: started in its own process group (so SIGINT is not ignored, as it is for
    // a background job of a script), stopped with SIGINT once it printed a line (or after 10 s quiet, as
    // `hotpot events --follow` is until something happens); it must not exit by itself, and 0 or 130 (SIGINT) after
    // Ctrl-C is a success.
    'docs_interrupt() {',
    '  local out pid rc=0 i',
    '  out=$(mktemp)',
    '  set -m; "$@" >"$out" 2>&1 & pid=$!; set +m',
    '  for ((i = 0; i < 100; i++)); do [ -s "$out" ] && break; kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done',
    '  if ! kill -INT "$pid" 2>/dev/null; then',
    '    wait "$pid" || true; cat "$out"; rm -f "$out"',
    '    echo "docs-test: $1 exited before Ctrl-C" >&2; return 1',
    '  fi',
    '  wait "$pid" || rc=$?',
    '  cat "$out"; rm -f "$out"',
    '  [ "$rc" -eq 0 ] || [ "$rc" -eq 130 ]',
    '}',
  ];
  const body = b.code.split('\n').map((l) => {
    const t = l.trimStart();
    return interrupts.some((c) => t === c || t.startsWith(`${c} `))
      ? `${l.slice(0, l.length - t.length)}docs_interrupt ${t}`
      : l;
  });
  return [`__pre=${String(preamble.length + 1)}`, ...preamble, ...body, ''].join('\n');
}

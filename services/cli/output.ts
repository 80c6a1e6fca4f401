// Human-readable tables and --json output for the CLI.
export function table(headers: string[], rows: (string | number | boolean)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  // A loop, not Math.max(...column): a column of a few hundred thousand cells (the chunk map of a 1 TiB dataset)
  // overflowed the call stack as spread arguments.
  const widths = headers.map(() => 0);
  for (const r of cells) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return (
    cells
      .map((r) =>
        r
          .map((c, i) => c.padEnd(widths[i] ?? 0))
          .join('  ')
          .trimEnd(),
      )
      .join('\n') + '\n'
  );
}

/**
 * Consecutive rows that agree in every column but the first (a numeric index) as one row whose first cell is the
 * index range ("0-1023"): how a chunk map of hundreds of thousands of chunks stays readable.
 */
export function groupRuns(rows: (string | number)[][]): string[][] {
  const out: string[][] = [];
  let first = 0;
  let last = -1;
  let key = '';
  let rest: string[] = [];
  const flush = (): void => {
    if (last < 0) return;
    out.push([first === last ? String(first) : `${String(first)}-${String(last)}`, ...rest]);
  };
  for (const r of rows) {
    const index = Number(r[0]);
    const cells = r.slice(1).map(String);
    const k = cells.join('\u0000');
    if (last >= 0 && k === key && index === last + 1) {
      last = index;
      continue;
    }
    flush();
    first = last = index;
    key = k;
    rest = cells;
  }
  flush();
  return out;
}

/** Indices `first`, `first + step`, … up to `last` (`count` of them; step 1 for one index). */
export interface Stride {
  first: number;
  last: number;
  step: number;
  count: number;
}

/**
 * Sorted distinct indices as arithmetic progressions, greedily (each as long as it goes): 0,3,6,…,262141 is one,
 * 0-1023 is one. How the chunks of one owner under round-robin placement are named in a few words.
 */
export function strides(indices: readonly number[]): Stride[] {
  const out: Stride[] = [];
  let i = 0;
  while (i < indices.length) {
    const first = indices[i] ?? 0;
    const next = indices[i + 1];
    if (next === undefined) {
      out.push({ first, last: first, step: 1, count: 1 });
      break;
    }
    const step = next - first;
    let j = i + 1;
    while (j + 1 < indices.length && (indices[j + 1] ?? 0) - (indices[j] ?? 0) === step) j++;
    // Two lone indices are not a progression worth its words unless they are neighbours.
    if (j === i + 1 && step !== 1) {
      out.push({ first, last: first, step: 1, count: 1 });
      i++;
      continue;
    }
    out.push({ first, last: indices[j] ?? first, step, count: j - i + 1 });
    i = j + 1;
  }
  return out;
}

/** "7", "0-1023", "0-262141 every 3rd": a stride in words. */
export function strideText(s: Stride): string {
  if (s.count === 1) return String(s.first);
  const range = `${String(s.first)}-${String(s.last)}`;
  if (s.step === 1) return range;
  const nth = s.step === 2 ? '2nd' : s.step === 3 ? '3rd' : `${String(s.step)}th`;
  return `${range} every ${nth}`;
}

/**
 * Rows (a numeric index first) grouped by everything but the index: one row per distinct rest, with how many
 * indices share it and which (as strides; past `maxStrides`, the first ones and how many more). Groups in the order
 * of their first index. How a chunk map of any size prints in a screen: by owner, replicas and state.
 */
export function groupByPattern(
  rows: (string | number)[][],
  maxStrides = 4,
): { count: number; which: string; rest: string[] }[] {
  const groups = new Map<string, { indices: number[]; rest: string[] }>();
  for (const r of rows) {
    const rest = r.slice(1).map(String);
    const k = rest.join('\u0000');
    let g = groups.get(k);
    if (!g) groups.set(k, (g = { indices: [], rest }));
    g.indices.push(Number(r[0]));
  }
  return [...groups.values()].map((g) => {
    const ss = strides(g.indices.sort((a, b) => a - b));
    const shown = ss.slice(0, maxStrides).map(strideText);
    const which =
      ss.length > maxStrides ? `${shown.join(', ')}, … (${String(ss.length - maxStrides)} more)` : shown.join(', ');
    return { count: g.indices.length, which, rest: g.rest };
  });
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

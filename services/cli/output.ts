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

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

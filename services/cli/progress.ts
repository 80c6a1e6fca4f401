// A progress bar with throughput for long transfers (dump, load, backup, restore), drawn on stderr only when stderr
// is a terminal: in pipes and logs nothing is printed.

const REDRAW_MS = 200;
const BAR_WIDTH = 30;

/** 1536 -> "1.5KiB": approximate, for a display that changes while you watch. */
export function roughSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${String(v)}B` : `${v.toFixed(1)}${units[u] ?? ''}`;
}

/** One line: bar, percent, done/total, throughput. Pure, for tests. */
export function progressLine(what: string, done: number, total: number, elapsedMs: number): string {
  const frac = total > 0 ? Math.min(1, done / total) : 1;
  const filled = Math.round(frac * BAR_WIDTH);
  const rate = elapsedMs > 0 ? (done / elapsedMs) * 1000 : 0;
  return (
    `${what} [${'#'.repeat(filled)}${' '.repeat(BAR_WIDTH - filled)}] ${String(Math.floor(frac * 100)).padStart(3)}% ` +
    `${roughSize(done)}/${roughSize(total)} ${roughSize(Math.round(rate))}/s`
  );
}

export class Progress {
  private done = 0;
  private lastDraw = 0;
  private readonly start = performance.now();
  private readonly on: boolean;

  constructor(
    private readonly what: string,
    private readonly total: number,
    stream: { isTTY?: boolean } = process.stderr,
  ) {
    this.on = stream.isTTY === true;
  }

  add(bytes: number): void {
    this.done += bytes;
    if (!this.on) return;
    const now = performance.now();
    if (now - this.lastDraw < REDRAW_MS) return;
    this.lastDraw = now;
    this.draw();
  }

  /** Restarts the count (a retried dump). */
  reset(): void {
    this.done = 0;
  }

  /** Draws the last state and ends the line. */
  finish(): void {
    if (!this.on) return;
    this.draw();
    process.stderr.write('\n');
  }

  private draw(): void {
    process.stderr.write(`\r${progressLine(this.what, this.done, this.total, performance.now() - this.start)}\x1b[K`);
  }
}

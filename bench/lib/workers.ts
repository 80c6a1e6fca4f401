// Client processes of a benchmark that take commands on stdin: a worker is a bench/*.ts script started with a JSON
// job as its argument; it prints "READY" once set up, then answers every command line with one JSON line. The set
// is tracked apart from Procs (these children have a stdin pipe), so `killAll` is the run's safety net.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

export interface Worker {
  child: ChildProcess;
  send(line: string): void;
  /** The next JSON line; rejects if the worker exits first. */
  next<T>(): Promise<T>;
}

export class Workers {
  private readonly live = new Set<ChildProcess>();

  constructor(private readonly log: (msg: string) => void) {}

  /** Starts `node --import tsx SCRIPT '<job json>'` and resolves once it printed READY. */
  async start(script: string, job: unknown): Promise<Worker> {
    const child = spawn(process.execPath, ['--import', 'tsx', script, JSON.stringify(job)], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.live.add(child);
    let err = '';
    child.stderr.on('data', (d: Buffer) => {
      err = (err + d.toString()).slice(-4000);
      for (const l of d.toString().trimEnd().split('\n')) this.log(`worker ${String(child.pid)}: ${l}`);
    });
    // A worker killed while a command is being written must not take the orchestrator down with EPIPE.
    child.stdin.on('error', () => undefined);
    const lines: string[] = [];
    const waiting: { resolve: (l: string) => void; reject: (e: Error) => void }[] = [];
    let dead: Error | null = null;
    createInterface({ input: child.stdout }).on('line', (l) => {
      const w = waiting.shift();
      if (w) w.resolve(l);
      else lines.push(l);
    });
    child.once('exit', (code, signal) => {
      this.live.delete(child);
      dead = new Error(`worker exited (code ${String(code)}, signal ${String(signal)}): ${err}`);
      for (const w of waiting.splice(0)) w.reject(dead);
    });
    const nextLine = (): Promise<string> => {
      const l = lines.shift();
      if (l !== undefined) return Promise.resolve(l);
      if (dead) return Promise.reject(dead);
      return new Promise((resolve, reject) => waiting.push({ resolve, reject }));
    };
    const ready = await nextLine();
    if (ready !== 'READY') throw new Error(`worker: unexpected first line ${ready}`);
    return {
      child,
      send: (line) => child.stdin.write(line + '\n'),
      next: async <T>() => JSON.parse(await nextLine()) as T,
    };
  }

  /** Sends "quit" to each and waits until they exited. */
  async quit(ws: Worker[]): Promise<void> {
    await Promise.all(
      ws.map(
        (w) =>
          new Promise<void>((resolve) => {
            if (w.child.exitCode !== null || w.child.signalCode !== null) {
              resolve();
              return;
            }
            w.child.once('exit', () => resolve());
            w.send('quit');
          }),
      ),
    );
  }

  killAll(): void {
    for (const c of this.live) c.kill('SIGKILL');
  }
}

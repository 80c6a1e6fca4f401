// Child processes of a benchmark run: every one is registered so a run tears everything down even when it fails
// half-way (run.sh also kills the orchestrator's whole process group as a safety net).
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

export interface Ready {
  child: ChildProcess;
  fields: Record<string, string>;
  stderr: string[];
  exited: Promise<void>;
}

export class Procs {
  private readonly live = new Set<ChildProcess>();

  private track(child: ChildProcess): Promise<void> {
    this.live.add(child);
    return new Promise((resolve) => {
      child.once('exit', () => {
        this.live.delete(child);
        resolve();
      });
    });
  }

  /** Starts a long-running process and resolves with the fields of its `READY k=v …` line. */
  spawnReady(
    what: string,
    cmd: string,
    args: string[],
    opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
  ): Promise<Ready> {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
    const exited = this.track(child);
    const stderr: string[] = [];
    createInterface({ input: child.stderr }).on('line', (l) => {
      stderr.push(l);
      if (stderr.length > 200) stderr.shift();
    });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`${what}: not ready in time; stderr:\n${stderr.slice(-20).join('\n')}`));
      }, opts.timeoutMs ?? 30_000);
      createInterface({ input: child.stdout }).on('line', (line) => {
        if (!line.startsWith('READY')) return;
        clearTimeout(timer);
        const fields: Record<string, string> = {};
        for (const kv of line.split(' ').slice(1)) {
          const i = kv.indexOf('=');
          if (i > 0) fields[kv.slice(0, i)] = kv.slice(i + 1);
        }
        resolve({ child, fields, stderr, exited });
      });
      void exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`${what}: exited before ready:\n${stderr.slice(-20).join('\n')}`));
      });
    });
  }

  /** Starts a process that has no readiness line (the caller checks readiness its own way). */
  spawnBackground(what: string, cmd: string, args: string[]): ChildProcess {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    void this.track(child);
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
    child.once('exit', (code, signal) => {
      if (code !== 0 && signal === null)
        process.stderr.write(`[bench] ${what} exited with code ${String(code)}: ${err}\n`);
    });
    return child;
  }

  /** Runs a process to completion; rejects on a non-zero exit with its stderr. */
  run(what: string, cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv } = {}): Promise<string> {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
    void this.track(child);
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    return new Promise((resolve, reject) => {
      child.once('exit', (code, signal) => {
        if (code === 0) resolve(out);
        else reject(new Error(`${what} failed (code ${String(code)}, signal ${String(signal)}):\n${err.slice(-4000)}`));
      });
    });
  }

  /** SIGTERM (graceful leave for nodes), then SIGKILL whatever is still running after `graceMs`. */
  async stop(children: ChildProcess[], graceMs = 5000): Promise<void> {
    const waits = children
      .filter((c) => c.exitCode === null && c.signalCode === null)
      .map(
        (c) =>
          new Promise<void>((resolve) => {
            const t = setTimeout(() => {
              c.kill('SIGKILL');
            }, graceMs);
            c.once('exit', () => {
              clearTimeout(t);
              resolve();
            });
            c.kill('SIGTERM');
          }),
      );
    await Promise.all(waits);
  }

  async stopAll(graceMs = 3000): Promise<void> {
    await this.stop([...this.live], graceMs);
  }
}

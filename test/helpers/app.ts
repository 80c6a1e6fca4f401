// Drives test/helpers/app-worker.ts processes from tests.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { ExecutionContext } from 'ava';
import { projectRoot } from '../../services/common/paths.ts';

export interface AppError {
  code: string;
  message: string;
  conflicts?: { offset: number; length: number }[];
}

export interface App {
  pid: number;
  call<T = Record<string, unknown>>(cmd: Record<string, unknown>): Promise<T>;
  /** Like call, but resolves with the error instead of throwing. */
  attempt<T = Record<string, unknown>>(
    cmd: Record<string, unknown>,
  ): Promise<{ ok: true; value: T } | { ok: false; error: AppError }>;
  kill(): void;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr: string[];
}

/** An app process on `socket`; `as` runs it as another user (the test runs as root). */
export async function startApp(
  t: ExecutionContext,
  socket: string,
  env: Record<string, string> = {},
  as?: { uid: number; gid: number },
): Promise<App> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(projectRoot, 'test/helpers/app-worker.ts')], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, ...env, HOTPOT_SOCKET: socket },
    ...(as ?? {}),
  });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const stderr: string[] = [];
  createInterface({ input: child.stderr }).on('line', (l) => stderr.push(l));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    child.once('exit', (code, signal) => r({ code, signal })),
  );
  const waiting: ((v: unknown) => void)[] = [];
  createInterface({ input: child.stdout }).on('line', (l) => waiting.shift()?.(JSON.parse(l)));
  const next = (): Promise<unknown> =>
    new Promise((resolve, reject) => {
      waiting.push(resolve);
      void exited.then(({ code, signal }) =>
        reject(
          new Error(`app exited (code ${String(code)}, signal ${String(signal)}): ${stderr.slice(-10).join('\n')}`),
        ),
      );
    });
  await next(); // ready line
  const attempt = async <T>(cmd: Record<string, unknown>) => {
    const p = next();
    child.stdin.write(JSON.stringify(cmd) + '\n');
    return (await p) as { ok: true; value: T } | { ok: false; error: AppError };
  };
  return {
    pid: child.pid ?? 0,
    attempt,
    async call<T>(cmd: Record<string, unknown>): Promise<T> {
      const r = await attempt<T>(cmd);
      if (!r.ok)
        throw Object.assign(new Error(`${String(cmd.op)}: ${r.error.code}: ${r.error.message}`), { appError: r.error });
      return r.value;
    },
    kill: () => child.kill('SIGKILL'),
    exited,
    stderr,
  };
}

/** An app process on `socket` that has connected, opened dataset `name` (creating it with `create`) and mapped it. */
export async function openApp(
  t: ExecutionContext,
  socket: string,
  name: string,
  create?: Record<string, unknown>,
): Promise<App> {
  const a = await startApp(t, socket);
  await a.call({ op: 'connect' });
  await a.call({ op: 'open', name, ...(create ? { create } : {}) });
  await a.call({ op: 'map' });
  return a;
}

/** The hex of a little-endian int32 (signed) or uint32, for the app's `write` op. */
export function hexI32(n: number): string {
  const b = Buffer.alloc(4);
  b.writeInt32LE(n);
  return b.toString('hex');
}
export function hexU32(n: number): string {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b.toString('hex');
}

/** The int32 at `offset` as the app's mapping shows it. */
export async function readI32(a: App, offset: number): Promise<number> {
  return Buffer.from((await a.call<{ hex: string }>({ op: 'read', offset, length: 4 })).hex, 'hex').readInt32LE(0);
}

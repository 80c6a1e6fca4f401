// The one typed boundary to the native addon (conventions.md). Every native function is declared here once,
// with opaque handle types; native failures become `NativeError`s with a gRPC-style `code` in one place.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** gRPC-aligned status names used by the engine (native/src/common/status.h). */
export type NativeCode =
  | 'CANCELLED'
  | 'UNKNOWN'
  | 'INVALID_ARGUMENT'
  | 'DEADLINE_EXCEEDED'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'PERMISSION_DENIED'
  | 'RESOURCE_EXHAUSTED'
  | 'FAILED_PRECONDITION'
  | 'ABORTED'
  | 'OUT_OF_RANGE'
  | 'UNIMPLEMENTED'
  | 'INTERNAL'
  | 'UNAVAILABLE'
  | 'DATA_LOSS'
  | 'UNAUTHENTICATED';

export class NativeError extends Error {
  override readonly name = 'NativeError';
  constructor(
    readonly code: NativeCode,
    message: string,
    readonly details: unknown = null,
  ) {
    super(message);
  }
}

export interface EngineInfo {
  version: string;
  build: string;
  protocolVersion: number;
}

interface RawAddon {
  engineInfo(): EngineInfo;
  [name: string]: unknown;
}

function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'native'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('hotpot: cannot find the project root (package.json) above native/index.ts');
    dir = up;
  }
}

export const projectRoot = findRoot();

function load(): RawAddon {
  const path = join(projectRoot, 'native', 'build', 'Release', 'hotpot_native.node');
  if (!existsSync(path)) {
    throw new Error(`hotpot: native engine not built (${path} missing); run "npm run build:native"`);
  }
  return createRequire(import.meta.url)(path) as RawAddon;
}

const addon = load();

/** Converts an error thrown by the addon (an Error with a string `code`) into a NativeError. */
export function toNativeError(e: unknown): NativeError {
  if (e instanceof NativeError) return e;
  if (e instanceof Error) {
    const code = (e as Error & { code?: unknown }).code;
    const details = (e as Error & { details?: unknown }).details ?? null;
    return new NativeError(typeof code === 'string' ? (code as NativeCode) : 'INTERNAL', e.message, details);
  }
  return new NativeError('INTERNAL', String(e));
}

function wrap<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => R {
  return (...args: A): R => {
    try {
      const r = fn(...args);
      if (r instanceof Promise) return r.catch((e: unknown) => Promise.reject(toNativeError(e))) as R;
      return r;
    } catch (e) {
      throw toNativeError(e);
    }
  };
}

export const engineInfo = wrap((): EngineInfo => addon.engineInfo());

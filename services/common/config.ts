// Configuration helpers shared by the services: flags > environment (HOTPOT_*) > defaults, validated once.
import type { z } from 'zod';

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

export function parseHostPort(value: string, field: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(value);
  const host = m?.[1];
  const port = Number(m?.[2]);
  if (!m || !host || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new ConfigError(`${field}: expected host:port (e.g. 127.0.0.1:18500), got "${value}"`);
  }
  return { host: host.replace(/^\[(.*)\]$/, '$1'), port };
}

/** Validates a merged config object, naming the bad field in the error. */
export function validateConfig<S extends z.ZodType>(schema: S, input: unknown): z.infer<S> {
  const r = schema.safeParse(input);
  if (!r.success) {
    const issue = r.error.issues[0];
    const field = issue?.path.join('.') ?? '(config)';
    throw new ConfigError(`invalid configuration: ${field}: ${issue?.message ?? 'invalid'}`);
  }
  return r.data;
}

/** Drops undefined values so defaults apply (flags and env give undefined when unset). */
export function defined<T extends Record<string, unknown>>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

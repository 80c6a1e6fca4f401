// Named cluster contexts (docs/cli.md "Contexts"): $XDG_CONFIG_HOME/hotpot/config.json (default
// ~/.config/hotpot/config.json) holds how to reach each cluster; `--context NAME`, $HOTPOT_CONTEXT or the file's
// `current` picks one. Precedence of each setting: flag > environment > context > ./.hotpot/cluster.json > default.
// JSON, not YAML: no parser dependency for a file of a few lines.
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { z } from 'zod';
import type { Command } from 'commander';
import { ConfigError } from '../common/config.ts';
import { printJson, table } from './output.ts';

export const Context = z.strictObject({
  dispatcher: z
    .string()
    .regex(/^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/, 'host:port')
    .optional(),
  tlsDir: z.string().min(1).optional(),
  cert: z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,128}$/, 'a certificate name such as admin or user.alice')
    .optional(),
  tokenFile: z.string().min(1).optional(),
  insecure: z.boolean().optional(),
});
export type Context = z.infer<typeof Context>;

const NAME = /^[A-Za-z0-9._-]{1,64}$/;

export const HotpotConfig = z.strictObject({
  current: z.string().regex(NAME, 'a context name').optional(),
  contexts: z.record(z.string().regex(NAME, 'a context name ([A-Za-z0-9._-]{1,64})'), Context).default({}),
});
export type HotpotConfig = z.infer<typeof HotpotConfig>;

export function configPath(env: NodeJS.ProcessEnv = process.env): string {
  const base =
    env.XDG_CONFIG_HOME && isAbsolute(env.XDG_CONFIG_HOME) ? env.XDG_CONFIG_HOME : join(homedir(), '.config');
  return join(base, 'hotpot', 'config.json');
}

/** The config file, validated; an empty config when there is none. */
export function readConfig(path: string): HotpotConfig {
  if (!existsSync(path)) return { contexts: {} };
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new ConfigError(`${path}: not valid JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  const r = HotpotConfig.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new ConfigError(`${path}: field "${issue?.path.join('.') ?? ''}": ${issue?.message ?? 'invalid'}`);
  }
  return r.data;
}

/** Writes the config atomically, readable by its owner only (it names token files and certificates). */
export function writeConfig(path: string, cfg: HotpotConfig): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp-${String(process.pid)}`;
  writeFileSync(tmp, JSON.stringify(HotpotConfig.parse(cfg), null, 2) + '\n', { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

/** The context in use: --context > $HOTPOT_CONTEXT > the file's current; null when none is chosen. */
export function selectContext(
  cfg: HotpotConfig,
  flag: string | undefined,
  env: NodeJS.ProcessEnv,
  path: string,
): { name: string; context: Context } | null {
  const name = flag ?? (env.HOTPOT_CONTEXT || undefined) ?? cfg.current;
  if (name === undefined) return null;
  const context = cfg.contexts[name];
  if (!context) {
    const from = flag !== undefined ? '--context' : env.HOTPOT_CONTEXT ? 'HOTPOT_CONTEXT' : `"current" in ${path}`;
    const known = Object.keys(cfg.contexts);
    throw new ConfigError(
      `no context "${name}" (from ${from}); ${known.length > 0 ? `known: ${known.join(', ')}` : `none in ${path}`} ` +
        '(hotpot context set NAME --dispatcher HOST:PORT ...)',
    );
  }
  return { name, context };
}

/**
 * The environment variables a context supplies: each only where the environment does not set it already (flags are
 * applied over these afterwards). A token file is read here: HOTPOT_TOKEN carries the token itself.
 */
export function contextEnv(c: Context, env: NodeJS.ProcessEnv, configFile: string): Record<string, string> {
  const out: Record<string, string> = {};
  const unset = (k: string): boolean => env[k] === undefined || env[k] === '';
  // Relative paths in the file are relative to the file, not to wherever the command runs.
  const abs = (p: string): string => resolve(dirname(configFile), p);
  if (c.dispatcher !== undefined && unset('HOTPOT_DISPATCHER')) out.HOTPOT_DISPATCHER = c.dispatcher;
  if (c.tlsDir !== undefined && unset('HOTPOT_TLS_DIR')) out.HOTPOT_TLS_DIR = abs(c.tlsDir);
  if (c.cert !== undefined && unset('HOTPOT_CERT')) out.HOTPOT_CERT = c.cert;
  if (c.insecure === true && unset('HOTPOT_INSECURE')) out.HOTPOT_INSECURE = '1';
  if (c.tokenFile !== undefined && unset('HOTPOT_TOKEN')) {
    try {
      out.HOTPOT_TOKEN = readFileSync(abs(c.tokenFile), 'utf8').trim();
    } catch (e) {
      throw new ConfigError(`context token file: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  return out;
}

/** Commands that run or manage a local cluster, or edit contexts: no context applies to them. */
const NO_CONTEXT = new Set(['dispatcher', 'node', 'up', 'down', 'clean', 'context', 'completion']);

/** The top-level command a (sub)command belongs to. */
function topName(c: Command): string {
  let cur = c;
  while (cur.parent?.parent) cur = cur.parent;
  return cur.name();
}

/** Sets the chosen context's settings into the environment, under anything the environment already says. */
export function applyContext(action: Command, flag: string | undefined): void {
  if (NO_CONTEXT.has(topName(action))) return;
  const path = configPath();
  const chosen = selectContext(readConfig(path), flag, process.env, path);
  if (chosen) Object.assign(process.env, contextEnv(chosen.context, process.env, path));
}

export function registerContextCommands(
  program: Command,
  globals: () => {
    dispatcher?: string;
    tlsDir?: string;
    cert?: string;
    tokenFile?: string;
    insecure?: boolean;
    json?: boolean;
  },
): void {
  const ctx = program
    .command('context')
    .description(`named clusters to talk to, kept in ${configPath().replace(homedir(), '~')} (docs/cli.md)`);
  ctx
    .command('ls')
    .description('list contexts; * marks the current one')
    .action(() => {
      const path = configPath();
      const cfg = readConfig(path);
      if (globals().json) {
        printJson({ file: path, current: cfg.current ?? null, contexts: cfg.contexts });
        return;
      }
      process.stdout.write(
        table(
          ['CURRENT', 'NAME', 'DISPATCHER', 'TLS DIR', 'CERT', 'TOKEN FILE', 'INSECURE'],
          Object.entries(cfg.contexts).map(([name, c]) => [
            name === cfg.current ? '*' : '',
            name,
            c.dispatcher ?? '-',
            c.tlsDir ?? '-',
            c.cert ?? '-',
            c.tokenFile ?? '-',
            c.insecure ? 'yes' : '-',
          ]),
        ),
      );
    });
  ctx
    .command('use <name>')
    .description('make a context the current one (HOTPOT_CONTEXT and --context still win)')
    .action((name: string) => {
      const path = configPath();
      const cfg = readConfig(path);
      if (!cfg.contexts[name]) throw new ConfigError(`no context "${name}" in ${path} (hotpot context ls)`);
      writeConfig(path, { ...cfg, current: name });
      process.stdout.write(`current context: ${name}\n`);
    });
  ctx
    .command('set <name>')
    .description(
      'create or change a context from the global flags given: ' +
        'hotpot context set prod --dispatcher HOST:PORT [--tls-dir DIR] [--cert NAME | --token-file FILE] [--insecure]',
    )
    .option('--secure', 'clear a context\'s "insecure"')
    .action((name: string, o: { secure?: boolean }) => {
      if (!NAME.test(name)) throw new ConfigError(`context name must match [A-Za-z0-9._-]{1,64} (got "${name}")`);
      const g = globals();
      const change: Context = {
        ...(g.dispatcher !== undefined ? { dispatcher: g.dispatcher } : {}),
        // Directories and files as absolute paths: the context is used from any working directory.
        ...(g.tlsDir !== undefined ? { tlsDir: resolve(g.tlsDir) } : {}),
        ...(g.cert !== undefined ? { cert: g.cert } : {}),
        ...(g.tokenFile !== undefined ? { tokenFile: resolve(g.tokenFile) } : {}),
        ...(g.insecure ? { insecure: true } : {}),
      };
      if (Object.keys(change).length === 0 && !o.secure) {
        throw new ConfigError('nothing to set: give --dispatcher, --tls-dir, --cert, --token-file or --insecure');
      }
      const path = configPath();
      const cfg = readConfig(path);
      const merged: Context = { ...cfg.contexts[name], ...change };
      if (o.secure) delete merged.insecure;
      const checked = Context.safeParse(merged);
      if (!checked.success) {
        const issue = checked.error.issues[0];
        throw new ConfigError(`context ${name}: ${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`);
      }
      writeConfig(path, {
        current: cfg.current ?? name,
        contexts: { ...cfg.contexts, [name]: checked.data },
      });
      process.stdout.write(`context ${name} saved in ${path}${cfg.current === undefined ? ' (current)' : ''}\n`);
    });
  ctx
    .command('rm <name>')
    .description('remove a context')
    .action((name: string) => {
      const path = configPath();
      const cfg = readConfig(path);
      if (!cfg.contexts[name]) throw new ConfigError(`no context "${name}" in ${path}`);
      const { [name]: _gone, ...rest } = cfg.contexts;
      writeConfig(path, { ...(cfg.current === name ? {} : { current: cfg.current }), contexts: rest });
      process.stdout.write(`removed context ${name}\n`);
    });
}

// Contexts in $XDG_CONFIG_HOME/hotpot/config.json (services/cli/contexts.ts): `hotpot context ls|use|set|rm`, and the
// precedence flag > environment > context > ./.hotpot/cluster.json > default, seen in which dispatcher address a
// command tries (nothing listens there: the error names it).
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { runCli, tempDir } from '../helpers/cluster.ts';

function setup(t: ExecutionContext) {
  const dir = tempDir(t, 'hotpot-ctx-');
  const work = join(dir, 'work');
  mkdirSync(work);
  const env = { XDG_CONFIG_HOME: join(dir, 'cfg'), HOTPOT_INSECURE: '1' };
  const run = (args: string[], extra: NodeJS.ProcessEnv = {}) => runCli(args, { cwd: work, env: { ...env, ...extra } });
  /** The dispatcher address `hotpot ls` tried. */
  const tried = async (args: string[] = [], extra: NodeJS.ProcessEnv = {}): Promise<string> => {
    const r = await run([...args, 'ls'], extra);
    t.is(r.code, 1, r.stderr);
    return /cannot reach the dispatcher at (\S+) /.exec(r.stderr)?.[1] ?? r.stderr;
  };
  return { dir, work, env, run, tried, file: join(dir, 'cfg', 'hotpot', 'config.json') };
}

test('contexts are set, listed, switched and removed, in a file only its owner can read', async (t) => {
  t.timeout(60_000);
  const s = setup(t);
  const set = await s.run([
    'context',
    'set',
    'a',
    '--dispatcher',
    '127.0.0.1:11',
    '--tls-dir',
    'tls',
    '--cert',
    'admin',
  ]);
  t.is(set.code, 0, set.stderr);
  t.regex(set.stdout, /context a saved in .*config\.json \(current\)/);
  t.is(statSync(s.file).mode & 0o777, 0o600);
  t.is((await s.run(['context', 'set', 'b', '--dispatcher', '127.0.0.1:12', '--insecure'])).code, 0);
  const ls = await s.run(['--json', 'context', 'ls']);
  t.deepEqual(JSON.parse(ls.stdout), {
    file: s.file,
    current: 'a',
    contexts: {
      a: { dispatcher: '127.0.0.1:11', tlsDir: join(s.work, 'tls'), cert: 'admin' },
      b: { dispatcher: '127.0.0.1:12', insecure: true },
    },
  });
  t.regex((await s.run(['context', 'ls'])).stdout, /\*\s+a\s+127\.0\.0\.1:11/);
  t.is((await s.run(['context', 'use', 'b'])).code, 0);
  t.is((JSON.parse(readFileSync(s.file, 'utf8')) as { current: string }).current, 'b');
  const unknown = await s.run(['context', 'use', 'zz']);
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /no context "zz"/);
  t.is((await s.run(['context', 'rm', 'b'])).code, 0);
  t.false('current' in (JSON.parse(readFileSync(s.file, 'utf8')) as object));
  const bad = await s.run(['context', 'set', 'c', '--dispatcher', 'no port']);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /context c: dispatcher: host:port/);
  const nothing = await s.run(['context', 'set', 'c']);
  t.is(nothing.code, 2);
  t.regex(nothing.stderr, /nothing to set/);
});

test('the dispatcher address comes from the flag, then the environment, then the context, then cluster.json', async (t) => {
  t.timeout(90_000);
  const s = setup(t);
  t.is(await s.tried(), '127.0.0.1:18500', 'the default');
  mkdirSync(join(s.work, '.hotpot'));
  writeFileSync(
    join(s.work, '.hotpot', 'cluster.json'),
    JSON.stringify({ dispatcher: '127.0.0.1:14', nodes: [], stateDir: join(s.work, '.hotpot'), pid: 1 }),
  );
  t.is(await s.tried(), '127.0.0.1:14', './.hotpot/cluster.json');
  await s.run(['context', 'set', 'one', '--dispatcher', '127.0.0.1:13']);
  await s.run(['context', 'set', 'two', '--dispatcher', '127.0.0.1:15']);
  t.is(await s.tried(), '127.0.0.1:13', 'the current context over cluster.json');
  t.is(await s.tried([], { HOTPOT_CONTEXT: 'two' }), '127.0.0.1:15', 'HOTPOT_CONTEXT picks the context');
  t.is(await s.tried(['--context', 'two'], { HOTPOT_CONTEXT: 'one' }), '127.0.0.1:15', '--context over HOTPOT_CONTEXT');
  t.is(await s.tried([], { HOTPOT_DISPATCHER: '127.0.0.1:12' }), '127.0.0.1:12', 'the environment over the context');
  t.is(
    await s.tried(['--dispatcher', '127.0.0.1:11'], { HOTPOT_DISPATCHER: '127.0.0.1:12' }),
    '127.0.0.1:11',
    'the flag over everything',
  );
  const missing = await s.run(['--context', 'nope', 'ls']);
  t.is(missing.code, 2);
  t.regex(missing.stderr, /no context "nope" \(from --context\); known: one, two/);
  writeFileSync(s.file, '{"contexts": {"x": {"dispatcher": "h:1", "colour": "red"}}}');
  const broken = await s.run(['ls']);
  t.is(broken.code, 2);
  t.regex(broken.stderr, /config\.json: field "contexts\.x"/);
});

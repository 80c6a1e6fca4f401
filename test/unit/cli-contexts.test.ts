// Context selection and what a context puts into the environment (services/cli/contexts.ts).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { configPath, contextEnv, selectContext, type HotpotConfig } from '../../services/cli/contexts.ts';

const cfg: HotpotConfig = {
  current: 'a',
  contexts: { a: { dispatcher: 'h1:1' }, b: { dispatcher: 'h2:2', cert: 'user.bob', insecure: true } },
};

test('--context wins over HOTPOT_CONTEXT, which wins over the current context; none chosen is null', (t) => {
  t.is(selectContext(cfg, 'b', { HOTPOT_CONTEXT: 'a' }, 'f')?.name, 'b');
  t.is(selectContext(cfg, undefined, { HOTPOT_CONTEXT: 'b' }, 'f')?.name, 'b');
  t.is(selectContext(cfg, undefined, {}, 'f')?.name, 'a');
  t.is(selectContext({ contexts: cfg.contexts }, undefined, {}, 'f'), null);
  t.throws(() => selectContext(cfg, undefined, { HOTPOT_CONTEXT: 'zz' }, 'f'), {
    message: /no context "zz" \(from HOTPOT_CONTEXT\); known: a, b/,
  });
});

test('a context fills only what the environment leaves unset, and reads its token file', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'hotpot-ctx-unit-'));
  t.teardown(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  writeFileSync(join(dir, 'tok'), 'secret-token\n');
  const file = join(dir, 'config.json');
  const c = { dispatcher: 'h:1', tlsDir: 'tls', cert: 'admin', tokenFile: 'tok', insecure: true };
  t.deepEqual(contextEnv(c, {}, file), {
    HOTPOT_DISPATCHER: 'h:1',
    HOTPOT_TLS_DIR: join(dir, 'tls'),
    HOTPOT_CERT: 'admin',
    HOTPOT_INSECURE: '1',
    HOTPOT_TOKEN: 'secret-token',
  });
  t.deepEqual(
    contextEnv(
      c,
      { HOTPOT_DISPATCHER: 'env:2', HOTPOT_TLS_DIR: '/e', HOTPOT_CERT: 'x', HOTPOT_INSECURE: '0', HOTPOT_TOKEN: 't' },
      file,
    ),
    {},
  );
  t.throws(() => contextEnv({ tokenFile: 'missing' }, {}, file), { message: /context token file: .*ENOENT/ });
});

test('the config file is under XDG_CONFIG_HOME when it is an absolute path, else ~/.config', (t) => {
  t.is(configPath({ XDG_CONFIG_HOME: '/x/cfg' }), '/x/cfg/hotpot/config.json');
  t.regex(configPath({ XDG_CONFIG_HOME: 'relative' }), /\/\.config\/hotpot\/config\.json$/);
  t.regex(configPath({}), /\/\.config\/hotpot\/config\.json$/);
});

import { spawn, spawnSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { ConfigError } from '../../services/common/config.ts';
import { pino } from 'pino';
import { formatLogLine, LOG_STALL_MS, logFormat, stderrDestination, useColor } from '../../services/common/logger.ts';
import { projectRoot } from '../../services/common/paths.ts';

const time = Date.UTC(2026, 11, 4, 16, 30, 5, 7);
const clock = ((d: Date): string =>
  [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':') +
  `.${String(d.getMilliseconds()).padStart(3, '0')}`)(new Date(time));

const line = (fields: Record<string, unknown>): string =>
  JSON.stringify({ level: 30, time, pid: 42, hostname: 'vm', name: 'node', msg: 'joined the cluster', ...fields });

test('a pino JSON line becomes one line: time, level, process name, message, then the other fields', (t) => {
  t.is(
    formatLogLine(line({ proc: 'node-1', node: 1, epoch: 2, store: 'ab12' })),
    `${clock} INFO  [node-1] joined the cluster node=1 epoch=2 store=ab12`,
  );
  // Without `proc`, pino's name; a name given by the caller (hotpot up) wins over both.
  t.is(formatLogLine(line({})), `${clock} INFO  [node] joined the cluster`);
  t.is(formatLogLine(line({ proc: 'x' }), { name: 'node-3' }), `${clock} INFO  [node-3] joined the cluster`);
});

test('values with spaces or quotes are quoted, objects and arrays are JSON, levels have their names', (t) => {
  const out = formatLogLine(
    line({ level: 40, msg: 'node left', reason: 'lease expired', sockets: ['/a', '/b'], ok: false, n: null }),
  );
  t.is(out, `${clock} WARN  [node] node left reason="lease expired" sockets=["/a","/b"] ok=false n=null`);
  t.regex(formatLogLine(line({ level: 50 })), / ERROR \[node\] /);
  t.regex(formatLogLine(line({ level: 20 })), / DEBUG \[node\] /);
});

test("an error's stack follows its line; a line that is not JSON is kept as it is, after the name", (t) => {
  const out = formatLogLine(
    line({
      level: 50,
      msg: 'shutdown failed',
      err: { type: 'Error', message: 'boom', stack: 'Error: boom\n    at x' },
    }),
  );
  t.is(out, `${clock} ERROR [node] shutdown failed err="boom"\nError: boom\n    at x`);
  t.is(formatLogLine('    at foo (bar.ts:1:2)', { name: 'node-2' }), '[node-2]     at foo (bar.ts:1:2)');
  t.is(formatLogLine('[1, 2]'), '[1, 2]');
});

test('colour codes only when asked, around the level and the process name', (t) => {
  t.false(formatLogLine(line({})).includes('\u001b['));
  const coloured = formatLogLine(line({ level: 50 }), { color: true });
  t.true(coloured.includes('\u001b[31mERROR\u001b[0m'), coloured);
  t.true(coloured.includes('[node]\u001b[0m joined the cluster'), coloured);
});

test('the format: HOTPOT_LOG_FORMAT forces it, else pretty on a terminal and JSON elsewhere; colour unless NO_COLOR', (t) => {
  t.is(logFormat({}, { isTTY: true }), 'pretty');
  t.is(logFormat({}, { isTTY: false }), 'json');
  t.is(logFormat({}, {}), 'json');
  t.is(logFormat({ HOTPOT_LOG_FORMAT: 'json' }, { isTTY: true }), 'json');
  t.is(logFormat({ HOTPOT_LOG_FORMAT: 'pretty' }, {}), 'pretty');
  const e = t.throws(() => logFormat({ HOTPOT_LOG_FORMAT: 'fancy' }, {}));
  t.true(e instanceof ConfigError);
  t.is(e.message, 'HOTPOT_LOG_FORMAT must be json or pretty (got "fancy")');
  t.true(useColor({}, { isTTY: true }));
  t.false(useColor({ NO_COLOR: '1' }, { isTTY: true }));
  t.false(useColor({}, { isTTY: false }));
});

// A daemon whose reader is gone (`hotpot up` killed -9: the daemon's stderr is a socket to it) logs its stop and
// exits. With pino's default destination the lines still buffered at exit were flushed by sonic-boom's flushSync, which
// retries a failed write forever, EPIPE included: the daemon hung in that loop, asleep in a futex (a CI run's `hotpot
// up … killed -9` failure).
test('a process whose stderr reader is gone logs and still exits', async (t) => {
  const script = [
    "import { createLogger } from './services/common/logger.ts';",
    "const log = createLogger('t');",
    "setTimeout(() => { for (let i = 0; i < 5; i++) log.info('stopping ' + String(i)); process.exit(0); }, 500);",
  ].join('\n');
  const child = spawn(process.execPath, ['--import=tsx', '--input-type=module', '-e', script], {
    cwd: projectRoot,
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, HOTPOT_LOG_FORMAT: 'json' },
  });
  child.stderr.destroy(); // the reader goes before the child writes
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const timer = new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 15_000).unref());
  const result = await Promise.race([exited, timer]);
  if (result === 'hung') child.kill('SIGKILL');
  t.is(result, 0, 'it exits (0) instead of hanging');
});

// A reader that stops reading (a full non-blocking pipe, as `hotpot up` gives its children) holds a process's logging a
// second per stall at most; what it could not take is kept and sent once it reads again.
test('a reader that stops reading holds logging about a second, then the lines wait for it', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'hotpot-log-'));
  const fifo = join(dir, 'fifo');
  t.is(spawnSync('mkfifo', [fifo]).status, 0);
  const r = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const w = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
  t.teardown(() => {
    closeSync(r);
    closeSync(w);
    rmSync(dir, { recursive: true, force: true });
  });
  const dest = stderrDestination(w);
  const log = pino({}, dest);
  const drain = (): number => {
    const buf = Buffer.alloc(1 << 20);
    let n = 0;
    try {
      for (let k = readSync(r, buf); k > 0; k = readSync(r, buf)) n += k;
    } catch {
      // EAGAIN: empty
    }
    return n;
  };
  const t0 = Date.now();
  for (let i = 0; i < 20_000; i++) log.info({ pad: 'x'.repeat(150) }, `line ${String(i)}`);
  const ms = Date.now() - t0;
  t.log(`20 000 lines (~4.6 MB) into a pipe nobody reads: ${String(ms)} ms`);
  t.true(ms < 3 * LOG_STALL_MS + 2000, `logging went on (${String(ms)} ms)`);
  t.true(drain() > 0);
  log.info('after the reader read');
  t.true(drain() > 0, 'the kept lines flow again');
});

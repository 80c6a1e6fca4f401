// The Python client follows a standby dispatcher's redirect (UNAVAILABLE with the `hotpot-leader` trailer) to the
// leader, sync and asyncio: clients/python/tests/redirect.py runs the client against in-process fake dispatchers
// (a standby that names a leader, leaders that answer and count) and prints what it saw; this checks it.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import test from 'ava';
import { ensurePythonStubs, PY_DIR, PYTHON } from '../helpers/python.ts';

test.before(ensurePythonStubs);

/** The client's own environment: no HOTPOT_* setting of the caller's (the script passes everything explicitly). */
function env(): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('HOTPOT_') && k !== 'PYTHONPATH' && k !== 'VIRTUAL_ENV') out[k] = v;
  }
  return { ...out, PYTHONPATH: PY_DIR };
}

function runScript(): Promise<string> {
  return new Promise((resolve, reject) => {
    const script = join(PY_DIR, 'tests', 'redirect.py');
    execFile(PYTHON, [script], { env: env(), timeout: 120_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${script} failed: ${err.message}\n${stdout}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** What an error looks like in the script's output. */
function failed(code: string, cls: string, how: { standby?: boolean; notFollowed?: boolean; once?: boolean } = {}) {
  return {
    error: code,
    class: cls,
    standby: how.standby ?? false,
    not_followed: how.notFollowed ?? false,
    redirected_once: how.once ?? false,
  };
}

const UNAVAILABLE = failed('UNAVAILABLE', 'ConnectionFailedError');
const NOT_FOLLOWED = [failed('UNAVAILABLE', 'ConnectionFailedError', { standby: true, notFollowed: true }), 1];

const EXPECTED = {
  // Given only the standby's address, the first call is answered by the leader: the standby was asked once.
  first: ['on-L1'],
  first_calls: { standby: 1, L1: 1 },
  // Later calls go straight to the leader, whose own errors reach the caller as they are.
  later: [
    'a',
    'a',
    failed('NOT_FOUND', 'NotFoundError'),
    failed('ALREADY_EXISTS', 'AlreadyExistsError'),
    ['a', 'on-L1'],
  ],
  later_calls: { standby: 1, L1: 6 },
  // The leader stopped: that call fails UNAVAILABLE; the next goes over the standby again, to the leader it names now.
  gone: UNAVAILABLE,
  back: [['on-L2'], ['on-L2']],
  back_calls: { standby: 2, L2: 2 },
  // A new leader on the first one's address: followed too.
  again: [UNAVAILABLE, ['on-L1b'], ['on-L1b']],
  again_calls: { standby: 3, L1b: 2, same_address: true },
  // A list "dead,standby": the channel settles on the standby, the call is followed.
  list: [['on-L1b'], ['on-L1b']],
  list_calls: { standby: 1, L1b: 4 },
  // A trailer that is no address, or names the standby itself, is not followed (one call), and the error says so.
  bad: {
    x: NOT_FOLLOWED,
    ':0': NOT_FOLLOWED,
    long: NOT_FOLLOWED,
    self: NOT_FOLLOWED,
    none: [failed('UNAVAILABLE', 'ConnectionFailedError', { standby: true }), 1],
  },
  // Two standbys naming each other: one redirect is followed, the second is the caller's error.
  loop: failed('UNAVAILABLE', 'ConnectionFailedError', { standby: true, notFollowed: true, once: true }),
  loop_calls: { s1: 1, s2: 1 },
  // After a switch the left leader's channel is closed (its calls had their deadline): 3 channels, then 2.
  retired: { answers: [['on-Lx'], UNAVAILABLE, ['on-Ly']], channels: [3, 2], Ly: 1 },
};

test('a standby dispatcher redirects the Python client (sync and asyncio) to the leader, once per switch', async (t) => {
  t.timeout(150_000);
  const out = JSON.parse(await runScript()) as Record<string, unknown>;
  t.deepEqual(out.sync, EXPECTED, 'hotpot.Client');
  t.deepEqual(out.aio, EXPECTED, 'hotpot.aio.Client');
});

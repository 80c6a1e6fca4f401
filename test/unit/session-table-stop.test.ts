// A stopping node closes its gRPC data sessions and waits for their MRSW leases to be released, but only so long
// (services/node/data/sessions.ts): a release is sent again until its lease's expiry while the dispatcher is away.
import test from 'ava';
import type { Logger } from '../../services/common/logger.ts';
import type { Overlay } from '../../services/node/data/overlay.ts';
import { SessionTable } from '../../services/node/data/sessions.ts';

const quiet = { info: () => undefined, warn: () => undefined } as unknown as Logger;
const noPages = { drop: () => 0 } as unknown as Overlay;

function tableWith(release: () => Promise<unknown>): SessionTable {
  const t = new SessionTable({
    log: quiet,
    idleTimeoutMs: 60_000,
    maxSessions: 8,
    maxSessionsPerCaller: 8,
    release,
    stopReleaseWaitMs: 300,
  });
  const s = t.add(
    {
      datasetId: 1,
      name: 'm',
      sizeBytes: 65_536,
      mode: 'mrsw',
      peer: 'test',
      owner: 'uid:0',
      readOnly: false,
      pages: noPages,
    },
    () => undefined,
  );
  s.lease = { id: 'L1', certificate: Buffer.alloc(0) };
  return t;
}

test('stop waits for a release that lands', async (t) => {
  let released = false;
  const table = tableWith(
    () =>
      new Promise((resolve) =>
        setTimeout(() => {
          released = true;
          resolve({});
        }, 50),
      ),
  );
  await table.stop();
  t.true(released);
});

test('stop does not wait past its bound for a release still being sent', async (t) => {
  const table = tableWith(() => new Promise(() => undefined)); // the dispatcher never answers
  const began = Date.now();
  await table.stop();
  const ms = Date.now() - began;
  t.true(ms >= 250 && ms < 3000, `stopped after ${String(ms)} ms`);
});

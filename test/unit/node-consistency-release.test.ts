// The node's MRSW release (services/node/consistency-service.ts): a release whose answer may have been lost (the
// dispatcher restarting) is sent again until the lease would have ended anyway, so the pages are free as soon as the
// dispatcher is back rather than when the lease runs out; one of a lease this node does not know is tried once.
import * as grpc from '@grpc/grpc-js';
import test from 'ava';
import type { DispatcherClient } from '../../services/common/proto.ts';
import { nodeConsistency } from '../../services/node/consistency-service.ts';

type Callback = (err: grpc.ServiceError | null, value?: object) => void;

function unavailableError(): grpc.ServiceError {
  return Object.assign(new Error('14 UNAVAILABLE: connection refused'), {
    code: grpc.status.UNAVAILABLE,
    details: 'connection refused',
    metadata: new grpc.Metadata(),
  });
}

/** A dispatcher that grants every acquire a lease of `leaseMs` and refuses the first `refusals` releases. */
function fakeDispatcher(leaseMs: number, refusals: number): { client: DispatcherClient; releases: number[] } {
  const releases: number[] = [];
  let refused = 0;
  const client = {
    Acquire: (req: { dataset: string }, _o: grpc.CallOptions, cb: Callback) => {
      cb(null, {
        lease: {
          leaseId: 'L1',
          dataset: req.dataset,
          datasetId: 7,
          pages: [],
          expiresUnixMs: Date.now() + leaseMs,
        },
      });
    },
    Release: (_req: { leaseId: string }, _o: grpc.CallOptions, cb: Callback) => {
      releases.push(Date.now());
      if (refused < refusals) {
        refused++;
        cb(unavailableError());
      } else {
        cb(null, {});
      }
    },
  } as unknown as DispatcherClient;
  return { client, releases };
}

/** The node's consistency path as node 1, over `d`. */
function over(d: { client: DispatcherClient }): ReturnType<typeof nodeConsistency> {
  return nodeConsistency(
    () => ({ client: d.client, nodeId: 1 }),
    () => Promise.resolve(),
  );
}

test('a release refused while the dispatcher is away is sent again until it lands', async (t) => {
  const d = fakeDispatcher(10_000, 3);
  const c = over(d);
  await c.acquire({ dataset: 'm', leaseMs: 10_000 });
  await c.release({ leaseId: 'L1' });
  t.is(d.releases.length, 4, 'three refusals, then the release that landed');
});

test('a release is not sent again past the lease, nor for a lease this node did not grant', async (t) => {
  const short = fakeDispatcher(300, 1000);
  const c = over(short);
  await c.acquire({ dataset: 'm', leaseMs: 300 });
  const began = Date.now();
  await t.throwsAsync(c.release({ leaseId: 'L1' }), { message: /UNAVAILABLE|connection refused/ });
  t.true(Date.now() - began < 2000, 'gave up once the lease was over');
  t.true(short.releases.length >= 2, 'sent again while the lease ran');
  const other = fakeDispatcher(10_000, 1000);
  const c2 = over(other);
  await t.throwsAsync(c2.release({ leaseId: 'unknown' }));
  t.is(other.releases.length, 1, 'a lease not granted here: one attempt, as before');
});

// An MRSW acquire sent again with the same request id — what a node does when the dispatcher's answer was lost (a
// dispatcher restart, a broken link) — gets the lease it was granted, not a wait for (or a refusal by) itself; the
// same id may not name other pages, and another id still finds the pages held.
import { dirname, join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { dispatcherClient, nodeClient } from '../../services/cli/client.ts';
import { HotpotError } from '../../services/common/errors.ts';
import { unary } from '../../services/common/rpc.ts';
import type { AcquireRequest } from '../../services/generated/hotpot/v1/AcquireRequest.ts';
import type { AcquireResponse__Output } from '../../services/generated/hotpot/v1/AcquireResponse.ts';
import type { ListLeasesResponse__Output } from '../../services/generated/hotpot/v1/ListLeasesResponse.ts';
import { runCli, startCluster } from '../helpers/cluster.ts';

/** One node and an MRSW dataset "locks"; a client of the node's gRPC socket (what an app's SDK calls). */
async function locksCluster(t: ExecutionContext, prefix: string) {
  const c = await startCluster(t, { nodes: 1, prefix });
  const [n] = c.nodes;
  if (!n) throw new Error('cluster');
  const created = await runCli(['create', 'locks', '--size', '1MiB', '--mode', 'mrsw'], {
    env: { HOTPOT_DISPATCHER: c.dispatcher },
  });
  t.is(created.code, 0, created.stderr);
  const node = nodeClient(`unix:${join(dirname(n.socket), 'grpc.sock')}`);
  t.teardown(() => node.close());
  return { c, node };
}

test('an acquire retried with its request id gets the lease it was granted', async (t) => {
  t.timeout(90_000);
  const { node } = await locksCluster(t, 'acqr');
  const acquire = (req: AcquireRequest) =>
    unary<AcquireResponse__Output>((o, cb) => node.Acquire({ dataset: 'locks', leaseMs: 60_000, ...req }, o, cb));
  const ranges = [{ offset: 0, length: 8 }];

  const first = await acquire({ ranges, requestId: 'req-1' });
  const again = await acquire({ ranges, requestId: 'req-1' });
  t.truthy(first.lease?.leaseId);
  t.is(again.lease?.leaseId, first.lease?.leaseId, 'the retry is answered with the same lease');
  t.is(again.lease?.fencingEpoch, first.lease?.fencingEpoch);

  // Another request for the pages finds them held (by that one lease).
  const other = await t.throwsAsync(acquire({ ranges, requestId: 'req-2' }));
  t.true(other instanceof HotpotError && other.code === 'ABORTED', String(other));
  t.regex(other.message, new RegExp(`held by lease ${first.lease?.leaseId ?? '?'}`));
  // The same id for other pages is a caller's mistake, not a retry.
  const misused = await t.throwsAsync(acquire({ ranges: [{ offset: 8192, length: 8 }], requestId: 'req-1' }));
  t.true(misused instanceof HotpotError && misused.code === 'INVALID_ARGUMENT', String(misused));
  const bad = await t.throwsAsync(acquire({ ranges: [{ offset: 8192, length: 8 }], requestId: 'x'.repeat(129) }));
  t.true(bad instanceof HotpotError && bad.code === 'INVALID_ARGUMENT', String(bad));

  // Once released, the id names nothing: a late retry is a new acquire (granted anew, a newer fencing epoch).
  await unary((o, cb) => node.Release({ leaseId: first.lease?.leaseId ?? '' }, o, cb));
  const late = await acquire({ ranges, requestId: 'req-1' });
  t.not(late.lease?.leaseId, first.lease?.leaseId);
  t.true((late.lease?.fencingEpoch ?? 0) > (first.lease?.fencingEpoch ?? 0));
});

// An app that stops waiting for an acquire (its deadline passes) while the pages are held must not be granted them
// behind its back: the grant would hold them for the whole lease with nobody to release it — the app's own next
// acquire included. The node gives such a lease back at once.
test('an acquire whose caller gave up before the grant leaves the pages free', async (t) => {
  t.timeout(90_000);
  const { c, node } = await locksCluster(t, 'acqc');
  const ranges = [{ offset: 0, length: 8 }];
  const acquire = (waitMs: number, deadlineMs?: number) =>
    unary<AcquireResponse__Output>(
      (o, cb) => node.Acquire({ dataset: 'locks', leaseMs: 60_000, waitMs, ranges }, o, cb),
      deadlineMs,
    );
  const first = await acquire(0);
  const gaveUp = await t.throwsAsync(acquire(10_000, 500));
  t.true(gaveUp instanceof HotpotError && gaveUp.code === 'DEADLINE_EXCEEDED', String(gaveUp));
  await unary((o, cb) => node.Release({ leaseId: first.lease?.leaseId ?? '' }, o, cb));
  // The waiting acquire (still at the dispatcher) is granted now, and given back by the node.
  const next = await acquire(5_000);
  t.truthy(next.lease?.leaseId, 'granted: the lease of the acquire given up on did not keep the pages');
  const dc = dispatcherClient(c.dispatcher);
  t.teardown(() => dc.close());
  const listed = await unary<ListLeasesResponse__Output>((o, cb) => dc.ListLeases({ dataset: 'locks' }, o, cb));
  t.deepEqual(
    listed.leases.map((l) => l.leaseId),
    [next.lease?.leaseId],
    'only the lease of the acquire that waited for it',
  );
});

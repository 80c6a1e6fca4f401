// gRPC's rich error model on Hotpot's errors: grpc-status-details-bin carries a google.rpc.Status with a
// google.rpc.ErrorInfo, beside the trailers Hotpot already sent.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import test from 'ava';
import { dispatcherClient } from '../../services/cli/client.ts';
import { decodeStatusDetails, fromServiceError, STATUS_DETAILS_KEY } from '../../services/common/errors.ts';
import { CallError, dataClient } from '../helpers/data-client.ts';
import { startDispatcher, startNode, tempDir } from '../helpers/cluster.ts';

const MiB = 1024 * 1024;

async function callError(p: Promise<unknown>): Promise<CallError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof CallError) return e;
    throw e;
  }
  throw new Error('the call succeeded');
}

test.serial('a conflicting commit carries a google.rpc.Status with an ErrorInfo beside hotpot-conflicts', async (t) => {
  t.timeout(120_000);
  const dir = tempDir(t);
  const d = await startDispatcher(t, { stateDir: join(dir, 'd') });
  const nodes = [];
  for (const i of [1, 2]) {
    const pool = join('/dev/shm', `hotpot-test-rich-${String(process.pid)}-${dir.slice(-6)}-${String(i)}`);
    t.teardown(() => {
      rmSync(pool, { recursive: true, force: true });
    });
    nodes.push(
      await startNode(t, {
        dispatcher: d.address,
        name: `e${String(i)}`,
        stateDir: join(dir, `e${String(i)}`),
        extra: ['--pool-dir', pool],
      }),
    );
  }
  const [n1, n2] = nodes;
  if (!n1 || !n2) throw new Error('cluster');
  const a = dataClient(t, n1.address);
  const b = dataClient(t, n2.address);
  const sa = (await a.open({ name: 'rich', create: true, sizeBytes: MiB })).session;
  const sb = (await b.open({ name: 'rich' })).session;
  await a.write({ session: sa, offset: 100, data: Buffer.from('aaaa', 'hex') });
  await b.write({ session: sb, offset: 100, data: Buffer.from('bbbb', 'hex') });
  await b.write({ session: sb, offset: 9000, data: Buffer.from('cc', 'hex') });
  await a.commit({ session: sa });
  const e = await callError(b.commit({ session: sb }));
  t.is(e.code, 'ABORTED');
  t.is(e.metadata?.get('hotpot-conflicts')[0], '100+2', "today's trailer is still there");
  t.true(Buffer.isBuffer(e.metadata?.get(STATUS_DETAILS_KEY)[0]));
  const status = decodeStatusDetails(e.metadata);
  t.is(status?.code, grpc.status.ABORTED);
  t.is(status?.message, e.details);
  t.deepEqual(status?.info, {
    reason: 'COMMIT_CONFLICT',
    domain: 'hotpot.dev',
    metadata: { ranges: '100+2', count: '1' },
  });

  // Another typed error, from the dispatcher, through the client's error conversion.
  const c = dispatcherClient(d.address);
  t.teardown(() => c.close());
  const notFound = await new Promise<grpc.ServiceError>((resolve, reject) => {
    c.OpenDataset({ name: 'missing' }, { deadline: Date.now() + 10_000 }, (err) => {
      if (err) resolve(err);
      else reject(new Error('opened a missing dataset'));
    });
  });
  const h = fromServiceError(notFound);
  t.is(h.code, 'NOT_FOUND');
  t.deepEqual(h.info, { reason: 'NOT_FOUND', domain: 'hotpot.dev', metadata: {} });
});

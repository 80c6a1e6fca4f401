// Barriers with dispatchers whose state is in a real etcd (leader + standby): `kill -9` of the leader in the middle of
// a round loses no arrival (the callers already there are counted at the new leader, which their nodes call again
// with the same request ids), and a caller whose answer was lost after its round completed is answered the same
// round again rather than arriving at the next one.
import test from 'ava';
import { dispatcherClient } from '../../services/cli/client.ts';
import { unary } from '../../services/common/rpc.ts';
import type { BarrierResponse__Output } from '../../services/generated/hotpot/v1/BarrierResponse.ts';
import { type spawnHotpot, startNode, tempDir } from '../helpers/cluster.ts';
import { dataClient } from '../helpers/data-client.ts';
import { startEtcd, startEtcdDispatcher } from '../helpers/etcd.ts';
import { freePort } from '../helpers/ports.ts';

const PREFIX = '/hotpot-barrier/';

function dispatcher(t: Parameters<typeof spawnHotpot>[0], endpoint: string, dir: string, port: number) {
  return startEtcdDispatcher(t, { endpoint, dir, port, prefix: PREFIX });
}

test('kill -9 of the leading dispatcher mid-round: the round completes at the standby with one generation for every caller; a lost answer sent again is answered the same', async (t) => {
  t.timeout(240_000);
  const etcd = await startEtcd(t);
  const dir = tempDir(t);
  const [pa, pb] = [await freePort(), await freePort()];
  const both = `127.0.0.1:${String(pa)},127.0.0.1:${String(pb)}`;
  const leader = await dispatcher(t, etcd.endpoint, `${dir}/a`, pa);
  const standby = dispatcher(t, etcd.endpoint, `${dir}/b`, pb);
  void standby.catch(() => undefined);
  const n1 = await startNode(t, { dispatcher: both, name: 'n1', stateDir: `${dir}/n1` });
  const n2 = await startNode(t, { dispatcher: both, name: 'n2', stateDir: `${dir}/n2` });
  const c1 = dataClient(t, n1.address);
  const c2 = dataClient(t, n2.address);
  const s1 = (await c1.open({ name: 'ds', create: true, sizeBytes: 1 << 20 })).session;
  const s1b = (await c1.open({ name: 'ds' })).session;
  const s2 = (await c2.open({ name: 'ds' })).session;
  const step = (session: string) =>
    (session === s2 ? c2 : c1).barrier({ session, name: 'step', parties: 3, timeoutMs: 60_000 });

  // Round 0 at the first leader.
  const round0 = await Promise.all([step(s1), step(s1b), step(s2)]);
  t.deepEqual(
    round0.map((r) => r.generation),
    [0, 0, 0],
  );

  // A caller that arrives with a request id (as a node does) and completes a round: its answer will be "lost".
  const direct = dispatcherClient(both);
  t.teardown(() => {
    direct.close();
  });
  const solo = { dataset: 'ds', name: 'solo', parties: 1, timeoutMs: 10_000, requestId: 'lost-answer-1' };
  const answered = await unary<BarrierResponse__Output>((o, cb) => direct.Barrier(solo, o, cb));
  t.deepEqual([answered.generation, answered.arrival], [0, 0]);

  // Round 1: two of three parties arrive; once both arrivals are in etcd the leader is killed.
  const early = [step(s1), step(s2)];
  const arrivals = async (): Promise<string[]> =>
    Object.keys(await etcd.client.getAll().prefix(`${PREFIX}state/tables/barrier-arrivals/`).strings()).filter((k) =>
      k.includes(':step#1#'),
    );
  for (let i = 0; (await arrivals()).length < 2; i++) {
    if (i > 600) throw new Error('the two arrivals never reached etcd');
    await new Promise((r) => setTimeout(r, 50));
  }
  leader.child.kill('SIGKILL');
  const next = await standby;
  t.is(next.fields.address, `127.0.0.1:${String(pb)}`);

  // The third party arrives at the new leader: the round completes with the two that arrived at the dead one.
  const round1 = await Promise.all([...early, step(s1b)]);
  t.deepEqual(
    round1.map((r) => r.generation),
    [1, 1, 1],
    'every caller of the round got its generation (none was left at the next round)',
  );
  t.deepEqual(round1.map((r) => r.arrival).sort(), [0, 1, 2]);

  // The lost answer's retry, at the new leader: the same round, not a new one.
  const again = await unary<BarrierResponse__Output>((o, cb) => direct.Barrier(solo, o, cb));
  t.deepEqual([again.generation, again.arrival], [0, 0]);
  const fresh = await unary<BarrierResponse__Output>((o, cb) =>
    direct.Barrier({ ...solo, requestId: 'another' }, o, cb),
  );
  t.is(fresh.generation, 1, 'the name went on counting from the generation the dead leader reached');

  // The names' next rounds go on from there; only the last completed round's arrivals stay in etcd.
  const round2 = await Promise.all([step(s1), step(s1b), step(s2)]);
  t.deepEqual(
    round2.map((r) => r.generation),
    [2, 2, 2],
  );
  t.is((await arrivals()).length, 0);
});

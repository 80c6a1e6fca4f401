import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { clientSecurity, dispatcherClient } from '../../services/cli/client.ts';
import { HotpotError } from '../../services/common/errors.ts';
import { unary } from '../../services/common/rpc.ts';
import type { MembershipEvent__Output } from '../../services/generated/hotpot/v1/MembershipEvent.ts';
import {
  listNodes,
  nodeStats,
  startDispatcher,
  startNode,
  tempDir,
  waitFor,
  spawnHotpot,
  TEST_TLS_DIR,
} from '../helpers/cluster.ts';
import { roleHost } from '../../services/common/certs.ts';
import { channelFor } from '../../services/common/tls.ts';

test('a node joins, gets a stable id, is declared dead after its lease, and rejoins with the same id', async (t) => {
  t.timeout(60_000);
  const dir = tempDir(t);
  const d = await startDispatcher(t, { stateDir: join(dir, 'd'), leaseMs: 800 });
  const n1 = await startNode(t, { dispatcher: d.address, name: 'alpha', stateDir: join(dir, 'n1') });
  const n2 = await startNode(t, { dispatcher: d.address, name: 'beta', stateDir: join(dir, 'n2') });
  t.not(n1.id, n2.id);
  const before = await listNodes(d.address);
  t.deepEqual(
    before.nodes.map((n) => [n.identity, n.state]),
    [
      ['alpha', 'NODE_STATE_ALIVE'],
      ['beta', 'NODE_STATE_ALIVE'],
    ],
  );

  // Heartbeats keep the lease: after several lease periods both are still alive.
  await new Promise((r) => setTimeout(r, 2000));
  t.true((await listNodes(d.address)).nodes.every((n) => n.state === 'NODE_STATE_ALIVE'));

  const killedAt = Date.now();
  n1.child.kill('SIGKILL');
  const dead = await waitFor('alpha declared dead', async () => {
    const r = await listNodes(d.address);
    return r.nodes.find((n) => n.identity === 'alpha' && n.state === 'NODE_STATE_DEAD') ? r : undefined;
  });
  t.true(Date.now() - killedAt < 800 + 3000, 'dead within lease + margin');
  t.true(dead.epoch > before.epoch, 'membership change bumps the epoch');

  const again = await startNode(t, { dispatcher: d.address, name: 'alpha', stateDir: join(dir, 'n1') });
  t.is(again.id, n1.id, 'same identity, same id');
  const after = await listNodes(d.address);
  t.is(after.nodes.find((n) => n.identity === 'alpha')?.state, 'NODE_STATE_ALIVE');
  t.true(after.epoch > dead.epoch);
});

test('a paused node loses its lease and rejoins by itself when it resumes', async (t) => {
  t.timeout(60_000);
  const dir = tempDir(t);
  const d = await startDispatcher(t, { stateDir: join(dir, 'd'), leaseMs: 600 });
  const n = await startNode(t, { dispatcher: d.address, name: 'sleeper', stateDir: join(dir, 'n') });
  n.child.kill('SIGSTOP');
  await waitFor('node dead', async () =>
    (await listNodes(d.address)).nodes.some((x) => x.state === 'NODE_STATE_DEAD') ? true : undefined,
  );
  n.child.kill('SIGCONT');
  const back = await waitFor('node alive again', async () => {
    const r = await listNodes(d.address);
    return r.nodes.find((x) => x.identity === 'sleeper' && x.state === 'NODE_STATE_ALIVE');
  });
  t.is(back.id, n.id);
  const s = await nodeStats(n.address);
  t.true(s.joined);
  t.is(s.nodeId, n.id);
});

test('a refused join names the protocol or chunk-size mismatch', async (t) => {
  const dir = tempDir(t);
  const d = await startDispatcher(t, { stateDir: join(dir, 'd') });
  const c = dispatcherClient(d.address);
  t.teardown(() => c.close());
  const e1 = await t.throwsAsync(
    unary((o, cb) =>
      c.Join(
        { identity: 'x', protocolVersion: 99, chunkSizeBytes: 4 << 20, controlAddress: '', dataAddress: '' },
        o,
        cb,
      ),
    ),
  );
  t.true(e1 instanceof HotpotError && e1.code === 'FAILED_PRECONDITION');
  t.regex(e1?.message ?? '', /protocol version 99/);
  const e2 = await t.throwsAsync(
    unary((o, cb) =>
      c.Join(
        { identity: 'x', protocolVersion: 1, chunkSizeBytes: 2 << 20, controlAddress: '', dataAddress: '' },
        o,
        cb,
      ),
    ),
  );
  t.true(e2 instanceof HotpotError && e2.code === 'FAILED_PRECONDITION');
  t.regex(e2?.message ?? '', /chunk size 2097152 differs/);
  // A node daemon with the wrong chunk size exits with the dispatcher's message.
  const err = await t.throwsAsync(
    spawnHotpot(t, [
      '--dispatcher',
      d.address,
      'node',
      '--name',
      'n',
      '--state-dir',
      join(dir, 'n'),
      '--chunk-size',
      '2MiB',
    ]),
  );
  t.regex(err?.message ?? '', /chunk size 2097152 differs/);
});

test('heartbeats from an unknown node are refused so it rejoins', async (t) => {
  const dir = tempDir(t);
  const d = await startDispatcher(t, { stateDir: join(dir, 'd') });
  const c = dispatcherClient(d.address);
  t.teardown(() => c.close());
  const e = await t.throwsAsync(unary((o, cb) => c.Heartbeat({ nodeId: 42, identity: 'ghost' }, o, cb)));
  t.true(e instanceof HotpotError && e.code === 'FAILED_PRECONDITION');
});

test('the membership stream sends a snapshot and then every change', async (t) => {
  t.timeout(60_000);
  const dir = tempDir(t);
  const d = await startDispatcher(t, { stateDir: join(dir, 'd'), leaseMs: 600 });
  const c = dispatcherClient(d.address);
  t.teardown(() => c.close());
  const events: MembershipEvent__Output[] = [];
  const call = c.WatchMembership({});
  call.on('data', (e: MembershipEvent__Output) => events.push(e));
  call.on('error', () => undefined);
  t.teardown(() => call.cancel());
  await waitFor('snapshot', async () => (events.length > 0 ? true : undefined));
  t.is(events[0]?.kind, 'KIND_SNAPSHOT');
  const n = await startNode(t, { dispatcher: d.address, name: 'w', stateDir: join(dir, 'n') });
  await waitFor('joined event', async () => (events.some((e) => e.kind === 'KIND_JOINED') ? true : undefined));
  n.child.kill('SIGKILL');
  await waitFor('dead event', async () => (events.some((e) => e.kind === 'KIND_DEAD') ? true : undefined));
  const epochs = events.map((e) => e.epoch);
  t.deepEqual(
    epochs,
    [...epochs].sort((a, b) => a - b),
    'epochs increase',
  );
});

test('dispatcher and node serve health checks and reflection, and exit 0 on SIGTERM', async (t) => {
  t.timeout(60_000);
  const dir = tempDir(t);
  const d = await startDispatcher(t, { stateDir: join(dir, 'd') });
  const n = await startNode(t, { dispatcher: d.address, name: 'h', stateDir: join(dir, 'n') });
  const { protoPath, service: healthService } = (await import('grpc-health-check')) as unknown as {
    protoPath: string;
    service: grpc.ServiceDefinition;
  };
  t.truthy(protoPath);
  const Health = grpc.makeClientConstructor(healthService, 'grpc.health.v1.Health');
  for (const [addr, svc, role] of [
    [d.address, 'hotpot.v1.Dispatcher', 'dispatcher'],
    [n.address, 'hotpot.v1.Node', 'node'],
  ] as const) {
    // A health probe needs no client certificate (TLS with the CA only).
    const hc = new Health(addr, grpc.credentials.createSsl(readFileSync(join(TEST_TLS_DIR, 'ca.crt'))), {
      'grpc.ssl_target_name_override': roleHost(role),
    });
    const status = await new Promise<unknown>((resolve, reject) => {
      (hc as unknown as { check: (r: unknown, o: unknown, cb: (e: Error | null, v: unknown) => void) => void }).check(
        { service: svc },
        { deadline: Date.now() + 5000 },
        (e, v) => (e ? reject(e) : resolve(v)),
      );
    });
    t.like(status, { status: 'SERVING' });
    hc.close();
  }
  // Reflection lists the services each server runs, and only those.
  const reflectionProto = createRequire(import.meta.url).resolve(
    '@grpc/reflection/build/proto/grpc/reflection/v1/reflection.proto',
  );
  const refl = grpc.loadPackageDefinition(protoLoader.loadSync(reflectionProto)) as unknown as {
    grpc: {
      reflection: {
        v1: { ServerReflection: new (a: string, c: grpc.ChannelCredentials, o: grpc.ChannelOptions) => grpc.Client };
      };
    };
  };
  const listed = async (addr: string, role: 'dispatcher' | 'node'): Promise<string[]> => {
    const { credentials, options } = channelFor(addr, clientSecurity(), role);
    const rc = new refl.grpc.reflection.v1.ServerReflection(addr, credentials, options);
    try {
      const call = (
        rc as unknown as { ServerReflectionInfo: () => grpc.ClientDuplexStream<unknown, unknown> }
      ).ServerReflectionInfo();
      const answer = new Promise<string[]>((resolve, reject) => {
        call.on('data', (m: { listServicesResponse?: { service: { name: string }[] } }) => {
          resolve((m.listServicesResponse?.service ?? []).map((s) => s.name).sort());
          call.end();
        });
        call.on('error', reject);
      });
      call.write({ listServices: '' });
      return await answer;
    } finally {
      rc.close();
    }
  };
  t.deepEqual(await listed(d.address, 'dispatcher'), ['hotpot.v1.Dispatcher']);
  t.deepEqual(await listed(n.address, 'node'), ['hotpot.v1.Data', 'hotpot.v1.Node']);
  n.child.kill('SIGTERM');
  t.is((await n.exited).code, 0);
  const left = await listNodes(d.address);
  t.is(left.nodes[0]?.state, 'NODE_STATE_LEFT', 'a graceful node says goodbye');
  d.child.kill('SIGTERM');
  t.is((await d.exited).code, 0);
});

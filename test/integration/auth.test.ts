// Who may call what over gRPC (issue 12; docs/security.md): TCP is mutual TLS against the cluster CA; every RPC of
// the dispatcher, Node and Data services refuses a caller without a certificate (UNAUTHENTICATED) and a caller whose
// role may not (PERMISSION_DENIED); a node acts only as the identity in its certificate; a remote user opens only
// the datasets its certificate's uid:gid may; on a node's unix socket a local user is known by its uid.
import { execFile, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import { dispatcherClient, nodeClient } from '../../services/cli/client.ts';
import { initCa, issueCert, roleHost } from '../../services/common/certs.ts';
import { HotpotError } from '../../services/common/errors.ts';
import { hotpotV1 } from '../../services/common/proto.ts';
import { unary } from '../../services/common/rpc.ts';
import { loadClientTls } from '../../services/common/tls.ts';
import { projectRoot } from '../../services/common/paths.ts';
import { CallError, dataClient } from '../helpers/data-client.ts';
import { runCli, startCluster, TEST_TLS_DIR, userSecurity, waitFor } from '../helpers/cluster.ts';

const MiB = 1024 * 1024;

/** Protobuf wire encoding by hand, for the children that call as other users with no proto at hand. */
function tag(field: number, wire: number): number[] {
  return [(field << 3) | wire];
}
function varintBytes(n: number): number[] {
  const out: number[] = [];
  let v = n;
  while (v >= 0x80) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}
function varint(field: number, n: number): Buffer {
  return Buffer.from([...tag(field, 0), ...varintBytes(n)]);
}
function bytesField(field: number, b: Buffer): Buffer {
  return Buffer.concat([Buffer.from([...tag(field, 2), ...varintBytes(b.length)]), b]);
}
function str(field: number, s: string): Buffer {
  return bytesField(field, Buffer.from(s));
}
function msg(field: number, parts: Buffer[]): Buffer {
  return bytesField(field, Buffer.concat(parts));
}
function pb(parts: Buffer[]): Buffer {
  return Buffer.concat(parts);
}

type AnyDef = Record<string, grpc.MethodDefinition<unknown, unknown>>;

/** Calls `path` with an empty request in whatever streaming shape it has; resolves with the status code name. */
function callCode(client: grpc.Client, def: grpc.MethodDefinition<unknown, unknown>): Promise<string> {
  const ser = (): Buffer => Buffer.alloc(0);
  const de = (b: Buffer): Buffer => b;
  const opts = { deadline: Date.now() + 10_000 };
  return new Promise((resolve) => {
    const done = (e: grpc.ServiceError | null): void => {
      resolve(e ? grpc.status[e.code] : 'OK');
    };
    if (!def.requestStream && !def.responseStream) {
      client.makeUnaryRequest(def.path, ser, de, {}, new grpc.Metadata(), opts, (e) => {
        done(e);
      });
    } else if (!def.requestStream) {
      const s = client.makeServerStreamRequest(def.path, ser, de, {}, new grpc.Metadata(), opts);
      s.on('data', () => undefined);
      s.on('error', (e: grpc.ServiceError) => {
        done(e);
      });
      s.on('end', () => {
        done(null);
      });
    } else if (!def.responseStream) {
      const s = client.makeClientStreamRequest(def.path, ser, de, new grpc.Metadata(), opts, (e) => {
        done(e);
      });
      s.end();
    } else {
      const s = client.makeBidiStreamRequest(def.path, ser, de, new grpc.Metadata(), opts);
      s.on('data', () => undefined);
      s.on('error', (e: grpc.ServiceError) => {
        done(e);
      });
      s.on('end', () => {
        done(null);
      });
      s.end();
    }
  });
}

function expectCode(t: { is: (a: unknown, b: unknown, m?: string) => void }, e: unknown, code: string): void {
  t.is(e instanceof HotpotError ? e.code : e instanceof CallError ? e.code : String(e), code);
}

test('without a client certificate every RPC is UNAUTHENTICATED (health probes excepted); a foreign CA is refused', async (t) => {
  t.timeout(120_000);
  const c = await startCluster(t, { nodes: 1, prefix: 'auth0' });
  const n = c.nodes[0];
  if (!n) throw new Error('1 node');
  const ca = readFileSync(join(TEST_TLS_DIR, 'ca.crt'));
  const targets: [string, 'dispatcher' | 'node', AnyDef][] = [
    [c.dispatcher, 'dispatcher', hotpotV1.Dispatcher.service],
    [n.address, 'node', hotpotV1.Node.service],
    [n.address, 'node', hotpotV1.Data.service],
  ];
  // A certificate from another CA with role admin in its subject: not ours, so no one.
  const foreign = mkdtempSync(join(tmpdir(), 'hotpot-foreign-'));
  t.teardown(() => {
    rmSync(foreign, { recursive: true, force: true });
  });
  initCa(foreign);
  issueCert(foreign, { role: 'admin', name: 'admin' });
  const f = loadClientTls(foreign, 'admin');
  let methods = 0;
  for (const [address, role, service] of targets) {
    const opts = { 'grpc.ssl_target_name_override': roleHost(role) };
    const anonymous = new grpc.Client(address, grpc.credentials.createSsl(ca), opts);
    const forged = new grpc.Client(address, grpc.credentials.createSsl(ca, f.key, f.cert), opts);
    for (const def of Object.values(service)) {
      t.is(await callCode(anonymous, def), 'UNAUTHENTICATED', `${def.path} without a certificate`);
      t.is(await callCode(forged, def), 'UNAUTHENTICATED', `${def.path} with another CA's certificate`);
      methods++;
    }
    // Health answers anyone (probes carry no certificate).
    const health = await callCode(anonymous, {
      path: '/grpc.health.v1.Health/Check',
      requestStream: false,
      responseStream: false,
    } as grpc.MethodDefinition<unknown, unknown>);
    t.is(health, 'OK');
    anonymous.close();
    forged.close();
  }
  t.true(methods >= 40, `${String(methods)} methods tried`);
  // Plaintext to a TLS server gets nowhere either.
  const plain = new grpc.Client(c.dispatcher, grpc.credentials.createInsecure());
  t.is(
    await callCode(plain, hotpotV1.Dispatcher.service.ListNodes as grpc.MethodDefinition<unknown, unknown>),
    'UNAVAILABLE',
  );
  plain.close();
  // The dataset list is untouched: nothing got through.
  const ls = await runCli(['--json', 'ls'], { env: { HOTPOT_DISPATCHER: c.dispatcher } });
  t.is(ls.code, 0);
});

test('roles: a user may not call admin or node RPCs; a node acts only as the identity in its certificate', async (t) => {
  t.timeout(120_000);
  const c = await startCluster(t, { nodes: 1, prefix: 'auth1' });
  const n = c.nodes[0];
  if (!n) throw new Error('1 node');
  const env = { HOTPOT_DISPATCHER: c.dispatcher };
  t.is((await runCli(['create', 'kept', '--size', '1MiB'], { env })).code, 0);
  const alice = userSecurity('alice', 1000, 1000);
  const ad = dispatcherClient(c.dispatcher, alice);
  const an = nodeClient(n.address, alice);
  const refusedAsUser: [string, () => Promise<unknown>][] = [
    ['DeleteDataset', () => unary((o, cb) => ad.DeleteDataset({ name: 'kept' }, o, cb))],
    [
      'SetDatasetAccess',
      () => unary((o, cb) => ad.SetDatasetAccess({ name: 'kept', setPermissions: true, permissions: 0o666 }, o, cb)),
    ],
    ['ListNodes', () => unary((o, cb) => ad.ListNodes({}, o, cb))],
    ['Join', () => unary((o, cb) => ad.Join({ identity: 'n1' }, o, cb))],
    ['Acquire', () => unary((o, cb) => ad.Acquire({ dataset: 'kept', nodeId: n.id }, o, cb))],
    ['ListLeases', () => unary((o, cb) => ad.ListLeases({ dataset: 'kept' }, o, cb))],
    ['Node.Stats', () => unary((o, cb) => an.Stats({}, o, cb))],
    ['Node.DumpPage', () => unary((o, cb) => an.DumpPage({ datasetId: 1, page: 0 }, o, cb))],
    ['Node.SetDebugMask', () => unary((o, cb) => an.SetDebugMask({ mask: 0 }, o, cb))],
    ['Node.Drain', () => unary((o, cb) => an.Drain({}, o, cb))],
  ];
  for (const [what, call] of refusedAsUser) {
    const e = await t.throwsAsync(call, undefined, what);
    expectCode(t, e, 'PERMISSION_DENIED');
  }
  // Another node's certificate (a valid one, of this CA) cannot join, heartbeat, leave or move chunks as n1.
  issueCert(TEST_TLS_DIR, { role: 'node', name: 'intruder' });
  const intruder = loadClientTls(TEST_TLS_DIR, 'node.intruder');
  const id = dispatcherClient(c.dispatcher, { tls: intruder });
  const asN1: [string, () => Promise<unknown>][] = [
    [
      'Join',
      () => unary((o, cb) => id.Join({ identity: 'n1', dataAddress: '127.0.0.1:1', protocolVersion: 1 }, o, cb)),
    ],
    ['Heartbeat', () => unary((o, cb) => id.Heartbeat({ nodeId: n.id, identity: 'n1' }, o, cb))],
    ['Leave', () => unary((o, cb) => id.Leave({ nodeId: n.id, identity: 'n1' }, o, cb))],
    ['MoveChunk', () => unary((o, cb) => id.MoveChunk({ nodeId: n.id, identity: 'n1', datasetId: 1 }, o, cb))],
    ['ChunkRecovered', () => unary((o, cb) => id.ChunkRecovered({ nodeId: n.id, datasetId: 1 }, o, cb))],
    ['Acquire for n1', () => unary((o, cb) => id.Acquire({ dataset: 'kept', nodeId: n.id }, o, cb))],
    ['DeleteDataset', () => unary((o, cb) => id.DeleteDataset({ name: 'kept' }, o, cb))],
    ['ListLeases', () => unary((o, cb) => id.ListLeases({ dataset: 'kept' }, o, cb))],
    ['ForgetNode', () => unary((o, cb) => id.ForgetNode({ nodeId: n.id }, o, cb))],
  ];
  for (const [what, call] of asN1) {
    const e = await t.throwsAsync(call, undefined, what);
    expectCode(t, e, 'PERMISSION_DENIED');
    if (e instanceof HotpotError && !['DeleteDataset', 'ForgetNode', 'ListLeases'].includes(what)) {
      t.regex(e.message, /node intruder may not act as node "n1"/);
    }
  }
  // n1 is still a member, alive, at its own address; the dataset is still there.
  const nodes = await unary<{ nodes: { identity: string; state: string; dataAddress: string }[] }>((o, cb) =>
    dispatcherClient(c.dispatcher).ListNodes({}, o, cb),
  );
  t.like(
    nodes.nodes.find((m) => m.identity === 'n1'),
    { state: 'NODE_STATE_ALIVE', dataAddress: n.data },
  );
  t.is((await runCli(['stat', 'kept'], { env })).code, 0);
});

test('a remote user opens only the datasets its uid:gid may; what it creates is its own', async (t) => {
  t.timeout(120_000);
  const c = await startCluster(t, { nodes: 1, prefix: 'auth2' });
  const n = c.nodes[0];
  if (!n) throw new Error('1 node');
  const env = { HOTPOT_DISPATCHER: c.dispatcher };
  t.is((await runCli(['create', 'secret', '--size', '1MiB'], { env })).code, 0);
  const alice = dataClient(t, n.address, userSecurity('alice', 1000, 1000));
  const bob = dataClient(t, n.address, userSecurity('bob', 1001, 1001));
  const refused = await t.throwsAsync(alice.open({ name: 'secret' }));
  expectCode(t, refused, 'PERMISSION_DENIED');
  t.regex(refused instanceof Error ? refused.message : '', /uid 1000 .*may not write dataset "secret": owner 0:0/);
  // Alice creates her own: 1000:1000, 0600; Bob may not open it, Alice may.
  const mine = await alice.open({ name: 'mine', create: true, sizeBytes: MiB });
  t.truthy(mine.session);
  const st = JSON.parse((await runCli(['--json', 'stat', 'mine'], { env })).stdout) as {
    dataset: { owner: { uid: number; gid: number }; permissions: string };
  };
  t.deepEqual(st.dataset.owner, { uid: 1000, gid: 1000 });
  t.is(st.dataset.permissions, '0600');
  expectCode(t, await t.throwsAsync(bob.open({ name: 'mine' })), 'PERMISSION_DENIED');
  // A session answers only the caller that opened it: bob holding alice's session token gets nowhere.
  expectCode(t, await t.throwsAsync(bob.read({ session: mine.session, offset: 0, length: 16 })), 'PERMISSION_DENIED');
  expectCode(t, await t.throwsAsync(bob.close({ session: mine.session })), 'PERMISSION_DENIED');
  t.is((await alice.read({ session: mine.session, offset: 0, length: 16 })).data.length, 16);
  // An admin gives "secret" to bob: now he may, alice still may not.
  t.is((await runCli(['chown', '1001:1001', 'secret'], { env })).code, 0);
  t.truthy((await bob.open({ name: 'secret' })).session);
  expectCode(t, await t.throwsAsync(alice.open({ name: 'secret' })), 'PERMISSION_DENIED');
  // One caller holds at most 256 sessions on a node; others still get theirs.
  let opened = 1;
  let capped: unknown = null;
  while (capped === null && opened < 300) {
    capped = await alice.open({ name: 'mine' }).then(
      () => null,
      (e: unknown) => e,
    );
    if (capped === null) opened++;
  }
  t.is(opened, 256);
  expectCode(t, capped, 'RESOURCE_EXHAUSTED');
  t.regex(capped instanceof Error ? capped.message : '', /per-caller cap/);
  t.truthy((await bob.open({ name: 'secret' })).session);
});

test('read permission opens a dataset read-only: writes and leases need write, its commit only checks reads; barriers are per dataset; streams are capped per caller', async (t) => {
  t.timeout(180_000);
  const c = await startCluster(t, { nodes: 1, prefix: 'auth5' });
  const n = c.nodes[0];
  if (!n) throw new Error('1 node');
  const env = { HOTPOT_DISPATCHER: c.dispatcher };
  const admin = dataClient(t, n.address);
  const sa = (await admin.open({ name: 'shared', create: true, sizeBytes: 64 * MiB, mode: 'CONSISTENCY_MODE_MRSW' }))
    .session;
  await admin.acquire({ session: sa, ranges: [{ offset: 0, length: 5 }], leaseMs: 30_000 });
  await admin.write({ session: sa, offset: 0, data: Buffer.from('hello') });
  await admin.commit({ session: sa });
  await admin.release({ session: sa });
  t.is((await runCli(['chown', '0:2000', 'shared'], { env })).code, 0);
  t.is((await runCli(['chmod', '0640', 'shared'], { env })).code, 0);

  // Carol is in the group (r--): she reads, read-only, and nothing else.
  const carol = dataClient(t, n.address, userSecurity('carol', 1003, 2000));
  const rw = await t.throwsAsync(carol.open({ name: 'shared' }));
  expectCode(t, rw, 'PERMISSION_DENIED');
  t.regex(rw instanceof Error ? rw.message : '', /may not write dataset "shared".*open read-only/);
  const sc = (await carol.open({ name: 'shared', readOnly: true })).session;
  t.is((await carol.read({ session: sc, offset: 0, length: 5 })).data.toString(), 'hello');
  for (const refused of [
    carol.write({ session: sc, offset: 0, data: Buffer.from('HELLO') }),
    carol.writeStream([{ session: sc, offset: 0, data: Buffer.from('HELLO') }]),
    carol.acquire({ session: sc, ranges: [{ offset: 0, length: 1 }], leaseMs: 1000 }),
  ]) {
    const e = await t.throwsAsync(refused);
    expectCode(t, e, 'PERMISSION_DENIED');
    t.regex(e instanceof Error ? e.message : '', /read-only/);
  }
  // Its commit writes nothing: it checks that what it read is still current (how `hotpot dump` reads one state).
  await carol.commit({ session: sc, reads: [{ offset: 0, length: 5 }] });
  t.is((await admin.read({ session: sa, offset: 0, length: 5 })).data.toString(), 'hello');
  // Dave is neither owner nor in the group (---): not even read-only.
  const dave = dataClient(t, n.address, userSecurity('dave', 1004, 1004));
  const none = await t.throwsAsync(dave.open({ name: 'shared', readOnly: true }));
  expectCode(t, none, 'PERMISSION_DENIED');
  t.regex(none instanceof Error ? none.message : '', /may not read dataset "shared"/);

  // Barrier names are per dataset: the same name on two datasets is two barriers.
  const so = (await admin.open({ name: 'other', create: true, sizeBytes: MiB })).session;
  const apart = await Promise.allSettled([
    admin.barrier({ session: sa, name: 'meet', parties: 2, timeoutMs: 500 }),
    admin.barrier({ session: so, name: 'meet', parties: 2, timeoutMs: 500 }),
  ]);
  for (const r of apart) expectCode(t, r.status === 'rejected' ? r.reason : 'OK', 'DEADLINE_EXCEEDED');
  const [x, y] = await Promise.all([
    admin.barrier({ session: sa, name: 'meet', parties: 2, timeoutMs: 30_000 }),
    carol.barrier({ session: sc, name: 'meet', parties: 2, timeoutMs: 30_000 }),
  ]);
  t.is(x.generation, y.generation);

  // Open streams are capped per caller (16): a 17th stream of Carol's is refused while hers stall, others stream on.
  const stalled: grpc.ClientReadableStream<unknown>[] = [];
  for (let i = 0; i < 16; i++) {
    const st = carol.raw.ReadStream({ session: sc, offset: 0, length: 64 * MiB }, { deadline: Date.now() + 120_000 });
    st.on('error', () => undefined);
    st.pause();
    stalled.push(st);
  }
  const capped = await waitFor('the 17th stream is refused', async () => {
    const r = await carol.readStream(sc, 0, 4096).then(
      () => null,
      (e: unknown) => e,
    );
    return r ?? undefined;
  });
  expectCode(t, capped, 'RESOURCE_EXHAUSTED');
  t.regex(capped instanceof Error ? capped.message : '', /16 open streams on this node \(the per-caller cap\)/);
  t.is((await admin.readStream(sa, 0, 4096)).data.length, 4096);
  for (const st of stalled) st.cancel();
  const again = await waitFor('cancelled streams free their places', async () =>
    carol.readStream(sc, 0, 4096).then(
      (r) => r,
      () => undefined,
    ),
  );
  t.is(again.data.subarray(0, 5).toString(), 'hello');
});

test('a revoked certificate is refused by the dispatcher at once and by the nodes within a heartbeat; others go on', async (t) => {
  t.timeout(120_000);
  const c = await startCluster(t, { nodes: 1, prefix: 'auth6' });
  const n = c.nodes[0];
  if (!n) throw new Error('1 node');
  const env = { HOTPOT_DISPATCHER: c.dispatcher };
  const eveSec = userSecurity('eve', 1005, 1005);
  const eve = dataClient(t, n.address, eveSec);
  t.truthy((await eve.open({ name: 'evebox', create: true, sizeBytes: MiB })).session);
  const ed = dispatcherClient(c.dispatcher, eveSec);
  await unary((o, cb) => ed.OpenDataset({ name: 'evebox' }, o, cb)).catch(() => undefined);

  const revoke = await runCli(['--json', 'certs', 'revoke', 'user.eve'], { env });
  t.is(revoke.code, 0, revoke.stderr);
  const fp = (JSON.parse(revoke.stdout) as { fingerprint: string }).fingerprint;
  t.regex(fp, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
  // The dispatcher refuses it at once, on every RPC; the node once its next heartbeat shows the new list.
  const atDispatcher = await t.throwsAsync(unary((o, cb) => ed.ListDatasets({}, o, cb)));
  expectCode(t, atDispatcher, 'UNAUTHENTICATED');
  t.regex(atDispatcher instanceof Error ? atDispatcher.message : '', /certificate .* was revoked/);
  const atNode = await waitFor('the node refuses the revoked certificate', async () => {
    const e = await eve.open({ name: 'evebox' }).then(
      () => null,
      (x: unknown) => x,
    );
    return e ?? undefined;
  });
  expectCode(t, atNode, 'UNAUTHENTICATED');
  // The node's data plane refuses revoked certificates too: a new list makes every data-plane connection
  // authenticate again.
  await waitFor('the node hands the list to its data plane', () =>
    Promise.resolve(n.stderr.join('').includes('closed every data-plane connection') ? true : undefined),
  );
  // Health checks still answer; other principals are not affected.
  const admin = dataClient(t, n.address);
  t.truthy((await admin.open({ name: 'evebox' })).session);
  const listed = await runCli(['--json', 'certs', 'revoked'], { env });
  t.is(listed.code, 0, listed.stderr);
  const rows = JSON.parse(listed.stdout) as { fingerprint: string; subject: string }[];
  t.is(rows.length, 1);
  t.is(rows[0]?.fingerprint, fp);
  t.regex(rows[0]?.subject ?? '', /CN=eve/);
  // Revoking again is a no-op; a malformed fingerprint is refused; a user may not revoke.
  t.is((await runCli(['certs', 'revoke', '--fingerprint', fp], { env })).code, 0);
  const bad = await runCli(['certs', 'revoke', '--fingerprint', 'nope'], { env });
  t.not(bad.code, 0);
  t.regex(bad.stderr, /SHA-256 fingerprint/);
  const byUser = await t.throwsAsync(
    unary((o, cb) =>
      dispatcherClient(c.dispatcher, userSecurity('frank', 1006, 1006)).RevokeCertificate({ fingerprint: fp }, o, cb),
    ),
  );
  expectCode(t, byUser, 'PERMISSION_DENIED');
});

/**
 * Runs a gRPC call over a unix socket as another user (a plain JS child, no proto needed); prints the code. With
 * `groups`, the child also has those supplementary groups (setpriv: node's own uid/gid options drop them all).
 */
function callAs(
  user: { uid: number; gid: number; groups?: number[] },
  socket: string,
  path: string,
  request: Buffer,
): Promise<string> {
  const grpcPath = createRequire(import.meta.url).resolve('@grpc/grpc-js');
  const script = `
    const grpc = require(${JSON.stringify(grpcPath)});
    const c = new grpc.Client(${JSON.stringify(`unix:${socket}`)}, grpc.credentials.createInsecure());
    c.makeUnaryRequest(${JSON.stringify(path)}, (x) => x, (b) => b, Buffer.from(${JSON.stringify(request.toString('hex'))}, 'hex'),
      new grpc.Metadata(), { deadline: Date.now() + 10000 }, (e) => {
        process.stdout.write(e ? grpc.status[e.code] + ' ' + e.details : 'OK');
        process.exit(0);
      });`;
  return new Promise((resolve, reject) => {
    const child = user.groups
      ? spawn(
          'setpriv',
          [
            `--reuid=${String(user.uid)}`,
            `--regid=${String(user.gid)}`,
            `--groups=${user.groups.join(',')}`,
            process.execPath,
            '-e',
            script,
          ],
          { stdio: ['ignore', 'pipe', 'pipe'] },
        )
      : spawn(process.execPath, ['-e', script], { uid: user.uid, gid: user.gid, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.once('exit', (code) => {
      if (code === 0) resolve(out);
      else reject(new Error(`client as uid ${String(user.uid)} failed: ${err}`));
    });
  });
}

test('on the unix socket a local user is known by its uid: no admin RPCs, only the datasets it may open', async (t) => {
  t.timeout(120_000);
  const c = await startCluster(t, { nodes: 1, prefix: 'auth3', common: { HOTPOT_SOCKET_GROUP: 'nogroup' } });
  const n = c.nodes[0];
  if (!n) throw new Error('1 node');
  const env = { HOTPOT_DISPATCHER: c.dispatcher };
  for (let d = dirname(n.socket); d.startsWith(c.dir); d = dirname(d)) chmodSync(d, 0o755);
  const grpcSock = join(dirname(n.socket), 'grpc.sock');
  t.is((await runCli(['create', 'secret', '--size', '1MiB'], { env })).code, 0);
  const nobody = { uid: 65534, gid: 65534 };
  // DataOpenRequest{name: "secret"}: field 1, length-delimited.
  const open = Buffer.concat([Buffer.from([0x0a, 6]), Buffer.from('secret')]);
  t.regex(
    await callAs(nobody, grpcSock, '/hotpot.v1.Node/Stats', Buffer.alloc(0)),
    /^PERMISSION_DENIED local uid 65534/,
  );
  t.regex(await callAs(nobody, grpcSock, '/hotpot.v1.Node/SetDebugMask', Buffer.alloc(0)), /^PERMISSION_DENIED/);
  t.regex(await callAs(nobody, grpcSock, '/hotpot.v1.Data/Open', open), /^PERMISSION_DENIED uid 65534 .*"secret"/);
  // Nor may it arrive at the dataset's barriers (read) or take an MRSW lease on it (write): the node names the app
  // to the dispatcher, which checks the bits.
  const barrier = pb([str(1, 'b'), varint(2, 1), varint(3, 2000), str(4, 'secret')]);
  const acquire = pb([str(1, 'secret'), msg(2, [varint(2, 1)]), varint(3, 2000)]);
  t.regex(
    await callAs(nobody, grpcSock, '/hotpot.v1.Node/Barrier', barrier),
    /^PERMISSION_DENIED uid 65534 .*may not read dataset "secret"/,
  );
  t.regex(
    await callAs(nobody, grpcSock, '/hotpot.v1.Node/Acquire', acquire),
    /^PERMISSION_DENIED uid 65534 .*may not write dataset "secret"/,
  );
  // Group 4242 may read: a member of it by a supplementary group (SO_PEERGROUPS) opens read-only, and arrives at
  // its barriers, but may not open it for writing.
  t.is((await runCli(['chown', '0:4242', 'secret'], { env })).code, 0);
  t.is((await runCli(['chmod', '0640', 'secret'], { env })).code, 0);
  const member = { ...nobody, groups: [4242] };
  t.is(await callAs(member, grpcSock, '/hotpot.v1.Data/Open', pb([str(1, 'secret'), varint(6, 1)])), 'OK');
  t.regex(await callAs(member, grpcSock, '/hotpot.v1.Data/Open', open), /^PERMISSION_DENIED .*may not write/);
  t.is(await callAs(member, grpcSock, '/hotpot.v1.Node/Barrier', barrier), 'OK');
  t.regex(
    await callAs(nobody, grpcSock, '/hotpot.v1.Data/Open', pb([str(1, 'secret'), varint(6, 1)])),
    /^PERMISSION_DENIED/,
  );
  // Once the dataset's group is nobody's and group read-write is set, it opens.
  t.is((await runCli(['chown', '0:65534', 'secret'], { env })).code, 0);
  t.is((await runCli(['chmod', '0660', 'secret'], { env })).code, 0);
  t.is(await callAs(nobody, grpcSock, '/hotpot.v1.Data/Open', open), 'OK');
  // A lease answers only its holder: root's lease on an MRSW dataset cannot be released or renewed by another user.
  t.is((await runCli(['create', 'locks', '--size', '1MiB', '--mode', 'mrsw'], { env })).code, 0);
  t.is((await runCli(['chmod', '0666', 'locks'], { env })).code, 0);
  const rootNode = nodeClient(`unix:${grpcSock}`);
  const held = await unary<{ lease: { leaseId: string } | null }>((o, cb) =>
    rootNode.Acquire({ dataset: 'locks', ranges: [{ offset: 0, length: 1 }], leaseMs: 60_000 }, o, cb),
  );
  const leaseId = held.lease?.leaseId ?? '';
  t.not(leaseId, '');
  t.regex(
    await callAs(nobody, grpcSock, '/hotpot.v1.Node/Release', pb([str(1, leaseId)])),
    /^PERMISSION_DENIED lease .* was not acquired through this node by this caller/,
  );
  t.regex(
    await callAs(nobody, grpcSock, '/hotpot.v1.Node/RenewLease', pb([str(1, leaseId), varint(2, 5000)])),
    /^PERMISSION_DENIED/,
  );
  await unary((o, cb) => rootNode.Release({ leaseId }, o, cb));
  // root on the socket is an admin.
  const root = nodeClient(`unix:${grpcSock}`);
  const s = await unary<{ nodeId: number }>((o, cb) => root.Stats({}, o, cb));
  t.is(s.nodeId, n.id);
});

test('bearer tokens: an admin makes one for a user, it opens only the datasets of its uid:gid, and revoking it locks it out', async (t) => {
  t.timeout(120_000);
  const c = await startCluster(t, { nodes: 1, prefix: 'auth4' });
  const n = c.nodes[0];
  if (!n) throw new Error('1 node');
  const env = { HOTPOT_DISPATCHER: c.dispatcher };
  t.is((await runCli(['create', 'secret', '--size', '1MiB'], { env })).code, 0);
  t.is((await runCli(['create', 'shared', '--size', '1MiB'], { env })).code, 0);
  t.is((await runCli(['chown', '1002:1002', 'shared'], { env })).code, 0);
  // A user token needs its uid:gid.
  t.is((await runCli(['token', 'create', '--user', 'carol'], { env })).code, 2);
  const made = await runCli(['--json', 'token', 'create', '--user', 'carol', '--uid', '1002', '--gid', '1002'], {
    env,
  });
  t.is(made.code, 0, made.stderr);
  const tok = JSON.parse(made.stdout) as { token: string; id: string; role: string };
  t.regex(tok.token, /^hpt_[0-9a-f]{16}\.[A-Za-z0-9_-]{43}$/);
  t.is(tok.role, 'user');
  // The list shows it, never its secret.
  const ls = await runCli(['--json', 'token', 'ls'], { env });
  t.false(ls.stdout.includes(tok.token.split('.')[1] ?? '-'));
  t.like((JSON.parse(ls.stdout) as unknown[])[0], { id: tok.id, user: 'carol', role: 'user', uid: 1002, gid: 1002 });

  const ca = readFileSync(join(TEST_TLS_DIR, 'ca.crt'));
  const carol = { bearer: { dir: TEST_TLS_DIR, ca, token: tok.token } };
  const data = dataClient(t, n.address, carol);
  t.truthy((await data.open({ name: 'shared' })).session);
  expectCode(t, await t.throwsAsync(data.open({ name: 'secret' })), 'PERMISSION_DENIED');
  // Not an admin: no token management, no node internals.
  expectCode(
    t,
    await t.throwsAsync(unary((o, cb) => dispatcherClient(c.dispatcher, carol).ListTokens({}, o, cb))),
    'PERMISSION_DENIED',
  );
  expectCode(
    t,
    await t.throwsAsync(unary((o, cb) => nodeClient(n.address, carol).Stats({}, o, cb))),
    'PERMISSION_DENIED',
  );
  // A token with a wrong secret, and garbage, are nobody.
  const forged = { bearer: { dir: TEST_TLS_DIR, ca, token: tok.token.slice(0, -4) + 'AAAA' } };
  expectCode(t, await t.throwsAsync(dataClient(t, n.address, forged).open({ name: 'shared' })), 'UNAUTHENTICATED');
  const junk = { bearer: { dir: TEST_TLS_DIR, ca, token: 'not-a-token' } };
  expectCode(t, await t.throwsAsync(dataClient(t, n.address, junk).open({ name: 'shared' })), 'UNAUTHENTICATED');
  // Python with the token (no certificate): the same rights.
  const py = (script: string): Promise<string> =>
    new Promise((resolve, reject) => {
      execFile(
        '/usr/bin/python3',
        ['-c', script, n.address, tok.token],
        { env: { ...process.env, PYTHONPATH: join(projectRoot, 'clients', 'python'), HOTPOT_CERT: '' } },
        (err, stdout, stderr) => (err ? reject(new Error(stderr)) : resolve(stdout.trim())),
      );
    });
  t.is(
    await py(
      'import sys, hotpot\nc = hotpot.Client(sys.argv[1], token=sys.argv[2])\nprint(c.open("shared").size)\n' +
        'try:\n    c.open("secret")\nexcept hotpot.HotpotError as e:\n    print(e.code)',
    ),
    `${String(MiB)}\nPERMISSION_DENIED`,
  );
  // The CLI with a token file: an admin token can manage; the user token cannot.
  const file = join(c.dir, 'carol.token');
  writeFileSync(file, tok.token + '\n', { mode: 0o600 });
  const asCarol = await runCli(['--token-file', file, 'token', 'ls'], { env });
  t.is(asCarol.code, 1);
  t.regex(asCarol.stderr, /PERMISSION_DENIED: user carol \(token [0-9a-f]{16}\) may not call/);
  // Revoked: the dispatcher refuses it at once, the node within its 10 s cache.
  t.is((await runCli(['token', 'revoke', tok.id], { env })).code, 0);
  t.is((await runCli(['token', 'revoke', tok.id], { env })).code, 1);
  const stillCarol = await runCli(['--token-file', file, 'nodes'], { env });
  t.regex(stillCarol.stderr, /UNAUTHENTICATED/);
  const t0 = Date.now();
  let refused = false;
  while (!refused && Date.now() - t0 < 20_000) {
    const e = await dataClient(t, n.address, carol)
      .open({ name: 'shared' })
      .then(
        () => null,
        (err: unknown) => err,
      );
    refused = e instanceof CallError && e.code === 'UNAUTHENTICATED';
    if (!refused) await new Promise((r) => setTimeout(r, 500));
  }
  t.true(refused, 'the node refuses the revoked token');
  t.true(Date.now() - t0 < 15_000);
});

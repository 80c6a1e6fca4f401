// The Python client as a package: built into a wheel, installed in a fresh venv (Debian's python3 with its grpcio and
// protobuf), imported from another directory, and run against a real cluster found through ./.hotpot/cluster.json.
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { projectRoot } from '../../services/common/paths.ts';
import { startDispatcher, startNode, tempDir, TEST_TLS_DIR, userSecurity } from '../helpers/cluster.ts';

const PYTHON = '/usr/bin/python3';
const PY_DIR = join(projectRoot, 'clients', 'python');

/** The environment with every HOTPOT_* setting and PYTHONPATH removed: the client must find the cluster itself. */
function bareEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('HOTPOT_') && k !== 'PYTHONPATH' && k !== 'VIRTUAL_ENV') env[k] = v;
  }
  return env;
}

function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd: opts.cwd, env: opts.env ?? bareEnv(), timeout: 180_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

// Prints one JSON object with what it saw. argv: the second node's address, a directory with a bad cluster file.
const SCRIPT = String.raw`
import asyncio, json, os, sys
import hotpot, hotpot.aio

out = {"file": hotpot.__file__, "version": hotpot.__version__}
COUNTER = 8192

def counter(ds):
    return int.from_bytes(ds.read(COUNTER, 8), "little")

with hotpot.Client() as c:
    out["found"] = [c.address, c.dispatcher]
    info = c.create("pkg", size=4 << 20)
    try:
        c.create("pkg", size=4 << 20)
    except hotpot.AlreadyExistsError as e:
        out["again"] = e.code
    out["ls"] = sorted(d.name for d in c.ls())
    st = c.stat("pkg")
    out["stat"] = [st.size, st.mode, st.replicas, st.id == info.id]
    try:
        c.stat("no-such")
    except hotpot.NotFoundError as e:
        out["missing"] = e.code
    with c.open("pkg") as ds:
        ds.write(0, b"hello")
        r = ds.commit()
        out["commit"] = [r.copies >= 1, r.bytes]
        out["read"] = ds.read(0, 5).decode()
        big = bytes(range(256)) * 8192  # 2 MiB: WriteStream and ReadStream
        ds.write(65536, big)
        ds.commit()
        out["big"] = ds.read(65536, len(big)) == big

    # A session on the other node commits the counter while this one's first attempt is running: that attempt
    # conflicts, is rolled back, and the second one reads the other's value.
    with hotpot.Client(sys.argv[1]) as other_client, c.open("pkg") as ds, other_client.open("pkg") as other:
        tx = ds.transaction(backoff_ms=1)
        for attempt in tx:
            with attempt:
                n = counter(ds)
                if attempt.number == 0:
                    other.write(COUNTER, (100).to_bytes(8, "little"))
                    other.commit()
                ds.write(COUNTER, (n + 1).to_bytes(8, "little"))
            if attempt.conflict:
                out["conflict"] = [attempt.conflict.code, len(attempt.conflict.conflicts) > 0]
        out["tx"] = [tx.tries, tx.result is not None]
        other.refresh()
        out["counter"] = counter(other)
        out["run_transaction"] = ds.run_transaction(lambda d: d.write(COUNTER, (counter(d) + 1).to_bytes(8, "little")))
        other.refresh()
        out["counter2"] = counter(other)

        # An exception in the body rolls the attempt back and propagates; a conflict on the last attempt is raised.
        try:
            for attempt in ds.transaction():
                with attempt:
                    ds.write(COUNTER, b"\xff" * 8)
                    raise ValueError("stop")
        except ValueError:
            out["after_error"] = counter(ds)
        try:
            for attempt in ds.transaction(attempts=1):
                with attempt:
                    n = counter(ds)
                    other.write(COUNTER, (200).to_bytes(8, "little"))
                    other.commit()
                    ds.write(COUNTER, (n + 1).to_bytes(8, "little"))
        except hotpot.CommitConflictError as e:
            ds.refresh()
            out["gave_up"] = [e.code, counter(ds)]

    # A user whose certificate gives no right to the admin's dataset.
    with hotpot.Client(cert="user.pyuser") as user:
        try:
            user.open("pkg")
        except hotpot.AuthError as e:
            out["denied"] = e.code

    # Explicit arguments > environment > the cluster file.
    os.environ["HOTPOT_DISPATCHER"] = "10.0.0.1:1"
    out["precedence"] = [hotpot.Client().dispatcher, hotpot.Client(dispatcher="10.0.0.2:2").dispatcher]
    del os.environ["HOTPOT_DISPATCHER"]

    try:
        hotpot.Client(dispatcher="127.0.0.1:1", timeout=5).ls()
    except hotpot.ConnectionFailedError as e:
        out["unreachable"] = e.code

async def aio():
    async with hotpot.aio.Client() as c:
        await c.create("pkg-aio", size=4 << 20)
        ds = await c.open("pkg-aio")
        other = await c.open("pkg-aio")
        tx = ds.transaction(backoff_ms=1)
        async for attempt in tx:
            async with attempt:
                n = int.from_bytes(await ds.read(0, 8), "little")
                if attempt.number == 0:
                    await other.write(0, (50).to_bytes(8, "little"))
                    await other.commit()
                await ds.write(0, (n + 1).to_bytes(8, "little"))
        big = bytes(range(256)) * 6144  # 1.5 MiB: WriteStream and ReadStream
        await ds.write(4096, big)
        await ds.commit()
        await other.refresh()
        out["aio"] = {
            "tries": tx.tries,
            "value": int.from_bytes(await other.read(0, 8), "little"),
            "big": await other.read(4096, len(big)) == big,
        }
        try:
            await c.stat("no-such")
        except hotpot.NotFoundError as e:
            out["aio"]["missing"] = e.code
        await ds.close()
        await other.close()
        await c.rm("pkg-aio")
        out["aio"]["ls"] = sorted(d.name for d in await c.ls())

asyncio.run(aio())

with hotpot.Client() as c:
    c.rm("pkg")
    out["after_rm"] = [d.name for d in c.ls()]

os.chdir(sys.argv[2])
try:
    hotpot.Client().ls()
except hotpot.ConfigError as e:
    out["bad_file"] = e.message

print(json.dumps(out))
`;

test('the Python package builds into a wheel, installs in a fresh venv and works from any directory', async (t) => {
  t.timeout(300_000);
  const dir = tempDir(t, 'hotpot-py-');

  // Build the wheel from the source tree (stubs generated by the build) and install it in a fresh venv that sees
  // Debian's grpcio and protobuf; nothing comes from an index.
  await run(PYTHON, [
    '-m',
    'pip',
    'wheel',
    '--no-build-isolation',
    '--no-index',
    '--no-deps',
    '-w',
    join(dir, 'dist'),
    PY_DIR,
  ]);
  const wheels = readdirSync(join(dir, 'dist')).filter((f) => f.endsWith('.whl'));
  const version = (JSON.parse(readFileSync(join(projectRoot, 'package.json'), 'utf8')) as { version: string }).version;
  t.deepEqual(wheels, [`hotpot-${version}-py3-none-any.whl`]);
  const venv = join(dir, 'venv');
  await run(PYTHON, ['-m', 'venv', '--system-site-packages', venv]);
  await run(join(venv, 'bin', 'pip'), ['install', '--no-index', join(dir, 'dist', wheels[0] ?? '')]);

  // A cluster, and a working directory whose .hotpot/cluster.json points at it as `hotpot up` writes it (the TLS
  // files are found in its state dir's tls directory).
  const d = await startDispatcher(t, { stateDir: join(dir, 'd'), leaseMs: 4000 });
  const nodes = [];
  for (const name of ['n1', 'n2']) {
    const pool = join('/dev/shm', `hotpot-test-${String(process.pid)}-${dir.slice(-6)}-${name}`);
    t.teardown(() => {
      rmSync(pool, { recursive: true, force: true });
    });
    nodes.push(
      await startNode(t, { dispatcher: d.address, name, stateDir: join(dir, name), extra: ['--pool-dir', pool] }),
    );
  }
  const [n1, n2] = nodes;
  if (!n1 || !n2) throw new Error('cluster');
  userSecurity('pyuser', 4242, 4242); // issues user.pyuser in the test CA's directory
  const work = join(dir, 'work');
  mkdirSync(join(work, '.hotpot'), { recursive: true });
  mkdirSync(join(dir, 'state'));
  symlinkSync(TEST_TLS_DIR, join(dir, 'state', 'tls'));
  writeFileSync(
    join(work, '.hotpot', 'cluster.json'),
    JSON.stringify({
      dispatcher: d.address,
      nodes: [{ id: n1.id, address: n1.address }],
      stateDir: join(dir, 'state'),
    }),
  );
  const bad = join(dir, 'bad');
  mkdirSync(join(bad, '.hotpot'), { recursive: true });
  writeFileSync(join(bad, '.hotpot', 'cluster.json'), '{"dispatcher": 5}');
  writeFileSync(join(work, 'check.py'), SCRIPT);

  const out = JSON.parse(
    await run(join(venv, 'bin', 'python'), ['check.py', n2.address, bad], { cwd: work }),
  ) as Record<string, unknown>;
  t.true(String(out.file).startsWith(join(venv, 'lib')), `imported from ${String(out.file)}`);
  t.is(out.version, version);
  t.deepEqual(out.found, [n1.address, d.address]);
  t.is(out.again, 'ALREADY_EXISTS');
  t.deepEqual(out.ls, ['pkg']);
  t.deepEqual(out.stat, [4 << 20, 'mrmw', 1, true]);
  t.is(out.missing, 'NOT_FOUND');
  t.deepEqual(out.commit, [true, 5]);
  t.is(out.read, 'hello');
  t.true(out.big);
  t.deepEqual(out.conflict, ['ABORTED', true]);
  t.deepEqual(out.tx, [2, true]);
  t.is(out.counter, 101);
  t.is(out.run_transaction, 8);
  t.is(out.counter2, 102);
  t.is(out.after_error, 102);
  t.deepEqual(out.gave_up, ['ABORTED', 200]);
  t.is(out.denied, 'PERMISSION_DENIED');
  t.deepEqual(out.precedence, ['10.0.0.1:1', '10.0.0.2:2']);
  t.is(out.unreachable, 'UNAVAILABLE');
  t.deepEqual(out.aio, { tries: 2, value: 51, big: true, missing: 'NOT_FOUND', ls: ['pkg'] });
  t.deepEqual(out.after_rm, []);
  t.regex(String(out.bad_file), /cluster\.json: `dispatcher` must be a string/);

  // The example, as docs/python.md runs it: in the directory of the cluster file, with the installed package.
  copyFileSync(join(PY_DIR, 'example.py'), join(work, 'example.py'));
  const example = await run(join(venv, 'bin', 'python'), ['example.py'], { cwd: work });
  t.regex(example, /^read back: hello from python$/m);
  t.regex(example, /^counter: 1 \(after 1 attempt\(s\)\)$/m);
  t.regex(example, /^reading past the end fails with OUT_OF_RANGE$/m);
  t.regex(example, /^datasets: python-example$/m);
});

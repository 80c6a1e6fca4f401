// examples/kv against a Map under concurrent writers: processes on three nodes run random puts, deletes,
// read-modify-writes, two-key batches and increments of shared counters; afterwards every node's snapshot of the
// store equals the model built from the acknowledged operations, and no increment is lost.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { projectRoot } from '../../services/common/paths.ts';
import { startCluster } from '../helpers/cluster.ts';

function worker<T>(t: ExecutionContext, job: Record<string, unknown>): Promise<T> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(projectRoot, 'test/integration/kv-worker.ts'), JSON.stringify(job)],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => {
      if (code === 0) resolve(JSON.parse(out.trim().split('\n').pop() ?? 'null') as T);
      else reject(new Error(`kv worker ${String(job.mode)} exited ${String(code)}: ${err.slice(-3000)}`));
    });
  });
}

interface WorkResult {
  model: Record<string, string | null>;
  increments: Record<string, number>;
  counters: { commits: number; conflicts: number; torn: number };
}

test('the store equals the model of acknowledged operations from 6 concurrent writers on 3 nodes', async (t) => {
  t.timeout(150_000);
  const c = await startCluster(t, { nodes: 3, prefix: 'kv' });
  const sockets = c.nodes.map((n) => n.socket);
  await worker(t, { mode: 'create', socket: sockets[0], name: 'kv' });
  const counters = ['ctr0', 'ctr1', 'ctr2'];
  const writers = 6;
  const results = await Promise.all(
    Array.from({ length: writers }, (_, i) =>
      worker<WorkResult>(t, {
        mode: 'work',
        socket: sockets[i % 3],
        name: 'kv',
        prefix: `w${String(i)}-`,
        keys: 25,
        ops: 250,
        counters,
        seed: 1000 + i,
      }),
    ),
  );
  const model = new Map<string, string>();
  const increments = new Map<string, number>();
  for (const r of results) {
    for (const [k, v] of Object.entries(r.model)) if (v !== null) model.set(k, v);
    for (const [k, n] of Object.entries(r.increments)) increments.set(k, (increments.get(k) ?? 0) + n);
  }
  for (const [k, n] of increments) {
    const b = Buffer.alloc(8);
    b.writeBigInt64LE(BigInt(n));
    model.set(k, b.toString('hex'));
  }
  const commits = results.reduce((s, r) => s + r.counters.commits, 0);
  const conflicts = results.reduce((s, r) => s + r.counters.conflicts, 0);
  t.log(`${String(commits)} commits, ${String(conflicts)} conflicts retried, ${String(model.size)} keys at the end`);
  t.true(conflicts > 0, 'the writers should have contended (shared counters, slot pages, arenas)');
  t.true([...increments.values()].reduce((s, n) => s + n, 0) > 0);
  for (const [i, socket] of sockets.entries()) {
    const d = await worker<{ entries: Record<string, string>; live: number }>(t, { mode: 'dump', socket, name: 'kv' });
    const keys = [...new Set([...model.keys(), ...Object.keys(d.entries)])].sort();
    const wrong = keys.filter((k) => d.entries[k] !== model.get(k));
    t.deepEqual(
      wrong.map(
        (k) =>
          `${k}: store ${(d.entries[k] ?? 'absent').slice(0, 24)}, model ${(model.get(k) ?? 'absent').slice(0, 24)}`,
      ),
      [],
      `node ${String(i + 1)}'s view`,
    );
    t.is(d.live, model.size);
  }
});

test('the kv CLI creates a store, puts, gets, increments, scans and deletes, and reports errors', async (t) => {
  t.timeout(120_000);
  const c = await startCluster(t, { nodes: 1, prefix: 'kvcli' });
  const socket = c.nodes[0]?.socket ?? '';
  const cli = (...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> =>
    new Promise((resolve) => {
      const child = spawn(
        process.execPath,
        ['--import', 'tsx', join(projectRoot, 'examples/kv/cli.ts'), '--socket', socket, '--store', 'clikv', ...args],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      t.teardown(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.once('exit', (code) => resolve({ code, stdout, stderr }));
    });
  t.like(await cli('create', '--size', String(4 << 20), '--max-value', '100'), { code: 0 });
  t.like(await cli('put', 'greeting', 'hello'), { code: 0 });
  t.like(await cli('get', 'greeting'), { code: 0, stdout: 'hello' });
  t.like(await cli('incr', 'hits', '5'), { code: 0, stdout: '5\n' });
  t.like(await cli('incr', 'hits'), { code: 0, stdout: '6\n' });
  t.like(await cli('scan', 'gr'), { code: 0, stdout: 'greeting\thello\n' });
  const big = await cli('put', 'k', 'x'.repeat(101));
  t.is(big.code, 1);
  t.regex(big.stderr, /^INVALID_ARGUMENT: a value must be at most 100 bytes/);
  t.like(await cli('del', 'greeting'), { code: 0 });
  const gone = await cli('get', 'greeting');
  t.is(gone.code, 1);
  t.regex(gone.stderr, /NOT_FOUND: greeting/);
  const stats = await cli('stats');
  t.is(stats.code, 0);
  t.regex(stats.stdout, /live 1,/);
  t.like(await cli('frobnicate'), { code: 2 });
});

test('two concurrent puts of one key never merge byte-wise: the record tag makes the later commit conflict', async (t) => {
  t.timeout(120_000);
  const c = await startCluster(t, { nodes: 2, prefix: 'kvtag' });
  const [a, b] = c.nodes;
  const r = await worker<{ rounds: { aCommit: string; value: string }[] }>(t, {
    mode: 'tags',
    socket: a?.socket,
    socket2: b?.socket,
    name: 'tags',
  });
  // With the tag: the later put is refused and the value is the earlier put's, whole.
  t.deepEqual(r.rounds[0], { aCommit: 'ABORTED', value: 'aabaaaaa' });
  // Control — the same interleaving with the tag bytes left unchanged: Hotpot merges the disjoint bytes of both
  // commits into a value neither process wrote. This is what the tag is for.
  t.deepEqual(r.rounds[1], { aCommit: 'ok', value: 'abbaaaaa' });
});

import { execFileSync, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import test from 'ava';
import { projectRoot } from '../../services/common/paths.ts';
import { startApp } from '../helpers/app.ts';
import { startDispatcher, startNode, tempDir } from '../helpers/cluster.ts';

test('the C example maps a dataset, commits through the C ABI, and a TypeScript app reads its bytes', async (t) => {
  t.timeout(180_000);
  execFileSync('make', ['-s', '-C', join(projectRoot, 'examples/c')], { stdio: 'inherit' });
  const dir = tempDir(t);
  const d = await startDispatcher(t, { stateDir: join(dir, 'd') });
  const pool = (i: number) => join('/dev/shm', `hotpot-test-c-${String(process.pid)}-${dir.slice(-6)}-${String(i)}`);
  t.teardown(async () => {
    const { rmSync } = await import('node:fs');
    for (const i of [1, 2]) rmSync(pool(i), { recursive: true, force: true });
  });
  const n1 = await startNode(t, {
    dispatcher: d.address,
    name: 'c1',
    stateDir: join(dir, 'c1'),
    extra: ['--pool-dir', pool(1)],
  });
  const n2 = await startNode(t, {
    dispatcher: d.address,
    name: 'c2',
    stateDir: join(dir, 'c2'),
    extra: ['--pool-dir', pool(2)],
  });
  const r = spawnSync(join(projectRoot, 'examples/c/hotpot_example'), ['from-c', '2', n1.socket], { encoding: 'utf8' });
  t.is(r.status, 0, `${r.stdout}\n${r.stderr}`);
  t.regex(r.stdout, /read back: "hello from the hotpot C example" \(snapshot, \d+ runs?\)/);
  const app = await startApp(t, n2.socket);
  await app.call({ op: 'connect' });
  await app.call({ op: 'open', name: 'from-c' });
  await app.call({ op: 'map' });
  const { hex } = await app.call<{ hex: string }>({ op: 'read', offset: 0, length: 5 });
  t.is(hex, Buffer.from('hello').toString('hex'));
});

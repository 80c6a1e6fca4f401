// `hotpot up --ha`: 3 etcd members, 2 dispatchers with their state in etcd (one standby) and N nodes on one machine.
// Killing the leading dispatcher hands the cluster to the standby; the CLI (through cluster.json's address list)
// follows; the killed one comes back as a standby; `hotpot up` stops everything, etcd included.
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import test from 'ava';
import { Etcd3 } from 'etcd3';
import { hotpotBin } from '../../services/common/paths.ts';
import { runCli, tempDir, waitFor } from '../helpers/cluster.ts';
import { etcdBinary } from '../helpers/etcd.ts';

/** Processes whose command line mentions `dir` (what this test started under its temp dir). */
function processesUnder(dir: string): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        return readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(dir);
      } catch {
        return false;
      }
    })
    .map(Number);
}

test('hotpot up --ha: kill -9 of the leading dispatcher, the standby leads, the CLI follows, nodes stay alive', async (t) => {
  etcdBinary();
  const cwd = tempDir(t, 'hotpot-up-ha-');
  const child = spawn(process.execPath, [hotpotBin, 'up', '--ha', '--nodes', '2', '--state-dir', join(cwd, 'st')], {
    cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, HOTPOT_TRACES_EXPORTER: 'none' },
  });
  const stderr: string[] = [];
  createInterface({ input: child.stderr }).on('line', (l) => stderr.push(l));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  t.teardown(async () => {
    if (child.exitCode === null) child.kill('SIGKILL');
    for (const p of processesUnder(cwd)) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await runCli(['clean', '--yes', '--state-dir', join(cwd, 'st')], { cwd });
  });
  const ready = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (l) => {
      if (l.startsWith('READY hotpot up ')) resolve(l);
    });
    void exited.then((code) => reject(new Error(`hotpot up exited ${String(code)}: ${stderr.slice(-20).join('\n')}`)));
  });
  // The CLI as a user of this cluster runs it: with its CA and admin certificate (the test's own CA is in the env).
  const cli = (args: string[]) => runCli(args, { cwd, env: { HOTPOT_TLS_DIR: join(cwd, 'st', 'tls') } });
  const dispatchers = /dispatcher=(\S+)/.exec(ready)?.[1] ?? '';
  t.is(dispatchers.split(',').length, 2);
  const file = JSON.parse(readFileSync(join(cwd, 'st', 'cluster.json'), 'utf8')) as {
    dispatcher: string;
    etcd: string;
  };
  t.is(file.dispatcher, dispatchers);
  const etcd = new Etcd3({ hosts: file.etcd.split(',').map((e) => `http://${e}`) });
  t.teardown(() => {
    etcd.close();
  });
  const leader = async (): Promise<{ pid: number; address: string } | undefined> => {
    const v = await etcd.get('/hotpot/leader').string();
    return v === null ? undefined : (JSON.parse(v) as { pid: number; address: string });
  };
  const first = await leader();
  t.truthy(first);
  const nodesJson = async (): Promise<{ id: number; state: string; stateEpoch: number }[]> => {
    const r = await cli(['--json', 'nodes']);
    if (r.code !== 0) throw new Error(r.stderr);
    return (JSON.parse(r.stdout) as { nodes: { id: number; state: string; stateEpoch: number }[] }).nodes;
  };
  const before = await nodesJson();
  t.is(before.length, 2);
  t.is((await cli(['create', 'kept', '--size', '1MiB', '--replicas', '2'])).code, 0);

  process.kill(first?.pid ?? 0, 'SIGKILL');
  const next = await waitFor('the standby to lead', async () => {
    const l = await leader().catch(() => undefined);
    return l && l.pid !== first?.pid ? l : undefined;
  });
  t.not(next.address, first?.address);
  const ls = await waitFor('the CLI to reach the new leader', async () => {
    const r = await cli(['--json', 'ls']);
    return r.code === 0 ? (JSON.parse(r.stdout) as { name: string }[]) : undefined;
  });
  t.deepEqual(
    ls.map((d) => d.name),
    ['kept'],
  );
  const after = await nodesJson();
  t.deepEqual(
    after.map((n) => [n.id, n.state, n.stateEpoch]),
    before.map((n) => [n.id, n.state, n.stateEpoch]),
    'no node was declared dead or rejoined',
  );
  // The killed dispatcher is started again, as a standby.
  // (A process other than the two leaders: the standby's own line from the start does not count.)
  const standbyPids = (): number[] =>
    stderr
      .filter((l) => l.includes('standby: another dispatcher leads'))
      .map((l) => (JSON.parse(l) as { pid: number }).pid)
      .filter((pid) => pid !== first?.pid && pid !== next.pid);
  await waitFor('the killed dispatcher to be back as a standby', () =>
    Promise.resolve(standbyPids().length > 0 ? true : undefined),
  );

  child.kill('SIGTERM');
  const code = await exited;
  if (code !== 0) t.log(stderr.slice(-40).join('\n'));
  t.is(code, 0);
  await waitFor('every process of the cluster, etcd included, to stop', () =>
    Promise.resolve(processesUnder(cwd).length === 0 ? true : undefined),
  );
});

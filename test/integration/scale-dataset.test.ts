// Issue 13 "Scale": an empty dataset costs each node what its used pages cost (pool and data-dir files, RSS), is
// created without any node being declared dead, serves pages at both ends, and `hotpot stat` on it works. Before, each
// node's pool read every page record at open: 4 MiB of /dev/shm, of RSS and of data-dir copy per GiB declared (4 GiB
// each for 1 TiB), and nodes were declared dead while a big one opened.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { POOL_DIR_FILE } from '../../services/common/paths.ts';
import { listNodes, runCli, startCluster } from '../helpers/cluster.ts';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
// Not 1 TiB yet: at 262 144 chunks the dispatcher itself stalls building, storing and sending the chunk map (nodes
// miss their heartbeats), and each node's copies of the map grow its RSS by ~2-3 KiB per chunk. 16 GiB (4096 chunks)
// keeps the map's share of RSS well under the bound while the pool files, had they grown with the declared size,
// would be 64 MiB per node.
const SIZE = 16 * GiB;
const CHUNKS = SIZE / (4 * 2 ** 20);

function rss(pid: number | undefined): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${String(pid)}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) * 1024;
}

/** Bytes allocated under dir (st_blocks: holes cost nothing). */
const JOURNAL_FILES = ['pages.journal.0', 'pages.journal.1'];

function allocated(dir: string): number {
  return Number(execFileSync('du', ['-s', '-B1', dir]).toString().split('\t')[0]);
}

test('an empty 16 GiB dataset costs each node little, serves both ends and stats without a node declared dead', async (t) => {
  t.timeout(300_000);
  const c = await startCluster(t, { nodes: 3, durability: 'disk', prefix: 'scale' });
  const env = { HOTPOT_DISPATCHER: c.dispatcher };
  const cli = async (args: string[]): Promise<string> => {
    const r = await runCli(args, { env });
    t.is(r.code, 0, `hotpot ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  const before = await listNodes(c.dispatcher);
  t.is(before.nodes.filter((n) => n.state === 'NODE_STATE_ALIVE').length, 3);
  const rss0 = c.nodes.map((n) => rss(n.child.pid));

  const t0 = Date.now();
  await cli(['create', 'big', '--size', `${String(SIZE / GiB)}GiB`, '--replicas', '2']);
  t.log(`create: ${String(Date.now() - t0)} ms`);
  t.log(
    `RSS growth after create: ${c.nodes.map((n, i) => ((rss(n.child.pid) - (rss0[i] ?? 0)) / MiB).toFixed(1)).join(' / ')} MiB`,
  );
  await cli(['put', 'big', '--offset', '100', '--data', 'at the start']);
  await cli(['put', 'big', '--offset', String(SIZE - 4096), '--data', 'at the end']);
  for (const n of c.nodes) {
    t.is(await cli(['get', 'big', '--offset', '100', '--length', '12', '--node', String(n.id)]), 'at the start');
    t.is(
      await cli(['get', 'big', '--offset', String(SIZE - 4096), '--length', '10', '--node', String(n.id)]),
      'at the end',
    );
  }

  t.log(
    `RSS growth after put/get: ${c.nodes.map((n, i) => ((rss(n.child.pid) - (rss0[i] ?? 0)) / MiB).toFixed(1)).join(' / ')} MiB`,
  );
  const text = await cli(['stat', 'big']);
  t.true(text.includes(`${String(CHUNKS)} chunk(s) of 4MiB`), text.slice(0, 300));
  // Round-robin placement: neighbours differ, so the map prints one row per owner and replicas, its chunks as
  // strided ranges — a screen, not 4096 lines; --chunks lists a range one by one.
  t.true(text.split('\n').length < 20, text);
  t.regex(text, /CHUNKS\s+WHICH\s+OWNER/);
  t.regex(text, /\d+-\d+ every 3rd/);
  const some = await cli(['stat', 'big', '--chunks', '10-12']);
  t.deepEqual(
    some
      .split('\n')
      .filter((l) => /^\d/.test(l))
      .map((l) => Number(l.split(/\s+/)[0])),
    [10, 11, 12],
  );
  const some2 = JSON.parse(await cli(['--json', 'stat', 'big', '--chunks', '4095'])) as {
    dataset: { chunks: { index: number }[] };
  };
  t.deepEqual(
    some2.dataset.chunks.map((ch) => ch.index),
    [4095],
  );
  const beyond = await runCli(['stat', 'big', '--chunks', `0-${String(CHUNKS)}`], { env });
  t.is(beyond.code, 2);
  t.regex(beyond.stderr, /has chunks 0-4095/);
  const json = JSON.parse(await cli(['--json', 'stat', 'big'])) as { dataset: { chunks: { index: number }[] } };
  t.is(json.dataset.chunks.length, CHUNKS);
  t.is(json.dataset.chunks[CHUNKS - 1]?.index, CHUNKS - 1);

  const after = await listNodes(c.dispatcher);
  t.is(String(after.epoch), String(before.epoch), 'no membership change (no node declared dead)');
  t.is(after.nodes.filter((n) => n.state === 'NODE_STATE_ALIVE').length, 3);
  c.nodes.forEach((n, i) => {
    const grown = rss(n.child.pid) - (rss0[i] ?? 0);
    const pool = readFileSync(join(c.dir, `n${String(i + 1)}`, POOL_DIR_FILE), 'utf8').trim();
    t.log(`node ${String(n.id)}: RSS +${(grown / MiB).toFixed(1)} MiB, pool ${(allocated(pool) / MiB).toFixed(1)} MiB`);
    t.true(grown < 64 * MiB, `node ${String(n.id)} RSS grew ${String(grown)} bytes`);
    t.true(allocated(pool) < MiB, `node ${String(n.id)} pool: ${String(allocated(pool))} bytes`);
    // The page journal (data/pages.journal.{0,1}) is the node's, not the dataset's: a fixed cost, bounded by its
    // rotation size plus one growth step per file (docs/design/engine.md "Pool layout"), counted on its own.
    const dataDir = join(c.dir, `n${String(i + 1)}`, 'data');
    const journal = JOURNAL_FILES.reduce((sum, f) => sum + allocated(join(dataDir, f)), 0);
    const data = allocated(dataDir) - journal;
    t.true(data < MiB, `node ${String(n.id)} data dir without the page journal: ${String(data)} bytes`);
    t.true(journal <= 2 * (8 + 1) * MiB, `node ${String(n.id)} page journal: ${String(journal)} bytes`);
  });
});

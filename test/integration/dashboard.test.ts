// `hotpot dashboard` against a live cluster, loaded in headless Chromium: the rendered page shows the cluster's
// nodes, dataset, chunk map and the commits this test made; its screenshot is docs/images/dashboard.png.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import test, { type ExecutionContext } from 'ava';
import { projectRoot } from '../../services/common/paths.ts';
import { spawnHotpot, startCluster, tempDir, waitFor } from '../helpers/cluster.ts';
import { dataClient } from '../helpers/data-client.ts';

const MiB = 1024 * 1024;
const COMMITS = 5;
const SCREENSHOT = join(projectRoot, 'docs', 'images', 'dashboard.png');

const CHROMIUM = ['chromium', 'chromium-browser'].find((c) => spawnSync(c, ['--version']).status === 0);

/**
 * Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON messages ending in
 * NUL on fds 3 and 4), so the test can wait until the live page has rendered instead of guessing a time.
 */
class Browser {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private readonly child: ChildProcess;
  private readonly stderr: string[] = [];

  constructor(t: ExecutionContext) {
    const profile = tempDir(t, 'hotpot-chromium-');
    this.child = spawn(
      CHROMIUM ?? 'chromium',
      ['--headless', '--disable-gpu', '--no-sandbox', `--user-data-dir=${profile}`, '--remote-debugging-pipe'],
      { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] },
    );
    t.teardown(() => {
      if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    });
    (this.child.stderr as Readable).on('data', (d: Buffer) => {
      this.stderr.push(d.toString());
      if (this.stderr.length > 50) this.stderr.shift();
    });
    let buf = Buffer.alloc(0);
    (this.child.stdio[4] as Readable).on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (let i = buf.indexOf(0); i >= 0; i = buf.indexOf(0)) {
        const msg = JSON.parse(buf.subarray(0, i).toString()) as {
          id?: number;
          result?: unknown;
          error?: { message: string };
        };
        buf = buf.subarray(i + 1);
        const p = msg.id === undefined ? undefined : this.pending.get(msg.id);
        if (!p || msg.id === undefined) continue;
        this.pending.delete(msg.id);
        if (msg.error) p.reject(new Error(`chromium: ${msg.error.message}`));
        else p.resolve(msg.result);
      }
    });
    this.child.once('exit', (code) => {
      for (const p of this.pending.values()) {
        p.reject(new Error(`chromium exited (${String(code)}): ${this.stderr.join('').slice(-2000)}`));
      }
      this.pending.clear();
    });
  }

  send<T>(method: string, params: object = {}, sessionId?: string): Promise<T> {
    const id = this.nextId++;
    const msg = JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) });
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      (this.child.stdio[3] as Writable).write(msg + '\0');
    });
  }

  /** Opens `url` in a new 1280x900 tab; returns a function evaluating an expression in it. */
  async open(url: string): Promise<{ evaluate: <T>(expr: string) => Promise<T>; session: string }> {
    const { targetId } = await this.send<{ targetId: string }>('Target.createTarget', { url: 'about:blank' });
    const { sessionId } = await this.send<{ sessionId: string }>('Target.attachToTarget', { targetId, flatten: true });
    await this.send(
      'Emulation.setDeviceMetricsOverride',
      { width: 1280, height: 900, deviceScaleFactor: 1, mobile: false },
      sessionId,
    );
    await this.send('Page.navigate', { url }, sessionId);
    const evaluate = async <T>(expression: string): Promise<T> => {
      const r = await this.send<{ result: { value: T }; exceptionDetails?: { text: string } }>(
        'Runtime.evaluate',
        { expression, returnByValue: true },
        sessionId,
      );
      if (r.exceptionDetails) throw new Error(`${expression}: ${r.exceptionDetails.text}`);
      return r.result.value;
    };
    return { evaluate, session: sessionId };
  }

  async screenshot(session: string, file: string): Promise<void> {
    const { data } = await this.send<{ data: string }>('Page.captureScreenshot', { format: 'png' }, session);
    writeFileSync(file, Buffer.from(data, 'base64'));
  }

  async close(): Promise<void> {
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    await this.send('Browser.close').catch(() => undefined);
    await exited;
  }
}

/** A GET with a chosen Host header (fetch does not let a caller set it). */
function get(url: string, host?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: host ? { host } : {} }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

interface Snapshot {
  snapshot: {
    nodes: { id: number; state: string }[];
    datasets: { name: string; summary: { chunks: number } | null; cells: { owner: number }[] }[];
    errors: string[];
  };
  rates: { totals: { commits: number } } | null;
}

// Without Chromium the test is listed as skipped, with the reason in its title.
const browserTest = CHROMIUM ? test : test.skip;
const skipped = CHROMIUM ? '' : ' (SKIPPED: no chromium on the PATH; apt-get install chromium)';

browserTest(
  `the dashboard shows a live cluster: nodes, dataset, chunk map and the commits made, in headless Chromium${skipped}`,
  async (t) => {
    t.timeout(180_000);
    const c = await startCluster(t, { nodes: 2, prefix: 'dash' });
    const [n1] = c.nodes;
    if (!n1) throw new Error('cluster');
    const data = dataClient(t, n1.address);
    const s = await data.open({ name: 'dash', create: true, sizeBytes: 16 * MiB, replicas: 2 });
    for (let i = 0; i < COMMITS; i++) {
      await data.write({
        session: s.session,
        offset: (i % 4) * 4 * MiB + 100 * i,
        data: Buffer.from([i + 1, 0xab, 0xcd]),
      });
      const r = await data.commit({ session: s.session });
      t.is(r.pages, 1);
    }

    const dash = await spawnHotpot(t, ['--dispatcher', c.dispatcher, 'dashboard', '--port', '0', '--interval', '500']);
    const url = dash.fields.url ?? '';
    t.regex(url, /^http:\/\/127\.0\.0\.1:\d+\/$/);

    // The JSON the page is built from, once a sample has the commits.
    const snap = await waitFor('a snapshot with the commits', async () => {
      const r = await get(`${url}api/snapshot`);
      const body = JSON.parse(r.body) as Snapshot;
      return body.rates?.totals.commits === COMMITS ? body : undefined;
    });
    t.deepEqual(snap.snapshot.errors, []);
    t.is(snap.snapshot.nodes.length, 2);
    t.true(snap.snapshot.nodes.every((n) => n.state === 'alive'));
    t.deepEqual(
      snap.snapshot.datasets.map((d) => [d.name, d.summary?.chunks]),
      [['dash', 4]],
    );

    // Bad requests get clear answers, never a crash.
    t.is((await get(`${url}nope`)).status, 404);
    t.is((await get(`${url}api/snapshot?dataset=missing`)).status, 404);
    const badName = await get(`${url}api/snapshot?dataset=..%2Fx`);
    t.is(badName.status, 400);
    t.regex((JSON.parse(badName.body) as { error: string }).error, /^bad dataset name/);
    const unknown = await get(`${url}api/snapshot?verbose=1`);
    t.is(unknown.status, 400);
    t.is((JSON.parse(unknown.body) as { error: string }).error, 'unknown query parameter "verbose" (allowed: dataset)');
    t.is((await get(`${url}api/events?limit=0`)).status, 400);
    t.is((await get(`${url}api/events?limit=3`)).status, 200);
    // A loopback dashboard answers only requests that name it by a loopback host (DNS rebinding).
    t.is((await get(url, 'evil.example:80')).status, 403);
    t.is((await get(`${url}api/snapshot?dataset=dash`)).status, 200);

    // The page as Chromium renders it, once its live stream is open.
    const browser = new Browser(t);
    const page = await browser.open(url);
    const text = (id: string): Promise<string | null> =>
      page.evaluate<string | null>(`document.getElementById(${JSON.stringify(id)})?.textContent ?? null`);
    await waitFor(
      'the page to render and go live',
      async () =>
        (await page.evaluate<boolean>(
          "document.body.dataset.state === 'live' && document.getElementById('status').textContent === 'live'",
        )) || undefined,
      60_000,
    );
    t.is(await text('node-count'), '2');
    t.is(await text('nodes-alive'), '2');
    t.is(await text('dataset-count'), '1');
    t.is(await text('commit-total'), String(COMMITS));
    t.is(await text('under-replicated'), '0');
    t.deepEqual(
      await page.evaluate<string[]>("[...document.querySelectorAll('.dataset-name')].map((e) => e.textContent)"),
      ['dash'],
    );
    t.is(await page.evaluate<string>("document.querySelector('[data-dataset=dash] .chunk-count').textContent"), '4');
    const chunkClasses = (): Promise<string[]> =>
      page.evaluate<string[]>("[...document.querySelectorAll('[data-dataset=dash] .chunk')].map((e) => e.className)");
    t.deepEqual(await chunkClasses(), ['chunk ok', 'chunk ok', 'chunk ok', 'chunk ok']);
    t.is(await page.evaluate<number>("document.querySelectorAll('#nodes-table tr.alive').length"), 2);
    // Chunks are coloured by owner: as many colours as owners.
    const owners = new Set(snap.snapshot.datasets[0]?.cells.map((x) => x.owner));
    t.is(
      await page.evaluate<number>(
        "new Set([...document.querySelectorAll('[data-dataset=dash] .chunk')].map((e) => getComputedStyle(e).backgroundColor)).size",
      ),
      owners.size,
    );
    t.is(await page.evaluate<number>("document.querySelectorAll('#errors li').length"), 0);

    // Live: a commit made now reaches the open page through the stream, with a commit rate.
    await data.write({ session: s.session, offset: 4096, data: Buffer.from([9]) });
    await data.commit({ session: s.session });
    await waitFor('the page to show the new commit', async () =>
      (await text('commit-total')) === String(COMMITS + 1) ? true : undefined,
    );
    // Every chunk has its second copy on node 2, killed now. Its chunks are owner-down until node 1 takes them
    // over; then all four are node 1's and short of a copy, and the page highlights them.
    c.nodes[1]?.child.kill('SIGKILL');
    await waitFor(
      'the page to show every chunk under-replicated',
      async () =>
        (await text('under-replicated')) === '4' && (await chunkClasses()).every((x) => x === 'chunk under')
          ? true
          : undefined,
      90_000,
    );
    t.is(await text('nodes-alive'), '1');
    t.is(
      await page.evaluate<string>("document.querySelector('[data-dataset=dash] .legend').textContent"),
      `node ${String(n1.id)}: 4`,
    );
    const under = await page.evaluate<string>("getComputedStyle(document.querySelector('.chunk.under')).outlineColor");
    t.is(under, 'rgb(198, 40, 40)');

    await browser.screenshot(page.session, SCREENSHOT);
    t.true(statSync(SCREENSHOT).size > 10_000);
    t.deepEqual([...readFileSync(SCREENSHOT).subarray(1, 4)], [...Buffer.from('PNG')]);
    await browser.close();

    dash.child.kill('SIGTERM');
    t.is((await dash.exited).code, 0);
  },
);

test('hotpot dashboard refuses a non-loopback address unless told, and bad flags', async (t) => {
  const { runCli } = await import('../helpers/cluster.ts');
  const exposed = await runCli(['dashboard', '--listen', '0.0.0.0', '--port', '0']);
  t.is(exposed.code, 2);
  t.regex(exposed.stderr, /not a loopback address.*--allow-non-loopback/);
  const badPort = await runCli(['dashboard', '--port', '70000']);
  t.is(badPort.code, 2);
  t.regex(badPort.stderr, /--port must be an integer from 0 to 65535/);
  const badHost = await runCli(['dashboard', '--listen', 'example.com']);
  t.is(badHost.code, 2);
  t.regex(badHost.stderr, /an IP address/);
});

browserTest(`a cluster that cannot be reached is an error on the page, not a crash${skipped}`, async (t) => {
  t.timeout(120_000);
  // A port nothing listens on.
  const closed = await new Promise<number>((resolve) => {
    const srv = createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => resolve(port));
    });
  });
  const dispatcher = `127.0.0.1:${String(closed)}`;
  const dash = await spawnHotpot(t, ['--dispatcher', dispatcher, 'dashboard', '--port', '0', '--interval', '500']);
  const url = dash.fields.url ?? '';
  const r = await get(`${url}api/snapshot`);
  t.is(r.status, 200);
  const body = JSON.parse(r.body) as Snapshot;
  t.deepEqual(body.snapshot.nodes, []);
  t.true(body.snapshot.errors.some((e) => e.startsWith(`dispatcher ${dispatcher}: ListNodes: `)));

  const browser = new Browser(t);
  const page = await browser.open(url);
  const errors = await waitFor(
    'the page to show the errors',
    async () => {
      const lines = await page.evaluate<string[]>(
        "[...document.querySelectorAll('#errors li')].map((e) => e.textContent)",
      );
      return lines.length > 0 ? lines : undefined;
    },
    60_000,
  );
  t.true(
    errors.some((e) => e.includes('ListDatasets')),
    errors.join('\n'),
  );
  t.is(await page.evaluate<string>("document.getElementById('node-count').textContent"), '0');
  await browser.close();
  t.is(dash.child.exitCode, null, 'the dashboard still runs');
});

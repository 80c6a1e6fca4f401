// `hotpot dashboard`'s HTTP server (node:http): the static page, a JSON snapshot and a Server-Sent Events stream of
// samples (cluster view + rates) and node events. It samples the cluster on a timer while it runs, whether or not a
// page is open, so rates are ready when one opens.
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../common/config.ts';
import type { Security } from '../common/tls.ts';
import { ClusterReader, type ClusterSnapshot, type DashboardEvent } from './cluster-reader.ts';
import { computeRates, type Rates, type Sample } from './rates.ts';

export interface DashboardOptions {
  dispatcher: string;
  security: Security;
  /** Interface to listen on; only loopback unless allowNonLoopback. */
  host: string;
  port: number;
  allowNonLoopback: boolean;
  intervalMs: number;
}

/** Samples kept for the plots (at the default 2 s interval: 4 minutes). */
const HISTORY = 120;
/** Events kept for a page that opens. */
const EVENTS_KEPT = 200;
/** Bytes a page's stream may have waiting to be sent before the page is dropped. */
const MAX_UNSENT_BYTES = 8 * 1024 * 1024;
/** Events reach open pages in batches at most this often. */
const EVENT_FLUSH_MS = 500;

const STATIC_DIR = join(fileURLToPath(new URL('.', import.meta.url)), 'static');
/** The only files served: a fixed list, so no request path ever reaches the file system. */
const ASSETS: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/view.js': { file: 'view.js', type: 'text/javascript; charset=utf-8' },
  '/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' },
};

export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1';
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const DATASET_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/;

/** The query of a request: only `allowed` names, each at most once. */
function query(url: URL, allowed: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const [k, v] of url.searchParams) {
    if (!allowed.includes(k)) {
      throw new HttpError(
        400,
        `unknown query parameter "${k}"${allowed.length ? ` (allowed: ${allowed.join(', ')})` : ' (none allowed)'}`,
      );
    }
    if (out.has(k)) throw new HttpError(400, `query parameter "${k}" given twice`);
    out.set(k, v);
  }
  return out;
}

function intParam(q: Map<string, string>, name: string, min: number, max: number): number | undefined {
  const v = q.get(name);
  if (v === undefined) return undefined;
  const n = /^\d{1,9}$/.test(v) ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new HttpError(400, `${name} must be an integer from ${String(min)} to ${String(max)}, got "${v}"`);
  }
  return n;
}

export class Dashboard {
  private readonly reader: ClusterReader;
  private readonly server: Server;
  private readonly clients = new Set<ServerResponse>();
  private snapshot: ClusterSnapshot | null = null;
  private lastSample: Sample | null = null;
  private readonly history: Rates[] = [];
  private readonly events: DashboardEvent[] = [];
  private pendingEvents: DashboardEvent[] = [];
  private readonly streamErrors: string[] = [];
  private sampleTimer: NodeJS.Timeout | undefined;
  private readonly flushTimer: NodeJS.Timeout;
  private firstSample: Promise<void>;
  private closed = false;
  private allowedHosts: Set<string> | null = null;

  constructor(private readonly opts: DashboardOptions) {
    if (!isLoopback(opts.host) && !opts.allowNonLoopback) {
      throw new ConfigError(
        `--listen ${opts.host} is not a loopback address: the dashboard shows cluster data to anyone who can reach ` +
          'it, so listening elsewhere needs --allow-non-loopback',
      );
    }
    this.reader = new ClusterReader(
      opts.dispatcher,
      opts.security,
      (e) => this.pendingEvents.push(e),
      (line) => {
        this.streamErrors.push(line);
        if (this.streamErrors.length > 20) this.streamErrors.shift();
      },
    );
    this.server = createServer((req, res) => this.handle(req, res));
    this.flushTimer = setInterval(() => this.flushEvents(), EVENT_FLUSH_MS);
    this.firstSample = this.tick();
  }

  /** Listens; resolves to the page's URL. */
  async listen(): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.opts.port, this.opts.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const port = (this.server.address() as AddressInfo).port;
    if (isLoopback(this.opts.host)) {
      // A page elsewhere could reach a loopback server through a DNS name rebound to 127.0.0.1: only requests that
      // name the server by a loopback Host get an answer.
      this.allowedHosts = new Set(
        ['localhost', '127.0.0.1', '[::1]', this.opts.host.includes(':') ? `[${this.opts.host}]` : this.opts.host].map(
          (h) => `${h}:${String(port)}`,
        ),
      );
    }
    const host = this.opts.host.includes(':') ? `[${this.opts.host}]` : this.opts.host;
    return `http://${host}:${String(port)}/`;
  }

  private async tick(): Promise<void> {
    try {
      const { snapshot, sample } = await this.reader.read();
      snapshot.errors.push(...this.streamErrors.splice(0));
      const rates = computeRates(this.lastSample, sample);
      this.lastSample = sample;
      this.snapshot = snapshot;
      this.history.push(rates);
      if (this.history.length > HISTORY) this.history.shift();
      this.broadcast('sample', { snapshot, rates });
    } catch (e) {
      // read() reports the cluster's failures in the snapshot; anything else is a bug worth seeing on the page.
      const err = `dashboard: ${e instanceof Error ? e.message : String(e)}`;
      this.snapshot = { ...(this.snapshot ?? emptySnapshot(this.opts.dispatcher)), errors: [err] };
      this.broadcast('sample', { snapshot: this.snapshot, rates: null });
    }
    if (!this.closed) this.sampleTimer = setTimeout(() => void this.tick(), this.opts.intervalMs);
  }

  private flushEvents(): void {
    if (this.pendingEvents.length === 0) return;
    const batch = this.pendingEvents.slice(-EVENTS_KEPT);
    this.pendingEvents = [];
    this.events.push(...batch);
    this.events.splice(0, Math.max(0, this.events.length - EVENTS_KEPT));
    this.broadcast('events', batch);
  }

  private broadcast(name: string, data: unknown): void {
    const frame = `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
    for (const c of this.clients) {
      // A page that stopped reading (a stalled tab) is dropped rather than buffered without end; it reconnects.
      if (c.writableLength > MAX_UNSENT_BYTES) {
        this.clients.delete(c);
        c.destroy();
      } else c.write(frame);
    }
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    void this.route(req, res).catch((e: unknown) => {
      const status = e instanceof HttpError ? e.status : 500;
      const msg = e instanceof Error ? e.message : String(e);
      if (res.headersSent) {
        res.destroy();
        return;
      }
      this.send(res, status, 'application/json', JSON.stringify({ error: msg }));
    });
  }

  private send(res: ServerResponse, status: number, type: string, body: string | Buffer): void {
    res.writeHead(status, {
      'content-type': type,
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      'content-security-policy': "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
      'referrer-policy': 'no-referrer',
    });
    res.end(body);
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (this.allowedHosts && !this.allowedHosts.has(req.headers.host ?? '')) {
      throw new HttpError(403, `Host "${req.headers.host ?? ''}" is not this loopback server`);
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') throw new HttpError(405, `${req.method ?? '?'} not allowed`);
    const url = new URL(req.url ?? '/', 'http://dashboard');
    const asset = ASSETS[url.pathname];
    if (asset) {
      query(url, []);
      this.send(res, 200, asset.type, readFileSync(join(STATIC_DIR, asset.file)));
      return;
    }
    switch (url.pathname) {
      case '/api/snapshot': {
        const q = query(url, ['dataset']);
        const name = q.get('dataset');
        if (name !== undefined && !DATASET_NAME.test(name)) throw new HttpError(400, `bad dataset name "${name}"`);
        await this.firstSample;
        const snap = this.snapshot ?? emptySnapshot(this.opts.dispatcher);
        const datasets = name === undefined ? snap.datasets : snap.datasets.filter((d) => d.name === name);
        if (name !== undefined && datasets.length === 0) throw new HttpError(404, `no dataset "${name}"`);
        this.send(
          res,
          200,
          'application/json',
          JSON.stringify({
            snapshot: { ...snap, datasets },
            rates: this.history[this.history.length - 1] ?? null,
            history: this.history,
            events: this.events,
            intervalMs: this.opts.intervalMs,
          }),
        );
        return;
      }
      case '/api/events': {
        const limit = intParam(query(url, ['limit']), 'limit', 1, EVENTS_KEPT) ?? EVENTS_KEPT;
        this.send(res, 200, 'application/json', JSON.stringify(this.events.slice(-limit)));
        return;
      }
      case '/api/stream': {
        query(url, []);
        res.writeHead(200, {
          'content-type': 'text/event-stream',
          'cache-control': 'no-store',
          'x-content-type-options': 'nosniff',
        });
        res.write(`retry: ${String(Math.max(1000, this.opts.intervalMs))}\n\n`);
        this.clients.add(res);
        req.on('close', () => this.clients.delete(res));
        return;
      }
      default:
        throw new HttpError(404, `no such page: ${url.pathname}`);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.sampleTimer);
    clearInterval(this.flushTimer);
    for (const c of this.clients) c.end();
    this.clients.clear();
    this.reader.close();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

function emptySnapshot(dispatcher: string): ClusterSnapshot {
  return { atMs: Date.now(), dispatcher, epoch: 0, nodes: [], datasets: [], errors: [] };
}

/** Starts the dashboard; resolves once it listens. */
export async function startDashboard(opts: DashboardOptions): Promise<{ url: string; dashboard: Dashboard }> {
  const dashboard = new Dashboard(opts);
  try {
    return { url: await dashboard.listen(), dashboard };
  } catch (e) {
    await dashboard.close();
    throw e;
  }
}

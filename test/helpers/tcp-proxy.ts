// A user-space TCP forwarder for partition tests: this kernel has no netem or iptables, so a test that needs one
// link down (and only that link) points one side at the proxy instead of the real address and cuts the proxy.
// A cut destroys every forwarded connection and refuses new ones by destroying them as they arrive, so clients
// see errors at once (as after a dropped link whose peers notice), never a connection that hangs half-open.
import { createConnection, createServer, type AddressInfo, type Socket } from 'node:net';

export interface TcpProxy {
  /** host:port to give clients instead of the target. */
  readonly address: string;
  /** Destroys every open connection pair; new connections are destroyed on arrival until heal(). */
  cut(): void;
  /** Forwards new connections again (connections destroyed by cut() stay gone: clients reconnect). */
  heal(): void;
  /** Stops listening and destroys every socket. */
  close(): Promise<void>;
}

function splitHostPort(target: string): { host: string; port: number } {
  const i = target.lastIndexOf(':');
  const host = target.slice(0, i).replace(/^\[(.*)\]$/, '$1');
  const port = Number(target.slice(i + 1));
  if (i <= 0 || host === '' || !Number.isInteger(port) || port <= 0 || port > 65535) {
    throw new Error(`tcp-proxy: target must be host:port (got "${target}")`);
  }
  return { host, port };
}

/** Listens on 127.0.0.1:0 and forwards every connection to `target` (host:port). */
export async function startProxy(target: string): Promise<TcpProxy> {
  const to = splitHostPort(target);
  const sockets = new Set<Socket>();
  let isCut = false;
  let closed = false;

  const track = (s: Socket): void => {
    sockets.add(s);
    // Errors (ECONNRESET, EPIPE, a refused upstream) end the pair; they are expected in a partition test.
    s.on('error', () => undefined);
    s.once('close', () => sockets.delete(s));
  };
  const destroyAll = (): void => {
    for (const s of sockets) s.destroy();
    sockets.clear();
  };

  const server = createServer({ noDelay: true }, (client) => {
    track(client);
    if (isCut || closed) {
      client.destroy();
      return;
    }
    const upstream = createConnection({ host: to.host, port: to.port, noDelay: true });
    track(upstream);
    // One side gone (closed, reset or destroyed by cut) takes the other with it: pairs never linger half-open.
    client.once('close', () => upstream.destroy());
    upstream.once('close', () => client.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
  });
  server.on('error', () => undefined);

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;

  return {
    address: `127.0.0.1:${String(port)}`,
    cut() {
      isCut = true;
      destroyAll();
    },
    heal() {
      isCut = false;
    },
    async close() {
      if (closed) return;
      closed = true;
      destroyAll();
      // server.close waits for open connections, so it comes after every socket is destroyed.
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

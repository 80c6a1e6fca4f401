import { createServer } from 'node:net';

/** A TCP port free on 127.0.0.1 now (for servers that cannot report the port they bound, like the Prometheus one). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => {
        resolve(port);
      });
    });
  });
}

// A minimal RESP2 client over node:net for the Redis peer: one request in flight at a time (no pipelining), so
// every measured operation is a full round trip.
import { connect, type Socket } from 'node:net';

export type Reply = string | number | null | Reply[] | Error;

export class RespClient {
  private buf: Buffer = Buffer.alloc(0);
  private waiter: { resolve: (r: Reply) => void; reject: (e: Error) => void } | null = null;
  private failure: Error | null = null;

  private constructor(private readonly sock: Socket) {
    sock.setNoDelay(true);
    sock.on('data', (d: Buffer) => {
      this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
      this.drain();
    });
    const fail = (e: Error): void => {
      this.failure = e;
      const w = this.waiter;
      this.waiter = null;
      w?.reject(e);
    };
    sock.on('error', fail);
    sock.on('close', () => fail(new Error('redis connection closed')));
  }

  static open(port: number, host = '127.0.0.1'): Promise<RespClient> {
    return new Promise((resolve, reject) => {
      const s = connect({ port, host }, () => {
        s.off('error', reject);
        resolve(new RespClient(s));
      });
      s.once('error', reject);
    });
  }

  /** Sends one command and resolves with its reply (a Redis error reply resolves as an Error value). */
  call(...args: (string | Buffer)[]): Promise<Reply> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.waiter) return Promise.reject(new Error('RespClient: one command at a time'));
    const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
    for (const a of args) {
      const b = typeof a === 'string' ? Buffer.from(a) : a;
      parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'));
    }
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
      this.sock.write(Buffer.concat(parts));
    });
  }

  close(): void {
    this.sock.destroy();
  }

  private drain(): void {
    if (!this.waiter) return;
    const r = parse(this.buf, 0);
    if (r === null) return;
    this.buf = this.buf.subarray(r.next);
    const w = this.waiter;
    this.waiter = null;
    w.resolve(r.value);
  }
}

/** Parses one reply at `at`; null when the buffer does not hold a whole reply yet. */
function parse(b: Buffer, at: number): { value: Reply; next: number } | null {
  const eol = b.indexOf('\r\n', at);
  if (eol < 0) return null;
  const kind = String.fromCharCode(b[at] ?? 0);
  const line = b.toString('latin1', at + 1, eol);
  switch (kind) {
    case '+':
      return { value: line, next: eol + 2 };
    case '-':
      return { value: new Error(line), next: eol + 2 };
    case ':':
      return { value: Number(line), next: eol + 2 };
    case '$': {
      const len = Number(line);
      if (len < 0) return { value: null, next: eol + 2 };
      if (b.length < eol + 2 + len + 2) return null;
      return { value: b.toString('latin1', eol + 2, eol + 2 + len), next: eol + 2 + len + 2 };
    }
    case '*': {
      const n = Number(line);
      if (n < 0) return { value: null, next: eol + 2 };
      const items: Reply[] = [];
      let next = eol + 2;
      for (let i = 0; i < n; i++) {
        const r = parse(b, next);
        if (r === null) return null;
        items.push(r.value);
        next = r.next;
      }
      return { value: items, next };
    }
    default:
      throw new Error(`RESP: unexpected reply type ${JSON.stringify(kind)}`);
  }
}

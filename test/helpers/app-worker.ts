// A test application process: reads one JSON command per stdin line, answers one JSON line on stdout.
// Lets integration tests drive real apps (each its own process, on any node) through the public SDK.
import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import {
  connect,
  CommitConflictError,
  HotpotError,
  type Dataset,
  type Hotpot,
} from '../../clients/typescript/index.ts';

interface Cmd {
  op: string;
  [k: string]: unknown;
}

let hp: Hotpot | null = null;
let ds: Dataset | null = null;
let mem: Buffer | null = null;

function need<T>(v: T | null, what: string): T {
  if (v === null) throw new Error(`${what} first`);
  return v;
}

// Deterministic bytes for (seed, offset): lets tests check big ranges without shipping them.
function pattern(seed: number, offset: number, length: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) {
    const x = (offset + i) * 2654435761 + seed * 40503;
    b[i] = (x ^ (x >>> 13) ^ (x >>> 7)) & 0xff;
  }
  return b;
}

async function run(c: Cmd): Promise<unknown> {
  const num = (k: string, d?: number): number => {
    const v = c[k] ?? d;
    if (typeof v !== 'number') throw new Error(`missing number ${k}`);
    return v;
  };
  switch (c.op) {
    case 'connect':
      hp = await connect(typeof c.socket === 'string' ? { socketPath: c.socket } : {});
      return {};
    case 'open':
      ds = await need(hp, 'connect').open(String(c.name), c.create ? { create: c.create as never } : {});
      return ds.info;
    case 'map':
      mem = need(ds, 'open').map(num('offset', 0), num('length', 0));
      return { length: mem.length };
    case 'write': {
      const m = need(mem, 'map');
      Buffer.from(String(c.hex), 'hex').copy(m, num('offset'));
      return {};
    }
    case 'fill': {
      const m = need(mem, 'map');
      pattern(num('seed'), num('offset'), num('length')).copy(m, num('offset'));
      return {};
    }
    case 'read': {
      const m = need(mem, 'map');
      return { hex: m.subarray(num('offset'), num('offset') + num('length')).toString('hex') };
    }
    case 'check': {
      // Random-access verification of a pattern written by 'fill'.
      const m = need(mem, 'map');
      const off = num('offset');
      const len = num('length');
      const want = pattern(num('seed'), off, len);
      const order = [...Array(Math.ceil(len / 4096)).keys()].sort(() => Math.random() - 0.5);
      let bad = 0;
      for (const p of order) {
        const a = p * 4096;
        const b = Math.min(len, a + 4096);
        if (!m.subarray(off + a, off + b).equals(want.subarray(a, b))) bad++;
      }
      return { badPages: bad, pages: order.length };
    }
    case 'hash': {
      const m = need(mem, 'map');
      return {
        sha256: createHash('sha256')
          .update(m.subarray(num('offset'), num('offset') + num('length')))
          .digest('hex'),
      };
    }
    case 'syscallWrite': {
      // Hands the mapped memory to write(2): kernel-mode faults on unfetched pages must be served too.
      const m = need(mem, 'map');
      const fd = openSync(String(c.path), 'w');
      const n = writeSync(fd, m, num('offset'), num('length'));
      closeSync(fd);
      return {
        written: n,
        sha256: createHash('sha256')
          .update(readFileSync(String(c.path)))
          .digest('hex'),
      };
    }
    case 'commit':
      return await need(ds, 'open').commit(typeof c.replicas === 'number' ? { replicas: c.replicas } : {});
    case 'rollback':
      await need(ds, 'open').rollback();
      return {};
    case 'refresh':
      await need(ds, 'open').refresh();
      return {};
    case 'close':
      need(ds, 'open').close();
      ds = null;
      mem = null;
      return {};
    case 'exit':
      hp?.close();
      process.exit(0);
      break;
    default:
      throw new Error(`unknown op ${c.op}`);
  }
  return {};
}

const rl = createInterface({ input: process.stdin });
let chain = Promise.resolve();
rl.on('line', (line) => {
  chain = chain.then(async () => {
    let out: unknown;
    try {
      out = { ok: true, value: await run(JSON.parse(line) as Cmd) };
    } catch (e) {
      out = {
        ok: false,
        error: {
          code: e instanceof HotpotError ? e.code : 'INTERNAL',
          message: e instanceof Error ? e.message : String(e),
          conflicts: e instanceof CommitConflictError ? e.conflicts : undefined,
        },
      };
    }
    process.stdout.write(JSON.stringify(out) + '\n');
  });
});
process.stdout.write(JSON.stringify({ ready: true }) + '\n');

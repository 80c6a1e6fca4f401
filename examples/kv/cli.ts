// The key-value store from the shell, through the SDK on the local node:
//   node --import tsx examples/kv/cli.ts [--socket PATH] [--store NAME] COMMAND ...
// Commands: create [--size BYTES] [--replicas N] [--slots N] [--max-value BYTES], put KEY VALUE (VALUE - reads
// stdin), get KEY, del KEY, incr KEY [BY], scan [PREFIX] [--limit N], stats. Exit 0 ok, 1 error or key not found,
// 2 usage.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { connect, HotpotError } from '../../clients/typescript/index.ts';
import { KvError } from './layout.ts';
import { KvStore } from './store.ts';

const USAGE = `usage: node --import tsx examples/kv/cli.ts [--socket PATH] [--store NAME] COMMAND
  create [--size BYTES] [--replicas N] [--slots N] [--max-value BYTES]   create the dataset and format the store
  put KEY VALUE        (VALUE "-": read it from stdin)
  get KEY              print the value (exit 1 if absent)
  del KEY              (exit 1 if absent)
  incr KEY [BY]        add BY (default 1) to an 8-byte counter, print the new value
  scan [PREFIX] [--limit N]   print "key<TAB>value" lines, one consistent snapshot
  stats                slots, live keys, tombstones, heap use
--socket: the node's socket (default $HOTPOT_SOCKET, then ./.hotpot/cluster.json); --store: dataset name (default kv)`;

function usage(msg: string): never {
  process.stderr.write(`${msg}\n${USAGE}\n`);
  process.exit(2);
}

function int(what: string, v: string | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) usage(`${what} must be a non-negative integer`);
  return n;
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      socket: { type: 'string' },
      store: { type: 'string', default: 'kv' },
      size: { type: 'string' },
      replicas: { type: 'string' },
      slots: { type: 'string' },
      'max-value': { type: 'string' },
      limit: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const [cmd, ...args] = positionals;
  const arity: Record<string, [number, number]> = {
    create: [0, 0],
    put: [2, 2],
    get: [1, 1],
    del: [1, 1],
    incr: [1, 2],
    scan: [0, 1],
    stats: [0, 0],
  };
  const want = cmd === undefined ? undefined : arity[cmd];
  if (cmd === undefined || want === undefined) usage(cmd === undefined ? 'missing command' : `unknown command ${cmd}`);
  if (args.length < want[0] || args.length > want[1]) usage(`${cmd}: wrong number of arguments`);
  const hp = await connect(values.socket ? { socketPath: values.socket } : {});
  try {
    const name = values.store;
    const kv =
      cmd === 'create'
        ? await KvStore.open(hp, name, {
            create: {
              size: int('--size', values.size, 64 << 20),
              replicas: int('--replicas', values.replicas, 1),
              ...(values.slots ? { slots: int('--slots', values.slots, 0) } : {}),
              ...(values['max-value'] ? { maxValueBytes: int('--max-value', values['max-value'], 0) } : {}),
            },
          })
        : await KvStore.open(hp, name);
    const [a = '', b = ''] = args;
    const out = (s: string): void => {
      process.stdout.write(s + '\n');
    };
    switch (cmd) {
      case 'create': {
        const l = kv.layout;
        out(
          `store ${name}: ${String(l.slots)} slots, ${String(l.heapEnd - l.heapAt)} heap bytes, ${String(l.arenas)} arenas`,
        );
        return 0;
      }
      case 'put':
        await kv.put(a, b === '-' ? readFileSync(0) : b);
        return 0;
      case 'get': {
        const v = await kv.get(a);
        if (v === undefined) {
          process.stderr.write(`NOT_FOUND: ${a}\n`);
          return 1;
        }
        process.stdout.write(v);
        if (process.stdout.isTTY) process.stdout.write('\n');
        return 0;
      }
      case 'del':
        if (await kv.delete(a)) return 0;
        process.stderr.write(`NOT_FOUND: ${a}\n`);
        return 1;
      case 'incr': {
        let by: bigint;
        try {
          by = BigInt(b || '1');
        } catch {
          usage('incr: BY must be an integer');
        }
        out(String(await kv.increment(a, by)));
        return 0;
      }
      case 'scan': {
        const limit = int('--limit', values.limit, Number.MAX_SAFE_INTEGER);
        for (const e of await kv.scan({ prefix: a, limit })) out(`${e.key.toString()}\t${e.value.toString()}`);
        return 0;
      }
      default: {
        const s = await kv.stats();
        out(
          `slots ${String(s.slots)}, live ${String(s.live)}, tombstones ${String(s.tombstones)}, heap ${String(s.heapAllocated)} of ${String(s.heapBytes)} bytes allocated`,
        );
        return 0;
      }
    }
  } finally {
    hp.close();
  }
}

try {
  process.exitCode = await main();
} catch (e) {
  if (e instanceof KvError || e instanceof HotpotError) process.stderr.write(`${e.code}: ${e.message}\n`);
  else throw e;
  process.exitCode = 1;
}

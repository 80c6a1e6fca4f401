// Registration of the data commands (get, put, cat, dump, load, backup, restore) on the `hotpot` program.
import { Option, InvalidArgumentError, type Command } from 'commander';
import { parseSize } from '../common/sizes.ts';
import * as data from './data.ts';
import { printJson } from './output.ts';

export interface DataCommandContext {
  /** The dispatcher address after flags, env, context and cluster file. */
  dispatcher: () => string;
  json: () => boolean;
  version: string;
}

function byteCount(name: string, min: number) {
  return (v: string): number => {
    let n: number;
    try {
      n = /^\d+$/.test(v) ? Number(v) : parseSize(v);
    } catch (e) {
      throw new InvalidArgumentError(e instanceof Error ? e.message : String(e));
    }
    if (!Number.isSafeInteger(n) || n < min) {
      throw new InvalidArgumentError(`${name} must be a byte count >= ${String(min)} (e.g. 4096 or 4KiB)`);
    }
    return n;
  };
}

const nodeOption = (): Option =>
  new Option('--node <id>', 'node that serves the data (default: the first alive member)').argParser((v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1 || n > 2 ** 32 - 1) {
      throw new InvalidArgumentError('--node must be a node id (hotpot nodes)');
    }
    return n;
  });

const commitOption = (): Option =>
  new Option('--commit-size <size>', 'bytes per atomic commit, at most 256MiB (default 64MiB)')
    .argParser((v) => {
      const n = byteCount('--commit-size', 1)(v);
      if (n > 256 * 1024 * 1024) throw new InvalidArgumentError('--commit-size is at most 256MiB');
      return n;
    })
    .default(data.DEFAULT_COMMIT_BYTES, '64MiB');

function fileArg(v: string): string {
  if (v === '') throw new InvalidArgumentError('a file name, or - for stdout/stdin');
  return v;
}

export function registerDataCommands(program: Command, ctx: DataCommandContext): void {
  const target = (o: { node?: number }): data.Target => ({ dispatcher: ctx.dispatcher(), node: o.node });

  program
    .command('get <name>')
    .description("print a dataset's bytes (raw to stdout; --hex: offset and hex lines)")
    .option('--offset <n>', 'first byte (default 0)', byteCount('--offset', 0))
    .option('--length <n>', 'bytes (default: to the end)', byteCount('--length', 0))
    .option('--hex', 'hex lines instead of raw bytes')
    .addOption(nodeOption())
    .action(async (name: string, o: { offset?: number; length?: number; hex?: boolean; node?: number }) => {
      await data.get(target(o), name, { offset: o.offset, length: o.length, hex: o.hex === true, json: ctx.json() });
    });

  program
    .command('put <name>')
    .description('write bytes from stdin or --data at --offset, as one atomic commit (at most 64MiB)')
    .option('--offset <n>', 'first byte (default 0)', byteCount('--offset', 0))
    .option('--data <text>', 'the bytes to write, as UTF-8 text (default: read stdin)')
    .addOption(nodeOption())
    .action(async (name: string, o: { offset?: number; data?: string; node?: number }) => {
      const bytes =
        o.data !== undefined
          ? Buffer.from(o.data, 'utf8')
          : await data.readAllBounded(process.stdin, data.MAX_PUT_BYTES, 'stdin');
      const r = await data.put(target(o), name, bytes, o.offset);
      if (ctx.json()) printJson(r);
      else {
        process.stdout.write(
          `wrote ${String(r.bytes)} byte(s) at offset ${String(r.offset)} of ${name}: committed, ` +
            `${String(r.copies)} cop${r.copies === 1 ? 'y' : 'ies'}${r.underReplicated ? ' (under-replicated)' : ''}\n`,
        );
      }
    });

  program
    .command('cat <name>')
    .description('stream a whole dataset to stdout (each 1 MiB piece whole; `hotpot dump` for one snapshot)')
    .addOption(nodeOption())
    .action(async (name: string, o: { node?: number }) => {
      await data.cat(target(o), name);
    });

  program
    .command('dump')
    .argument('<name>', 'dataset')
    .argument('<file>', 'output file, - for stdout', fileArg)
    .description('write one consistent snapshot of a dataset to FILE (progress on a terminal)')
    .addOption(nodeOption())
    .action(async (name: string, file: string, o: { node?: number }) => {
      const r = await data.dump(target(o), name, file);
      if (file === '-') return;
      if (ctx.json()) printJson({ dataset: name, file, ...r });
      else process.stdout.write(`dumped ${name} to ${file}: ${String(r.bytes)} bytes, one consistent snapshot\n`);
    });

  program
    .command('load')
    .argument('<file>', 'input file, - for stdin', fileArg)
    .argument('<name>', 'dataset')
    .description('write FILE into a dataset from offset 0, in atomic commits of --commit-size (progress on a terminal)')
    .option('--create', 'create the dataset first if it does not exist (size: the file size or --size)')
    .option('--size <size>', 'size of a dataset --create makes (default: the file size)', byteCount('--size', 1))
    .addOption(new Option('--mode <mode>', 'consistency mode of a created dataset').choices(['mrmw', 'mrsw']))
    .option('--replicas <n>', 'replication N of a created dataset (default 1)', (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1 || n > 64) throw new InvalidArgumentError('--replicas must be 1..64');
      return n;
    })
    .addOption(commitOption())
    .addOption(nodeOption())
    .action(
      async (
        file: string,
        name: string,
        o: {
          create?: boolean;
          size?: number;
          mode?: string;
          replicas?: number;
          commitSize: number;
          node?: number;
        },
      ) => {
        if (!o.create && (o.size !== undefined || o.mode !== undefined || o.replicas !== undefined)) {
          throw new data.DataUsageError('--size, --mode and --replicas go with --create');
        }
        const r = await data.load(target(o), file, name, {
          create: o.create ? { sizeBytes: o.size, mode: o.mode ?? 'mrmw', replicas: o.replicas ?? 1 } : undefined,
          commitBytes: o.commitSize,
        });
        if (ctx.json()) printJson({ file, ...r });
        else {
          process.stdout.write(
            `loaded ${String(r.bytes)} bytes of ${file} into ${name} in ${String(r.commits)} commit(s)\n`,
          );
        }
      },
    );

  program
    .command('backup')
    .argument('<name>', 'dataset')
    .argument('<file>', 'backup file, - for stdout', fileArg)
    .description("save a dataset's metadata (size, mode, replicas, owner, permissions) and one consistent snapshot")
    .addOption(nodeOption())
    .action(async (name: string, file: string, o: { node?: number }) => {
      const r = await data.backup(target(o), name, file, ctx.version);
      if (file === '-') return;
      if (ctx.json()) printJson({ file, ...r });
      else process.stdout.write(`backed up ${name} to ${file}: ${String(r.bytes)} bytes and its metadata\n`);
    });

  program
    .command('restore')
    .argument('<file>', 'backup file (made by hotpot backup)', fileArg)
    .argument('[name]', 'dataset to create (default: the name in the backup)')
    .description('check a backup file whole, then create the dataset it describes and write its bytes')
    .addOption(commitOption())
    .addOption(nodeOption())
    .action(async (file: string, name: string | undefined, o: { commitSize: number; node?: number }) => {
      if (file === '-') throw new data.DataUsageError('restore reads a file (it is checked whole before use), not -');
      const r = await data.restore(target(o), file, name, { commitBytes: o.commitSize });
      if (ctx.json()) printJson({ file, ...r });
      else {
        process.stdout.write(
          `restored ${r.dataset} from ${file}: ${String(r.meta.sizeBytes)} bytes, ${r.meta.mode}, ` +
            `${String(r.meta.replicas)} replica(s), owner ${String(r.meta.ownerUid)}:${String(r.meta.ownerGid)} ` +
            `0${r.meta.permissions.toString(8)}\n`,
        );
        if (r.chunkSizeDiffers) {
          process.stdout.write(
            `note: the backup's chunk size (${String(r.meta.chunkSizeBytes)}) differs from this cluster's\n`,
          );
        }
      }
    });
}

// The `hotpot` command line (commander). Exit codes: 0 ok, 1 failure, 2 usage.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { ConfigError, defined, validateConfig } from '../common/config.ts';
import { parseDebugMask } from '../common/debug-mask.ts';
import { HotpotError } from '../common/errors.ts';
import { projectRoot } from '../common/paths.ts';
import { unary } from '../common/rpc.ts';
import { formatSize, parseSize } from '../common/sizes.ts';
import type { Chunk__Output } from '../generated/hotpot/v1/Chunk.ts';
import type { CreateDatasetResponse__Output } from '../generated/hotpot/v1/CreateDatasetResponse.ts';
import type { Dataset__Output } from '../generated/hotpot/v1/Dataset.ts';
import type { ListDatasetsResponse__Output } from '../generated/hotpot/v1/ListDatasetsResponse.ts';
import type { ListNodesResponse__Output } from '../generated/hotpot/v1/ListNodesResponse.ts';
import type { StatDatasetResponse__Output } from '../generated/hotpot/v1/StatDatasetResponse.ts';
import type { NodeInfo__Output } from '../generated/hotpot/v1/NodeInfo.ts';
import type { ForgetLostPagesResponse__Output } from '../generated/hotpot/v1/ForgetLostPagesResponse.ts';
import type { SetDatasetAccessResponse__Output } from '../generated/hotpot/v1/SetDatasetAccessResponse.ts';
import { permString } from '../common/access.ts';
import type { ResizeDatasetResponse__Output } from '../generated/hotpot/v1/ResizeDatasetResponse.ts';
import type { CreateTokenResponse__Output } from '../generated/hotpot/v1/CreateTokenResponse.ts';
import type { ListTokensResponse__Output } from '../generated/hotpot/v1/ListTokensResponse.ts';
import type { ListRevokedCertificatesResponse__Output } from '../generated/hotpot/v1/ListRevokedCertificatesResponse.ts';
import type { RevokeCertificateResponse__Output } from '../generated/hotpot/v1/RevokeCertificateResponse.ts';
import type { TokenInfo__Output } from '../generated/hotpot/v1/TokenInfo.ts';
import { dispatcherAddress, dispatcherClient, tlsDir } from './client.ts';
import { registerDashboard } from './dashboard.ts';
import { CertError, certFingerprint, initCa, issueCert, listCerts, ROLES, type Role } from '../common/certs.ts';
import { groupByPattern, groupRuns, printJson, table } from './output.ts';
import { registerDataCommands } from './data-commands.ts';
import { registerCompletionCommand } from './completion.ts';
import { applyContext, registerContextCommands } from './contexts.ts';
import { explainConnectionError, type ConnectionContext } from './errors.ts';
import { DataUsageError } from './data.ts';
import { BackupFormatError } from './backup-format.ts';

class UsageError extends Error {}

/** Runs a certificate operation; its errors (bad name, no CA, openssl failed) are usage errors. */
function certOp<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof CertError) throw new UsageError(e.message);
    throw e;
  }
}

function sizeArg(v: string): number {
  try {
    return parseSize(v);
  } catch (e) {
    throw new InvalidArgumentError(e instanceof Error ? e.message : String(e));
  }
}

function intArg(name: string, min: number, max: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${name} must be an integer from ${String(min)} to ${String(max)}`);
    }
    return n;
  };
}

/** An on/off environment variable: "1" on, "0" off, unset or empty: not given. */
function envSwitch(name: string): boolean | undefined {
  const v = process.env[name];
  if (v === undefined || v === '') return undefined;
  if (v === '1') return true;
  if (v === '0') return false;
  throw new UsageError(`${name} must be 1 (on) or 0 (off), got "${v}"`);
}

function maskArg(v: string): number {
  try {
    return parseDebugMask(v);
  } catch (e) {
    throw new InvalidArgumentError(e instanceof Error ? e.message : String(e));
  }
}

const shortMode = (m: string): string => m.replace('CONSISTENCY_MODE_', '').toLowerCase();
const shortState = (s: string): string => s.replace('NODE_STATE_', '').toLowerCase();

function datasetJson(d: Dataset__Output | null, chunks?: Chunk__Output[]): unknown {
  if (!d) return null;
  return {
    name: d.name,
    id: d.id,
    sizeBytes: d.sizeBytes,
    mode: shortMode(d.mode),
    replicas: d.replicas,
    chunkSizeBytes: d.chunkSizeBytes,
    chunkCount: d.chunkCount,
    createdUnixMs: d.createdUnixMs,
    generation: d.generation,
    owner: { uid: d.ownerUid, gid: d.ownerGid },
    permissions: `0${d.permissions.toString(8).padStart(3, '0')}`,
    ...(chunks
      ? {
          chunks: chunks.map((c) => ({
            index: c.index,
            owner: c.ownerNodeId,
            replicas: c.replicaNodeIds,
            ownerAlive: c.ownerAlive,
            ownerRecovering: c.ownerRecovering,
            era: c.era,
            lostPages: c.lostPages.map((r) => ({ firstPage: r.firstPage, count: r.count })),
          })),
        }
      : {}),
  };
}

function nodeJson(n: NodeInfo__Output): unknown {
  return {
    id: n.id,
    identity: n.identity,
    state: shortState(n.state),
    controlAddress: n.controlAddress,
    dataAddress: n.dataAddress,
    leaseExpiresUnixMs: n.leaseExpiresUnixMs,
    joinedUnixMs: n.joinedUnixMs,
    stateEpoch: n.stateEpoch,
    storeId: n.storeId,
    storeIncarnation: n.storeIncarnation,
    storeReplacedEpoch: n.storeReplacedEpoch,
    replicatedThroughEpoch: n.replicatedThroughEpoch,
  };
}

/** Live copies per chunk as its owner sees them (`hotpot stat NAME`), when the owners could be asked. */
type CopiesView = Map<number, { live: number; wanted: number; underReplicated: boolean; down: number[] }>;

function copiesCell(c: Chunk__Output, copies: CopiesView | undefined): string {
  const v = copies?.get(c.index);
  if (!v) return c.ownerAlive ? '?' : '-';
  const down = v.down.length > 0 ? ` (down: ${v.down.join(',')})` : '';
  return `${String(v.live)}/${String(v.wanted)}${v.underReplicated ? ' UNDER' : ''}${down}`;
}

/** Chunk maps longer than this print consecutive alike chunks as ranges, or, when those are many, by pattern. */
const GROUP_CHUNKS_ABOVE = 64;
/** `--json` lists every chunk up to this many (a 64 GiB dataset of 4 MiB chunks); beyond, groups (and --chunks). */
const JSON_CHUNKS_UP_TO = 16_384;

/** The cells of a chunk's row after its index (`hotpot stat`). */
function chunkCells(c: Chunk__Output, copies: CopiesView | undefined): (string | number)[] {
  return [
    c.ownerNodeId,
    c.replicaNodeIds.join(','),
    c.ownerAlive ? (c.ownerRecovering ? 'recovering' : 'yes') : 'NO (dead)',
    c.era,
    copiesCell(c, copies),
  ];
}

/** `--chunks FROM[-TO]`: an inclusive range of chunk indexes. */
function chunkRangeArg(v: string): { from: number; to: number } {
  const m = /^(\d{1,10})(?:-(\d{1,10}))?$/.exec(v);
  if (!m?.[1]) throw new InvalidArgumentError('--chunks takes FROM or FROM-TO (chunk indexes, e.g. 0-99)');
  const from = Number(m[1]);
  const to = m[2] === undefined ? from : Number(m[2]);
  if (to < from) throw new InvalidArgumentError(`--chunks ${v}: the range ends before it starts`);
  return { from, to };
}

function printDataset(
  d: Dataset__Output,
  chunks: Chunk__Output[] | null,
  copies?: CopiesView,
  range?: { from: number; to: number },
): void {
  process.stdout.write(
    `dataset ${d.name} (id ${String(d.id)}): ${formatSize(d.sizeBytes)}, ${shortMode(d.mode)}, ` +
      `${String(d.replicas)} replica(s), ${String(d.chunkCount)} chunk(s) of ${formatSize(d.chunkSizeBytes)}, ` +
      `owner ${String(d.ownerUid)}:${String(d.ownerGid)} ${permString(d.permissions)}\n`,
  );
  if (chunks) {
    const headers = ['OWNER', 'REPLICAS', 'OWNER ALIVE', 'ERA', 'LIVE COPIES'];
    if (range) {
      // The chunks asked for, one row each.
      const rows = chunks.filter((c) => c.index >= range.from && c.index <= range.to);
      process.stdout.write(
        table(
          ['CHUNK', ...headers],
          rows.map((c) => [c.index, ...chunkCells(c, copies)]),
        ),
      );
    } else {
      const rows = chunks.map((c) => [c.index, ...chunkCells(c, copies)]);
      // A big map (a 1 TiB dataset has 262 144 chunks): consecutive alike chunks as one range; when that still makes
      // many rows (round-robin placement: neighbours differ), one row per owner, replicas and state, naming its chunks
      // as strided ranges. --chunks lists any range one by one.
      const runs = rows.length > GROUP_CHUNKS_ABOVE ? groupRuns(rows) : rows;
      if (runs.length <= GROUP_CHUNKS_ABOVE) {
        process.stdout.write(table(['CHUNK', ...headers], runs));
        if (runs !== rows) {
          process.stdout.write(
            `(${String(rows.length)} chunks in ${String(runs.length)} rows: consecutive chunks alike are one range)\n`,
          );
        }
      } else {
        const groups = groupByPattern(rows);
        process.stdout.write(
          table(
            ['CHUNKS', 'WHICH', ...headers],
            groups.map((g) => [g.count, g.which, ...g.rest]),
          ),
        );
        process.stdout.write(
          `(${String(rows.length)} chunks by owner, replicas and state; \`hotpot stat ${d.name} --chunks FROM-TO\` ` +
            'lists chunks one by one)\n',
        );
      }
    }
    const lost = chunks.flatMap((c) => c.lostPages);
    if (lost.length > 0) {
      const pages = lost.reduce((n, r) => n + r.count, 0);
      const shown = lost
        .slice(0, 32)
        .map((r) =>
          r.count > 1 ? `${String(r.firstPage)}-${String(r.firstPage + r.count - 1)}` : String(r.firstPage),
        );
      process.stdout.write(
        `LOST PAGES: ${String(pages)} (no copy survived; reads and commits of them fail with DATA_LOSS; ` +
          `\`hotpot forget-lost ${d.name}\` accepts the loss and they read as zeros): ` +
          `${shown.join(', ')}${lost.length > shown.length ? `, ... (${String(lost.length)} ranges)` : ''}\n`,
      );
    }
  }
}

/** The project's version (package.json). */
function hotpotVersion(): string {
  const pkg = JSON.parse(readFileSync(join(projectRoot, 'package.json'), 'utf8')) as { version?: string };
  return pkg.version ?? 'unknown';
}

/** What the environment sets beyond the flags (logs, traces, metrics, timeouts), for `hotpot --help`. */
const ENVIRONMENT_HELP = `
Environment (beside the variables the options name; docs/observability.md, docs/operations.md):
  HOTPOT_LOG_LEVEL           trace | debug | info | warn | error (default info)
  HOTPOT_LOG_FORMAT          json | pretty (default: pretty on a terminal, json otherwise)
  HOTPOT_TRACES_EXPORTER     none | console | otlp | jsonl (or OTEL_TRACES_EXPORTER; otlp sends to
                             OTEL_EXPORTER_OTLP_ENDPOINT, jsonl writes HOTPOT_TRACES_FILE); default none
  HOTPOT_TRACE_BACKGROUND=1  also trace heartbeats, watches and other background calls
  HOTPOT_METRICS_EXPORTER    none | otlp | prometheus, for nodes (HOTPOT_DISPATCHER_METRICS_EXPORTER for the
                             dispatcher); HOTPOT_PROMETHEUS_PORT / HOTPOT_DISPATCHER_PROMETHEUS_PORT its port
                             (hotpot up: one port per node from 9464, the dispatcher the one below)
  HOTPOT_OWNER_WAIT_MS       how long a page fault or an MRSW acquire waits for a dead owner's failover
                             (node; default 10000)
`;

export function buildProgram(): Command {
  const program = new Command('hotpot')
    .description('Hotpot: distributed shared persistent memory')
    .version(hotpotVersion(), '-V, --version', 'print the version and exit')
    .option(
      '--dispatcher <host:port[,…]>',
      'dispatcher address, or the addresses of a leader and its standbys, which is followed (default: ' +
        '$HOTPOT_DISPATCHER, the context, ./.hotpot/cluster.json, 127.0.0.1:18500)',
    )
    .option('--json', 'machine-readable output')
    .option(
      '--tls-dir <dir>',
      "the cluster CA and certificates (default: $HOTPOT_TLS_DIR, hotpot up's <state-dir>/tls, ./.hotpot/tls)",
    )
    .option(
      '--cert <name>',
      'client certificate in the TLS dir, e.g. admin or user.alice (default: $HOTPOT_CERT, admin)',
    )
    .option('--token-file <path>', 'a bearer token instead of a certificate (or env HOTPOT_TOKEN)')
    .option('--insecure', 'plaintext, unauthenticated gRPC: development only (env HOTPOT_INSECURE=1)')
    .option('--context <name>', 'a named cluster from the config file (env HOTPOT_CONTEXT; hotpot context ls)')
    .addHelpText('after', ENVIRONMENT_HELP)
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  const globals = (): {
    dispatcher?: string;
    json?: boolean;
    tlsDir?: string;
    cert?: string;
    tokenFile?: string;
    insecure?: boolean;
    context?: string;
  } => program.opts();
  // The security flags reach every client and daemon this process makes through the environment (flags win).
  program.hook('preAction', (_program, action) => {
    const g = globals();
    // The context is applied under the environment, and the flags below over both.
    applyContext(action, g.context);
    if (action.parent?.name() === 'context') return;
    if (g.tlsDir !== undefined) process.env.HOTPOT_TLS_DIR = g.tlsDir;
    if (g.cert !== undefined) process.env.HOTPOT_CERT = g.cert;
    if (g.insecure) process.env.HOTPOT_INSECURE = '1';
    if (g.tokenFile !== undefined) {
      try {
        process.env.HOTPOT_TOKEN = readFileSync(g.tokenFile, 'utf8').trim();
      } catch (e) {
        throw new UsageError(`--token-file: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  });
  const client = () => dispatcherClient(dispatcherAddress(globals().dispatcher));

  const dispatcherCommand = program
    .command('dispatcher')
    .description('run the central dispatcher')
    .option('--listen <host:port>', 'gRPC listen address (env HOTPOT_LISTEN)')
    .option(
      '--advertise <host:port>',
      'the address clients reach this dispatcher at, which standbys name to them (default: --listen; needed when ' +
        'it listens on 0.0.0.0 or [::]; env HOTPOT_ADVERTISE)',
    )
    .option('--state-dir <dir>', 'metadata directory (env HOTPOT_STATE_DIR)')
    .option(
      '--store <store>',
      'where the state is: lmdb:DIR (default lmdb:<state-dir>) or etcd://host:port[,host:port…] for standby ' +
        'dispatchers that take over (env HOTPOT_STORE)',
    )
    .option('--etcd-ca <file>', "CA of etcd's certificate: TLS to etcd (env HOTPOT_ETCD_CA)")
    .option('--etcd-cert <file>', 'client certificate for etcd, with --etcd-key (env HOTPOT_ETCD_CERT)')
    .option('--etcd-key <file>', 'key of --etcd-cert (env HOTPOT_ETCD_KEY)')
    .option('--etcd-user <user>', 'etcd user; its password from HOTPOT_ETCD_PASSWORD (env HOTPOT_ETCD_USER)')
    .option(
      '--etcd-prefix <prefix>',
      "key prefix of this cluster's state in etcd (default /hotpot/; env HOTPOT_ETCD_PREFIX)",
    )
    .option(
      '--election-ttl <s>',
      'etcd election lease in seconds: a standby takes over this long after the leader dies (default 3; env ' +
        'HOTPOT_ELECTION_TTL)',
      intArg('--election-ttl', 1, 60),
    )
    .option('--lease-ms <ms>', 'node lease length (env HOTPOT_LEASE_MS)', intArg('--lease-ms', 100, 600_000))
    .option('--chunk-size <size>', 'chunk size, e.g. 4MiB (env HOTPOT_CHUNK_SIZE)', sizeArg)
    .option('--failover', "give a dead owner's chunks to a live node (the default; env HOTPOT_FAILOVER=1)")
    .option('--no-failover', "a dead owner's chunks wait for it to return (env HOTPOT_FAILOVER=0)")
    .action(
      async (o: {
        listen?: string;
        advertise?: string;
        stateDir?: string;
        store?: string;
        etcdCa?: string;
        etcdCert?: string;
        etcdKey?: string;
        etcdUser?: string;
        etcdPrefix?: string;
        electionTtl?: number;
        leaseMs?: number;
        chunkSize?: number;
        failover?: boolean;
      }) => {
        const { DispatcherConfig, runDispatcher } = await import('../dispatcher/main.ts');
        const env = process.env;
        const cfg = validateConfig(DispatcherConfig, {
          ...defined({
            listen: env.HOTPOT_LISTEN,
            advertise: env.HOTPOT_ADVERTISE,
            stateDir: env.HOTPOT_STATE_DIR,
            store: env.HOTPOT_STORE,
            etcdCa: env.HOTPOT_ETCD_CA,
            etcdCert: env.HOTPOT_ETCD_CERT,
            etcdKey: env.HOTPOT_ETCD_KEY,
            etcdUser: env.HOTPOT_ETCD_USER,
            etcdPassword: env.HOTPOT_ETCD_PASSWORD,
            etcdPrefix: env.HOTPOT_ETCD_PREFIX,
            electionTtlS: env.HOTPOT_ELECTION_TTL ? Number(env.HOTPOT_ELECTION_TTL) : undefined,
            leaseMs: env.HOTPOT_LEASE_MS ? Number(env.HOTPOT_LEASE_MS) : undefined,
            chunkSizeBytes: env.HOTPOT_CHUNK_SIZE ? parseSize(env.HOTPOT_CHUNK_SIZE) : undefined,
            clusterSecret: env.HOTPOT_CLUSTER_SECRET,
            failover: envSwitch('HOTPOT_FAILOVER'),
            tlsDir: env.HOTPOT_TLS_DIR,
            insecure: envSwitch('HOTPOT_INSECURE'),
          }),
          ...defined({
            listen: o.listen,
            advertise: o.advertise,
            stateDir: o.stateDir,
            store: o.store,
            etcdCa: o.etcdCa,
            etcdCert: o.etcdCert,
            etcdKey: o.etcdKey,
            etcdUser: o.etcdUser,
            etcdPrefix: o.etcdPrefix,
            electionTtlS: o.electionTtl,
            leaseMs: o.leaseMs,
            chunkSizeBytes: o.chunkSize,
            failover: o.failover,
          }),
        });
        await runDispatcher(cfg);
        return new Promise<void>(() => undefined);
      },
    );

  dispatcherCommand
    .command('migrate')
    .description(
      "copy a stopped dispatcher's whole state from one store to an empty one (lmdb:DIR to etcd://…, or back), then " +
        'read it back and compare; without --yes, only says what it would copy. etcd: the --etcd-* options and ' +
        '--election-ttl of `hotpot dispatcher` (and their HOTPOT_ETCD_* variables)',
    )
    .requiredOption('--from <store>', 'the source: lmdb:DIR or etcd://host:port[,host:port…]')
    .requiredOption('--to <store>', 'the target (empty): lmdb:DIR or etcd://host:port[,host:port…]')
    .option(
      '--wait <s>',
      "give up after this long if a dispatcher holds the etcd prefix's election key (default 10)",
      intArg('--wait', 1, 600),
    )
    .option('--yes', 'copy (without it nothing is written)')
    .action(async (_o: unknown, cmd: Command) => {
      // The etcd options (--etcd-*, --election-ttl) are the dispatcher command's: commander gives them to it.
      const { migrateConfig, MigrateRefused, migrate } = await import('../dispatcher/migrate.ts');
      const cfg = migrateConfig(cmd.optsWithGlobals());
      let r;
      try {
        r = await migrate(cfg);
      } catch (e) {
        if (e instanceof MigrateRefused) throw new HotpotError('FAILED_PRECONDITION', e.message);
        throw e;
      }
      if (globals().json) printJson(r);
      else {
        process.stdout.write(`${r.copied ? 'copied' : 'would copy'} ${r.from} -> ${r.to}:\n`);
        for (const k of r.kinds) {
          const chunks = k.chunks === undefined ? '' : ` (${String(k.chunks)} chunks)`;
          const check = k.verified === undefined ? '' : k.verified ? ', read back: same' : ', read back: DIFFERENT';
          process.stdout.write(`  ${k.kind}: ${String(k.records)}${chunks}, sha256 ${k.digest.slice(0, 16)}${check}\n`);
        }
      }
      if (!r.copied) throw new UsageError('nothing written: add --yes to copy');
    });

  program
    .command('node')
    .description('run a node daemon')
    .option('--listen <host:port>', 'gRPC listen address (env HOTPOT_LISTEN)')
    .option('--name <identity>', 'stable node identity (default: a uuid kept in the state dir)')
    .option('--state-dir <dir>', 'state directory (env HOTPOT_STATE_DIR)')
    .option('--chunk-size <size>', 'chunk size; must match the dispatcher', sizeArg)
    .option('--pool-dir <dir>', 'PM pool directory (default /dev/shm/hotpot/<identity>; env HOTPOT_POOL_DIR)')
    .addOption(
      new Option('--durability <mode>', 'memory: PM pool only; disk: also fdatasync to the state dir').choices([
        'memory',
        'disk',
      ]),
    )
    .addOption(
      new Option(
        '--transport <kind>',
        'data plane between nodes: tcp (default) or rdma (needs kmod/hotpot_rdma.ko; env HOTPOT_TRANSPORT)',
      ).choices(['tcp', 'rdma']),
    )
    .option('--socket <path>', 'unix socket for apps (default <state-dir>/node.sock; env HOTPOT_SOCKET)')
    .option(
      '--socket-group <group>',
      'group whose members may connect to the app sockets, mode 0660 (default hotpot if it exists; env HOTPOT_SOCKET_GROUP)',
    )
    .option('--secret-file <path>', 'file holding the cluster secret (or env HOTPOT_CLUSTER_SECRET)')
    .option(
      '--data-idle-timeout <ms>',
      'close gRPC Data sessions idle this long (default 300000; env HOTPOT_DATA_IDLE_TIMEOUT_MS)',
      intArg('--data-idle-timeout', 100, 86_400_000),
    )
    .action(
      async (o: {
        dataIdleTimeout?: number;
        listen?: string;
        name?: string;
        stateDir?: string;
        chunkSize?: number;
        poolDir?: string;
        durability?: string;
        transport?: string;
        socket?: string;
        socketGroup?: string;
        secretFile?: string;
      }) => {
        // Loaded on demand: only the node daemon needs the native engine.
        const { NodeConfig, runNode } = await import('../node/main.ts');
        const env = process.env;
        const cfg = validateConfig(NodeConfig, {
          ...defined({
            dispatcher: env.HOTPOT_DISPATCHER,
            listen: env.HOTPOT_LISTEN,
            name: env.HOTPOT_NODE_NAME,
            stateDir: env.HOTPOT_STATE_DIR,
            chunkSizeBytes: env.HOTPOT_CHUNK_SIZE ? parseSize(env.HOTPOT_CHUNK_SIZE) : undefined,
            poolDir: env.HOTPOT_POOL_DIR,
            durability: env.HOTPOT_DURABILITY,
            transport: env.HOTPOT_TRANSPORT,
            socket: env.HOTPOT_SOCKET,
            socketGroup: env.HOTPOT_SOCKET_GROUP,
            clusterSecret: env.HOTPOT_CLUSTER_SECRET,
            dataIdleTimeoutMs: env.HOTPOT_DATA_IDLE_TIMEOUT_MS ? Number(env.HOTPOT_DATA_IDLE_TIMEOUT_MS) : undefined,
            requestTimeoutMs: env.HOTPOT_REQUEST_TIMEOUT_MS ? Number(env.HOTPOT_REQUEST_TIMEOUT_MS) : undefined,
            ownerWaitMs: env.HOTPOT_OWNER_WAIT_MS ? Number(env.HOTPOT_OWNER_WAIT_MS) : undefined,
            tlsDir: env.HOTPOT_TLS_DIR,
            insecure: envSwitch('HOTPOT_INSECURE'),
          }),
          ...defined({
            dispatcher: globals().dispatcher,
            listen: o.listen,
            name: o.name,
            stateDir: o.stateDir,
            chunkSizeBytes: o.chunkSize,
            poolDir: o.poolDir,
            durability: o.durability,
            transport: o.transport,
            socket: o.socket,
            socketGroup: o.socketGroup,
            clusterSecret: o.secretFile ? readFileSync(o.secretFile, 'utf8').trim() : undefined,
            dataIdleTimeoutMs: o.dataIdleTimeout,
          }),
        });
        await runNode(cfg);
        return new Promise<void>(() => undefined);
      },
    );

  program
    .command('up')
    .description('start a local cluster (dispatcher + N nodes) under ./.hotpot; Ctrl-C stops it')
    .addOption(new Option('--nodes <n>', 'number of nodes').default(3).argParser(intArg('--nodes', 1, 64)))
    .option('--state-dir <dir>', 'state directory', '.hotpot')
    .addOption(new Option('--lease-ms <ms>', 'node lease').default(3000).argParser(intArg('--lease-ms', 100, 600_000)))
    .option(
      '--ha',
      'also 3 etcd members and 2 dispatchers with their state in etcd (one standby, started again when it exits), ' +
        'to try failover: kill the leading dispatcher (node lease at least 10 s)',
    )
    .action(async (o: { nodes: number; stateDir: string; leaseMs: number; ha?: boolean }) => {
      const { runUp } = await import('./up.ts');
      await runUp(o);
    });

  const certs = program
    .command('certs')
    .description('the cluster CA and certificates: every gRPC connection is mutual TLS (docs/security.md)');
  certs
    .command('init')
    .description('create the cluster CA (ca.crt, ca.key) in the TLS dir unless it is there')
    .option('--days <n>', 'validity of the CA', intArg('--days', 1, 36500))
    .action((o: { days?: number }) => {
      const dir = tlsDir(globals().tlsDir);
      const made = certOp(() => initCa(dir, o.days === undefined ? {} : { days: o.days }));
      if (globals().json) printJson({ dir, created: made });
      else process.stdout.write(made ? `created the cluster CA in ${dir}\n` : `the cluster CA in ${dir} is kept\n`);
    });
  certs
    .command('issue <role> <name>')
    .description(
      "issue a certificate signed by the CA (role: dispatcher, node, admin, user); a node's name is its identity " +
        "(--name); a user's datasets are checked as its --uid:--gid",
    )
    .option(
      '--host <name-or-ip>',
      'an address a dispatcher or node is reached at (repeat)',
      (v, a: string[]) => [...a, v],
      [],
    )
    .option('--uid <uid>', "a user's uid", intArg('--uid', 0, 4294967294))
    .option('--gid <gid>', "a user's gid", intArg('--gid', 0, 4294967294))
    .option('--days <n>', 'validity', intArg('--days', 1, 3650))
    .option('--force', 'replace an existing certificate of that name')
    .action(
      (
        role: string,
        name: string,
        o: { host: string[]; uid?: number; gid?: number; days?: number; force?: boolean },
      ) => {
        if (!(ROLES as readonly string[]).includes(role))
          throw new UsageError(`role must be one of ${ROLES.join(', ')}`);
        if (role === 'user' && (o.uid === undefined || o.gid === undefined)) {
          throw new UsageError('a user certificate needs --uid and --gid (its datasets are checked as that uid:gid)');
        }
        const dir = tlsDir(globals().tlsDir);
        const p = certOp(() =>
          issueCert(dir, {
            role: role as Role,
            name,
            hosts: o.host,
            ...defined({ uid: o.uid, gid: o.gid, days: o.days, force: o.force }),
          }),
        );
        if (globals().json) printJson({ cert: p.cert, key: p.key, ca: p.ca });
        else process.stdout.write(`issued ${p.cert} (key ${p.key}, mode 0600)\n`);
      },
    );
  certs
    .command('list')
    .description('the certificates in the TLS dir: role, name, expiry')
    .action(() => {
      const dir = tlsDir(globals().tlsDir);
      const rows = certOp(() => listCerts(dir));
      if (globals().json) printJson(rows);
      else
        process.stdout.write(
          table(
            ['FILE', 'ROLE', 'NAME', 'EXPIRES'],
            rows.map((r) => [r.file, r.role, r.name, r.expires]),
          ),
        );
    });

  certs
    .command('revoke [cert]')
    .description(
      'cut a certificate off before it expires (the dispatcher at once, nodes within a heartbeat): CERT is a ' +
        '.crt file or a name in the TLS dir (user.alice); or give --fingerprint',
    )
    .option('--fingerprint <sha256>', "the certificate's SHA-256 fingerprint, when its file is gone")
    .action(async (ref: string | undefined, o: { fingerprint?: string }) => {
      if ((ref === undefined) === (o.fingerprint === undefined)) {
        throw new UsageError('give a certificate (file or name) or --fingerprint, not both');
      }
      const info =
        ref !== undefined
          ? certOp(() => certFingerprint(tlsDir(globals().tlsDir), ref))
          : { fingerprint: o.fingerprint ?? '', subject: '', expiresUnixMs: 0 };
      const c = client();
      const r = await unary<RevokeCertificateResponse__Output>((opt, cb) =>
        c.RevokeCertificate(
          { fingerprint: info.fingerprint, subject: info.subject, expiresUnixMs: info.expiresUnixMs },
          opt,
          cb,
        ),
      );
      if (globals().json) printJson(r.revoked);
      else process.stdout.write(`revoked ${r.revoked?.subject || r.revoked?.fingerprint || info.fingerprint}\n`);
    });
  certs
    .command('revoked')
    .description('the certificates the dispatcher refuses (hotpot certs revoke)')
    .action(async () => {
      const c = client();
      const r = await unary<ListRevokedCertificatesResponse__Output>((opt, cb) =>
        c.ListRevokedCertificates({}, opt, cb),
      );
      if (globals().json) printJson(r.certificates);
      else
        process.stdout.write(
          table(
            ['FINGERPRINT (SHA-256)', 'SUBJECT', 'REVOKED', 'EXPIRES'],
            r.certificates.map((x) => [
              x.fingerprint,
              x.subject,
              new Date(x.revokedUnixMs).toISOString(),
              x.expiresUnixMs === 0 ? '?' : new Date(x.expiresUnixMs).toISOString(),
            ]),
          ),
        );
    });

  program
    .command('clean')
    .description(
      "remove a stopped local cluster: its nodes' pools in /dev/shm and its state directory (data included); " +
        'without --yes, only lists what it would remove',
    )
    .option('--state-dir <dir>', "the cluster's state directory (as given to hotpot up)", '.hotpot')
    .option('--yes', 'remove them')
    .action(async (o: { stateDir: string; yes?: boolean }) => {
      const { clean, CleanRefused } = await import('./clean.ts');
      let r: { removed: boolean; paths: string[] };
      try {
        r = clean({ stateDir: o.stateDir, yes: o.yes === true, cwd: process.cwd() });
      } catch (e) {
        if (e instanceof CleanRefused) throw new HotpotError('FAILED_PRECONDITION', e.message);
        throw e;
      }
      if (globals().json) printJson(r);
      else if (r.paths.length === 0) process.stdout.write(`nothing to clean at ${o.stateDir}\n`);
      else if (r.removed) process.stdout.write(`removed:\n${r.paths.map((p) => `  ${p}\n`).join('')}`);
      else {
        process.stdout.write(`would remove:\n${r.paths.map((p) => `  ${p}\n`).join('')}`);
        throw new UsageError('nothing removed: add --yes to remove them');
      }
    });

  program
    .command('down')
    .description('stop the local cluster hotpot up runs here (nodes, then the dispatcher); --clean then removes it')
    .option('--state-dir <dir>', "the cluster's state directory (as given to hotpot up)", '.hotpot')
    .option('--clean', "then remove its nodes' pools and its state directory, as clean --yes does")
    .action(async (o: { stateDir: string; clean?: boolean }) => {
      await (await import('./down.ts')).runDown(o, globals().json === true);
    });

  program
    .command('nodes')
    .description('list cluster members')
    .action(async () => {
      const c = client();
      const r = await unary<ListNodesResponse__Output>((opt, cb) => c.ListNodes({}, opt, cb));
      if (globals().json) {
        printJson({ epoch: r.epoch, nodes: r.nodes.map(nodeJson) });
        return;
      }
      process.stdout.write(`epoch ${String(r.epoch)}\n`);
      process.stdout.write(
        table(
          ['ID', 'IDENTITY', 'STATE', 'CONTROL', 'DATA'],
          r.nodes.map((n) => [n.id, n.identity, shortState(n.state), n.controlAddress, n.dataAddress || '-']),
        ),
      );
    });

  program
    .command('create <name>')
    .description('create a dataset')
    .requiredOption('--size <size>', 'dataset size, e.g. 64MiB', sizeArg)
    .addOption(new Option('--mode <mode>', 'consistency mode').choices(['mrmw', 'mrsw']).default('mrmw'))
    .addOption(new Option('--replicas <n>', 'replication degree N').default(1).argParser(intArg('--replicas', 1, 64)))
    .action(async (name: string, o: { size: number; mode: string; replicas: number }) => {
      const c = client();
      const r = await unary<CreateDatasetResponse__Output>((opt, cb) =>
        c.CreateDataset(
          {
            name,
            sizeBytes: o.size,
            mode: o.mode === 'mrsw' ? 'CONSISTENCY_MODE_MRSW' : 'CONSISTENCY_MODE_MRMW',
            replicas: o.replicas,
          },
          opt,
          cb,
        ),
      );
      if (globals().json) printJson(datasetJson(r.dataset, r.chunks));
      else if (r.dataset) {
        process.stdout.write('created ');
        printDataset(r.dataset, null);
      }
    });

  program
    .command('ls')
    .description('list datasets')
    .action(async () => {
      const c = client();
      const r = await unary<ListDatasetsResponse__Output>((opt, cb) => c.ListDatasets({}, opt, cb));
      if (globals().json) {
        printJson(r.datasets.map((d) => datasetJson(d)));
        return;
      }
      process.stdout.write(
        table(
          ['NAME', 'ID', 'SIZE', 'MODE', 'REPLICAS', 'CHUNKS'],
          r.datasets.map((d) => [d.name, d.id, formatSize(d.sizeBytes), shortMode(d.mode), d.replicas, d.chunkCount]),
        ),
      );
    });

  program
    .command('stat [name]')
    .description("show a dataset and its chunk map; with no name or with --node, the node's view (/proc/dsnvm)")
    .option('--node <id>', 'node id (default: every alive node)', intArg('--node', 1, 2 ** 32 - 1))
    .option(
      '--chunks <from[-to]>',
      'list these chunks one by one (a big map is otherwise summarised; --json lists up to 16 384 chunks)',
      chunkRangeArg,
    )
    .action(async (name: string | undefined, o: { node?: number; chunks?: { from: number; to: number } }) => {
      if (name === undefined || o.node !== undefined) {
        if (name !== undefined) throw new UsageError('give either a dataset name or --node, not both');
        if (o.chunks !== undefined) throw new UsageError('--chunks goes with a dataset name');
        const views = await import('./node-views.ts');
        const d = dispatcherAddress(globals().dispatcher);
        await views.statNodes(await views.resolveNodes(d, o.node), globals().json === true);
        return;
      }
      const c = client();
      const r = await unary<StatDatasetResponse__Output>((opt, cb) => c.StatDataset({ name }, opt, cb));
      // The owners' view of their chunks' live copies (dead holders do not count).
      const views = await import('./node-views.ts');
      const copies = r.dataset
        ? await views.ownerCopies(dispatcherAddress(globals().dispatcher), r.dataset.id)
        : (new Map() as CopiesView);
      const range = o.chunks;
      if (range && r.dataset && range.to >= r.dataset.chunkCount) {
        throw new UsageError(
          `--chunks ${String(range.from)}-${String(range.to)}: ${name} has chunks 0-${String(r.dataset.chunkCount - 1)}`,
        );
      }
      if (globals().json) {
        // Every chunk up to JSON_CHUNKS_UP_TO (or those of --chunks); beyond, the groups only, as the table shows them.
        const listed = range
          ? r.chunks.filter((c) => c.index >= range.from && c.index <= range.to)
          : r.chunks.length <= JSON_CHUNKS_UP_TO
            ? r.chunks
            : null;
        const ds = datasetJson(r.dataset, listed ?? undefined) as { chunks?: { index: number }[] } | null;
        for (const ch of ds?.chunks ?? []) Object.assign(ch, { copies: copies.get(ch.index) ?? null });
        if (ds && listed === null) {
          const groups = groupByPattern(r.chunks.map((c) => [c.index, ...chunkCells(c, copies)]));
          Object.assign(ds, {
            chunksListed: false,
            chunkGroups: groups.map((g) => ({
              chunks: g.count,
              which: g.which,
              owner: Number(g.rest[0]),
              replicas: (g.rest[1] ?? '')
                .split(',')
                .filter((x) => x !== '')
                .map(Number),
              ownerAlive: g.rest[2] ?? '',
              era: Number(g.rest[3]),
              liveCopies: g.rest[4] ?? '',
            })),
          });
        }
        printJson({ epoch: r.epoch, dataset: ds });
      } else if (r.dataset) printDataset(r.dataset, r.chunks, copies, range);
    });

  program
    .command('events')
    .description('internal events of nodes as they happen (/proc/dsnvm-event): faults, commits, aborts, membership')
    .option('--node <id>', 'node id (default: every alive node)', intArg('--node', 1, 2 ** 32 - 1))
    .option('--follow', 'keep streaming new events')
    .option(
      '--mask <bits>',
      'only these kinds: faults,fetch,commits,owner,coherence,replicas,membership | all',
      maskArg,
    )
    .option('--limit <n>', 'only the last n kept events', intArg('--limit', 1, 4096))
    .action(async (o: { node?: number; follow?: boolean; mask?: number; limit?: number }) => {
      const views = await import('./node-views.ts');
      const targets = await views.resolveNodes(dispatcherAddress(globals().dispatcher), o.node);
      await views.streamEvents(targets, {
        follow: o.follow === true,
        mask: o.mask ?? 0,
        limit: o.limit ?? 0,
        json: globals().json === true,
      });
    });

  registerDashboard(program, () => globals().dispatcher);

  program
    .command('debug-mask <bits>')
    .description(
      'set which internal events nodes record (faults,fetch,commits,owner,coherence,replicas,membership | all | none)',
    )
    .option('--node <id>', 'node id (default: every alive node)', intArg('--node', 1, 2 ** 32 - 1))
    .action(async (bits: string, o: { node?: number }) => {
      let mask: number;
      try {
        mask = parseDebugMask(bits);
      } catch (e) {
        throw new UsageError(e instanceof Error ? e.message : String(e));
      }
      const views = await import('./node-views.ts');
      const targets = await views.resolveNodes(dispatcherAddress(globals().dispatcher), o.node);
      await views.setDebugMask(targets, mask, globals().json === true);
    });

  program
    .command('drain')
    .argument('<node>', 'node id (hotpot nodes)', intArg('<node>', 1, 2 ** 32 - 1))
    .description(
      'stop a node the planned way: hand every chunk it owns to another live node, then it leaves and exits (as SIGTERM)',
    )
    .action(async (id: number) => {
      const views = await import('./node-views.ts');
      const [target] = await views.resolveNodes(dispatcherAddress(globals().dispatcher), id);
      if (!target) throw new UsageError(`node ${String(id)} is not a member of the cluster`);
      await views.drainNode(target, globals().json === true);
    });

  program
    .command('forget')
    .argument('<node>', 'node id (hotpot nodes)', intArg('<node>', 1, 2 ** 32 - 1))
    .option('--force', 'forget it even if some chunk is not known to have N live copies without it')
    .description(
      'remove a member that is down and will never return, so failovers stop waiting for it (refused while it may ' +
        'still hold the only copy of something)',
    )
    .action(async (id: number, o: { force?: boolean }) => {
      const views = await import('./node-views.ts');
      await views.forgetNode(dispatcherAddress(globals().dispatcher), id, o.force === true, globals().json === true);
    });

  program
    .command('chmod <permissions> <name>')
    .description(
      "set who may open a dataset from a node's app socket: octal bits for owner, group, others (an app needs read " +
        'and write, 6; uid 0 always may), e.g. 0660',
    )
    .action(async (permissions: string, name: string) => {
      if (!/^0?[0-7]{1,3}$/.test(permissions))
        throw new UsageError(`permissions must be octal 0..0777 (got "${permissions}")`);
      const c = client();
      const r = await unary<SetDatasetAccessResponse__Output>((opt, cb) =>
        c.SetDatasetAccess({ name, setPermissions: true, permissions: parseInt(permissions, 8) }, opt, cb),
      );
      if (globals().json) printJson(datasetJson(r.dataset));
      else if (r.dataset) printDataset(r.dataset, null);
    });

  program
    .command('chown <owner> <name>')
    .description("set a dataset's owner: UID or UID:GID (numeric; the group stays when only UID is given)")
    .action(async (owner: string, name: string) => {
      const m = /^(\d{1,10})(?::(\d{1,10}))?$/.exec(owner);
      if (!m) throw new UsageError(`owner must be UID or UID:GID, numeric (got "${owner}")`);
      const c = client();
      const uid = Number(m[1]);
      const gid =
        m[2] !== undefined
          ? Number(m[2])
          : ((await unary<StatDatasetResponse__Output>((opt, cb) => c.StatDataset({ name }, opt, cb))).dataset
              ?.ownerGid ?? 0);
      const r = await unary<SetDatasetAccessResponse__Output>((opt, cb) =>
        c.SetDatasetAccess({ name, setOwner: true, ownerUid: uid, ownerGid: gid }, opt, cb),
      );
      if (globals().json) printJson(datasetJson(r.dataset));
      else if (r.dataset) printDataset(r.dataset, null);
    });

  program
    .command('forget-lost <name>')
    .description(
      "accept the loss of a dataset's lost pages (no copy survived anywhere; `hotpot stat NAME` lists them): they " +
        'read as zeros from now on and can be written again',
    )
    .action(async (name: string) => {
      const c = client();
      const r = await unary<ForgetLostPagesResponse__Output>((opt, cb) => c.ForgetLostPages({ name }, opt, cb));
      if (globals().json) printJson({ dataset: name, pagesForgotten: r.pages });
      else process.stdout.write(`${name}: ${String(r.pages)} lost page(s) forgotten; they read as zeros now\n`);
    });

  program
    .command('resize <name>')
    .description('grow a dataset')
    .requiredOption('--size <size>', 'new size', sizeArg)
    .action(async (name: string, o: { size: number }) => {
      const c = client();
      const r = await unary<ResizeDatasetResponse__Output>((opt, cb) =>
        c.ResizeDataset({ name, sizeBytes: o.size }, opt, cb),
      );
      if (globals().json) printJson(datasetJson(r.dataset, r.chunks));
      else if (r.dataset) printDataset(r.dataset, null);
    });

  program
    .command('rm <name>')
    .description('delete a dataset')
    .action(async (name: string) => {
      const c = client();
      await unary((opt, cb) => c.DeleteDataset({ name }, opt, cb));
      if (globals().json) printJson({ deleted: name });
      else process.stdout.write(`deleted ${name}\n`);
    });

  const token = program
    .command('token')
    .description('bearer tokens for remote clients without a certificate (admins only; docs/security.md)');
  token
    .command('create')
    .description('make a token; it is printed once (the dispatcher keeps only its hash)')
    .requiredOption('--user <name>', "the token's principal (for logs and listing)")
    .addOption(
      new Option('--role <role>', 'user: its datasets; admin: everything').choices(['user', 'admin']).default('user'),
    )
    .option('--uid <uid>', "a user's uid (its datasets are checked as uid:gid)", intArg('--uid', 0, 4294967294))
    .option('--gid <gid>', "a user's gid", intArg('--gid', 0, 4294967294))
    .option('--ttl <duration>', 'expires after, e.g. 90d, 12h, 30m (default: never)', durationArg)
    .action(async (o: { user: string; role: string; uid?: number; gid?: number; ttl?: number }) => {
      if (o.role === 'user' && (o.uid === undefined || o.gid === undefined)) {
        throw new UsageError('a user token needs --uid and --gid (its datasets are checked as that uid:gid)');
      }
      const c = client();
      const r = await unary<CreateTokenResponse__Output>((opt, cb) =>
        c.CreateToken({ user: o.user, role: o.role, uid: o.uid ?? 0, gid: o.gid ?? 0, ttlMs: o.ttl ?? 0 }, opt, cb),
      );
      if (globals().json) printJson({ token: r.token, ...tokenJson(r.info) });
      else {
        process.stdout.write(
          `${r.token}\n(token ${r.info?.id ?? '?'} for ${o.role} ${o.user}: shown once; give it to the client as ` +
            'HOTPOT_TOKEN or a --token-file)\n',
        );
      }
    });
  token
    .command('ls')
    .description('the tokens the dispatcher knows (never their secrets)')
    .action(async () => {
      const c = client();
      const r = await unary<ListTokensResponse__Output>((opt, cb) => c.ListTokens({}, opt, cb));
      if (globals().json) printJson(r.tokens.map((t) => tokenJson(t)));
      else {
        process.stdout.write(
          table(
            ['ID', 'USER', 'ROLE', 'UID:GID', 'CREATED', 'EXPIRES'],
            r.tokens.map((t) => [
              t.id,
              t.user,
              t.role,
              `${String(t.uid)}:${String(t.gid)}`,
              new Date(t.createdUnixMs).toISOString(),
              t.expiresUnixMs === 0 ? 'never' : new Date(t.expiresUnixMs).toISOString(),
            ]),
          ),
        );
      }
    });
  token
    .command('revoke <id>')
    .description('revoke a token (the dispatcher at once, nodes within 10 s)')
    .action(async (id: string) => {
      const c = client();
      await unary((opt, cb) => c.RevokeToken({ id }, opt, cb));
      if (globals().json) printJson({ revoked: id });
      else process.stdout.write(`revoked token ${id}\n`);
    });

  registerDataCommands(program, {
    dispatcher: () => dispatcherAddress(globals().dispatcher),
    json: () => globals().json === true,
    version: hotpotVersion(),
  });
  registerCompletionCommand(program);
  registerContextCommands(program, globals);

  return program;
}

function tokenJson(t: TokenInfo__Output | null): Record<string, unknown> {
  if (!t) return {};
  return {
    id: t.id,
    user: t.user,
    role: t.role,
    uid: t.uid,
    gid: t.gid,
    createdUnixMs: t.createdUnixMs,
    expiresUnixMs: t.expiresUnixMs,
  };
}

/** "90d", "12h", "30m", "45s" or milliseconds -> milliseconds. */
function durationArg(v: string): number {
  const m = /^(\d{1,9})(ms|s|m|h|d)?$/.exec(v.trim());
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
  const n = m ? Number(m[1]) * (units[m[2] ?? 'ms'] ?? NaN) : NaN;
  if (!Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError('a duration like 90d, 12h, 30m, 45s');
  return n;
}

/** What a connection error message names: the addresses and security this command used. */
function connectionContext(flag: string | undefined): ConnectionContext {
  const insecure = process.env.HOTPOT_INSECURE === '1';
  let dispatcher = flag ?? '127.0.0.1:18500';
  let dir: string | undefined;
  try {
    dispatcher = dispatcherAddress(flag);
    dir = insecure ? undefined : tlsDir();
  } catch {
    // Only for the message: a broken cluster file was reported already.
  }
  return { dispatcher, tlsDir: dir, insecure };
}

/** Runs the CLI; returns the exit code for one-shot commands (daemons never return). */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help')
        return 0;
      return 2;
    }
    if (e instanceof ConfigError || e instanceof UsageError || e instanceof DataUsageError) {
      process.stderr.write(`hotpot: ${e.message}\n`);
      return 2;
    }
    if (e instanceof BackupFormatError) {
      process.stderr.write(`hotpot: ${e.message}; nothing was created\n`);
      return 1;
    }
    if (e instanceof HotpotError) {
      const opts = program.opts<{ json?: boolean; dispatcher?: string }>();
      const human = explainConnectionError(e.code, e.message, connectionContext(opts.dispatcher));
      if (opts.json) {
        process.stderr.write(JSON.stringify({ error: { code: e.code, message: human ?? e.message } }) + '\n');
      } else {
        process.stderr.write(human ? `hotpot: ${human}\n` : `hotpot: ${e.code}: ${e.message}\n`);
      }
      return 1;
    }
    process.stderr.write(`hotpot: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}

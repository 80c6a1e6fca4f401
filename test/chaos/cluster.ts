// The chaos cluster: a dispatcher on a fixed port (so a restarted one answers at the same address) and nodes with
// stable names, state dirs and pool dirs (so a restarted node keeps its id and recovers its pool), all started
// through test/helpers/cluster.ts (READY lines, SIGKILL teardown). Processes can be killed, paused and started
// again; every start waits for READY.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { listNodes, nodeStats, startDispatcher, startNode, tempDir, waitFor, type Proc } from '../helpers/cluster.ts';
import { startProxy, type TcpProxy } from '../helpers/tcp-proxy.ts';

export interface ClusterOptions {
  nodes: number;
  chunkSize: number;
  /** Membership lease of the dispatcher. */
  leaseMs: number;
  /** Deadline of each data-plane request (short, so that recovery after a kill is quick). */
  requestTimeoutMs: number;
  durability: 'memory' | 'disk';
}

type NodeProc = Awaited<ReturnType<typeof startNode>>;

export interface ChaosNode {
  index: number;
  name: string;
  stateDir: string;
  pool: string;
  /** Stable across restarts: the node's shim socket and gRPC unix socket live in its state dir. */
  socket: string;
  grpc: string;
  id: number;
  proc: NodeProc;
  /** The node's control link to the dispatcher runs through this forwarder (partition-node cuts it). */
  link: TcpProxy;
}

/** The dispatcher's environment: the chunk size, and owner failover (the default) off when CHAOS_FAILOVER=0. */
function dispatcherEnv(opts: ClusterOptions): NodeJS.ProcessEnv {
  return {
    HOTPOT_CHUNK_SIZE: String(opts.chunkSize),
    HOTPOT_FAILOVER: process.env.CHAOS_FAILOVER === '0' ? '0' : '1',
  };
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.listen(0, '127.0.0.1', resolve);
  });
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

function alive(p: Proc): boolean {
  return p.child.exitCode === null && p.child.signalCode === null;
}

export class ChaosCluster {
  readonly nodes: ChaosNode[] = [];
  /** Every process started (restarts included), for the logs a violation keeps. */
  private readonly started: { name: string; proc: Proc }[] = [];

  private constructor(
    private readonly t: ExecutionContext,
    private readonly opts: ClusterOptions,
    readonly dir: string,
    private readonly port: number,
    private dispatcherProc: Proc,
  ) {}

  get dispatcher(): string {
    return `127.0.0.1:${String(this.port)}`;
  }

  static async start(t: ExecutionContext, opts: ClusterOptions): Promise<ChaosCluster> {
    const dir = tempDir(t, 'hotpot-chaos-');
    const port = await freePort();
    const d = await startDispatcher(t, {
      stateDir: join(dir, 'd'),
      leaseMs: opts.leaseMs,
      port,
      env: dispatcherEnv(opts),
    });
    const c = new ChaosCluster(t, opts, dir, port, d);
    c.started.push({ name: 'dispatcher', proc: d });
    for (let i = 0; i < opts.nodes; i++) {
      const name = `n${String(i + 1)}`;
      const stateDir = join(dir, name);
      const pool = join('/dev/shm', `hotpot-chaos-${String(process.pid)}-${dir.slice(-6)}-${name}`);
      t.teardown(() => rmSync(pool, { recursive: true, force: true }));
      const link = await startProxy(c.dispatcher);
      t.teardown(() => link.close());
      const proc = await c.spawnNode(name, stateDir, pool, link);
      c.nodes.push({
        index: i,
        name,
        stateDir,
        pool,
        socket: proc.socket,
        grpc: `unix:${join(stateDir, 'grpc.sock')}`,
        id: proc.id,
        proc,
        link,
      });
    }
    return c;
  }

  private async spawnNode(name: string, stateDir: string, pool: string, link: TcpProxy): Promise<NodeProc> {
    const proc = await startNode(this.t, {
      dispatcher: link.address,
      name,
      stateDir,
      extra: ['--pool-dir', pool, '--durability', this.opts.durability],
      env: {
        HOTPOT_CHUNK_SIZE: String(this.opts.chunkSize),
        HOTPOT_REQUEST_TIMEOUT_MS: String(this.opts.requestTimeoutMs),
      },
    });
    this.started.push({ name, proc });
    return proc;
  }

  node(i: number): ChaosNode {
    const n = this.nodes[i];
    if (!n) throw new Error(`no node ${String(i)}`);
    return n;
  }

  async killNode(i: number): Promise<void> {
    const n = this.node(i);
    n.proc.child.kill('SIGKILL');
    await n.proc.exited;
  }

  /** Starts a stopped node again on its state and pool dirs; waits for READY; it must keep its node id. */
  async startNodeAgain(i: number): Promise<void> {
    const n = this.node(i);
    if (alive(n.proc)) throw new Error(`node ${n.name} is still running`);
    const proc = await this.spawnNode(n.name, n.stateDir, n.pool, n.link);
    if (proc.id !== n.id) throw new Error(`node ${n.name} came back as id ${String(proc.id)}, was ${String(n.id)}`);
    n.proc = proc;
  }

  /** SIGTERM (graceful shutdown: the node leaves), then start it again. */
  async restartNodeGracefully(i: number): Promise<void> {
    const n = this.node(i);
    n.proc.child.kill('SIGTERM');
    await n.proc.exited;
    await this.startNodeAgain(i);
  }

  /** SIGSTOP for `ms`, then SIGCONT: the node misses heartbeats and requests but keeps its state. */
  async pauseNode(i: number, ms: number): Promise<void> {
    const n = this.node(i);
    n.proc.child.kill('SIGSTOP');
    try {
      await new Promise((r) => setTimeout(r, ms));
    } finally {
      n.proc.child.kill('SIGCONT');
    }
  }

  /**
   * Cuts node `i`'s link to the dispatcher for `ms` (the node keeps running and reaching its peers), heals it, and
   * waits until the dispatcher lists every node alive again.
   */
  async partitionNode(i: number, ms: number): Promise<void> {
    const n = this.node(i);
    n.link.cut();
    try {
      await new Promise((r) => setTimeout(r, ms));
    } finally {
      n.link.heal();
    }
    await this.waitAllAlive(30_000);
  }

  async killDispatcher(): Promise<void> {
    this.dispatcherProc.child.kill('SIGKILL');
    await this.dispatcherProc.exited;
  }

  async restartDispatcherGracefully(): Promise<void> {
    this.dispatcherProc.child.kill('SIGTERM');
    await this.dispatcherProc.exited;
    await this.startDispatcherAgain();
  }

  async startDispatcherAgain(): Promise<void> {
    if (alive(this.dispatcherProc)) throw new Error('the dispatcher is still running');
    this.dispatcherProc = await startDispatcher(this.t, {
      stateDir: join(this.dir, 'd'),
      leaseMs: this.opts.leaseMs,
      port: this.port,
      env: dispatcherEnv(this.opts),
    });
    this.started.push({ name: 'dispatcher', proc: this.dispatcherProc });
  }

  /** Writes the whole stderr of every process started, one file per process start (`<name>.<k>.log`), to `dir`. */
  saveLogs(dir: string): void {
    mkdirSync(dir, { recursive: true });
    const k = new Map<string, number>();
    for (const s of this.started) {
      const i = (k.get(s.name) ?? 0) + 1;
      k.set(s.name, i);
      writeFileSync(join(dir, `${s.name}.${String(i)}.log`), s.proc.stderr.join('\n') + '\n');
    }
  }

  /** Waits until the dispatcher lists every node as alive. */
  async waitAllAlive(timeoutMs: number): Promise<void> {
    await waitFor(
      'every node alive at the dispatcher',
      async () => {
        const r = await listNodes(this.dispatcher);
        const ids = new Set(r.nodes.filter((x) => x.state === 'NODE_STATE_ALIVE').map((x) => x.id));
        return this.nodes.every((n) => ids.has(n.id)) ? true : undefined;
      },
      timeoutMs,
    );
  }

  /** Locked pages on each node (-1 when the node does not answer). */
  async lockedPages(): Promise<number[]> {
    return Promise.all(
      this.nodes.map(async (n) => {
        try {
          return (await nodeStats(n.proc.address)).lockedPages;
        } catch {
          return -1;
        }
      }),
    );
  }

  /** The last stderr lines of every node and the dispatcher, for failure messages. */
  stderrTail(lines = 15): string {
    return [
      `--- dispatcher:\n${this.dispatcherProc.stderr.slice(-lines).join('\n')}`,
      ...this.nodes.map((n) => `--- ${n.name} (id ${String(n.id)}):\n${n.proc.stderr.slice(-lines).join('\n')}`),
    ].join('\n');
  }
}

// What an orchestrator asks of a running bench cluster (bench/lib/cluster.ts) from outside: the `hotpot` CLI with
// --json (create, stat), where a dataset's chunks live, and a node's engine counters from its Stats RPC.
import { clientSecurity, nodeClient } from '../../services/cli/client.ts';
import { hotpotBin } from '../../services/common/paths.ts';
import { unary } from '../../services/common/rpc.ts';
import type { StatsResponse__Output } from '../../services/generated/hotpot/v1/StatsResponse.ts';
import type { BenchCluster, BenchNode } from './cluster.ts';
import type { Procs } from './procs.ts';

/** Runs `hotpot --dispatcher <c> --json ARGS…` to completion and parses its answer. */
export async function hotpotCli(procs: Procs, c: BenchCluster, args: string[]): Promise<unknown> {
  const out = await procs.run(
    `hotpot ${args.join(' ')}`,
    process.execPath,
    [hotpotBin, '--dispatcher', c.dispatcher, '--json', ...args],
    { env: c.env },
  );
  return JSON.parse(out) as unknown;
}

export interface DatasetLayout {
  chunkSize: number;
  /** The owner node id of each chunk, by chunk index. */
  owners: number[];
}

/** The chunk size and chunk owners of a dataset, from `hotpot --json stat`. */
export async function datasetLayout(procs: Procs, c: BenchCluster, name: string): Promise<DatasetLayout> {
  const st = (await hotpotCli(procs, c, ['stat', name])) as {
    dataset: { chunkSizeBytes: number | string; chunks: { index: number | string; owner: number | string }[] };
  };
  const owners: number[] = [];
  for (const ch of st.dataset.chunks) owners[Number(ch.index)] = Number(ch.owner);
  return { chunkSize: Number(st.dataset.chunkSizeBytes), owners };
}

/** A node's engine counters (EngineCounters, by js name) from its Stats RPC; a counter the node does not report
 * is absent. */
export async function nodeCounters(c: BenchCluster, n: BenchNode): Promise<Record<string, number>> {
  const client = nodeClient(n.address, c.env.HOTPOT_INSECURE === '1' ? { insecure: true } : clientSecurity());
  try {
    const s = await unary<StatsResponse__Output>((o, cb) => client.Stats({}, o, cb));
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries(s.counters ?? {})) out[k] = Number(v);
    return out;
  } finally {
    client.close();
  }
}

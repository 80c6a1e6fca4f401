// How CLI commands find and call the dispatcher.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { hotpotV1, type DispatcherClient, type NodeClient } from '../common/proto.ts';
import { insecure } from '../common/rpc.ts';

export const CLUSTER_FILE = join('.hotpot', 'cluster.json');

export interface ClusterFile {
  dispatcher: string;
  nodes: { id: number; address: string; data?: string; socket?: string }[];
  stateDir: string;
  pid: number;
}

export function readClusterFile(dir = process.cwd()): ClusterFile | null {
  const p = join(dir, CLUSTER_FILE);
  if (!existsSync(p)) return null;
  try {
    return JSON.parse(readFileSync(p, 'utf8')) as ClusterFile;
  } catch {
    return null;
  }
}

/** --dispatcher flag > HOTPOT_DISPATCHER > ./.hotpot/cluster.json (written by `hotpot up`) > 127.0.0.1:18500. */
export function dispatcherAddress(flag: string | undefined): string {
  return flag ?? process.env.HOTPOT_DISPATCHER ?? readClusterFile()?.dispatcher ?? '127.0.0.1:18500';
}

export function dispatcherClient(address: string): DispatcherClient {
  return new hotpotV1.Dispatcher(address, insecure());
}

export function nodeClient(address: string): NodeClient {
  return new hotpotV1.Node(address, insecure());
}

// How CLI commands find and call the dispatcher.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { hotpotV1, type DispatcherClient, type NodeClient } from '../common/proto.ts';
import { ConfigError } from '../common/config.ts';
import { DEFAULT_TLS_DIR } from '../common/paths.ts';
import { followLeader } from '../common/dispatcher-client.ts';
import { channelFor, loadClientTls, type Security } from '../common/tls.ts';

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

/** --dispatcher flag > HOTPOT_DISPATCHER (a context sets it when unset: contexts.ts) > ./.hotpot/cluster.json (written by `hotpot up`) > 127.0.0.1:18500. */
export function dispatcherAddress(flag: string | undefined): string {
  return flag ?? process.env.HOTPOT_DISPATCHER ?? readClusterFile()?.dispatcher ?? '127.0.0.1:18500';
}

/** Where the cluster's TLS files are: --tls-dir > HOTPOT_TLS_DIR > <hotpot up's state dir>/tls > ./.hotpot/tls. */
export function tlsDir(flag?: string): string {
  const c = readClusterFile();
  return flag ?? process.env.HOTPOT_TLS_DIR ?? (c ? join(c.stateDir, 'tls') : DEFAULT_TLS_DIR);
}

/**
 * How a client reaches the cluster: --insecure (HOTPOT_INSECURE=1) for a cluster run with --insecure, else TLS with
 * the client certificate --cert (HOTPOT_CERT; default admin) from the TLS directory.
 */
export function clientSecurity(
  o: { tlsDir?: string; cert?: string; token?: string; insecure?: boolean } = {},
): Security {
  if (o.insecure ?? process.env.HOTPOT_INSECURE === '1') return { insecure: true };
  // A bearer token (HOTPOT_TOKEN) stands in for a certificate unless one is named.
  const token = o.token ?? (o.cert === undefined ? process.env.HOTPOT_TOKEN : undefined);
  if (token) {
    const dir = tlsDir(o.tlsDir);
    const ca = join(dir, 'ca.crt');
    if (!existsSync(ca)) {
      throw new ConfigError(`no ${ca}: a bearer token is sent over TLS, which needs the cluster CA (--tls-dir)`);
    }
    return { bearer: { dir, ca: readFileSync(ca), token } };
  }
  return { tls: loadClientTls(tlsDir(o.tlsDir), o.cert ?? process.env.HOTPOT_CERT ?? 'admin') };
}

/**
 * Largest answer the CLI takes from the dispatcher: the chunk map of a 1 TiB dataset (262 144 chunks) is ~5 MB, over
 * grpc-js's 4 MiB default.
 */
const MAX_DISPATCHER_ANSWER_BYTES = 64 * 1024 * 1024;

/**
 * `address`: one dispatcher, or several ("a:p,b:p"): the client follows the one that leads (a standby's redirect,
 * common/dispatcher-client.ts).
 */
export function dispatcherClient(address: string, security: Security = clientSecurity()): DispatcherClient {
  const { credentials, options } = channelFor(address, security, 'dispatcher');
  return followLeader(
    address,
    (target) =>
      new hotpotV1.Dispatcher(target, credentials, {
        ...options,
        'grpc.max_receive_message_length': MAX_DISPATCHER_ANSWER_BYTES,
      }),
  );
}

export function nodeClient(address: string, security: Security = clientSecurity()): NodeClient {
  const { credentials, options } = channelFor(address, security, 'node');
  return new hotpotV1.Node(address, credentials, options);
}

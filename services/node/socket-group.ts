// The group given a node's app sockets (node.sock and grpc.sock, mode 0660): its members, and uid 0, may connect;
// each open is then checked against the dataset's owner and permission bits (docs/security.md).
import { chmodSync, chownSync, readFileSync } from 'node:fs';
import { ConfigError } from '../common/config.ts';
import type { Logger } from '../common/logger.ts';

/** The default group; a missing default falls back to the daemon's own group (a configured one must exist). */
export const DEFAULT_SOCKET_GROUP = 'hotpot';

/** The gid of group `name` (a name, or a number) in an /etc/group text, or null when there is none. Pure. */
export function findGroup(name: string, etcGroup: string): number | null {
  if (/^\d{1,10}$/.test(name)) {
    const n = Number(name);
    return n <= 0xfffffffe ? n : null;
  }
  for (const line of etcGroup.split('\n')) {
    const [group, , gid] = line.split(':');
    if (group === name && gid !== undefined && /^\d{1,10}$/.test(gid)) return Number(gid);
  }
  return null;
}

/** Gives `paths` mode 0660 and the app group (`configured`, or the default when it exists). */
export function shareSockets(paths: string[], configured: string | undefined, log: Logger): void {
  const name = configured ?? DEFAULT_SOCKET_GROUP;
  let etc = '';
  try {
    etc = readFileSync('/etc/group', 'utf8');
  } catch {
    // no group database: only numeric groups resolve
  }
  const gid = findGroup(name, etc);
  if (gid === null && configured !== undefined) {
    throw new ConfigError(`socket group "${configured}" does not exist (give a group name from /etc/group or a gid)`);
  }
  for (const p of paths) {
    chmodSync(p, 0o660);
    if (gid !== null) chownSync(p, process.getuid?.() ?? 0, gid);
  }
  if (gid === null) {
    log.info(
      { sockets: paths },
      `group "${name}" does not exist: only this daemon's user and group may connect to the app sockets ` +
        '(create the group, or give --socket-group)',
    );
  }
}

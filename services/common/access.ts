// Who may open a dataset from a node's app socket (docs/security.md): POSIX-like permission bits for
// the dataset's owner, its group and others, checked against the app's SO_PEERCRED uid and gid. Pure.

export interface DatasetAccess {
  uid: number;
  gid: number;
  /** read 4 + write 2 for owner, group, others (0o640 ...); execute bits are ignored. */
  perm: number;
}

/** The bits that apply to an app with `uid`/`gid` (owner, else group, else others), 0..7. */
function bitsFor(a: DatasetAccess, uid: number, gid: number): number {
  if (uid === a.uid) return (a.perm >> 6) & 7;
  if (gid === a.gid) return (a.perm >> 3) & 7;
  return a.perm & 7;
}

/**
 * null when an app with `uid`/`gid` may open the dataset (it needs read and write: an open session can map and
 * commit), else why not. uid 0 may always. Only the app's primary gid counts (SO_PEERCRED carries no other groups).
 */
export function openRefusal(name: string, a: DatasetAccess, uid: number, gid: number): string | null {
  if (uid === 0) return null;
  if ((bitsFor(a, uid, gid) & 6) === 6) return null;
  return (
    `uid ${String(uid)} (gid ${String(gid)}) may not open dataset "${name}": owner ${String(a.uid)}:${String(a.gid)}, ` +
    `permissions 0${a.perm.toString(8).padStart(3, '0')} (an app needs read and write; \`hotpot chmod\` / \`hotpot chown\`)`
  );
}

/** "rw-r-----" for 0o640. */
export function permString(perm: number): string {
  return [6, 3, 0]
    .map((s) => `${perm & (4 << s) ? 'r' : '-'}${perm & (2 << s) ? 'w' : '-'}${perm & (1 << s) ? 'x' : '-'}`)
    .join('');
}

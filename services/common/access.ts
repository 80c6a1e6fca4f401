// Who may use a dataset (docs/security.md): POSIX-like permission bits for the dataset's owner, its group and
// others, checked against the caller's uid, gid and supplementary groups (a local app's SO_PEERCRED and
// SO_PEERGROUPS, or a user certificate's / token's uid:gid). Pure.

export interface DatasetAccess {
  uid: number;
  gid: number;
  /** read 4 + write 2 for owner, group, others (0o640 ...); execute bits are ignored. */
  perm: number;
}

/** Who asks: uid 0 may do everything. */
export interface Caller {
  uid: number;
  gid: number;
  /** Supplementary groups (local apps; empty for remote principals). */
  groups?: readonly number[];
}

/** What the caller wants: `read` (a read-only open, a barrier) or `write` (open for commits, an MRSW lease). */
export type AccessKind = 'read' | 'write';

/** The bits that apply to the caller (owner, else any of its groups, else others), 0..7. */
function bitsFor(a: DatasetAccess, c: Caller): number {
  if (c.uid === a.uid) return (a.perm >> 6) & 7;
  if (c.gid === a.gid || (c.groups?.includes(a.gid) ?? false)) return (a.perm >> 3) & 7;
  return a.perm & 7;
}

/** The bits `kind` needs: a writer reads too (its session maps and reads what it commits). */
const NEEDS: Record<AccessKind, number> = { read: 4, write: 6 };

/** null when the caller may use the dataset for `kind`, else why not. */
export function accessRefusal(name: string, a: DatasetAccess, c: Caller, kind: AccessKind): string | null {
  if (c.uid === 0) return null;
  const need = NEEDS[kind];
  if ((bitsFor(a, c) & need) === need) return null;
  return (
    `uid ${String(c.uid)} (gid ${String(c.gid)}) may not ${kind === 'read' ? 'read' : 'write'} dataset "${name}": ` +
    `owner ${String(a.uid)}:${String(a.gid)}, permissions 0${a.perm.toString(8).padStart(3, '0')} ` +
    `(${kind === 'read' ? 'reading needs r' : 'an open for commits needs rw; open read-only to only read'}; ` +
    '`hotpot chmod` / `hotpot chown`)'
  );
}

/** "rw-r-----" for 0o640. */
export function permString(perm: number): string {
  return [6, 3, 0]
    .map((s) => `${perm & (4 << s) ? 'r' : '-'}${perm & (2 << s) ? 'w' : '-'}${perm & (1 << s) ? 'x' : '-'}`)
    .join('');
}

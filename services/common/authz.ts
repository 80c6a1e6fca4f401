// Who may call what (docs/security.md). One table for every RPC of every server; an RPC that is not in it is
// refused. Pure: the server's interceptor finds the caller's principal and asks `authorize`.
import type { Role } from './certs.ts';

/** The authenticated caller of one RPC. */
export type Principal =
  /** A client certificate the cluster CA signed. */
  | { kind: 'cert'; role: Role; name: string; uid?: number; gid?: number }
  /** A bearer token the dispatcher issued (`hotpot token create`). */
  | { kind: 'token'; role: 'admin' | 'user'; name: string; id: string; uid: number; gid: number }
  /** A process on this machine connected to the node's gRPC unix socket (SO_PEERCRED, SO_PEERGROUPS). */
  | { kind: 'local'; uid: number; gid: number; pid: number; groups: number[] }
  /** Any caller of a server run with --insecure (no authentication at all). */
  | { kind: 'insecure' };

/** What a principal may act as: admin (everything), node, user (its own datasets), or local (a local app). */
export type Standing = 'admin' | 'node' | 'dispatcher' | 'user' | 'local';

/**
 * The standing of a principal; `daemonUid` is the uid the server runs as (that user and root are admins over the
 * unix socket: they could read the daemon's state and keys anyway).
 */
export function standing(p: Principal, daemonUid: number): Standing {
  if (p.kind === 'insecure') return 'admin';
  if (p.kind === 'local') return p.uid === 0 || p.uid === daemonUid ? 'admin' : 'local';
  return p.role;
}

/** The uid:gid (and groups) a principal's dataset access is checked as (admins as root). */
export function posixOf(p: Principal, daemonUid: number): { uid: number; gid: number; groups: number[] } {
  if (standing(p, daemonUid) === 'admin') return { uid: 0, gid: 0, groups: [] };
  if (p.kind === 'local') return { uid: p.uid, gid: p.gid, groups: p.groups };
  if (p.kind === 'cert' && p.role === 'user' && p.uid !== undefined && p.gid !== undefined) {
    return { uid: p.uid, gid: p.gid, groups: [] };
  }
  if (p.kind === 'token') return { uid: p.uid, gid: p.gid, groups: [] };
  // A node or dispatcher certificate is not a dataset user: nobody's bits.
  return { uid: 65534, gid: 65534, groups: [] };
}

/** The principal a token the dispatcher vouched for stands for (null: none, or a role this version does not know). */
export function tokenPrincipal(
  i: { id: string; user: string; role: string; uid: number; gid: number } | null | undefined,
): Principal | null {
  if (!i || (i.role !== 'admin' && i.role !== 'user')) return null;
  return { kind: 'token', role: i.role, name: i.user, id: i.id, uid: i.uid, gid: i.gid };
}

/** A stable key of a principal (the same caller on any connection): what sessions and caps are kept per. */
export function principalKey(p: Principal): string {
  switch (p.kind) {
    case 'insecure':
      return 'insecure';
    case 'local':
      return `uid:${String(p.uid)}`;
    case 'token':
      return `token:${p.id}`;
    case 'cert':
      return `cert:${p.role}:${p.name}`;
  }
}

/** A short description for messages and logs: "user alice", "node node-2", "local uid 1000". */
export function describe(p: Principal): string {
  if (p.kind === 'insecure') return 'an unauthenticated caller (--insecure)';
  if (p.kind === 'local') return `local uid ${String(p.uid)} (pid ${String(p.pid)})`;
  if (p.kind === 'token') return `${p.role} ${p.name} (token ${p.id})`;
  return `${p.role} ${p.name}`;
}

const NODES: Standing[] = ['node'];
const APPS: Standing[] = ['user', 'local'];
const ADMIN: Standing[] = [];

/** Besides admins, who may call each method ('*': anyone, even unauthenticated). */
const POLICY: Record<string, Standing[] | '*'> = {
  // Node membership and the chunk directory: nodes only (and each only as itself: the dispatcher checks identity).
  '/hotpot.v1.Dispatcher/Join': NODES,
  '/hotpot.v1.Dispatcher/Heartbeat': NODES,
  '/hotpot.v1.Dispatcher/Leave': NODES,
  '/hotpot.v1.Dispatcher/ChunkRecovered': NODES,
  '/hotpot.v1.Dispatcher/MoveChunk': NODES,
  '/hotpot.v1.Dispatcher/WatchMembership': NODES,
  '/hotpot.v1.Dispatcher/ListNodes': NODES,
  // Datasets: nodes open and create them for their apps (which the node checks); admins manage them.
  '/hotpot.v1.Dispatcher/CreateDataset': NODES,
  '/hotpot.v1.Dispatcher/OpenDataset': NODES,
  '/hotpot.v1.Dispatcher/StatDataset': NODES,
  '/hotpot.v1.Dispatcher/ListDatasets': NODES,
  '/hotpot.v1.Dispatcher/WatchDatasets': NODES,
  '/hotpot.v1.Dispatcher/ResizeDataset': ADMIN,
  '/hotpot.v1.Dispatcher/DeleteDataset': ADMIN,
  '/hotpot.v1.Dispatcher/SetDatasetAccess': ADMIN,
  '/hotpot.v1.Dispatcher/ForgetLostPages': ADMIN,
  '/hotpot.v1.Dispatcher/ForgetNode': ADMIN,
  // Bearer tokens: admins manage them; nodes (and standby dispatchers) check the ones their clients present.
  '/hotpot.v1.Dispatcher/CreateToken': ADMIN,
  '/hotpot.v1.Dispatcher/ListTokens': ADMIN,
  '/hotpot.v1.Dispatcher/RevokeToken': ADMIN,
  '/hotpot.v1.Dispatcher/CheckToken': ['node', 'dispatcher'],
  // Revoked certificates: admins revoke; nodes list them to refuse those clients too.
  '/hotpot.v1.Dispatcher/RevokeCertificate': ADMIN,
  '/hotpot.v1.Dispatcher/ListRevokedCertificates': NODES,
  // MRSW leases and barriers: nodes ask for their apps.
  '/hotpot.v1.Dispatcher/Acquire': NODES,
  '/hotpot.v1.Dispatcher/Release': NODES,
  '/hotpot.v1.Dispatcher/RenewLease': NODES,
  // Lease certificates are bearer proofs: only admins may list them (nodes never need to).
  '/hotpot.v1.Dispatcher/ListLeases': ADMIN,
  '/hotpot.v1.Dispatcher/Barrier': NODES,
  // A node's own state, debugging and lifecycle: admins only.
  '/hotpot.v1.Node/Stats': ADMIN,
  '/hotpot.v1.Node/DumpPage': ADMIN,
  '/hotpot.v1.Node/Events': ADMIN,
  '/hotpot.v1.Node/SetDebugMask': ADMIN,
  '/hotpot.v1.Node/Drain': ADMIN,
  '/hotpot.v1.Node/Acquire': APPS,
  '/hotpot.v1.Node/Release': APPS,
  '/hotpot.v1.Node/RenewLease': APPS,
  '/hotpot.v1.Node/Barrier': APPS,
  // The Data API: apps (local or remote users); each dataset's owner and permission bits are checked at Open.
  '/hotpot.v1.Data/Open': APPS,
  '/hotpot.v1.Data/Read': APPS,
  '/hotpot.v1.Data/ReadStream': APPS,
  '/hotpot.v1.Data/Write': APPS,
  '/hotpot.v1.Data/WriteStream': APPS,
  '/hotpot.v1.Data/Commit': APPS,
  '/hotpot.v1.Data/Rollback': APPS,
  '/hotpot.v1.Data/Refresh': APPS,
  '/hotpot.v1.Data/Close': APPS,
  '/hotpot.v1.Data/Acquire': APPS,
  '/hotpot.v1.Data/Release': APPS,
  '/hotpot.v1.Data/Barrier': APPS,
  // Health probes need no credential; reflection lists services to authenticated callers.
  '/grpc.health.v1.Health/Check': '*',
  '/grpc.health.v1.Health/Watch': '*',
  '/grpc.reflection.v1.ServerReflection/ServerReflectionInfo': [...NODES, ...APPS],
  '/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo': [...NODES, ...APPS],
};

export type Decision = { ok: true } | { ok: false; code: 'UNAUTHENTICATED' | 'PERMISSION_DENIED'; message: string };

/** May `p` (null: no credential) call `path` ("/hotpot.v1.Data/Open")? */
export function authorize(path: string, p: Principal | null, daemonUid: number): Decision {
  const allowed = POLICY[path];
  if (allowed === '*') return { ok: true };
  if (p === null) {
    return {
      ok: false,
      code: 'UNAUTHENTICATED',
      message: `${path.slice(0, 200)} needs a client certificate of the cluster CA (hotpot certs issue) or a bearer token (hotpot token create)`,
    };
  }
  const s = standing(p, daemonUid);
  if (s === 'admin') return allowed === undefined ? deny(path, p) : { ok: true };
  if (allowed?.includes(s)) return { ok: true };
  return deny(path, p);
}

function deny(path: string, p: Principal): Decision {
  return { ok: false, code: 'PERMISSION_DENIED', message: `${describe(p)} may not call ${path.slice(0, 200)}` };
}

/** Every method the policy knows (tests check that each served method is listed). */
export const POLICY_METHODS: readonly string[] = Object.keys(POLICY);

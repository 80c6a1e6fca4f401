// TLS for every gRPC connection between processes (docs/security.md): mutual authentication against the cluster
// CA; a certificate's subject names its holder's role and name. `--insecure` (plaintext, a logged warning) is the
// only way around it.
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { ConfigError } from './config.ts';
import { certPaths, issueCert, roleHost, ROLES, type Role } from './certs.ts';

/** One process's TLS identity: the CA it trusts and its own certificate and key. */
export interface TlsIdentity {
  dir: string;
  role: Role;
  name: string;
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

/** A client that holds a bearer token instead of a certificate: TLS with the cluster CA, the token on every call. */
export interface BearerIdentity {
  dir: string;
  ca: Buffer;
  token: string;
}

/** How a process talks gRPC: TLS with its certificate, TLS with a bearer token (clients only), or plaintext
 * (explicit --insecure only). */
export type Security = { tls: TlsIdentity } | { bearer: BearerIdentity } | { insecure: true };

/**
 * Loads `<dir>/ca.crt` and the role's certificate. A node or dispatcher whose certificate is missing gets one
 * issued when the directory holds the CA key (a local cluster); otherwise the error says how to make one.
 */
export function loadTls(dir: string, role: Role, name: string, opts: { issue?: boolean } = {}): TlsIdentity {
  const p = certPaths(dir, role, name);
  if (!existsSync(p.ca)) {
    throw new ConfigError(
      `no cluster CA certificate at ${p.ca}: give --tls-dir (HOTPOT_TLS_DIR) the directory made by \`hotpot certs init\` ` +
        '(or `hotpot up`), or run with --insecure (plaintext, development only)',
    );
  }
  if (!existsSync(p.cert) || !existsSync(p.key)) {
    if (opts.issue && existsSync(p.caKey)) issueCert(dir, { role, name });
    else {
      throw new ConfigError(
        `no ${role} certificate "${name}" in ${dir} (${p.cert}): run \`hotpot certs issue ${role} ${name} --dir ${dir}\` ` +
          'where the CA key is',
      );
    }
  }
  return { dir, role, name, ca: readFileSync(p.ca), cert: readFileSync(p.cert), key: readFileSync(p.key) };
}

/**
 * Resolves a process's security from its flags: --insecure wins; else the TLS directory (flag, HOTPOT_TLS_DIR, or
 * the given default) must hold its certificate.
 */
export function securityFrom(o: {
  insecure?: boolean;
  tlsDir?: string;
  defaultDir: string;
  role: Role;
  name: string;
  issue?: boolean;
}): Security {
  if (o.insecure) return { insecure: true };
  return { tls: loadTls(resolve(o.tlsDir ?? o.defaultDir), o.role, o.name, { issue: o.issue === true }) };
}

/**
 * A client's identity from the certificate `<dir>/<base>.crt` (base "admin", "user.alice"…): its role and name are
 * read from the certificate itself.
 */
export function loadClientTls(dir: string, base: string): TlsIdentity {
  const ca = join(dir, 'ca.crt');
  const crt = join(dir, `${base}.crt`);
  const key = join(dir, `${base}.key`);
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,140}$/.test(base))
    throw new ConfigError(`--cert: bad certificate name "${base.slice(0, 64)}"`);
  for (const f of [ca, crt, key]) {
    if (!existsSync(f)) {
      throw new ConfigError(
        `no ${f}: the CLI needs the cluster CA and a client certificate (--tls-dir, HOTPOT_TLS_DIR; --cert, HOTPOT_CERT; ` +
          '`hotpot up` makes an admin one), or --insecure for a cluster run with --insecure',
      );
    }
  }
  const cert = readFileSync(crt);
  const holder = certHolder(new X509Certificate(cert).toLegacyObject());
  if (!holder) throw new ConfigError(`${crt} is not a hotpot certificate (no role and name in its subject)`);
  return { dir, role: holder.role, name: holder.name, ca: readFileSync(ca), cert, key: readFileSync(key) };
}

/** A certificate's holder as a server sees it (only certificates the CA signed reach here). */
export interface CertHolder {
  role: Role;
  name: string;
  /** For users: the uid:gid datasets are checked against. */
  uid?: number;
  gid?: number;
}

function field(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/** Reads the role, name (and a user's uid:gid) from a verified peer certificate; null when it names none. */
export function certHolder(cert: Pick<PeerCertificate, 'subject' | 'subjectaltname'>): CertHolder | null {
  const role = field(cert.subject.OU);
  const name = field(cert.subject.CN);
  if (!role || !name || !(ROLES as readonly string[]).includes(role)) return null;
  const h: CertHolder = { role: role as Role, name };
  if (role === 'user') {
    const m = /(?:^|, )URI:hotpot-posix:(\d{1,10}):(\d{1,10})(?:,|$)/.exec(cert.subjectaltname ?? '');
    if (!m) return null;
    h.uid = Number(m[1]);
    h.gid = Number(m[2]);
  }
  return h;
}

/** Server credentials: TLS that asks for (but lets in without) a client certificate — calls without one are refused
 * per RPC with UNAUTHENTICATED, which a handshake failure could not say. */
export function serverCredentials(s: Security): grpc.ServerCredentials {
  if ('insecure' in s) return grpc.ServerCredentials.createInsecure();
  if ('bearer' in s) throw new ConfigError('a server needs a certificate, not a bearer token');
  const { ca, cert, key } = s.tls;
  // One provider gives both the CA and the identity (grpc-js 1.14's factory passes its two providers to the
  // constructor in the other order, so distinct ones would be swapped). Updates come after the listener is added,
  // as a file-watching provider's would: grpc-js registers the server's watcher only after adding the listener.
  const both: grpc.experimental.CertificateProvider = {
    addCaCertificateListener: (l) => {
      queueMicrotask(() => {
        l({ caCertificate: ca });
      });
    },
    removeCaCertificateListener: () => undefined,
    addIdentityCertificateListener: (l) => {
      queueMicrotask(() => {
        l({ certificate: cert, privateKey: key });
      });
    },
    removeIdentityCertificateListener: () => undefined,
  };
  return grpc.experimental.createCertificateProviderServerCredentials(both, both, false);
}

/**
 * As channelSecurity, for a target address: a node's unix socket ("unix:/…/grpc.sock") is plaintext (the node knows
 * its callers by their peer credentials), any other address gets `s`.
 */
export function channelFor(
  address: string,
  s: Security,
  serverRole: 'dispatcher' | 'node',
): { credentials: grpc.ChannelCredentials; options: grpc.ChannelOptions } {
  return channelSecurity(address.startsWith('unix:') ? { insecure: true } : s, serverRole);
}

/**
 * Channel credentials and options for a client of a `serverRole` server: the server must show a certificate of the
 * cluster CA for that role (checked by its <role>.hotpot name, whatever address was dialed); ours goes with it.
 */
export function channelSecurity(
  s: Security,
  serverRole: 'dispatcher' | 'node',
): { credentials: grpc.ChannelCredentials; options: grpc.ChannelOptions } {
  if ('insecure' in s) return { credentials: grpc.credentials.createInsecure(), options: {} };
  const host = roleHost(serverRole);
  const options = { 'grpc.ssl_target_name_override': host, 'grpc.default_authority': host };
  const verify = {
    checkServerIdentity: (_h: string, peer: PeerCertificate) => {
      const e = checkServerIdentity(host, peer);
      if (e) return e;
      const holder = certHolder(peer);
      return holder?.role === serverRole
        ? undefined
        : new Error(`the server's certificate is not a ${serverRole}'s (${field(peer.subject.OU) ?? 'no role'})`);
    },
  };
  if ('bearer' in s) {
    const { token } = s.bearer;
    const callCreds = grpc.credentials.createFromMetadataGenerator((_params, cb) => {
      const md = new grpc.Metadata();
      md.set('authorization', `Bearer ${token}`);
      cb(null, md);
    });
    return {
      credentials: grpc.credentials.combineChannelCredentials(
        grpc.credentials.createSsl(s.bearer.ca, null, null, verify),
        callCreds,
      ),
      options,
    };
  }
  const { ca, cert, key } = s.tls;
  return {
    credentials: grpc.credentials.createSsl(ca, key, cert, verify),
    options,
  };
}

// The cluster CA and the certificates it issues (docs/security.md), made with the openssl command line: a
// directory holds ca.crt (everyone), ca.key (only where certificates are issued) and one <file>.crt/.key per
// process or user. A certificate names its holder's role (subject OU) and name (CN); a user's also carries the
// POSIX uid:gid its datasets are checked against (a SAN URI hotpot-posix:UID:GID).
import { execFileSync } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';

export const ROLES = ['dispatcher', 'node', 'admin', 'user'] as const;
export type Role = (typeof ROLES)[number];

/** The DNS name every server certificate of a role carries; clients check it (whatever address they dial). */
export const roleHost = (role: 'dispatcher' | 'node'): string => `${role}.hotpot`;

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const HOST = /^[A-Za-z0-9*]([A-Za-z0-9.-]{0,252})$/;

export class CertError extends Error {
  override readonly name = 'CertError';
}

export function checkCertName(name: string): void {
  if (!NAME.test(name)) {
    throw new CertError(
      `certificate name "${name.slice(0, 64)}": 1-128 of A-Z a-z 0-9 . _ - (not starting with . _ -)`,
    );
  }
}

/** The file name (without .crt/.key) of a role's certificate: "dispatcher", "admin", "node.node-1", "user.alice". */
export function certBase(role: Role, name: string): string {
  checkCertName(name);
  return name === role ? role : `${role}.${name}`;
}

export interface CertPaths {
  ca: string;
  caKey: string;
  cert: string;
  key: string;
}

export function certPaths(dir: string, role: Role, name: string): CertPaths {
  const base = certBase(role, name);
  return {
    ca: join(dir, 'ca.crt'),
    caKey: join(dir, 'ca.key'),
    cert: join(dir, `${base}.crt`),
    key: join(dir, `${base}.key`),
  };
}

function openssl(args: string[]): void {
  try {
    execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: Buffer };
    if (err.code === 'ENOENT')
      throw new CertError('the openssl command is needed to make certificates (apt install openssl)');
    throw new CertError(
      `openssl ${args[0] ?? ''} failed: ${err.stderr?.toString().trim().slice(0, 500) ?? err.message}`,
    );
  }
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** Creates the cluster CA in `dir` unless it is there; returns whether it made one. */
export function initCa(dir: string, opts: { days?: number } = {}): boolean {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const p = certPaths(dir, 'admin', 'admin');
  if (existsSync(p.ca)) return false;
  if (existsSync(p.caKey)) throw new CertError(`${p.caKey} exists without ${p.ca}: remove it or restore ca.crt`);
  const id = randomBytes(4).toString('hex');
  openssl([
    'req',
    '-x509',
    ...EC,
    '-keyout',
    p.caKey,
    '-out',
    p.ca,
    '-days',
    String(opts.days ?? 3650),
    '-subj',
    `/O=hotpot/OU=ca/CN=hotpot cluster CA ${id}`,
    '-addext',
    'basicConstraints=critical,CA:TRUE,pathlen:0',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  chmodSync(p.caKey, 0o600);
  chmodSync(p.ca, 0o644);
  return true;
}

export interface IssueOptions {
  role: Role;
  name: string;
  /** Extra host names / addresses a server certificate is valid for (besides localhost and <role>.hotpot). */
  hosts?: string[];
  /** A user's POSIX identity (required for role user): its dataset access is checked as this uid:gid. */
  uid?: number;
  gid?: number;
  days?: number;
  /** Replace an existing certificate of that name. */
  force?: boolean;
}

function checkId(what: string, v: number | undefined): number {
  if (v === undefined || !Number.isInteger(v) || v < 0 || v > 0xfffffffe) {
    throw new CertError(`${what} must be an integer from 0 to 4294967294`);
  }
  return v;
}

/** Issues a certificate signed by the CA in `dir` (which must hold ca.key); returns its paths. */
export function issueCert(dir: string, o: IssueOptions): CertPaths {
  if (!(ROLES as readonly string[]).includes(o.role)) throw new CertError(`role must be one of ${ROLES.join(', ')}`);
  const p = certPaths(dir, o.role, o.name);
  if (!existsSync(p.ca) || !existsSync(p.caKey)) {
    throw new CertError(`no cluster CA in ${dir} (ca.crt and ca.key): run \`hotpot certs init --dir ${dir}\` first`);
  }
  if (existsSync(p.cert) && !o.force) throw new CertError(`${p.cert} exists (--force replaces it)`);
  const san: string[] = [];
  if (o.role === 'dispatcher' || o.role === 'node') {
    san.push(`DNS:${roleHost(o.role)}`, 'DNS:localhost', 'IP:127.0.0.1', 'IP:::1');
    for (const h of o.hosts ?? []) {
      if (isIP(h)) san.push(`IP:${h}`);
      else if (HOST.test(h)) san.push(`DNS:${h}`);
      else throw new CertError(`host "${h.slice(0, 64)}" is neither an address nor a DNS name`);
    }
  } else if (o.hosts && o.hosts.length > 0) {
    throw new CertError('--host is for dispatcher and node certificates');
  }
  if (o.role === 'user')
    san.push(`URI:hotpot-posix:${String(checkId('--uid', o.uid))}:${String(checkId('--gid', o.gid))}`);
  else if (o.uid !== undefined || o.gid !== undefined) throw new CertError('--uid/--gid are for user certificates');
  const tmp = join(dir, `.issue-${randomBytes(6).toString('hex')}`);
  mkdirSync(tmp, { mode: 0o700 });
  try {
    const csr = join(tmp, 'csr.pem');
    const key = join(tmp, 'key.pem');
    const crt = join(tmp, 'crt.pem');
    const ext = join(tmp, 'ext.cnf');
    openssl(['req', '-new', ...EC, '-keyout', key, '-out', csr, '-subj', `/O=hotpot/OU=${o.role}/CN=${o.name}`]);
    writeFileSync(
      ext,
      [
        'basicConstraints=critical,CA:FALSE',
        'keyUsage=critical,digitalSignature,keyAgreement',
        `extendedKeyUsage=${o.role === 'dispatcher' || o.role === 'node' ? 'serverAuth,clientAuth' : 'clientAuth'}`,
        ...(san.length > 0 ? [`subjectAltName=${san.join(',')}`] : []),
        '',
      ].join('\n'),
    );
    openssl([
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      p.ca,
      '-CAkey',
      p.caKey,
      '-set_serial',
      `0x${randomBytes(16).toString('hex')}`,
      '-days',
      String(o.days ?? 825),
      '-extfile',
      ext,
      '-out',
      crt,
    ]);
    writeFileSync(p.key, readFileSync(key), { mode: 0o600 });
    chmodSync(p.key, 0o600);
    writeFileSync(p.cert, readFileSync(crt), { mode: 0o644 });
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return p;
}

/**
 * A certificate file's SHA-256 fingerprint, subject and expiry (for `hotpot certs revoke`). `ref` is a path, or the
 * base name of a certificate in `dir` ("user.alice", "admin").
 */
export function certFingerprint(
  dir: string,
  ref: string,
): { file: string; fingerprint: string; subject: string; expiresUnixMs: number } {
  const file = existsSync(ref) ? ref : join(dir, ref.endsWith('.crt') ? ref : `${ref}.crt`);
  let c: X509Certificate;
  try {
    c = new X509Certificate(readFileSync(file));
  } catch (e) {
    throw new CertError(`cannot read certificate ${file}: ${e instanceof Error ? e.message : String(e)}`);
  }
  return {
    file,
    fingerprint: c.fingerprint256,
    subject: c.subject.replace(/\n/g, ', '),
    expiresUnixMs: Date.parse(c.validTo),
  };
}

/** The certificates in `dir` (not the CA): file, role, name and expiry, for `hotpot certs list`. */
export function listCerts(dir: string): { file: string; role: string; name: string; expires: string }[] {
  if (!existsSync(dir)) throw new CertError(`no TLS directory ${dir}`);
  return readdirSync(dir)
    .filter((f) => f.endsWith('.crt') && f !== 'ca.crt')
    .sort()
    .map((f) => {
      try {
        const c = new X509Certificate(readFileSync(join(dir, f)));
        const subject = Object.fromEntries(c.subject.split('\n').map((kv) => kv.split('=', 2) as [string, string]));
        return {
          file: f,
          role: subject.OU ?? '?',
          name: subject.CN ?? '?',
          expires: new Date(c.validTo).toISOString(),
        };
      } catch {
        return { file: f, role: '?', name: '(unreadable)', expires: '?' };
      }
    });
}

// Connection failures said the way a person can act on them: which server could not be reached, why in a few
// words, and what to try. grpc-js's own text ("No connection established. Last error: ...") never reaches the user.

export interface ConnectionContext {
  /** The dispatcher address the command used. */
  dispatcher: string;
  /** The TLS directory the command used (undefined with --insecure). */
  tlsDir?: string | undefined;
  insecure: boolean;
}

const ADDRESS = /\b((?:\d{1,3}\.){3}\d{1,3}|\[[0-9a-f:]+\]|localhost|[A-Za-z0-9.-]+\.[A-Za-z]{2,}):(\d{1,5})\b/;

/** A node's address or the dispatcher's, named for the message. */
function serverName(message: string, ctx: ConnectionContext): string {
  const m = ADDRESS.exec(message);
  const addr = m ? `${m[1] ?? ''}:${m[2] ?? ''}` : ctx.dispatcher;
  return addr === ctx.dispatcher ? `the dispatcher at ${addr}` : `the node at ${addr}`;
}

function tlsHint(ctx: ConnectionContext): string {
  return ctx.insecure
    ? 'the cluster may use TLS: drop --insecure and give --tls-dir with its CA and your certificate'
    : `check that --tls-dir (now ${ctx.tlsDir ?? '?'}) holds this cluster's CA and your certificate (--cert), ` +
        'or use --insecure for a cluster run with --insecure';
}

const CLUSTER_HINT = 'is the cluster running? start one with `hotpot up`, or give its address with --dispatcher';

/**
 * One line for a failed call when it failed for want of a connection, TLS or credentials; null for any other error
 * (those carry the server's own message).
 */
export function explainConnectionError(code: string, message: string, ctx: ConnectionContext): string | null {
  const who = serverName(message, ctx);
  const tls =
    /\b(?:SSL|TLS|certificate|self[- ]signed|handshake|wrong version number|CERT_|unable to verify|secure TLS)\b/i;
  if ((code === 'UNAVAILABLE' || code === 'UNKNOWN' || code === 'INTERNAL') && tls.test(message)) {
    return `TLS with ${who} failed: ${tlsHint(ctx)}`;
  }
  // The status name stays in front: scripts and tests look for it, and the server's reason is in the middle.
  if (code === 'UNAUTHENTICATED') {
    return (
      `UNAUTHENTICATED: ${who} did not accept our credentials (${message}): use a certificate of this cluster's CA (--tls-dir, ` +
      '--cert) or a valid --token-file'
    );
  }
  if (code === 'UNAVAILABLE') {
    const why = /ECONNREFUSED/.test(message)
      ? 'connection refused'
      : /ENOTFOUND|EAI_AGAIN|Name resolution failed|DNS resolution failed/i.test(message)
        ? 'unknown host'
        : /EHOSTUNREACH|ENETUNREACH/.test(message)
          ? 'host unreachable'
          : /ETIMEDOUT/.test(message)
            ? 'connection timed out'
            : /ECONNRESET|socket disconnected|Connection dropped/i.test(message)
              ? 'the connection was closed'
              : /Failed to connect/i.test(message)
                ? 'the connection failed'
                : /^no connection/.test(message)
                  ? 'no connection'
                  : null;
    if (why === null) return null;
    if (why === 'unknown host')
      return `cannot reach ${who} (${why}): check the address (--dispatcher, or the context's)`;
    // A plaintext client at a TLS server, or the reverse, sees its connection fail or close without a reason.
    if (why === 'the connection was closed' || why === 'the connection failed') {
      return `cannot talk to ${who} (${why}): ${CLUSTER_HINT}; or ${tlsHint(ctx)}`;
    }
    return `cannot reach ${who} (${why}): ${CLUSTER_HINT}`;
  }
  if (code === 'DEADLINE_EXCEEDED' && /Deadline exceeded|waiting for|no connection|connect/i.test(message)) {
    return `no answer from ${who} in time: ${CLUSTER_HINT}`;
  }
  return null;
}

// A list of dispatcher endpoints ("--dispatcher a:port,b:port", HOTPOT_DISPATCHER) as one gRPC channel target.
// A channel over every address with gRPC's pick_first policy connects to the first one that accepts; a standby
// dispatcher (etcd store) answers every call with the leader's address, which the client then follows
// (dispatcher-client.ts). When the leader dies, its connection breaks, the client goes back to this channel, which
// tries the addresses again; calls in between fail with UNAVAILABLE and are retried as for a dispatcher restart.
// One address is used as given (host names included).
import { isIPv4, isIPv6 } from 'node:net';

/** The addresses of a comma-separated list, trimmed, without empty entries. */
export function endpointList(list: string): string[] {
  return list
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/**
 * The gRPC target of a dispatcher endpoint list: the address itself when there is one; `ipv4:a:p,b:p` (or ipv6:)
 * when there are several. gRPC's address lists take IP addresses only: "localhost" stands for 127.0.0.1, other host
 * names are refused with a message saying so.
 */
export function dispatcherTarget(list: string): string {
  const all = endpointList(list);
  if (all.length === 0) throw new Error('the dispatcher address list is empty');
  if (all.length === 1) return all[0] ?? '';
  const parsed = all.map((a) => {
    const m = /^\[([0-9A-Fa-f:.]+)\]:(\d{1,5})$/.exec(a) ?? /^([^:[\]]+):(\d{1,5})$/.exec(a);
    if (!m?.[1] || !m[2]) throw new Error(`dispatcher address "${a}" is not host:port ([v6]:port for IPv6)`);
    const host = m[1] === 'localhost' ? '127.0.0.1' : m[1];
    if (!isIPv4(host) && !isIPv6(host)) {
      throw new Error(
        `dispatcher address "${a}": a list of several dispatchers takes IP addresses, not host names ` +
          '(resolve them first, or give one address)',
      );
    }
    return { host, port: m[2], v6: isIPv6(host) };
  });
  const v6 = parsed.filter((p) => p.v6).length;
  if (v6 !== 0 && v6 !== parsed.length) throw new Error('a list of dispatchers is all IPv4 or all IPv6');
  return v6 === 0
    ? `ipv4:${parsed.map((p) => `${p.host}:${p.port}`).join(',')}`
    : `ipv6:${parsed.map((p) => `[${p.host}]:${p.port}`).join(',')}`;
}

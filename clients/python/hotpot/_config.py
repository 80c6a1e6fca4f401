"""How a client finds the cluster, as the CLI and the TypeScript tools do: explicit arguments > environment
(HOTPOT_GRPC, HOTPOT_DISPATCHER, HOTPOT_TLS_DIR, HOTPOT_CERT, HOTPOT_TOKEN, HOTPOT_INSECURE) > ./.hotpot/cluster.json
(written by `hotpot up`) > defaults (dispatcher 127.0.0.1:18500, TLS directory ./.hotpot/tls, certificate admin)."""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import grpc

from ._errors import ConfigError

CLUSTER_FILE = os.path.join(".hotpot", "cluster.json")
DEFAULT_DISPATCHER = "127.0.0.1:18500"
DEFAULT_TLS_DIR = os.path.join(".hotpot", "tls")
DEFAULT_CERT = "admin"

#: Largest Read and largest piece of a Write / WriteStream / ReadStream message.
MAX_MESSAGE_BYTES = 1 << 20
#: A dispatcher answer carries a dataset's whole chunk map (~5 MB for 1 TiB), over gRPC's 4 MiB default.
MAX_DISPATCHER_ANSWER_BYTES = 64 << 20

_CERT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,140}$")


#: The trailer a standby dispatcher sends with UNAVAILABLE: the address of the leader it knows.
LEADER_TRAILER = "hotpot-leader"
_LEADER = re.compile(r"^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]+)):(\d{1,5})$")


def dispatcher_target(addresses: str) -> str:
    """The gRPC target of HOTPOT_DISPATCHER / `dispatcher`: one address as given, or several ("a:p,b:p", the
    dispatchers on etcd, leader and standbys) as an `ipv4:`/`ipv6:` address list that connects to the first one that
    accepts. That may be a standby: it answers UNAVAILABLE naming the leader (LEADER_TRAILER), and the client resends
    the call to the leader (see ClientBase). A list takes IP addresses ("localhost" is 127.0.0.1)."""
    parts = [a.strip() for a in addresses.split(",") if a.strip()]
    if len(parts) <= 1:
        return parts[0] if parts else addresses
    hosts = []
    for a in parts:
        m = re.match(r"^\[([0-9A-Fa-f:.]+)\]:(\d{1,5})$", a) or re.match(r"^([^:\[\]]+):(\d{1,5})$", a)
        if not m:
            raise ConfigError(None, f'dispatcher address "{a}" is not host:port ([v6]:port for IPv6)')
        host = "127.0.0.1" if m.group(1) == "localhost" else m.group(1)
        try:
            v6 = isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
        except ValueError:
            raise ConfigError(
                None,
                f'dispatcher address "{a}": a list of several dispatchers takes IP addresses, not host names'
            ) from None
        hosts.append((host, m.group(2), v6))
    if any(h[2] for h in hosts) and not all(h[2] for h in hosts):
        raise ConfigError(None, "a list of dispatchers is all IPv4 or all IPv6")
    if hosts[0][2]:
        return "ipv6:" + ",".join(f"[{h}]:{p}" for h, p, _ in hosts)
    return "ipv4:" + ",".join(f"{h}:{p}" for h, p, _ in hosts)


def leader_address(raw: Any) -> Optional[str]:
    """The leader a standby's LEADER_TRAILER names, when it is an address a client may dial: "host:port" or
    "[v6]:port", at most 255 characters, port 1-65535. None for anything else (the trailer is then not followed)."""
    if not isinstance(raw, str) or len(raw) > 255:
        return None
    m = _LEADER.match(raw)
    if not m or not 1 <= int(m.group(3)) <= 65535:
        return None
    if m.group(1) is not None:
        try:
            ipaddress.IPv6Address(m.group(1))
        except ValueError:
            return None
    return raw


def _read_cluster_file() -> Dict[str, Any]:
    """./.hotpot/cluster.json, or {} when there is none. A file that is there but malformed is an error: silently
    falling back to defaults would connect somewhere else."""
    try:
        with open(CLUSTER_FILE, "r", encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ConfigError(None, f"cannot read {os.path.abspath(CLUSTER_FILE)}: {e.strerror}") from None
    except ValueError as e:
        raise ConfigError(None, f"{os.path.abspath(CLUSTER_FILE)} is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(None, f"{os.path.abspath(CLUSTER_FILE)}: expected an object")
    return data


def _cluster_field(data: Dict[str, Any], what: str) -> Optional[str]:
    """`dispatcher`, `stateDir` or `nodes[0].address` from the cluster file; None when absent or empty (as an empty
    environment variable counts as unset)."""
    if what == "node":
        nodes = data.get("nodes")
        if nodes is None:
            return None
        if not isinstance(nodes, list) or (nodes and not isinstance(nodes[0], dict)):
            raise ConfigError(None, f"{os.path.abspath(CLUSTER_FILE)}: `nodes` must be a list of objects")
        value, field = (nodes[0].get("address") if nodes else None), "nodes[0].address"
    else:
        value, field = data.get(what), what
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(None, f"{os.path.abspath(CLUSTER_FILE)}: `{field}` must be a string")
    return value


@dataclass(frozen=True)
class Settings:
    """A client's resolved configuration (see the module docstring for the order)."""

    node: Optional[str]
    dispatcher: str
    tls_dir: str
    cert: str
    token: Optional[str]
    insecure: bool
    timeout: float

    @staticmethod
    def resolve(
        address: Optional[str],
        dispatcher: Optional[str],
        timeout: float,
        tls_dir: Optional[str],
        cert: Optional[str],
        insecure: Optional[bool],
        token: Optional[str],
    ) -> "Settings":
        for name, value in (("address", address), ("dispatcher", dispatcher), ("tls_dir", tls_dir), ("cert", cert)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(None, f"{name} must be a non-empty string")
        if token is not None and not isinstance(token, str):
            raise ConfigError(None, "token must be a string")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ConfigError(None, "timeout must be a number of seconds > 0")
        env = os.environ
        cluster: Optional[Dict[str, Any]] = None

        def from_file(what: str) -> Optional[str]:
            nonlocal cluster
            if cluster is None:
                cluster = _read_cluster_file()
            return _cluster_field(cluster, what)

        node = address or env.get("HOTPOT_GRPC") or from_file("node")
        disp = dispatcher or env.get("HOTPOT_DISPATCHER") or from_file("dispatcher") or DEFAULT_DISPATCHER
        if not tls_dir:
            state = None if env.get("HOTPOT_TLS_DIR") else from_file("stateDir")
            tls_dir = env.get("HOTPOT_TLS_DIR") or (os.path.join(state, "tls") if state else DEFAULT_TLS_DIR)
        # A bearer token (HOTPOT_TOKEN) stands in for a certificate unless one is named.
        if token is None and cert is None:
            token = env.get("HOTPOT_TOKEN") or None
        cert = cert or env.get("HOTPOT_CERT") or DEFAULT_CERT
        if not _CERT_NAME.match(cert):
            raise ConfigError(None, f"cert: bad certificate name {cert[:64]!r} (e.g. admin or user.alice)")
        if insecure is None:
            insecure = env.get("HOTPOT_INSECURE") == "1"
        return Settings(node, disp, tls_dir, cert, token or None, bool(insecure), float(timeout))

    def node_address(self) -> str:
        if not self.node:
            raise ConfigError(
                None,
                "no node address: pass one, set HOTPOT_GRPC, or run in the directory of `hotpot up` "
                "(.hotpot/cluster.json)",
            )
        return self.node

    def channel_args(self, address: str, server_role: str) -> Tuple[Optional[grpc.ChannelCredentials], List[Any]]:
        """Credentials (None: plaintext) and options for a channel to a `server_role` ('node' or 'dispatcher')."""
        opts: List[Any] = [
            ("grpc.max_receive_message_length", max(4 * MAX_MESSAGE_BYTES, MAX_DISPATCHER_ANSWER_BYTES)),
            ("grpc.max_send_message_length", 4 * MAX_MESSAGE_BYTES),
        ]
        # A node's unix socket is local: the node knows the caller by its uid.
        if address.startswith("unix:") or self.insecure:
            return None, opts
        # The server's certificate is checked as its role's (node.hotpot / dispatcher.hotpot), whatever was dialed.
        opts.append(("grpc.ssl_target_name_override", f"{server_role}.hotpot"))
        return self._credentials(), opts

    def _credentials(self) -> grpc.ChannelCredentials:
        """Mutual TLS with the cluster CA and `<tls_dir>/<cert>.crt`, or with a bearer token: TLS with the CA only
        and the token on every call."""
        ca = _read(self.tls_dir, "ca.crt", self)
        if self.token:
            return grpc.composite_channel_credentials(
                grpc.ssl_channel_credentials(root_certificates=ca), grpc.access_token_call_credentials(self.token)
            )
        crt = _read(self.tls_dir, self.cert + ".crt", self)
        key = _read(self.tls_dir, self.cert + ".key", self)
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=crt)


def _read(directory: str, name: str, s: Settings) -> bytes:
    path = os.path.join(directory, name)
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        need = "the cluster CA (a token is sent over TLS)" if s.token else "the cluster CA and a client certificate"
        raise ConfigError(
            None,
            f"cannot read {path} ({e.strerror}): a TCP address needs {need} "
            "(tls_dir / $HOTPOT_TLS_DIR, cert / $HOTPOT_CERT; `hotpot certs issue user NAME --uid U --gid G`), "
            "or insecure=True for a cluster run with --insecure",
        ) from None

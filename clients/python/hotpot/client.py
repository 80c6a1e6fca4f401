"""The blocking client: `hotpot.Client` over grpc's synchronous channels."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator, Optional, Sequence, TypeVar

import grpc

from . import _api
from ._api import Range
from ._errors import CommitConflictError, from_rpc_error

T = TypeVar("T")


class Client(_api.ClientBase):
    """A connection to a Hotpot cluster: one node's gRPC endpoint for data (`open`) and the dispatcher for admin
    calls (`create`, `ls`, `stat`, `rm`). Channels are made on first use.

    Found as the CLI finds them: arguments > environment > ./.hotpot/cluster.json (written by `hotpot up`) > defaults.
    `address`: $HOTPOT_GRPC, else the first node of the cluster file ("host:port" or "unix:/path/grpc.sock").
    `dispatcher`: $HOTPOT_DISPATCHER, else the cluster file's, else 127.0.0.1:18500. A TCP address is mutual TLS:
    `tls_dir` ($HOTPOT_TLS_DIR, else the cluster's `tls` directory, else ./.hotpot/tls) holds the cluster CA and the
    client certificate `cert` ($HOTPOT_CERT, default "admin"; a user's is "user.NAME"), or instead a bearer `token`
    ($HOTPOT_TOKEN unless `cert` is given). A unix socket is local: the node knows the caller by its uid.
    `insecure=True` ($HOTPOT_INSECURE=1) talks plaintext to a cluster run with --insecure. `timeout` (seconds) is
    every call's deadline.

    `dispatcher` may be one address or a list "a:p,b:p" of the dispatchers on etcd (IP addresses), the leader and its
    standbys, or just one standby's: a standby answers UNAVAILABLE naming the leader, and the call is resent there at
    once (once); later admin calls go straight to that leader, and back over `dispatcher` when it is gone."""

    def _channel(self, address: str, role: str) -> Any:
        creds, opts = self._settings.channel_args(address, role)
        if creds is None:
            ch = grpc.insecure_channel(address, options=opts)
        else:
            ch = grpc.secure_channel(address, creds, options=opts)
        self._channels.append(ch)
        return ch

    def _call(self, method: Any, req: Any, convert: Callable[[Any], Any], timeout: Optional[float] = None) -> Any:
        try:
            return convert(method(req, timeout=timeout or self._settings.timeout))
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    def _dispatcher_call(self, rpc: str, req: Any, convert: Callable[[Any], Any]) -> Any:
        deadline = time.monotonic() + self._settings.timeout
        route = self._dispatcher_route()
        try:
            return convert(getattr(route[1], rpc)(req, timeout=self._settings.timeout))
        except grpc.RpcError as e:
            to, err = self._redirect(e, route, resent=False)
            if to is None:
                raise err from None
        # Resent within what is left of the call's deadline.
        try:
            return convert(getattr(to[1], rpc)(req, timeout=max(deadline - time.monotonic(), 0.001)))
        except grpc.RpcError as e:
            raise self._redirect(e, to, resent=True)[1] from None

    def close(self) -> None:
        """Closes every channel: the node's, the dispatcher's, and any to a leader a standby named."""
        for ch in self._forget_channels():
            ch.close()

    def _retire(self, channel: Any) -> None:
        def close() -> None:
            self._retiring.discard(timer)
            if channel in self._channels:
                self._channels.remove(channel)
                channel.close()

        timer = threading.Timer(self._settings.timeout, close)
        timer.daemon = True
        self._retiring.add(timer)
        timer.start()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Dataset(_api.DatasetBase):
    __doc__ = _api.DatasetBase.__doc__

    def read(self, offset: int, length: int, snapshot: bool = False) -> bytes:
        """Bytes [offset, offset + length). Over 1 MiB is streamed in 1 MiB messages.

        With ``snapshot=True`` the bytes are the latest committed data the node shows, every commit whole (never
        part of a commit, even one spanning several owners), with this session's own uncommitted writes on top;
        consistent per 1 MiB message, not as a whole."""
        req = self._read_request(offset, length, snapshot)
        if length <= _api.MAX_MESSAGE_BYTES:
            return self._unary("Read", req, lambda r: bytes(r.data))  # type: ignore[no-any-return]
        stream = self._unary("ReadStream", req, lambda s: s)
        out = bytearray()
        try:
            for msg in stream:
                out += msg.data
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        return bytes(out)

    def transaction(
        self, attempts: int = 10, replicas: Optional[int] = None, reads: Sequence[Range] = (), backoff_ms: float = 2
    ) -> "Transaction":
        """Runs a read-modify-write until it commits without a conflict::

            for attempt in ds.transaction():
                with attempt:
                    n = int.from_bytes(ds.read(0, 8), "little")
                    ds.write(0, (n + 1).to_bytes(8, "little"))

        Leaving the `with` block commits (with `replicas` and the read set `reads`). On a conflict the changes are
        rolled back (which also moves the session to the latest commits), and after a jittered, doubling pause
        (`backoff_ms` the first) the loop runs the body again, up to `attempts` times; then the last
        CommitConflictError is raised. An exception from the body rolls back and propagates. The body may run more
        than once. `transaction().result` is the CommitResult."""
        return Transaction(self, attempts, replicas, reads, backoff_ms)

    def run_transaction(self, fn: Callable[["Dataset"], T], **options: Any) -> T:
        """`fn(ds)` inside `transaction(**options)`: runs it until it commits; returns its last value."""
        for attempt in self.transaction(**options):
            with attempt:
                value = fn(self)
        return value

    def close(self) -> None:
        """Ends the session; uncommitted changes are dropped, a held lease is released. Idempotent."""
        if not self.closed:
            req = self._close_request()
            self._c._call(self._c._data_stub().Close, req, lambda r: None)

    def __enter__(self) -> "Dataset":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Attempt(_api.AttemptBase):
    def __enter__(self) -> Dataset:
        self.entered = True
        return self.dataset  # type: ignore[no-any-return]

    def __exit__(self, kind: Any, value: Any, tb: Any) -> bool:
        ds: Dataset = self.dataset
        if kind is not None:
            ds.rollback()
            return False
        try:
            self.result = ds.commit(self.transaction.replicas, self.transaction.reads)
        except CommitConflictError as e:
            self.conflict = e
            ds.rollback()
        return False


class Transaction(_api.TransactionBase):
    def __iter__(self) -> Iterator[Attempt]:
        last: Optional[CommitConflictError] = None
        for i in range(self.attempts):
            if i > 0:
                time.sleep(_api.backoff_seconds(i, self.backoff_ms))
            attempt = Attempt(self, i)
            self.tries = i + 1
            yield attempt
            if self._after(attempt):
                return
            last = attempt.conflict
        raise self._give_up(last)


Client._dataset_class = Dataset

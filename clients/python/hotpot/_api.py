"""The client API once, for both flavours: `hotpot.Client` (blocking) and `hotpot.aio.Client` (asyncio).

Each call builds its request, checks its arguments and converts the answer here; the flavour only supplies
`_call(method, request, convert, timeout)`, which blocks and returns the converted answer (hotpot.Client) or returns
a coroutine of it (hotpot.aio). Calls whose control flow differs (streamed reads, close, transaction) live in the
flavours.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

from ._config import LEADER_TRAILER, MAX_MESSAGE_BYTES, Settings, dispatcher_target, leader_address
from ._errors import CommitConflictError, FailedPreconditionError, HotpotError, InvalidArgumentError, from_rpc_error
from ._gen import common_pb2, data_pb2, data_pb2_grpc, dispatcher_pb2, dispatcher_pb2_grpc

_MODES = {"mrmw": common_pb2.CONSISTENCY_MODE_MRMW, "mrsw": common_pb2.CONSISTENCY_MODE_MRSW}
_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1

Range = Tuple[int, int]


@dataclass(frozen=True)
class CommitResult:
    copies: int  #: distinct nodes durably holding every committed byte (>= replicas unless under_replicated)
    pages: int  #: private pages submitted
    ranges: int  #: changed byte ranges shipped
    bytes: int  #: changed bytes shipped
    replicas: int = 0  #: N the commit asked for
    #: applied and visible with fewer than N copies (a push failed after the commit point); topped up in the
    #: background. Not an error: the commit happened.
    under_replicated: bool = False


@dataclass(frozen=True)
class Lease:
    """MRSW write ownership held by a session (from `Dataset.acquire`)."""

    id: str  #: the lease's id at the MRSW master
    fencing_epoch: int  #: owners refuse commits under an older epoch
    expires_unix_ms: int  #: when it ends (dispatcher clock); commits after that fail
    ranges: List[Range]  #: the held pages as (offset, length) byte ranges


@dataclass(frozen=True)
class BarrierResult:
    generation: int  #: which use of the barrier name this was (0, 1, ...)
    arrival: int  #: this caller's arrival order in its generation (0 = first)


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset as the dispatcher knows it (`Client.create`, `ls`, `stat`)."""

    name: str
    id: int  #: stable numeric id, never reused
    size: int  #: bytes
    mode: str  #: 'mrmw' or 'mrsw'
    replicas: int  #: default replication degree N of commits
    chunk_size: int
    chunk_count: int
    created_unix_ms: int
    generation: int  #: bumped by every metadata change
    owner_uid: int
    owner_gid: int
    permissions: int  #: POSIX-like bits for app sockets, e.g. 0o600


def _mode_name(mode: int) -> str:
    return "mrsw" if mode == common_pb2.CONSISTENCY_MODE_MRSW else "mrmw"


def _dataset_info(d: Any) -> DatasetInfo:
    return DatasetInfo(
        name=d.name,
        id=d.id,
        size=d.size_bytes,
        mode=_mode_name(d.mode),
        replicas=d.replicas,
        chunk_size=d.chunk_size_bytes,
        chunk_count=d.chunk_count,
        created_unix_ms=d.created_unix_ms,
        generation=d.generation,
        owner_uid=d.owner_uid,
        owner_gid=d.owner_gid,
        permissions=d.permissions,
    )


def _commit_result(r: Any) -> CommitResult:
    return CommitResult(r.copies, r.pages, r.ranges, r.bytes, r.replicas, r.under_replicated)


def _int(what: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise InvalidArgumentError(None, f"{what} must be an integer in {lo}..{hi}, not {v!r}"[:200])
    return v


def _name(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise InvalidArgumentError(None, f"a dataset name must be a non-empty string, not {v!r}"[:200])
    return v


def _mode(v: Any) -> int:
    if v not in _MODES:
        raise InvalidArgumentError(None, f"mode must be one of {sorted(_MODES)}, not {v!r}"[:200])
    return _MODES[v]


def _ranges(what: str, ranges: Any) -> List[Any]:
    if isinstance(ranges, (str, bytes)) or not isinstance(ranges, Iterable):
        raise InvalidArgumentError(None, f"{what} must be a list of (offset, length) pairs")
    out = []
    for r in ranges:
        if not isinstance(r, (tuple, list)) or len(r) != 2:
            raise InvalidArgumentError(None, f"{what} must be a list of (offset, length) pairs, not {r!r}"[:200])
        offset, length = _int(f"{what} offset", r[0], 0, _U64), _int(f"{what} length", r[1], 1, _U64)
        out.append(data_pb2.DataRange(offset=offset, length=length))
    return out


def _bytes(data: Any) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidArgumentError(None, f"data must be bytes, bytearray or memoryview, not {type(data).__name__}")
    return bytes(data)


def write_pieces(session: str, offset: int, data: bytes) -> Iterator[Any]:
    """A write of more than MAX_MESSAGE_BYTES as WriteStream messages."""
    for at in range(0, len(data), MAX_MESSAGE_BYTES):
        yield data_pb2.DataWriteRequest(session=session, offset=offset + at, data=data[at : at + MAX_MESSAGE_BYTES])


def backoff_seconds(attempt: int, base_ms: float) -> float:
    """Before retry `attempt` (1, 2, ...): full jitter over a doubling window, as the TypeScript SDK waits."""
    return random.random() * base_ms * 2 ** min(attempt, 10) / 1000.0


#: Where a dispatcher call goes: (the address in use, the Dispatcher stub over it).
Route = Tuple[str, Any]


def _leader_trailer(e: Any) -> Optional[Any]:
    """The raw LEADER_TRAILER value of a failed call (sync grpc.RpcError or grpc.aio.AioRpcError), None without."""
    trailing = e.trailing_metadata() if callable(getattr(e, "trailing_metadata", None)) else None
    for key, value in trailing or ():
        if key == LEADER_TRAILER:
            return value
    return None


class ClientBase:
    """What both clients share: configuration, stubs over lazily made channels, the admin and open calls.

    Dispatcher calls follow a standby's redirect: a call answered UNAVAILABLE with a valid LEADER_TRAILER naming
    another address is resent at once, once, over a channel to that address (the standby ran nothing, so every call
    is safe to resend); a second redirect is the caller's error (no loops). Later calls go straight to that leader
    until a call there fails UNAVAILABLE without the trailer (the leader is gone): then they go over the configured
    address (list) again. A leader's channel left behind is closed once calls still on it had their deadline
    (`timeout`), or by close()."""

    _settings: Settings

    def __init__(
        self,
        address: Optional[str] = None,
        timeout: float = 30.0,
        tls_dir: Optional[str] = None,
        cert: Optional[str] = None,
        insecure: Optional[bool] = None,
        token: Optional[str] = None,
        dispatcher: Optional[str] = None,
    ):
        self._settings = Settings.resolve(address, dispatcher, timeout, tls_dir, cert, insecure, token)
        self._channels: List[Any] = []
        self._data: Any = None
        self._disp: Any = None
        self._direct: Optional[Route] = None  #: the leader a standby named, while it answers
        self._direct_channel: Any = None  #: the channel of _direct (also in _channels)
        self._retiring: Set[Any] = set()  #: timers (tasks in aio) that close a left leader's channel; close() cancels

    @property
    def address(self) -> Optional[str]:
        """The node's gRPC address ("host:port" or "unix:/path/grpc.sock"), None when none was found."""
        return self._settings.node

    @property
    def dispatcher(self) -> str:
        return self._settings.dispatcher

    @property
    def timeout(self) -> float:
        return self._settings.timeout

    def _channel(self, address: str, role: str) -> Any:
        raise NotImplementedError

    def _call(self, method: Any, req: Any, convert: Callable[[Any], Any], timeout: Optional[float] = None) -> Any:
        raise NotImplementedError

    def _data_stub(self) -> Any:
        if self._data is None:
            self._data = data_pb2_grpc.DataStub(self._channel(self._settings.node_address(), "node"))
        return self._data

    def _dispatcher_route(self) -> Route:
        """The leader a standby named while it answers, else the configured dispatcher (address or list)."""
        direct = self._direct
        if direct is not None:
            return direct
        if self._disp is None:
            target = dispatcher_target(self._settings.dispatcher)
            self._disp = (target, dispatcher_pb2_grpc.DispatcherStub(self._channel(target, "dispatcher")))
        return self._disp  # type: ignore[no-any-return]

    def _redirect(self, e: Any, used: Route, resent: bool) -> Tuple[Optional[Route], HotpotError]:
        """After dispatcher call over `used` failed with `e`: the route to resend it over (None: do not) and the
        error for the caller otherwise. Switches later calls to a named leader, or back from a leader that is gone."""
        err = from_rpc_error(e)
        if err.code != "UNAVAILABLE":
            return None, err
        raw = _leader_trailer(e)
        leader = leader_address(raw)
        if leader is None or leader == used[0]:
            if raw is not None:
                note = f"not followed: its {LEADER_TRAILER} {str(raw)[:80]!r} is not another host:port"
                err = type(err)(err.code, f"{err.message} ({note})")
            if self._direct is used:
                self._leave_direct()  # the leader is gone: back to the configured address
            return None, err
        if resent:
            return None, type(err)(err.code, f"{err.message} (not followed: the call was already redirected once)")
        self._leave_direct()
        # A new channel (not one left behind earlier, which may still wait out a reconnect backoff).
        channel = self._channel(leader, "dispatcher")
        route = (leader, dispatcher_pb2_grpc.DispatcherStub(channel))
        self._direct, self._direct_channel = route, channel
        return route, err

    def _leave_direct(self) -> None:
        """Later calls go over the configured address; the leader's channel is closed once calls still on it had
        their deadline (every dispatcher call's is at most `timeout`)."""
        channel, self._direct, self._direct_channel = self._direct_channel, None, None
        if channel is not None:
            self._retire(channel)

    def _retire(self, channel: Any) -> None:
        """Closes `channel` (one of _channels) `timeout` seconds from now."""
        raise NotImplementedError

    def _forget_channels(self) -> List[Any]:
        """Forgets every channel and stub and cancels the pending closes; returns the channels for close() to close."""
        channels, self._channels = self._channels, []
        self._data = self._disp = self._direct = self._direct_channel = None
        retiring, self._retiring = self._retiring, set()
        for pending in retiring:
            pending.cancel()
        return channels

    def _dispatcher_call(self, rpc: str, req: Any, convert: Callable[[Any], Any]) -> Any:
        raise NotImplementedError

    # Admin calls (the dispatcher). An admin certificate or token may do all; a user as docs/security.md says.

    def create(self, name: str, size: int, mode: str = "mrmw", replicas: int = 1) -> Any:
        """Creates dataset `name` of `size` bytes; returns its DatasetInfo. ALREADY_EXISTS if there is one."""
        req = dispatcher_pb2.CreateDatasetRequest(
            name=_name(name),
            size_bytes=_int("size", size, 1, _U64),
            mode=_mode(mode),
            replicas=_int("replicas", replicas, 1, 64),
        )
        return self._dispatcher_call("CreateDataset", req, lambda r: _dataset_info(r.dataset))

    def ls(self) -> Any:
        """Every dataset, as a list of DatasetInfo."""
        req = dispatcher_pb2.ListDatasetsRequest()
        return self._dispatcher_call("ListDatasets", req, lambda r: [_dataset_info(d) for d in r.datasets])

    def stat(self, name: str) -> Any:
        """Dataset `name` as a DatasetInfo; NOT_FOUND if there is none."""
        req = dispatcher_pb2.StatDatasetRequest(name=_name(name))
        return self._dispatcher_call("StatDataset", req, lambda r: _dataset_info(r.dataset))

    def rm(self, name: str) -> Any:
        """Deletes dataset `name` and its data on every node; NOT_FOUND if there is none."""
        req = dispatcher_pb2.DeleteDatasetRequest(name=_name(name))
        return self._dispatcher_call("DeleteDataset", req, lambda r: None)

    def open(
        self,
        name: str,
        create: bool = False,
        size: int = 0,
        mode: str = "mrmw",
        replicas: int = 1,
        read_only: bool = False,
    ) -> Any:
        """Opens dataset `name` and starts a session (a Dataset); with `create`, creates it first (size bytes, mode
        'mrmw' or 'mrsw', replicas = its default N) when it does not exist. With `read_only`, read permission
        suffices, the session's write/acquire raise AuthError (PERMISSION_DENIED) and its commit writes nothing (it
        only checks the reads it is given)."""
        req = data_pb2.DataOpenRequest(
            name=_name(name),
            create=bool(create),
            size_bytes=_int("size", size, 1, _U64) if create else 0,
            mode=_mode(mode),
            replicas=_int("replicas", replicas, 1, 64),
            read_only=bool(read_only),
        )
        return self._call(self._data_stub().Open, req, lambda r: self._dataset_class(self, name, r))

    #: The flavour's Dataset class.
    _dataset_class: Any = None


class DatasetBase:
    """One session on one dataset, for both flavours. Writes are private until `commit()`; reads see them, and
    elsewhere the data committed as of the last open/commit/rollback/refresh (or newer)."""

    def __init__(self, client: ClientBase, name: str, r: Any):
        self._c = client
        self.name = name
        self.session: str = r.session
        self.id: int = r.dataset_id
        self.size: int = r.size_bytes
        self.mode = _mode_name(r.mode)
        self.replicas: int = r.replicas
        self.chunk_size: int = r.chunk_size_bytes
        self.idle_timeout_ms: int = r.idle_timeout_ms
        self.closed = False

    def _unary(self, rpc: str, req: Any, convert: Callable[[Any], Any], timeout: Optional[float] = None) -> Any:
        if self.closed:
            raise FailedPreconditionError(None, f"dataset {self.name!r}: the session is closed")
        return self._c._call(getattr(self._c._data_stub(), rpc), req, convert, timeout)

    def _read_request(self, offset: int, length: int, snapshot: bool) -> Any:
        return data_pb2.DataReadRequest(
            session=self.session,
            offset=_int("offset", offset, 0, _U64),
            length=_int("length", length, 0, _U64),
            snapshot=bool(snapshot),
        )

    def write(self, offset: int, data: bytes) -> Any:
        """Writes `data` at `offset` into this session's private changes; returns the bytes written. Over 1 MiB is
        streamed."""
        offset, data = _int("offset", offset, 0, _U64), _bytes(data)
        if len(data) <= MAX_MESSAGE_BYTES:
            req = data_pb2.DataWriteRequest(session=self.session, offset=offset, data=data)
            return self._unary("Write", req, lambda r: r.bytes_written)
        return self._unary("WriteStream", write_pieces(self.session, offset, data), lambda r: r.bytes_written)

    def commit(self, replicas: Optional[int] = None, reads: Sequence[Range] = ()) -> Any:
        """Makes every private change atomic, visible and durable on `replicas` nodes (None = the dataset's N);
        returns a CommitResult. With `reads` ((offset, length) pairs) it also fails if a page holding those bytes
        changed since the session's sync point (serializable read-modify-write). Raises CommitConflictError
        (ABORTED, with `conflicts`) on a conflict; nothing is applied then."""
        req = data_pb2.DataCommitRequest(
            session=self.session,
            replicas=0 if replicas is None else _int("replicas", replicas, 1, 64),
            reads=_ranges("reads", reads),
        )
        return self._unary("Commit", req, _commit_result)

    def rollback(self) -> Any:
        """Drops every private change and moves to the latest committed data; returns the pages dropped."""
        req = data_pb2.DataRollbackRequest(session=self.session)
        return self._unary("Rollback", req, lambda r: r.pages_dropped)

    def refresh(self) -> Any:
        """Drops private pages without changes and, when none is left, moves to the latest committed data. Returns
        the pages that still carry changes."""
        return self._unary("Refresh", data_pb2.DataRefreshRequest(session=self.session), lambda r: r.pages_kept)

    def acquire(self, ranges: Sequence[Range], lease_ms: int, wait_ms: int = 0) -> Any:
        """MRSW: takes write ownership of every page covering `ranges` ((offset, length) pairs) for `lease_ms`
        milliseconds, all-or-nothing; returns a Lease. Raises CommitConflictError (ABORTED) if a page is held
        elsewhere and does not free within `wait_ms`. Commits of this session then carry the lease."""
        req = data_pb2.DataAcquireRequest(
            session=self.session,
            ranges=_ranges("ranges", ranges),
            lease_ms=_int("lease_ms", lease_ms, 1, _U32),
            wait_ms=_int("wait_ms", wait_ms, 0, _U32),
        )
        return self._unary(
            "Acquire",
            req,
            lambda r: Lease(r.lease_id, r.fencing_epoch, r.expires_unix_ms, [(x.offset, x.length) for x in r.ranges]),
            self._c.timeout + wait_ms / 1000.0,
        )

    def release(self) -> Any:
        """Gives up the lease taken by `acquire` (commit first: release does not write). Returns False when the
        session held none. Closing the session releases it too."""
        return self._unary("Release", data_pb2.DataReleaseRequest(session=self.session), lambda r: r.released)

    def barrier(self, name: str, parties: int, timeout_ms: int = 60_000) -> Any:
        """Waits until `parties` callers (on any node, over gRPC or the mmap SDK) reached this dataset's barrier
        `name`; returns a BarrierResult. ConnectionFailedError (DEADLINE_EXCEEDED) when they did not in time."""
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(None, "a barrier name must be a non-empty string")
        req = data_pb2.DataBarrierRequest(
            session=self.session,
            name=name,
            parties=_int("parties", parties, 1, _U32),
            timeout_ms=_int("timeout_ms", timeout_ms, 1, _U32),
        )
        return self._unary(
            "Barrier", req, lambda r: BarrierResult(r.generation, r.arrival), self._c.timeout + timeout_ms / 1000.0
        )

    def _close_request(self) -> Any:
        self.closed = True
        return data_pb2.DataCloseRequest(session=self.session)


class AttemptBase:
    """One run of a transaction's body: `with attempt:` (or `async with`) commits when the body ends without an
    exception; a conflict is rolled back and the transaction runs the body again."""

    def __init__(self, tx: "TransactionBase", number: int):
        self.transaction = tx
        self.dataset = tx.dataset
        self.number = number  #: 0 for the first run
        self.result: Optional[CommitResult] = None  #: the commit's result once it succeeded
        self.conflict: Optional[CommitConflictError] = None  #: this run's conflict, if it had one
        self.entered = False


class TransactionBase:
    """`for attempt in ds.transaction(): with attempt: ...` — the shared bookkeeping of the retry loop."""

    def __init__(self, ds: Any, attempts: int, replicas: Optional[int], reads: Sequence[Range], backoff_ms: float):
        self.dataset = ds
        self.attempts = _int("attempts", attempts, 1, 1000)
        if isinstance(backoff_ms, bool) or not isinstance(backoff_ms, (int, float)) or backoff_ms < 0:
            raise InvalidArgumentError(None, "backoff_ms must be a number >= 0")
        self.backoff_ms = backoff_ms
        self.replicas = replicas
        self.reads = list(reads)
        _ranges("reads", self.reads)
        self.result: Optional[CommitResult] = None  #: the successful commit's result
        self.tries = 0  #: how many times the body ran

    def _after(self, attempt: AttemptBase) -> bool:
        """True when the loop is over (committed); raises when the body was never entered."""
        if not attempt.entered:
            raise FailedPreconditionError(None, "each transaction attempt must be used as `with attempt:`")
        if attempt.result is not None:
            self.result = attempt.result
            return True
        return False

    def _give_up(self, last: Optional[CommitConflictError]) -> CommitConflictError:
        return last or CommitConflictError(None, "transaction made no attempt")

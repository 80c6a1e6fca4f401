"""Hotpot's errors: one class per kind a caller handles differently, each with the gRPC status name in `code`."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Type


class HotpotError(Exception):
    """A failed call. `code` is the gRPC status name ('NOT_FOUND', 'ABORTED', ...), `message` the server's text."""

    default_code = "UNKNOWN"

    def __init__(self, code: Optional[str], message: str):
        code = code or self.default_code
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ConfigError(HotpotError):
    """The client's own configuration is wrong or incomplete (no address, unreadable certificate, a malformed
    ./.hotpot/cluster.json): raised before anything is sent."""

    default_code = "INVALID_ARGUMENT"


class InvalidArgumentError(HotpotError):
    default_code = "INVALID_ARGUMENT"


class NotFoundError(HotpotError):
    default_code = "NOT_FOUND"


class AlreadyExistsError(HotpotError):
    default_code = "ALREADY_EXISTS"


class FailedPreconditionError(HotpotError):
    """The call does not fit the dataset's or session's state (e.g. an MRSW commit without a lease)."""

    default_code = "FAILED_PRECONDITION"


class OutOfRangeError(HotpotError):
    default_code = "OUT_OF_RANGE"


class ConnectionFailedError(HotpotError):
    """The node or dispatcher could not be reached or answered too late (UNAVAILABLE, DEADLINE_EXCEEDED): retryable."""

    default_code = "UNAVAILABLE"


class AuthError(HotpotError):
    """UNAUTHENTICATED (no valid certificate or token) or PERMISSION_DENIED (the principal may not do this)."""

    default_code = "UNAUTHENTICATED"


class CommitConflictError(HotpotError):
    """ABORTED: a commit overlapped a newer commit (or a lease was held elsewhere) and nothing was applied; roll back
    and retry. `conflicts` lists the conflicting byte ranges as (offset, length) pairs when the node named them."""

    default_code = "ABORTED"

    def __init__(self, code: Optional[str], message: str, conflicts: Optional[List[Tuple[int, int]]] = None):
        super().__init__(code, message)
        self.conflicts = conflicts or []


_BY_CODE: Dict[str, Type[HotpotError]] = {
    "INVALID_ARGUMENT": InvalidArgumentError,
    "NOT_FOUND": NotFoundError,
    "ALREADY_EXISTS": AlreadyExistsError,
    "FAILED_PRECONDITION": FailedPreconditionError,
    "OUT_OF_RANGE": OutOfRangeError,
    "UNAVAILABLE": ConnectionFailedError,
    "DEADLINE_EXCEEDED": ConnectionFailedError,
    "UNAUTHENTICATED": AuthError,
    "PERMISSION_DENIED": AuthError,
}


def _conflicts(trailing: Any) -> List[Tuple[int, int]]:
    """The `hotpot-conflicts` trailer ("offset+length,..." as services/node/data/service.ts sends it)."""
    out: List[Tuple[int, int]] = []
    for key, value in trailing or ():
        if key != "hotpot-conflicts" or not value:
            continue
        for item in str(value).split(","):
            off, _, length = item.partition("+")
            if off.isdigit() and length.isdigit():
                out.append((int(off), int(length)))
    return out


def from_rpc_error(e: Any) -> HotpotError:
    """The typed error for a grpc.RpcError (sync) or grpc.aio.AioRpcError."""
    code = e.code().name if callable(getattr(e, "code", None)) else "UNKNOWN"
    details = (e.details() if callable(getattr(e, "details", None)) else None) or str(e)
    if code == "ABORTED":
        trailing = e.trailing_metadata() if callable(getattr(e, "trailing_metadata", None)) else None
        return CommitConflictError(code, details, _conflicts(trailing))
    return _BY_CODE.get(code, HotpotError)(code, details)

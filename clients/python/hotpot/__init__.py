"""Hotpot's Python client: datasets over a node's gRPC Data service, admin calls over the dispatcher.

    import hotpot

    with hotpot.Client() as client:          # finds the cluster as the CLI does (./.hotpot/cluster.json, HOTPOT_*)
        client.create("kv", size=1 << 20)
        with client.open("kv") as ds:
            ds.write(0, b"hello")
            ds.commit()
            print(ds.read(0, 5))

`hotpot.aio` is the same API for asyncio. See docs/python.md.
"""

try:
    from ._gen.version import VERSION as __version__
except ImportError:  # a source tree whose stubs were never generated
    raise ImportError(
        "hotpot: the generated gRPC stubs (hotpot/_gen) are missing: install the package "
        "(pip install ./clients/python, docs/python.md) or run clients/python/gen.sh"
    ) from None

from ._api import BarrierResult, CommitResult, DatasetInfo, Lease
from ._config import MAX_MESSAGE_BYTES
from ._errors import (
    AlreadyExistsError,
    AuthError,
    CommitConflictError,
    ConfigError,
    ConnectionFailedError,
    FailedPreconditionError,
    HotpotError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
)
from .client import Attempt, Client, Dataset, Transaction

__all__ = [
    "Client",
    "Dataset",
    "Transaction",
    "Attempt",
    "CommitResult",
    "DatasetInfo",
    "Lease",
    "BarrierResult",
    "HotpotError",
    "ConfigError",
    "InvalidArgumentError",
    "NotFoundError",
    "AlreadyExistsError",
    "FailedPreconditionError",
    "OutOfRangeError",
    "ConnectionFailedError",
    "AuthError",
    "CommitConflictError",
    "MAX_MESSAGE_BYTES",
    "__version__",
]

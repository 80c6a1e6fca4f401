"""The asyncio client: the API of `hotpot.Client` over `grpc.aio`, every call a coroutine.

    import asyncio, hotpot.aio

    async def main():
        async with hotpot.aio.Client() as client:
            ds = await client.open("counters", create=True, size=1 << 20)
            async for attempt in ds.transaction():
                async with attempt:
                    n = int.from_bytes(await ds.read(0, 8), "little")
                    await ds.write(0, (n + 1).to_bytes(8, "little"))
            await ds.close()

    asyncio.run(main())

Make and use a Client inside one running event loop (grpc.aio channels belong to the loop they were made in).
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Awaitable, Callable, Optional, Sequence, TypeVar

import grpc
import grpc.aio

from . import _api
from ._api import Range
from ._errors import CommitConflictError, from_rpc_error

__all__ = ["Client", "Dataset", "Transaction", "Attempt"]

T = TypeVar("T")


class Client(_api.ClientBase):
    """As hotpot.Client (same arguments and discovery, a standby's redirect followed the same way); every call is a
    coroutine, `close()` too."""

    def _channel(self, address: str, role: str) -> Any:
        creds, opts = self._settings.channel_args(address, role)
        if creds is None:
            ch = grpc.aio.insecure_channel(address, options=opts)
        else:
            ch = grpc.aio.secure_channel(address, creds, options=opts)
        self._channels.append(ch)
        return ch

    async def _await(self, call: Any, convert: Callable[[Any], Any]) -> Any:
        try:
            return convert(await call)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    def _call(self, method: Any, req: Any, convert: Callable[[Any], Any], timeout: Optional[float] = None) -> Any:
        return self._await(method(req, timeout=timeout or self._settings.timeout), convert)

    async def _dispatcher_call(self, rpc: str, req: Any, convert: Callable[[Any], Any]) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.timeout
        route = self._dispatcher_route()
        try:
            return convert(await getattr(route[1], rpc)(req, timeout=self._settings.timeout))
        except grpc.RpcError as e:
            to, err = self._redirect(e, route, resent=False)
            if to is None:
                raise err from None
        # Resent within what is left of the call's deadline.
        try:
            return convert(await getattr(to[1], rpc)(req, timeout=max(deadline - loop.time(), 0.001)))
        except grpc.RpcError as e:
            raise self._redirect(e, to, resent=True)[1] from None

    def _retire(self, channel: Any) -> None:
        async def close() -> None:
            await asyncio.sleep(self._settings.timeout)
            if channel in self._channels:
                self._channels.remove(channel)
                await channel.close()

        task = asyncio.get_running_loop().create_task(close())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        """Closes every channel: the node's, the dispatcher's, and any to a leader a standby named."""
        for ch in self._forget_channels():
            await ch.close()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Dataset(_api.DatasetBase):
    """As hotpot.Dataset; every call is a coroutine."""

    async def read(self, offset: int, length: int, snapshot: bool = False) -> bytes:
        """As hotpot.Dataset.read."""
        req = self._read_request(offset, length, snapshot)
        if length <= _api.MAX_MESSAGE_BYTES:
            return await self._unary("Read", req, lambda r: bytes(r.data))  # type: ignore[no-any-return]
        out = bytearray()
        try:
            async for msg in self._c._data_stub().ReadStream(req, timeout=self._c.timeout):
                out += msg.data
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        return bytes(out)

    def transaction(
        self, attempts: int = 10, replicas: Optional[int] = None, reads: Sequence[Range] = (), backoff_ms: float = 2
    ) -> "Transaction":
        """As hotpot.Dataset.transaction, with `async for` and `async with`::

        async for attempt in ds.transaction():
            async with attempt:
                n = int.from_bytes(await ds.read(0, 8), "little")
                await ds.write(0, (n + 1).to_bytes(8, "little"))
        """
        return Transaction(self, attempts, replicas, reads, backoff_ms)

    async def run_transaction(self, fn: Callable[["Dataset"], Awaitable[T]], **options: Any) -> T:
        """`await fn(ds)` inside `transaction(**options)`: runs it until it commits; returns its last value."""
        async for attempt in self.transaction(**options):
            async with attempt:
                value = await fn(self)
        return value

    async def close(self) -> None:
        """As hotpot.Dataset.close."""
        if not self.closed:
            req = self._close_request()
            await self._c._call(self._c._data_stub().Close, req, lambda r: None)

    async def __aenter__(self) -> "Dataset":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Attempt(_api.AttemptBase):
    async def __aenter__(self) -> Dataset:
        self.entered = True
        return self.dataset  # type: ignore[no-any-return]

    async def __aexit__(self, kind: Any, value: Any, tb: Any) -> bool:
        ds: Dataset = self.dataset
        if kind is not None:
            await ds.rollback()
            return False
        try:
            self.result = await ds.commit(self.transaction.replicas, self.transaction.reads)
        except CommitConflictError as e:
            self.conflict = e
            await ds.rollback()
        return False


class Transaction(_api.TransactionBase):
    async def __aiter__(self) -> AsyncIterator[Attempt]:
        last: Optional[CommitConflictError] = None
        for i in range(self.attempts):
            if i > 0:
                await asyncio.sleep(_api.backoff_seconds(i, self.backoff_ms))
            attempt = Attempt(self, i)
            self.tries = i + 1
            yield attempt
            if self._after(attempt):
                return
            last = attempt.conflict
        raise self._give_up(last)


Client._dataset_class = Dataset

"""The client's rule for a standby dispatcher's redirect, against in-process fakes of hotpot.v1.Dispatcher (plaintext,
on 127.0.0.1): a "standby" that answers every call UNAVAILABLE with the `hotpot-leader` trailer it is told, and a
"leader" that answers ListDatasets, CreateDataset and StatDataset and counts its calls. They test the client only; the
real standby is tested with the dispatcher.

Runs the same scenarios with hotpot.Client and hotpot.aio.Client and prints one JSON object {"sync": ..., "aio": ...}
of what each saw: answers (dataset names), errors (code, class, whether the message says what happened) and the call
counts of every fake. test/integration/python-redirect.test.ts runs it (PYTHONPATH=clients/python) and checks it.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
import threading
from concurrent import futures
from typing import Any, Callable, Dict, List, Optional

import grpc

import hotpot
import hotpot.aio
from hotpot._gen import common_pb2, dispatcher_pb2, dispatcher_pb2_grpc

LEADER_TRAILER = "hotpot-leader"
DISPATCHER = dispatcher_pb2.DESCRIPTOR.services_by_name["Dispatcher"]


def serve(port: int = 0, handlers: Any = (), servicer: Any = None) -> Any:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=list(handlers))
    if servicer is not None:
        dispatcher_pb2_grpc.add_DispatcherServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    if not bound or (port and bound != port):
        raise RuntimeError(f"cannot listen on 127.0.0.1:{port}")
    server.start()
    return server, bound


class Standby(grpc.GenericRpcHandler):
    """Answers every Dispatcher RPC (unary and streaming) UNAVAILABLE, with `leader` in the trailer unless None."""

    def __init__(self, leader: Optional[str]):
        self.leader = leader
        self.calls = 0
        self._lock = threading.Lock()
        kinds = {}
        for m in DISPATCHER.methods:
            name = f"/{DISPATCHER.full_name}/{m.name}"
            if m.client_streaming and m.server_streaming:
                kinds[name] = grpc.stream_stream_rpc_method_handler(self._stream)
            elif m.client_streaming:
                kinds[name] = grpc.stream_unary_rpc_method_handler(self._refuse)
            elif m.server_streaming:
                kinds[name] = grpc.unary_stream_rpc_method_handler(self._stream)
            else:
                kinds[name] = grpc.unary_unary_rpc_method_handler(self._refuse)
        self._kinds = kinds
        self.server, port = serve(handlers=[self])
        self.address = f"127.0.0.1:{port}"

    def service(self, handler_call_details: Any) -> Any:
        return self._kinds.get(handler_call_details.method)

    def _refuse(self, request: Any, context: Any) -> Any:
        with self._lock:
            self.calls += 1
        leader = self.leader
        if leader is None:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"dispatcher {self.address} is a standby; no leader is known")
        context.set_trailing_metadata(((LEADER_TRAILER, leader),))
        context.abort(grpc.StatusCode.UNAVAILABLE, f"dispatcher {self.address} is a standby; the leader is at {leader}")

    def _stream(self, request: Any, context: Any) -> Any:
        self._refuse(request, context)
        yield  # never reached: _refuse aborts

    def stop(self) -> None:
        self.server.stop(None).wait()


class Leader(dispatcher_pb2_grpc.DispatcherServicer):
    """Answers ListDatasets (its datasets and one named "on-<name>"), CreateDataset and StatDataset."""

    def __init__(self, name: str, port: int = 0):
        self.name = name
        self.calls = 0
        self._lock = threading.Lock()
        self._datasets: Dict[str, Any] = {}
        self.server, self.port = serve(port=port, servicer=self)
        self.address = f"127.0.0.1:{self.port}"

    def _dataset(self, name: str, size: int) -> Any:
        return common_pb2.Dataset(name=name, id=len(self._datasets) + 1, size_bytes=size, replicas=1)

    def ListDatasets(self, request: Any, context: Any) -> Any:
        with self._lock:
            self.calls += 1
            own = [self._dataset("on-" + self.name, 1)]
            return dispatcher_pb2.ListDatasetsResponse(datasets=own + list(self._datasets.values()))

    def CreateDataset(self, request: Any, context: Any) -> Any:
        with self._lock:
            self.calls += 1
            if request.name in self._datasets:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"dataset {request.name} exists")
            d = self._datasets[request.name] = self._dataset(request.name, request.size_bytes)
            return dispatcher_pb2.CreateDatasetResponse(dataset=d)

    def StatDataset(self, request: Any, context: Any) -> Any:
        with self._lock:
            self.calls += 1
            if request.name not in self._datasets:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no dataset {request.name}")
            return dispatcher_pb2.StatDatasetResponse(dataset=self._datasets[request.name])

    def stop(self) -> None:
        self.server.stop(None).wait()


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def attempt(fn: Callable[..., Any], *args: Any) -> Any:
    """The call's answer (dataset names for a list, the name for one), or what its error says."""
    try:
        r = fn(*args)
        if inspect.isawaitable(r):
            r = await r
    except hotpot.HotpotError as e:
        return {
            "error": e.code,
            "class": type(e).__name__,
            "standby": "is a standby" in e.message,
            "not_followed": "not followed" in e.message,
            "redirected_once": "already redirected once" in e.message,
        }
    if isinstance(r, list):
        return sorted(d.name for d in r)
    return r.name if r is not None else None


async def scenario(make: Callable[..., Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    servers: List[Any] = []
    clients: List[Any] = []

    def client(dispatcher: str) -> Any:
        c = make(dispatcher=dispatcher, insecure=True, timeout=10)
        clients.append(c)
        return c

    try:
        l1, l2 = Leader("L1"), Leader("L2")
        standby = Standby(l1.address)
        servers += [l1, l2, standby]

        # Given only the standby's address: the first call is answered by the leader it names, resent once.
        c = client(standby.address)
        out["first"] = await attempt(c.ls)
        out["first_calls"] = {"standby": standby.calls, "L1": l1.calls}
        # Later calls go straight to the leader; its errors are the caller's (no redirect).
        out["later"] = [
            await attempt(c.create, "a", 4096),
            await attempt(c.stat, "a"),
            await attempt(c.stat, "nope"),
            await attempt(c.create, "a", 4096),
            await attempt(c.ls),
        ]
        out["later_calls"] = {"standby": standby.calls, "L1": l1.calls}

        # The leader is gone: that call fails UNAVAILABLE, the next goes over the standby again and follows it to
        # the leader it names now (on another port).
        l1.stop()
        standby.leader = l2.address
        out["gone"] = await attempt(c.ls)
        out["back"] = [await attempt(c.ls), await attempt(c.ls)]
        out["back_calls"] = {"standby": standby.calls, "L2": l2.calls}

        # A new leader on the address the first one had, named again by the standby: followed over a new channel.
        l2.stop()
        l1b = Leader("L1b", port=l1.port)
        servers.append(l1b)
        standby.leader = l1b.address
        out["again"] = [await attempt(c.ls), await attempt(c.ls), await attempt(c.ls)]
        out["again_calls"] = {"standby": standby.calls, "L1b": l1b.calls, "same_address": l1b.address == l1.address}

        # A list whose first address refuses connections and whose second is the standby.
        listed = client(f"127.0.0.1:{free_port()},{standby.address}")
        before = standby.calls
        out["list"] = [await attempt(listed.ls), await attempt(listed.ls)]
        out["list_calls"] = {"standby": standby.calls - before, "L1b": l1b.calls}

        # A trailer that is no address, or names the standby itself, is not followed: the caller gets UNAVAILABLE.
        bad = Standby(None)
        servers.append(bad)
        out["bad"] = {}
        for name, value in (("x", "x"), (":0", ":0"), ("long", "a" * 297 + ":80"), ("self", bad.address)):
            bad.leader = value
            before = bad.calls
            out["bad"][name] = [await attempt(client(bad.address).ls), bad.calls - before]
        bad.leader, before = None, bad.calls
        out["bad"]["none"] = [await attempt(client(bad.address).ls), bad.calls - before]

        # Two standbys naming each other: one redirect is followed, the second is the caller's error.
        s1, s2 = Standby(None), Standby(None)
        servers += [s1, s2]
        s1.leader, s2.leader = s2.address, s1.address
        out["loop"] = await attempt(client(s1.address).ls)
        out["loop_calls"] = {"s1": s1.calls, "s2": s2.calls}

        # A left leader's channel is closed once calls still on it had their deadline (the client's timeout, 1 s
        # here): the client then holds only the list's channel and the current leader's.
        lx, ly = Leader("Lx"), Leader("Ly")
        servers += [lx, ly]
        s3 = Standby(lx.address)
        servers.append(s3)
        short = make(dispatcher=s3.address, insecure=True, timeout=1)
        clients.append(short)
        seen = [await attempt(short.ls)]
        lx.stop()
        s3.leader = ly.address
        seen += [await attempt(short.ls), await attempt(short.ls)]
        held = len(short._channels)
        for _ in range(100):  # up to 10 s: timers may run late on a busy machine
            if len(short._channels) < held:
                break
            await asyncio.sleep(0.1)
        out["retired"] = {"answers": seen, "channels": [held, len(short._channels)], "Ly": ly.calls}
    finally:
        for c in clients:
            r = c.close()
            if inspect.isawaitable(r):
                await r
        for s in servers:
            s.stop()
    return out


async def main() -> None:
    result = {"sync": await scenario(hotpot.Client), "aio": await scenario(hotpot.aio.Client)}
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    asyncio.run(main())

"""The baselines' clients: echo clients, then msgpack floors, each the least its kind can do.

Each step adds one thing a bridge cannot avoid: a bare callback echo; one
awaited future per request; msgpack both ways (the *msgpack floor*: what any
msgpack-over-asyncio bridge in Python costs with no validation and no bus);
the same pipelined the way busbridge's client pipelines; and a blocking
socket with one msgpack array each way (the floor of a synchronous client).
The steps between them and busbridge show where the time goes.  Latency
functions warm up first and return per-request round trips in ns, one
request in flight.  Nothing here imports busbridge's client or server.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

import msgpack as _msgpack

from .cpu import CpuMeter
from .echo_server import frame_of

#: The register read's virtio out_hdrs (write the pointer, read 2 bytes at 0x48).
_HDR_W = (0x48 << 1).to_bytes(2, "little") + bytes(2) + (1).to_bytes(4, "little")
_HDR_R = (0x48 << 1).to_bytes(2, "little") + bytes(2) + (2).to_bytes(4, "little")
#: Warm-up round trips before anything is measured.
WARM_UP = 200


def _request(rid: int, pack: Callable[[Any], bytes]) -> bytes:
    """A REQ_I2C-shaped msgpack array for the register read, length-prefixed."""
    body = pack([2, rid, "1", [[_HDR_W, b"\x00"], [_HDR_R, 2]], None])
    return len(body).to_bytes(4, "big") + body


class _EchoClient(asyncio.Protocol):
    """Callback-driven echo client: no futures, the bare floor."""

    def __init__(self, request: bytes, reply_size: int) -> None:
        self.request = request
        self.reply_size = reply_size
        self.got = 0
        self.waiter: asyncio.Future[None] | None = None
        self.remaining = 0
        self.in_flight = 0
        self.samples: list[int] = []
        self.t0 = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        while self.got >= self.reply_size:
            self.got -= self.reply_size
            self.in_flight -= 1
            if self.in_flight == 0:
                self.samples.append(time.perf_counter_ns() - self.t0)
            if self.remaining:
                self.remaining -= 1
                self.in_flight += 1
                self.t0 = time.perf_counter_ns()
                self.transport.write(self.request)
            elif self.in_flight == 0 and self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(None)

    async def run(self, n: int, depth: int) -> None:
        self.waiter = asyncio.get_running_loop().create_future()
        self.remaining = n - depth
        self.in_flight = depth
        self.t0 = time.perf_counter_ns()
        self.transport.write(self.request * depth)
        await self.waiter


class FutureEchoClient(asyncio.Protocol):
    """Echo with one awaited future per request: the floor of an awaitable API."""

    def __init__(self, request: bytes, reply_size: int) -> None:
        self.request = request
        self.reply_size = reply_size
        self.got = 0
        self.waiting: list[asyncio.Future[None]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        while self.got >= self.reply_size:
            self.got -= self.reply_size
            self.waiting.pop(0).set_result(None)

    async def call(self) -> None:
        fut = asyncio.get_running_loop().create_future()
        self.waiting.append(fut)
        self.transport.write(self.request)
        await fut


class MsgpackClient(asyncio.Protocol):
    """The msgpack floor's client: a future per request, answers matched by id, msgpack
    both ways; requests made in one loop iteration go out in one write, as busbridge's
    client sends them (so pipelined figures compare the same pipelining)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.rid = 0
        self.pack = _msgpack.Packer(use_bin_type=True).pack
        self.wbuf: list[bytes] = []
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos, end = 0, len(buf)
        waiting = self.waiting
        while end - pos >= 4:
            n = int.from_bytes(buf[pos : pos + 4], "big")
            if end - pos - 4 < n:
                break
            f = _msgpack.unpackb(buf[pos + 4 : pos + 4 + n])
            pos += 4 + n
            waiting.pop(f[1]).set_result(f[3])
        del buf[:pos]

    def _flush(self) -> None:
        self.transport.write(b"".join(self.wbuf))
        self.wbuf.clear()

    async def call(self) -> Any:
        self.rid += 1
        data = _request(self.rid, self.pack)
        fut = self.loop.create_future()
        self.waiting[self.rid] = fut
        if len(self.waiting) == 1:
            self.transport.write(data)  # alone: no reason to wait
        else:
            self.wbuf.append(data)
            if len(self.wbuf) == 1:
                self.loop.call_soon(self._flush)
        return await fut


async def _call_latency(factory: Callable[[], MsgpackClient | FutureEchoClient],
                        port: int, n: int, meter: CpuMeter | None) -> list[int]:
    """Round trips of ``proto.call()``, one at a time, after a warm-up."""
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(factory, "127.0.0.1", port)
    for _ in range(WARM_UP):
        await proto.call()
    out = []
    if meter:
        meter.start()
    for _ in range(n):
        t0 = time.perf_counter_ns()
        await proto.call()
        out.append(time.perf_counter_ns() - t0)
    if meter:
        meter.stop(n)
    proto.transport.close()
    return out


async def echo_latency(port: int, req: int, res: int, n: int) -> list[int]:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: _EchoClient(frame_of(req), res),
                                            "127.0.0.1", port)
    await proto.run(WARM_UP, 1)
    proto.samples = []
    await proto.run(n, 1)
    proto.transport.close()
    return proto.samples


async def echo_throughput(port: int, req: int, res: int, n: int, depth: int,
                          conns: int = 1) -> float:
    loop = asyncio.get_running_loop()
    protos = []
    for _ in range(conns):
        _, p = await loop.create_connection(lambda: _EchoClient(frame_of(req), res),
                                            "127.0.0.1", port)
        protos.append(p)
    for p in protos:
        await p.run(depth * 4, depth)
    t0 = time.perf_counter()
    await asyncio.gather(*(p.run(n, depth) for p in protos))
    dt = time.perf_counter() - t0
    for p in protos:
        p.transport.close()
    return n * conns / dt


async def future_echo_latency(port: int, req: int, res: int, n: int,
                              meter: CpuMeter | None = None) -> list[int]:
    return await _call_latency(lambda: FutureEchoClient(frame_of(req), res), port, n, meter)


async def msgpack_latency(port: int, n: int, meter: CpuMeter | None = None) -> list[int]:
    return await _call_latency(MsgpackClient, port, n, meter)


async def msgpack_throughput(port: int, n: int, depth: int, conns: int = 1) -> float:
    """``depth`` coroutines per connection, each awaiting one request after another:
    the same workers as busbridge's throughput figure, over the msgpack floor."""
    loop = asyncio.get_running_loop()
    protos: list[MsgpackClient] = []
    for _ in range(conns):
        _, p = await loop.create_connection(MsgpackClient, "127.0.0.1", port)
        protos.append(p)

    async def worker(p: MsgpackClient, count: int) -> None:
        for _ in range(count):
            await p.call()

    async def run(count: int) -> None:
        await asyncio.gather(*(worker(p, count // depth) for p in protos for _ in range(depth)))

    await run(depth * 8)
    t0 = time.perf_counter()
    await run(n)
    dt = time.perf_counter() - t0
    for p in protos:
        p.transport.close()
    return (n // depth) * depth * conns / dt


class BlockingMsgpackClient:
    """A blocking socket, one msgpack array each way: the floor of a synchronous client."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pack = _msgpack.Packer(use_bin_type=True).pack
        self.buf = bytearray(65536)
        self.view = memoryview(self.buf)
        self.rid = 0

    def call(self) -> Any:
        self.rid += 1
        self.sock.sendall(_request(self.rid, self.pack))
        buf, got = self.buf, 0
        while got < 4 or got < 4 + int.from_bytes(buf[:4], "big"):
            k = self.sock.recv_into(self.view[got:])
            if not k:
                raise ConnectionError("the msgpack floor server closed the connection")
            got += k
        answer = _msgpack.unpackb(self.view[4:got])
        if answer[1] != self.rid:
            raise ConnectionError("the msgpack floor server answered another request")
        return answer[3]

    def close(self) -> None:
        self.sock.close()


def blocking_msgpack_latency(port: int, n: int) -> list[int]:
    c = BlockingMsgpackClient(port)
    try:
        for _ in range(WARM_UP):
            c.call()
        out = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            c.call()
            out.append(time.perf_counter_ns() - t0)
        return out
    finally:
        c.close()

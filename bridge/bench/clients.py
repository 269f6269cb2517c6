"""The bench's clients: echo clients for the baselines, the bridge's own client for the figures.

The echo clients are as thin as a client can be (callbacks, then one future
per request, then msgpack both ways), so the steps between them and the
bridge show where the time goes.  Each latency function warms up first and
returns per-request round trips in ns, one request in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import msgpack as _msgpack

from ..client import AsyncClient, spi_xfer
from .echo_server import frame_of
from .workload import REG_READ, SPI_4K


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
            if self.samples is not None and self.in_flight == 0:
                t = time.perf_counter_ns()
                self.samples.append(t - self.t0)
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


class _FutureEchoClient(asyncio.Protocol):
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


class _MsgpackEchoClient(asyncio.Protocol):
    """A future per request, msgpack both ways: the least a msgpack bridge client does."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.rid = 0
        self.pack = _msgpack.Packer(use_bin_type=True).pack

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while len(buf) >= 4:
            n = int.from_bytes(buf[:4], "big")
            if len(buf) < 4 + n:
                break
            f = _msgpack.unpackb(buf[4 : 4 + n])
            del buf[: 4 + n]
            self.waiting.pop(f[1]).set_result(f[3])

    async def call(self) -> Any:
        self.rid += 1
        body = self.pack([2, self.rid, "1", [[_HDR_W, b"\x00"], [_HDR_R, 2]], None])
        fut = asyncio.get_running_loop().create_future()
        self.waiting[self.rid] = fut
        self.transport.write(len(body).to_bytes(4, "big") + body)
        return await fut


_HDR_W = (0x48 << 1).to_bytes(2, "little") + bytes(2) + (1).to_bytes(4, "little")
_HDR_R = (0x48 << 1).to_bytes(2, "little") + bytes(2) + (2).to_bytes(4, "little")


async def msgpack_echo_latency(port: int, n: int) -> list[int]:
    return await _call_latency(_MsgpackEchoClient, port, n)


async def _call_latency(factory: Callable[[], _MsgpackEchoClient | _FutureEchoClient],
                        port: int, n: int) -> list[int]:
    """Round trips of ``proto.call()``, one at a time, after a warm-up."""
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(factory, "127.0.0.1", port)
    for _ in range(200):
        await proto.call()
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        await proto.call()
        out.append(time.perf_counter_ns() - t0)
    proto.transport.close()
    return out


async def echo_latency(port: int, req: int, res: int, n: int) -> list[int]:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: _EchoClient(frame_of(req), res),
                                            "127.0.0.1", port)
    await proto.run(200, 1)  # warm-up
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


async def future_echo_latency(port: int, req: int, res: int, n: int) -> list[int]:
    return await _call_latency(lambda: _FutureEchoClient(frame_of(req), res), port, n)


async def bridge_latency(port: int, n: int) -> list[int]:
    c = await AsyncClient.connect("127.0.0.1", port)
    try:
        for _ in range(200):
            await c.transfer("1", REG_READ)
        out = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            await c.transfer("1", REG_READ)
            out.append(time.perf_counter_ns() - t0)
        return out
    finally:
        await c.close()


async def bridge_throughput(port: int, n: int, depth: int, conns: int = 1) -> float:
    clients = [await AsyncClient.connect("127.0.0.1", port) for _ in range(conns)]

    async def worker(c: AsyncClient, bus: str, count: int) -> None:
        for _ in range(count):
            await c.transfer(bus, REG_READ)

    async def run(count: int) -> None:
        await asyncio.gather(*(
            worker(c, str(i % 4 + 1), count // depth)
            for i, c in enumerate(clients) for _ in range(depth)
        ))

    try:
        await run(depth * 8)
        t0 = time.perf_counter()
        await run(n)
        dt = time.perf_counter() - t0
        return (n // depth) * depth * conns / dt
    finally:
        for c in clients:
            await c.close()


async def bridge_spi_latency(port: int, n: int) -> list[int]:
    c = await AsyncClient.connect("127.0.0.1", port)
    xfer = [spi_xfer(bytes(range(256)) * (SPI_4K // 256))]
    try:
        for _ in range(50):
            await c.spi_transfer("0", 0, xfer)
        out = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            await c.spi_transfer("0", 0, xfer)
            out.append(time.perf_counter_ns() - t0)
        return out
    finally:
        await c.close()

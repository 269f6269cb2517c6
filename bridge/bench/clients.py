"""busbridge's own clients under measurement: latency, CPU, throughput, SPI, blocking.

The same requests as the floors in :mod:`bridge.bench.floors` (the register read
of :mod:`bridge.bench.workload`), through :class:`~bridge.client.AsyncClient` and
:class:`~bridge.client.BlockingClient` as an application would call them.
Latency functions warm up first and return per-request round trips in ns.
"""

from __future__ import annotations

import asyncio
import time

from ..client import AsyncClient, BlockingClient, spi_xfer
from .cpu import CpuMeter
from .floors import WARM_UP
from .workload import REG_READ, SPI_4K


async def bridge_latency(port: int, n: int, meter: CpuMeter | None = None) -> list[int]:
    c = await AsyncClient.connect("127.0.0.1", port)
    try:
        for _ in range(WARM_UP):
            await c.transfer("1", REG_READ)
        out = []
        if meter:
            meter.start()
        for _ in range(n):
            t0 = time.perf_counter_ns()
            await c.transfer("1", REG_READ)
            out.append(time.perf_counter_ns() - t0)
        if meter:
            meter.stop(n)
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


def blocking_latency(port: int, n: int) -> list[int]:
    """The register read through :class:`BlockingClient`: what the drop-in layers do."""
    with BlockingClient("127.0.0.1", port) as c:
        for _ in range(WARM_UP):
            c.transfer("1", REG_READ)
        out = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            c.transfer("1", REG_READ)
            out.append(time.perf_counter_ns() - t0)
        return out

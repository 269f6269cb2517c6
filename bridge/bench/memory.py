"""The memory figures: the server's RSS over many requests, and heap per queued request.

A server that leaks a few bytes per request dies after days, not in a test
run; a million pipelined requests with RSS checkpoints shows the slope.
"""

from __future__ import annotations

import asyncio
import os
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

from ..client import AsyncClient
from ..config import board_from_toml_text
from ..server import Server
from .processes import pin, run_client, server_process
from .workload import REG_READ, STALL_READ, STALLED_BUS, bench_board_text


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (Linux ``/proc``)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


#: Heap per in-flight request before issue 19 (docs/performance.md): the figure must not grow.
REFERENCE_BYTES_PER_IN_FLIGHT = 4281
#: Allowed RSS growth after warm-up: flat, up to allocator noise.
FLAT_RSS_BYTES = 1 << 20


@dataclass
class MemoryReport:
    requests: int
    #: (requests done, server RSS in bytes) at each checkpoint.
    rss: list[tuple[int, int]]
    #: Python heap per in-flight request, client and server together (tracemalloc).
    bytes_per_in_flight: float
    in_flight: int

    @property
    def growth(self) -> int:
        """RSS growth from the first checkpoint (after warm-up) to the last."""
        return self.rss[-1][1] - self.rss[0][1]

    def lines(self) -> list[str]:
        out = [f"server RSS over {self.requests:,} pipelined register reads "
               "(64 in flight, one connection):"]
        out += [f"  after {n:>9,} requests: {r / 2**20:7.1f} MiB" for n, r in self.rss]
        per = self.growth / max(self.requests - self.rss[0][0], 1)
        out.append(f"  growth after warm-up: {self.growth / 2**10:+,.0f} KiB "
                   f"({per:+.3f} bytes per request)")
        out.append(f"memory per in-flight request (client + server, Python heap): "
                   f"{self.bytes_per_in_flight:,.0f} bytes ({self.in_flight} in flight, "
                   "queued behind a stalled device)")
        out.append(f"  RSS flat (growth ≤ {FLAT_RSS_BYTES >> 10:,} KiB): "
                   f"{'PASS' if self.flat else 'MISS'}; bytes per in-flight request ≤ "
                   f"{REFERENCE_BYTES_PER_IN_FLIGHT * 1.1:,.0f} (before issue 19: "
                   f"{REFERENCE_BYTES_PER_IN_FLIGHT:,}, +10 %): "
                   f"{'PASS' if self.no_heap_regression else 'MISS'}")
        return out

    @property
    def flat(self) -> bool:
        return self.growth <= FLAT_RSS_BYTES

    @property
    def no_heap_regression(self) -> bool:
        return self.bytes_per_in_flight <= REFERENCE_BYTES_PER_IN_FLIGHT * 1.1


async def _pipelined_checkpoints(port: int, total: int, depth: int, pid: int,
                                 every: int) -> list[tuple[int, int]]:
    c = await AsyncClient.connect("127.0.0.1", port)
    done = 0
    samples: list[tuple[int, int]] = []

    async def worker(count: int) -> None:
        nonlocal done
        for _ in range(count):
            await c.transfer("1", REG_READ)
            done += 1

    try:
        await asyncio.gather(*(worker(2000 // depth) for _ in range(depth)))  # warm-up
        done = 0
        samples.append((0, rss_bytes(pid)))
        per_worker = max(every // depth, 1)
        while done < total:
            await asyncio.gather(*(worker(per_worker) for _ in range(depth)))
            samples.append((done, rss_bytes(pid)))
        return samples
    finally:
        await c.close()


#: Requests held in flight for the per-request memory figure: 256 on each of 4 connections.
_IN_FLIGHT_PER_CONN, _IN_FLIGHT_CONNS = 256, 4


async def _bytes_per_in_flight(per_conn: int = _IN_FLIGHT_PER_CONN,
                               conns: int = _IN_FLIGHT_CONNS) -> float:
    """Heap held per queued request: every request waits behind a stalled device."""
    board = board_from_toml_text(bench_board_text(1) + STALLED_BUS, "<bench>")
    server = Server(board, host="127.0.0.1", port=0, request_timeout=30.0)
    await server.start()
    # 60 s, not the default 5 s: queueing 1024 requests under tracemalloc on a loaded
    # machine took longer than that, and the queue's head timed out before the stall ended.
    clients = [await AsyncClient.connect("127.0.0.1", server.port, timeout=60.0)
               for _ in range(conns)]
    try:
        # A first request occupies the bus; the rest queue behind it.
        first = asyncio.ensure_future(clients[0].transfer("9", STALL_READ))
        while not server.jobs:  # noqa: ASYNC110 - polls the server's state from outside
            await asyncio.sleep(0.001)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        n = per_conn * conns - 1
        tasks = [asyncio.ensure_future(c.transfer("9", STALL_READ))
                 for c in clients for _ in range(per_conn - (c is clients[0]))]
        while len(server.jobs) < n + 1:  # noqa: ASYNC110 - polls the server's state
            await asyncio.sleep(0.001)
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        board.i2c["9"].device(0x48).stall_s = 0.0  # type: ignore[attr-defined]
        await asyncio.gather(first, *tasks)  # the queue drains once the stall ends
        return (after - before) / n
    finally:
        for c in clients:
            await c.close()
        await server.close(grace=2.0)


def run_memory(total: int = 1_000_000, progress: Callable[[str], None] = lambda s: None
               ) -> MemoryReport:
    pin(os.getpid(), 0)
    every = max(total // 10, 64)
    with server_process("bridge.bench.bridge_server", "uv") as (port, pid):
        progress(f"memory: {total:,} pipelined requests")
        rss = run_client(lambda: _pipelined_checkpoints(port, total, 64, pid, every))
    progress("memory: bytes per in-flight request")
    per = run_client(lambda: _bytes_per_in_flight())
    return MemoryReport(total, rss, per, _IN_FLIGHT_PER_CONN * _IN_FLIGHT_CONNS)

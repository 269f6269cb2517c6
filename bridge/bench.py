"""``busbridge bench``: the bridge against a bare echo, measured in the same run.

Absolute times differ between machines; ratios to a baseline measured seconds
earlier on the same machine do not (much).  Each figure is the median of
several repetitions; the spread between repetitions is reported and a wide
one is warned about.

Servers run in their own processes pinned to another core than the client,
as a board and a guest would be.  The baseline is a uvloop ``Protocol`` that
answers every length-prefixed frame with a reply of the size the bridge sends
back (the same bytes cross the socket); the "future floor" is the same echo
awaited through one future per request, the least any awaitable client API
can cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import msgpack as _msgpack

from protocol.virtio import chain, read, write

from .client import AsyncClient, spi_xfer
from .runtime import new_event_loop

# Frame sizes of the bridge's register read (write 1-byte pointer, read 2 bytes)
# and of its RESULT, measured from the codec so the echo moves the same bytes.
REG_READ_REQ = 37
REG_READ_RES = 17
SPI_4K = 4096

BENCH_BOARD = """
name = "bench"
[server]
listen = "127.0.0.1:0"
request_timeout_ms = 5000
{i2c}
[[spi]]
name = "0"
backend = "sim"
log_size = 0
[[spi.devices]]
type = "loopback"
cs = 0
"""

BENCH_I2C_BUS = """
[[i2c]]
name = "{n}"
backend = "sim"
log_size = 0
[[i2c.devices]]
type = "regmap"
address = 0x48
value_bits = 16
auto_increment = false
registers = {{ 0x00 = 0x0C80, 0x0F = 0x0117 }}
"""


def bench_board_text(n_i2c: int = 4) -> str:
    return BENCH_BOARD.format(i2c="".join(BENCH_I2C_BUS.format(n=i + 1) for i in range(n_i2c)))


# ---------------------------------------------------------------------------
# Server processes
# ---------------------------------------------------------------------------

ECHO_SERVER = r"""
import asyncio, os, sys
reply_size = int(sys.argv[1]); buffered = sys.argv[2] == "buffered"; use_uv = sys.argv[3] == "uv"
reply = (reply_size - 4).to_bytes(4, "big") + bytes(reply_size - 4)
if sys.argv[2] == "msgpack":
    # The floor of any msgpack bridge: decode each request, encode a RESULT-shaped reply.
    import msgpack
    class Echo(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t; self.buf = bytearray(); self.pack = msgpack.Packer().pack
        def data_received(self, data):
            buf = self.buf; buf += data; out = []
            while len(buf) >= 4:
                n = int.from_bytes(buf[:4], "big")
                if len(buf) < 4 + n:
                    break
                f = msgpack.unpackb(buf[4:4 + n])
                del buf[:4 + n]
                body = self.pack([4, f[1], b"\0\0", [b"\x0c\x80"], []])
                out.append(len(body).to_bytes(4, "big") + body)
            if out:
                self.t.write(b"".join(out))
    buffered = False

class PlainEcho(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t; self.buf = bytearray()
    def data_received(self, data):
        buf = self.buf; buf += data; out = []
        while len(buf) >= 4:
            n = int.from_bytes(buf[:4], "big")
            if len(buf) < 4 + n:
                break
            del buf[:4 + n]
            self.t.write(reply)

class BufferedEcho(asyncio.BufferedProtocol):
    def connection_made(self, t):
        self.t = t; self.mem = bytearray(1 << 18); self.view = memoryview(self.mem); self.n = 0
    def get_buffer(self, hint):
        return self.view[self.n:]
    def buffer_updated(self, nbytes):
        self.n += nbytes; pos = 0
        while self.n - pos >= 4:
            size = int.from_bytes(self.mem[pos:pos + 4], "big")
            if self.n - pos < 4 + size:
                break
            pos += 4 + size
            self.t.write(reply)
        if pos:
            self.mem[: self.n - pos] = self.mem[pos:self.n]; self.n -= pos

async def main():
    loop = asyncio.get_running_loop()
    proto = BufferedEcho if buffered else (Echo if sys.argv[2] == "msgpack" else PlainEcho)
    srv = await loop.create_server(proto, "127.0.0.1", 0)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

if use_uv:
    import uvloop; uvloop.run(main())
else:
    asyncio.run(main())
"""


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str] | None = None) -> Iterator[int]:
    """Start a server process on the other core; yield the port it prints."""
    with _server_process(args, env) as (port, _pid):
        yield port


@contextlib.contextmanager
def _server_process(args: list[str], env: dict[str, str] | None = None
                    ) -> Iterator[tuple[int, int]]:
    """Start a server process on the other core; yield ``(port, pid)``."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    try:
        _pin(proc.pid, 1)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.strip():
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"benchmark server failed to start: {err.strip()}")
        yield int(line.split()[-1]), proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def _pin(pid: int, core: int) -> None:
    with contextlib.suppress(AttributeError, OSError):
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) > 1:
            os.sched_setaffinity(pid, {cores[core % len(cores)]})


def echo_server(reply_size: int, *, buffered: bool = False, uv: bool = True,
                msgpack: bool = False) -> contextlib.AbstractContextManager[int]:
    mode = "msgpack" if msgpack else "buffered" if buffered else "plain"
    return _process([sys.executable, "-c", ECHO_SERVER, str(reply_size), mode,
                     "uv" if uv else "asyncio"])


BRIDGE_SERVER = r"""
import sys
from bridge.config import board_from_toml_text
from bridge.bench import bench_board_text
from bridge.server import Server
from bridge.runtime import run

async def main():
    board = board_from_toml_text(bench_board_text(), "<bench>")
    s = Server(board, host="127.0.0.1", port=0, request_timeout=5.0)
    await s.start()
    print(s.port, flush=True)
    await s.serve_forever()

run(main(), use_uvloop=sys.argv[1] == "uv")
"""


def bridge_server(uv: bool = True) -> contextlib.AbstractContextManager[int]:
    return _process([sys.executable, "-c", BRIDGE_SERVER, "uv" if uv else "asyncio"])


# ---------------------------------------------------------------------------
# Echo clients
# ---------------------------------------------------------------------------


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


def _frame_of(size: int) -> bytes:
    return (size - 4).to_bytes(4, "big") + bytes(size - 4)


async def echo_latency(port: int, req: int, res: int, n: int) -> list[int]:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: _EchoClient(_frame_of(req), res),
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
        _, p = await loop.create_connection(lambda: _EchoClient(_frame_of(req), res),
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
    return await _call_latency(lambda: _FutureEchoClient(_frame_of(req), res), port, n)


# ---------------------------------------------------------------------------
# Bridge clients
# ---------------------------------------------------------------------------

_REG_READ = chain([write(0x48, b"\x00"), read(0x48, 2)])


async def bridge_latency(port: int, n: int) -> list[int]:
    c = await AsyncClient.connect("127.0.0.1", port)
    try:
        for _ in range(200):
            await c.transfer("1", _REG_READ)
        out = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            await c.transfer("1", _REG_READ)
            out.append(time.perf_counter_ns() - t0)
        return out
    finally:
        await c.close()


async def bridge_throughput(port: int, n: int, depth: int, conns: int = 1) -> float:
    clients = [await AsyncClient.connect("127.0.0.1", port) for _ in range(conns)]

    async def worker(c: AsyncClient, bus: str, count: int) -> None:
        for _ in range(count):
            await c.transfer(bus, _REG_READ)

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


# ---------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (Linux ``/proc``)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


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
        return out


async def _pipelined_checkpoints(port: int, total: int, depth: int, pid: int,
                                 every: int) -> list[tuple[int, int]]:
    c = await AsyncClient.connect("127.0.0.1", port)
    done = 0
    samples: list[tuple[int, int]] = []

    async def worker(count: int) -> None:
        nonlocal done
        for _ in range(count):
            await c.transfer("1", _REG_READ)
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
    import tracemalloc

    from .config import board_from_toml_text
    from .server import Server

    board = board_from_toml_text(bench_board_text(1) + _STALLED_BUS, "<bench>")
    server = Server(board, host="127.0.0.1", port=0, request_timeout=30.0)
    await server.start()
    clients = [await AsyncClient.connect("127.0.0.1", server.port) for _ in range(conns)]
    try:
        # A first request occupies the bus; the rest queue behind it.
        first = asyncio.ensure_future(clients[0].transfer("9", _STALL_READ))
        while not server.jobs:  # noqa: ASYNC110 - polls the server's state from outside
            await asyncio.sleep(0.001)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        n = per_conn * conns - 1
        tasks = [asyncio.ensure_future(c.transfer("9", _STALL_READ))
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


_STALLED_BUS = BENCH_I2C_BUS.format(n=9) + "stall_s = 0.5\n"  # the bench's device, stalling
_STALL_READ = chain([write(0x48, b"\x00"), read(0x48, 1)])


def run_memory(total: int = 1_000_000, progress: Callable[[str], None] = lambda s: None
               ) -> MemoryReport:
    _pin(os.getpid(), 0)
    every = max(total // 10, 64)
    with _server_process([sys.executable, "-c", BRIDGE_SERVER, "uv"]) as (port, pid):
        progress(f"memory: {total:,} pipelined requests")
        rss = _run(lambda: _pipelined_checkpoints(port, total, 64, pid, every))
    progress("memory: bytes per in-flight request")
    per = _run(lambda: _bytes_per_in_flight())
    return MemoryReport(total, rss, per, _IN_FLIGHT_PER_CONN * _IN_FLIGHT_CONNS)


# ---------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------


@dataclass
class Figure:
    name: str
    unit: str
    values: list[float]  # one per repetition
    baseline: str = ""
    better: str = "lower"
    target: float | None = None  # ratio target
    samples: list[int] = field(default_factory=list)  # ns, last repetition, for the plot

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def spread(self) -> float:
        lo, hi = min(self.values), max(self.values)
        return (hi - lo) / self.median if self.median else 0.0


def _pct(samples: list[int], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))] / 1000.0


def _run(coro_fn: Callable[[], Awaitable[Any]], uv: bool = True) -> Any:
    loop = new_event_loop(uv)
    try:
        return loop.run_until_complete(coro_fn())
    finally:
        loop.close()


def run_bench(reps: int = 5, n: int = 2000, n_tp: int = 20000, quick: bool = False,
              progress: Callable[[str], None] = lambda s: None) -> dict[str, Figure]:
    """Every figure, ``reps`` times; returns them by name."""
    if quick:
        reps, n, n_tp = 1, 200, 1000
    _pin(os.getpid(), 0)
    figs: dict[str, Figure] = {}

    def add(name: str, unit: str, value: float, baseline: str = "", better: str = "lower",
            target: float | None = None, samples: list[int] | None = None) -> None:
        f = figs.setdefault(name, Figure(name, unit, [], baseline, better, target))
        f.values.append(value)
        if samples is not None:
            f.samples = samples

    for rep in range(reps):
        progress(f"repetition {rep + 1}/{reps}")
        with echo_server(REG_READ_RES) as port:
            s = _run(lambda: echo_latency(port, REG_READ_REQ, REG_READ_RES, n))
            add("echo p50", "µs", _pct(s, 0.5), samples=s)
            add("echo p99", "µs", _pct(s, 0.99))
            s = _run(lambda: future_echo_latency(port, REG_READ_REQ, REG_READ_RES, n))
            add("echo+future p50", "µs", _pct(s, 0.5), "echo p50")
            add("echo throughput, 64 in flight", "req/s",
                _run(lambda: echo_throughput(port, REG_READ_REQ, REG_READ_RES, n_tp, 64)),
                better="higher")
            add("echo throughput, 4 conns x 64", "req/s",
                _run(lambda: echo_throughput(port, REG_READ_REQ, REG_READ_RES, n_tp // 4, 64,
                                             conns=4)), better="higher")
        with echo_server(REG_READ_RES, msgpack=True) as port:
            s = _run(lambda: msgpack_echo_latency(port, n))
            add("msgpack echo floor p50", "µs", _pct(s, 0.5), "echo p50", samples=s)
        with echo_server(SPI_4K + 24) as port:
            s = _run(lambda: echo_latency(port, SPI_4K + 70, SPI_4K + 24, max(n // 4, 50)))
            add("echo 4 KiB p50", "µs", _pct(s, 0.5))
        with bridge_server() as port:
            s = _run(lambda: bridge_latency(port, n))
            add("register read p50", "µs", _pct(s, 0.5), "echo p50", target=1.3, samples=s)
            add("register read p99", "µs", _pct(s, 0.99), "echo p99", target=1.5)
            add("throughput, 64 in flight", "req/s",
                _run(lambda: bridge_throughput(port, n_tp, 64)),
                "echo throughput, 64 in flight", "higher", 0.7)
            add("throughput, 4 conns x 4 buses", "req/s",
                _run(lambda: bridge_throughput(port, n_tp // 4, 64, conns=4)),
                "echo throughput, 4 conns x 64", "higher", 0.7)
            s = _run(lambda: bridge_spi_latency(port, max(n // 4, 50)))
            add("4 KiB SPI p50", "µs", _pct(s, 0.5), "echo 4 KiB p50", target=1.4)
        with echo_server(REG_READ_RES, buffered=True, uv=False) as port:
            s = _run(lambda: echo_latency(port, REG_READ_REQ, REG_READ_RES, n), uv=False)
            add("echo (asyncio, BufferedProtocol) p50", "µs", _pct(s, 0.5))
        with bridge_server(uv=False) as port:
            s = _run(lambda: bridge_latency(port, n), uv=False)
            add("register read p50 (asyncio)", "µs", _pct(s, 0.5),
                "echo (asyncio, BufferedProtocol) p50", target=1.5)
    return figs


def ratio(figs: dict[str, Figure], f: Figure) -> float | None:
    if not f.baseline or f.baseline not in figs:
        return None
    return f.median / figs[f.baseline].median


def report(figs: dict[str, Figure]) -> tuple[list[str], bool]:
    """Lines of the results table and whether every target was met."""
    lines = [f"{'figure':40} {'median':>10} {'unit':6} {'ratio':>6} {'target':>8} "
             f"{'spread':>7}", "-" * 83]
    ok = True
    for f in figs.values():
        r = ratio(figs, f)
        tgt = ""
        if f.target is not None and r is not None:
            met = r <= f.target if f.better == "lower" else r >= f.target
            ok &= met
            tgt = f"{'≤' if f.better == 'lower' else '≥'}{f.target:g} {'ok' if met else 'MISS'}"
        val = f"{f.median:,.0f}" if f.unit == "req/s" else f"{f.median:,.1f}"
        lines.append(f"{f.name:40} {val:>10} {f.unit:6} "
                     f"{(f'{r:.2f}x' if r is not None else ''):>6} {tgt:>8} "
                     f"{f.spread * 100:6.0f}%")
    return lines, ok


def noisy(figs: dict[str, Figure], limit: float = 0.25) -> list[str]:
    return [f.name for f in figs.values() if len(f.values) > 1 and f.spread > limit]


def to_json(figs: dict[str, Figure]) -> dict[str, Any]:
    out: dict[str, Any] = {"python": sys.version.split()[0], "cpus": os.cpu_count(),
                           "figures": {}}
    for f in figs.values():
        d = asdict(f)
        d.pop("samples")
        d["median"] = f.median
        d["spread"] = f.spread
        d["ratio"] = ratio(figs, f)
        out["figures"][f.name] = d
    return out


def plot(figs: dict[str, Figure], path: str) -> bool:
    """Latency distributions as a PNG; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5))
    series = [(name, label, figs[name].samples) for name, label in (
        ("echo p50", "bare uvloop echo"),
        ("msgpack echo floor p50", "msgpack echo floor"),
        ("register read p50", "busbridge register read"),
    ) if name in figs and figs[name].samples]
    if series:
        top = max(sorted(x)[int(len(x) * 0.995) - 1] for _n, _l, x in series) / 1000
        bins = [top * i / 120 for i in range(121)]  # one scale for all, so widths compare
        for _name, label, samples in series:
            us = [x / 1000 for x in samples if x / 1000 <= top]
            ax.hist(us, bins=bins, alpha=0.6, label=f"{label} (p50 {_pct(samples, 0.5):.0f} µs)")
    ax.set_xlabel("round trip (µs), one request in flight, loopback")
    ax.set_yscale("log")  # the echo's narrow peak would flatten the others
    ax.set_ylabel("requests (log scale)")
    ax.set_title("busbridge vs a bare echo: latency distribution")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``benchmarks/bench.py``; ``busbridge bench`` calls the same."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="one short repetition (smoke test)")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--plot", metavar="FILE.png")
    ap.add_argument("--memory", type=int, metavar="N", default=None,
                    help="also run N pipelined requests watching the server's RSS "
                         "(1000000 for the full check)")
    args = ap.parse_args(argv)
    return bench_command(args.reps, args.quick, args.json, args.plot, args.memory)


def bench_command(reps: int, quick: bool, json_path: str | None, plot_path: str | None,
                  memory: int | None = None) -> int:
    t0 = time.monotonic()

    def progress(s: str) -> None:
        print(f"bench: {s}", file=sys.stderr, flush=True)

    figs = run_bench(reps=reps, quick=quick, progress=progress)
    mem = None
    if memory is not None or quick:
        mem = run_memory(memory if memory is not None else 20_000, progress)
    lines, ok = report(figs)
    print("\n".join(lines))
    print(f"\n{reps if not quick else 1} repetition(s), medians; ratio = figure / baseline "
          f"in the same run; {time.monotonic() - t0:.0f} s")
    for name in noisy(figs):
        print(f"warning: '{name}' varied by more than 25% between repetitions: "
              "this machine is noisy, compare ratios with care", file=sys.stderr)
    if mem is not None:
        print()
        print("\n".join(mem.lines()))
    if json_path:
        data = to_json(figs)
        if mem is not None:
            data["memory"] = {"requests": mem.requests, "rss": mem.rss,
                              "growth_bytes": mem.growth,
                              "bytes_per_in_flight": mem.bytes_per_in_flight}
        with open(json_path, "w") as fh:
            json.dump(data, fh, indent=2)
    if plot_path and not plot(figs, plot_path):
        print("warning: matplotlib is not installed; no plot (pip install busbridge[bench])",
              file=sys.stderr)
    if not quick:
        print("all targets met" if ok else "some targets missed")
    return 0

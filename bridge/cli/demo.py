"""``busbridge demo``: the default simulated board, served in-process, toured over real TCP.

The server runs on its own thread and event loop, as a separate board would,
so the latency and throughput figures include a real socket, framing, the
server's per-bus worker and the client's pipelining; only the wire is local.
Each step states what it expects, so the demo doubles as a smoke test: the
exit status says whether every step behaved.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import textwrap
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from protocol.virtio import read, write

from ..client import AsyncClient, TransferError, spi_xfer
from ..runtime import have_uvloop, new_event_loop, run
from ..server import Server
from .common import CONTEXT, CliError, errmsg, verbosity
from .i2c import scan  # the pipelined i2cdetect

if TYPE_CHECKING:
    from ..config import Board

Echo = Callable[[str], object]

TMP117 = 0x48
EEPROM = 0x50
ABSENT = 0x51
DEV10 = 0x2A5
FLASH_CS = 0
LOOP_CS = 1

EEPROM_TEXT = b"hello, busbridge"
EEPROM_AT = 0x0100
FLASH_TEXT = b"virtio-spi here!"
FLASH_AT = 0x001000

LATENCY_N = 200
THROUGHPUT_N = 2000
IN_FLIGHT = 64

_JEDEC_VENDORS = {
    0xEF: "Winbond", 0xC2: "Macronix", 0x20: "Micron", 0x01: "Infineon/Cypress",
    0x9D: "ISSI", 0xC8: "GigaDevice", 0x1F: "Adesto", 0xBF: "Microchip (SST)",
}


def jedec_name(jedec: bytes) -> str:
    """``ef 40 16`` → ``Winbond W25Q32``: vendor, and the part for Winbond's W25Q family."""
    if len(jedec) < 3:
        return "?"
    vendor = _JEDEC_VENDORS.get(jedec[0], f"vendor {jedec[0]:#04x}")
    mbit = (1 << jedec[2]) * 8 // (1 << 20) if 0x10 <= jedec[2] <= 0x20 else 0
    if jedec[0] == 0xEF and jedec[1] in (0x40, 0x60, 0x70) and mbit:
        return f"{vendor} W25Q{mbit}"
    return f"{vendor}, {mbit} Mbit" if mbit else vendor


@dataclass
class Step:
    bus: str
    what: str
    result: str = ""
    us: float | None = None
    ok: bool = False


# ---------------------------------------------------------------------------
# The server, on its own thread
# ---------------------------------------------------------------------------


class ServerThread:
    """A :class:`Server` on a private thread and loop; ``stop()`` closes it gracefully."""

    def __init__(self, board: Board, host: str, port: int) -> None:
        self.loop = new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.server: Server | None = None
        self.board = board
        self.thread = threading.Thread(target=self._run, args=(host, port),
                                       name="busbridge-demo-server", daemon=True)

    def _run(self, host: str, port: int) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            server = Server(self.board, host=host, port=port,
                            request_timeout=self.board.server.request_timeout)
            await server.start()
            self.server = server
            self._ready.set()
            await server.serve_forever()

        try:
            self.loop.run_until_complete(main())
        except BaseException as e:
            self._error = e
            self._ready.set()

    def start(self) -> Server:
        self.thread.start()
        self._ready.wait(10)
        if self.server is None:
            self.board.close()
            self.loop.close()
            if isinstance(self._error, Exception):
                raise self._error
            raise RuntimeError("demo server did not start")
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.close(grace=2.0), self.loop).result(10)
        self.thread.join(10)
        self.loop.close()


# ---------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------


async def _timed(step: Step, coro: Awaitable[None]) -> None:
    t0 = time.perf_counter()
    try:
        await coro
    except Exception as e:  # a demo step that breaks is a failed step, not a traceback
        step.ok = False
        step.result = f"unexpected error: {getattr(e, 'strerror', None) or e}"
    step.us = (time.perf_counter() - t0) * 1e6


async def _reg16(c: AsyncClient, reg: int) -> int:
    (data,) = await c.transfer("1", [write(TMP117, [reg]), read(TMP117, 2)])
    return int.from_bytes(data, "big")


async def _flash_wait(c: AsyncClient) -> None:
    for _ in range(1000):
        (st,) = await c.spi_transfer("0", FLASH_CS, [spi_xfer(b"\x05\x00")])
        if not st[1] & 0x01:
            return
        await asyncio.sleep(0.0005)
    raise TimeoutError(errno.ETIMEDOUT, "flash stayed busy (WIP)")


def _pct(sorted_us: list[float], p: float) -> float:
    return sorted_us[max(0, math.ceil(p / 100 * len(sorted_us)) - 1)]


async def tour(c: AsyncClient) -> list[Step]:
    """Run every step against the default board; each one checks its own result."""
    steps: list[Step] = []

    def new(bus: str, what: str) -> Step:
        steps.append(Step(bus, what))
        return steps[-1]

    for bus, expect in (("1", {TMP117, EEPROM}), ("2", {0x18})):
        s = new(f"i2c {bus}", "scan 0x08-0x77 (i2cdetect)")

        async def do_scan(s: Step = s, bus: str = bus, expect: set[int] = expect) -> None:
            found = await scan(c, bus, range(0x08, 0x78))
            s.result = " ".join(f"{a:#04x}" for a in sorted(found)) or "nothing"
            s.ok = expect <= found

        await _timed(s, do_scan())

    s = new("i2c 1", "TMP117 device ID (reg 0x0f)")

    async def dev_id() -> None:
        v = await _reg16(c, 0x0F)
        s.result, s.ok = f"{v:#06x}", v == 0x0117

    await _timed(s, dev_id())

    t = new("i2c 1", "TMP117 temperature (reg 0)")

    async def temp() -> None:
        raw = await _reg16(c, 0x00)
        celsius = (raw - 0x10000 if raw & 0x8000 else raw) * 7.8125e-3
        t.result, t.ok = f"{celsius:.3f} °C (raw {raw:#06x})", -55.0 <= celsius <= 150.0

    await _timed(t, temp())

    d = new("i2c 2", f"10-bit device {DEV10:#x} reg 0")

    async def ten_bit() -> None:
        (data,) = await c.transfer("2", [write(DEV10, [0x00], ten_bit=True),
                                         read(DEV10, 1, ten_bit=True)])
        d.result, d.ok = f"{data[0]:#04x} (10-bit addressing)", data == b"\xa5"

    await _timed(d, ten_bit())

    w = new("i2c 1", f"EEPROM write @{EEPROM_AT:#06x}")

    async def ee_write() -> None:
        await c.transfer("1", [write(EEPROM, EEPROM_AT.to_bytes(2, "big") + EEPROM_TEXT)])
        # ACK polling: a real 24C32 NACKs until its write cycle ends.
        for _ in range(200):
            try:
                await c.transfer("1", [write(EEPROM)])
                break
            except TransferError:
                await asyncio.sleep(0.0005)
        w.result, w.ok = f"{EEPROM_TEXT.decode()!r} ({len(EEPROM_TEXT)} B)", True

    await _timed(w, ee_write())

    r = new("i2c 1", f"EEPROM read-back @{EEPROM_AT:#06x}")

    async def ee_read() -> None:
        (data,) = await c.transfer("1", [write(EEPROM, EEPROM_AT.to_bytes(2, "big")),
                                         read(EEPROM, len(EEPROM_TEXT))])
        r.ok = data == EEPROM_TEXT
        r.result = f"{data.decode(errors='replace')!r} " + ("matches" if r.ok else "DIFFERS")

    await _timed(r, ee_read())

    j = new("spi 0", "flash JEDEC ID (cs 0, 0x9f)")

    async def jedec() -> None:
        rx = await c.xfer("0", FLASH_CS, b"\x9f\x00\x00\x00")
        j.result, j.ok = f"{rx[1:].hex(' ')}: {jedec_name(rx[1:])}", rx[1:] == b"\xef\x40\x16"

    await _timed(j, jedec())

    p = new("spi 0", f"flash program @{FLASH_AT:#08x}")

    async def program() -> None:
        addr = FLASH_AT.to_bytes(3, "big")
        await c.spi_transfer("0", FLASH_CS, [spi_xfer(b"\x06", 0)])
        await c.spi_transfer("0", FLASH_CS, [spi_xfer(b"\x02" + addr + FLASH_TEXT, 0)])
        await _flash_wait(c)
        p.result, p.ok = f"{len(FLASH_TEXT)} B, WIP cleared", True

    await _timed(p, program())

    f = new("spi 0", f"flash read 16 B @{FLASH_AT:#08x}")

    async def flash_read() -> None:
        (data,) = await c.spi_transfer("0", FLASH_CS, [
            spi_xfer(b"\x03" + FLASH_AT.to_bytes(3, "big"), 0),
            spi_xfer(None, len(FLASH_TEXT)),  # same message: CS held between the two
        ])
        f.ok = data == FLASH_TEXT
        f.result = f"{data.decode(errors='replace')!r} " + ("matches" if f.ok else "DIFFERS")

    await _timed(f, flash_read())

    lb = new("spi 0", "loopback on cs 1")

    async def loopback() -> None:
        tx = bytes.fromhex("deadbeef")
        rx = await c.xfer("0", LOOP_CS, tx)
        lb.ok = rx == tx
        lb.result = f"{rx.hex(' ')} " + ("echoed" if lb.ok else "DIFFERS")

    await _timed(lb, loopback())

    n = new("i2c 1", f"read at absent {ABSENT:#04x}: NACK")

    async def nack() -> None:
        try:
            await c.transfer("1", [write(ABSENT, [0x00]), read(ABSENT, 2)])
        except TransferError as e:
            n.ok = e.errno == errno.ENXIO
            n.result = f"{errno.errorcode.get(e.errno or 0, e.errno)}: {e.strerror}"
        else:
            n.result = "answered, but nothing should be there"

    await _timed(n, nack())

    lat = new("i2c 1", f"latency: {LATENCY_N} reads in turn")

    async def latency() -> None:
        times: list[float] = []
        ok = True
        for _ in range(LATENCY_N):
            t0 = time.perf_counter()
            ok &= await _reg16(c, 0x0F) == 0x0117
            times.append((time.perf_counter() - t0) * 1e6)
        times.sort()
        lat.result = f"p50 {_pct(times, 50):.0f} µs, p99 {_pct(times, 99):.0f} µs"
        lat.ok = ok

    await _timed(lat, latency())

    tp = new("i2c 1", f"throughput: {IN_FLIGHT} in flight")

    async def throughput() -> None:
        left = THROUGHPUT_N
        bad = 0

        async def worker() -> None:
            nonlocal left, bad
            while left > 0:
                left -= 1
                if await _reg16(c, 0x0F) != 0x0117:
                    bad += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        rate = THROUGHPUT_N / (time.perf_counter() - t0)
        tp.result, tp.ok = f"{THROUGHPUT_N} reads: {rate:,.0f} req/s", bad == 0

    await _timed(tp, throughput())
    return steps


# ---------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------

_W_WHAT = 27
_W_RESULT = 29


def format_table(steps: list[Step]) -> list[str]:
    """Rows that fit 80 columns; long text wraps inside its own column."""
    head = f"{'#':>2} {'bus':<5} {'step':<{_W_WHAT}} {'result':<{_W_RESULT}} {'µs':>7}"
    out = [head, "-" * len(head)]
    for i, s in enumerate(steps, 1):
        what = textwrap.wrap(s.what, _W_WHAT) or [""]
        result = textwrap.wrap(s.result, _W_RESULT) or [""]
        us = f"{s.us:,.0f}" if s.us is not None else "-"
        for k in range(max(len(what), len(result))):
            w = what[k] if k < len(what) else ""
            r = result[k] if k < len(result) else ""
            if k == 0:
                mark = "" if s.ok else " FAIL"
                out.append(f"{i:>2} {s.bus:<5} {w:<{_W_WHAT}} {r:<{_W_RESULT}} {us:>7}{mark}")
            else:
                out.append(f"{'':>2} {'':<5} {w:<{_W_WHAT}} {r}".rstrip())
    return out


def run_demo(host: str = "127.0.0.1", port: int = 0, echo: Echo = print,
             quiet_server: bool = True) -> bool:
    """Serve the default board, run the tour, print the table; True if all steps passed.

    ``quiet_server`` hides the server's start/stop log lines, which would
    interleave with the table; ``-v`` shows them.
    """
    server_log = logging.getLogger("busbridge.server")
    saved_level = server_log.level
    if quiet_server:
        server_log.setLevel(logging.ERROR)
    try:
        return _run_demo(host, port, echo)
    finally:
        server_log.setLevel(saved_level)


def _run_demo(host: str, port: int, echo: Echo) -> bool:
    from ..config import load_board  # the board schema: only this command needs it

    board = load_board(None)
    st = ServerThread(board, host, port)
    server = st.start()
    try:
        loop = "uvloop" if have_uvloop() else "asyncio"
        echo(f"busbridge demo: board {board.name!r} on {server.host}:{server.port}")
        echo(f"(server on its own thread, {loop}; client over TCP on this one)")
        echo("")

        async def main() -> tuple[list[Step], float]:
            t0 = time.perf_counter()
            c = await AsyncClient.connect(server.host, server.port, timeout=5.0)
            try:
                return await tour(c), time.perf_counter() - t0
            finally:
                await c.close()

        steps, elapsed = run(main())
    finally:
        st.stop()
    for line in format_table(steps):
        echo(line)
    failed = [s for s in steps if not s.ok]
    echo("")
    if failed:
        echo(f"{len(failed)} of {len(steps)} steps did NOT behave as expected "
             f"({elapsed:.2f} s).")
    else:
        echo(f"All {len(steps)} steps behaved as expected ({elapsed:.2f} s).")
    return not failed


@click.command(context_settings=CONTEXT)
@click.option("--listen", metavar="HOST:PORT", default="127.0.0.1:0", show_default=True,
              help="Where the in-process server listens (port 0: any free port).")
@click.pass_context
def demo(ctx: click.Context, listen: str) -> None:
    """Serve the simulated board in-process and tour it over real TCP.

    Scans, sensor and EEPROM access, SPI flash and loopback, a deliberate NACK,
    then latency and pipelined throughput.  Exit 0 if every step behaved.
    """
    from ..addresses import parse_host_port

    try:
        host, port = parse_host_port(listen)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--listen") from None
    try:
        ok = run_demo(host, port, echo=click.echo, quiet_server=verbosity(ctx) == 0)
    except OSError as e:
        raise CliError(f"demo failed: {errmsg(e)}") from None
    if not ok:
        ctx.exit(1)

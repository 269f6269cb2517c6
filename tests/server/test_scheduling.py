"""Deadlines, concurrency and fairness as a client sees them (SPEC §7, §8.4; issue 13 items
1-2, issue 14 items 7-8), over real TCP against the default board on its own thread.

Nothing here is judged by speed (a shared 2-core machine may be slow at any moment): a
"heavy" frame (31 reads of 8 KiB from a simulated register map, at least 10x the loop's
inline bound anywhere) is seen on the bus by the server itself, and what must not wait
for it has to be answered before work queued or running at the same time ends. Where a
test needs the bus held for sure, the device also stretches each message (``stall_s``).
The bound itself (how small the delay is) is measured by benchmarks/bus_isolation.py.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from conftest import Running, start_server_thread, stop_server_thread

from bridge.client import AsyncClient, spi_xfer
from bridge.config import load_board
from bridge.server import ServerPolicy
from bridge.server.settings import LimitSettings
from protocol import I2CMsg, I2CStatus, chain, read, write

TMP117 = 0x48
EEPROM = 0x50
SCRATCH = 0x0F80  # EEPROM bytes these tests may change
HEAVY = [read(TMP117, 8192) for _ in range(31)]  # 31 chains (transactions)
HEAVY_CHAIN = chain([read(TMP117, 8192) for _ in range(31)])  # one transaction
LONG = 30.0  # a deadline the heavy frames never reach


@asynccontextmanager
async def connect(running: Running) -> AsyncIterator[AsyncClient]:
    c = await AsyncClient.connect(running.host, running.port, timeout=60)
    try:
        yield c
    finally:
        await c.close()


def eeprom_write(offset: int, data: bytes) -> list[I2CMsg]:
    return [write(EEPROM, bytes([offset >> 8, offset & 0xFF]) + data)]


async def on_the_bus(running: Running, *watch: asyncio.Future[Any]) -> None:
    """Until the server has a frame running on a bus worker, or a ``watch``ed request
    was answered (it ran between two looks; bounded: 30 s)."""
    for _ in range(30_000):
        if any(j.started for j in list(running.server.jobs)) or any(f.done() for f in watch):
            return
        await asyncio.sleep(0.001)
    raise AssertionError("no frame reached a bus worker within 30 s")


async def until_idle(running: Running) -> None:
    """Until the server holds no frame at all (bounded: 30 s)."""
    for _ in range(30_000):
        if not running.server.jobs:
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the server still held frames after 30 s")


@contextmanager
def stalled(running: Running, addr: int, seconds: float) -> Iterator[None]:
    """The device at ``addr`` on bus 1 holds the bus ``seconds`` per message."""
    dev = running.board.i2c["1"].device(addr)
    dev.stall_s = seconds  # type: ignore[attr-defined]
    try:
        yield
    finally:
        dev.stall_s = 0  # type: ignore[attr-defined]


def stamp(fut: asyncio.Future[Any], at: dict[str, float], name: str) -> asyncio.Future[Any]:
    fut.add_done_callback(lambda _f: at.setdefault(name, time.monotonic()))
    return fut


def assert_deadline_result(r: Any, n: int, never_ran: bool) -> None:
    """SPEC §8.4: every request ERR, every reads entry empty, one failure [0, 110, ...]."""
    assert r.status == bytes([I2CStatus.ERR]) * n
    assert all(d == b"" for d in r.reads)
    assert [(f.index, f.errno) for f in r.failures] == [(0, errno.ETIMEDOUT)]
    if never_ran:
        assert "never" in r.failures[0].message


async def test_a_running_frames_deadline_is_answered_at_once_and_frees_the_bus(
    server_thread: Running,
) -> None:
    async with connect(server_thread) as c, connect(server_thread) as b:
        at: dict[str, float] = {}
        short = stamp(asyncio.ensure_future(c.i2c("1", HEAVY, timeout=0.001)), at, "deadline")
        # The same work from another client, sharing the bus with it: the yardstick.
        full = stamp(asyncio.ensure_future(b.i2c("1", HEAVY, timeout=LONG)), at, "full")
        r = await short
        # It starts no transaction after its deadline: the bus is soon free again.
        (dev_id,) = await c.transfer("1", [write(TMP117, [0x0F]), read(TMP117, 2)],
                                     timeout=LONG)
        at["next"] = time.monotonic()
        ok = await full
    assert_deadline_result(r, len(HEAVY), never_ran=False)
    assert ok.status == bytes(len(HEAVY))
    assert dev_id == b"\x01\x17"
    assert at["deadline"] < at["next"] < at["full"], at


async def test_a_queued_frame_past_its_deadline_never_runs(server_thread: Running) -> None:
    eeprom = server_thread.board.i2c["1"].device(EEPROM)
    before = bytes(eeprom.memory[SCRATCH:SCRATCH + 2])  # type: ignore[attr-defined]
    async with connect(server_thread) as a, connect(server_thread) as b:
        with stalled(server_thread, TMP117, 0.05):  # one transaction, >= 31 x 50 ms
            at: dict[str, float] = {}
            # Behind its own connection's frame (§7 keeps that order) ...
            heavy = stamp(asyncio.ensure_future(a.i2c("1", HEAVY_CHAIN, timeout=LONG)), at, "heavy")
            own = stamp(asyncio.ensure_future(
                a.i2c("1", eeprom_write(SCRATCH, b"\xa5"), timeout=0.001)), at, "own")
            await on_the_bus(server_thread)
            # ... and from another connection, while that one transaction holds the bus.
            other = stamp(asyncio.ensure_future(
                b.i2c("1", eeprom_write(SCRATCH + 1, b"\x5a"), timeout=0.001)), at, "other")
            r_own, r_other, r_heavy = await asyncio.gather(own, other, heavy)
    assert r_heavy.status == bytes(len(HEAVY_CHAIN))
    assert_deadline_result(r_own, 1, never_ran=True)
    assert_deadline_result(r_other, 1, never_ran=True)
    assert at["own"] < at["heavy"]
    assert at["other"] < at["heavy"]
    await asyncio.sleep(0.05)
    assert bytes(eeprom.memory[SCRATCH:SCRATCH + 2]) == before  # type: ignore[attr-defined]


async def test_a_long_frame_delays_no_other_bus_ping_handshake_or_lease(
    server_thread: Running,
) -> None:
    async with connect(server_thread) as a, connect(server_thread) as b:
        at: dict[str, float] = {}
        heavies = [asyncio.ensure_future(a.i2c("1", HEAVY_CHAIN, timeout=LONG))
                   for _ in range(4)]
        stamp(heavies[-1], at, "heavy")
        await on_the_bus(server_thread)
        t0 = time.monotonic()
        rtt = await b.ping()
        at["ping"] = time.monotonic()
        (temp,) = await b.transfer("2", [write(0x18, [0x05]), read(0x18, 2)])  # MCP9808
        at["bus 2"] = time.monotonic()
        jedec = await b.xfer("0", 0, b"\x9f\x00\x00\x00")
        at["spi 0"] = time.monotonic()
        await b.leases()
        at["lease list"] = time.monotonic()
        async with connect(server_thread) as c:  # a new client's TCP + HELLO
            at["handshake"] = time.monotonic()
            assert c.welcome is not None
        results = await asyncio.gather(*heavies)
    assert all(r.status == bytes(len(HEAVY_CHAIN)) for r in results)
    assert len(temp) == 2
    assert jedec[1:] == b"\xef\x40\x16"
    assert rtt >= 0
    late = {k: round(v - t0, 4) for k, v in at.items() if k != "heavy" and v >= at["heavy"]}
    assert not late, f"waited for bus 1's four queued transactions: {late}"


async def test_many_big_register_map_reads_do_not_freeze_new_clients(
    server_thread: Running,
) -> None:
    """Issue 14 item 8: 40 frames of big reads queued; PING and HELLO of others still go."""
    frame = [read(TMP117, 8192) for _ in range(4)]
    async with connect(server_thread) as a:
        at: dict[str, float] = {}
        frames = [asyncio.ensure_future(a.i2c("1", frame, timeout=LONG)) for _ in range(40)]
        stamp(frames[19], at, "half")
        stamp(frames[-1], at, "last")
        await on_the_bus(server_thread)
        for i in range(5):
            async with connect(server_thread) as c:
                await c.ping()
                at[f"client {i}"] = time.monotonic()
        results = await asyncio.gather(*frames)
    assert all(r.status == bytes(4) for r in results)
    assert at["client 4"] < at["half"], at


async def test_clients_share_a_bus_fairly(server_thread: Running) -> None:
    """A client with a bus full of big frames does not starve another's small reads."""
    async with connect(server_thread) as hog, connect(server_thread) as admin:
        at: dict[str, float] = {}
        order: list[int] = []
        hogs = []
        for i in range(4):
            f = asyncio.ensure_future(hog.i2c("1", HEAVY, timeout=LONG))
            f.add_done_callback(lambda _f, i=i: order.append(i))
            hogs.append(f)
        stamp(hogs[-1], at, "hog done")
        await on_the_bus(server_thread)
        for _ in range(10):  # the server's default deadline (1 s) each
            (data,) = await admin.transfer("1", [write(EEPROM, [0x0F, 0x00]), read(EEPROM, 16)])
            assert len(data) == 16
        at["admin done"] = time.monotonic()
        results = await asyncio.gather(*hogs)
    assert all(r.status == bytes(len(HEAVY)) for r in results)
    assert order == [0, 1, 2, 3], "one client's frames on a bus keep their order"
    assert at["admin done"] < at["hog done"], "10 small reads waited for another client's frames"


async def test_bus_time_is_capped_per_frame_while_others_keep_their_reads() -> None:
    """Issue 14 item 7: 2 frames of 31 x 8 KiB at 400 kHz (11.8 s of wire time) with
    timeout_ms 3600000 hold the bus only to the capped deadline, and every small read of
    another client in the meantime succeeds."""
    board = load_board(None)
    bus = board.i2c["1"]
    bus.timing = True  # type: ignore[attr-defined]  # 400 kHz wire time, slept
    policy = ServerPolicy(limit_settings=LimitSettings(max_timeout_ms=1000))
    running, t = start_server_thread(board, policy=policy)
    try:
        async with connect(running) as hog, connect(running) as admin:
            t0 = time.monotonic()
            hogs = [asyncio.ensure_future(hog.i2c("1", HEAVY, timeout=3600)) for _ in range(2)]
            await asyncio.sleep(0.1)
            for _ in range(14):
                (data,) = await admin.transfer("1", [write(EEPROM, [0x0F, 0x00]),
                                                     read(EEPROM, 16)])
                assert len(data) == 16
            first, second = await asyncio.gather(*hogs)
            held = time.monotonic() - t0
            (dev_id,) = await admin.transfer("1", [write(TMP117, [0x0F]), read(TMP117, 2)])
    finally:
        stop_server_thread(running, t)
    assert_deadline_result(first, len(HEAVY), never_ran=False)
    assert_deadline_result(second, len(HEAVY), never_ran=True)
    assert held < 11.8 / 2, f"the two frames were answered after {held:.2f} s"
    assert dev_id == b"\x01\x17"


async def test_a_dropped_clients_queued_frames_never_run(server_thread: Running) -> None:
    eeprom = server_thread.board.i2c["1"].device(EEPROM)
    before = eeprom.memory[SCRATCH + 2]  # type: ignore[attr-defined]
    async with connect(server_thread) as probe:
        doomed = await AsyncClient.connect(server_thread.host, server_thread.port)
        with stalled(server_thread, TMP117, 0.05):  # 31 transactions, >= 50 ms each
            pending = [asyncio.ensure_future(doomed.i2c("1", HEAVY, timeout=LONG)),
                       asyncio.ensure_future(doomed.i2c(
                           "1", eeprom_write(SCRATCH + 2, bytes([before ^ 0xFF])),
                           timeout=LONG))]
            await on_the_bus(server_thread)
            await doomed.close()
            for f in pending:
                f.cancel()
            await until_idle(server_thread)  # the write would have run by now
        (data,) = await probe.transfer("1", [write(EEPROM, [(SCRATCH + 2) >> 8,
                                                            (SCRATCH + 2) & 0xFF]),
                                             read(EEPROM, 1)], timeout=LONG)
    assert data == bytes([before])


async def test_spi_frames_are_fair_and_keep_their_deadlines_too(server_thread: Running) -> None:
    """A long SPI message (64 KiB status poll of the flash, held 0.5 s longer by the
    flash) and a 1 ms loopback behind it."""
    poll = [spi_xfer(b"\x05", 0), spi_xfer(None, 65536)]
    flash = server_thread.board.spi["0"].device(0)
    async with connect(server_thread) as a, connect(server_thread) as b:
        at: dict[str, float] = {}
        flash.stall_s = 0.5  # type: ignore[attr-defined]
        try:
            long = stamp(asyncio.ensure_future(a.spi("0", 0, poll, timeout=LONG)), at, "long")
            queued = stamp(asyncio.ensure_future(
                a.spi("0", 1, [spi_xfer(b"\x01\x02", 2)], timeout=0.001)), at, "queued")
            await on_the_bus(server_thread, long)
            rx = await b.xfer("0", 1, b"\x33")  # the loopback, another client
            at["other"] = time.monotonic()
            r_long, r_queued = await asyncio.gather(long, queued)
        finally:
            flash.stall_s = 0  # type: ignore[attr-defined]
    assert r_long.status == b"\x00\x00"
    assert r_queued.status == b"\x02"
    assert r_queued.failures[0].errno == errno.ETIMEDOUT
    assert rx == b"\x33"
    assert at["queued"] < at["long"]


async def test_a_frame_finishing_after_its_deadline_is_reported_as_timed_out(
    server_thread: Running,
) -> None:
    """§8.4: "not completed by then" is ERR/ETIMEDOUT even if the server's loop was too
    busy to answer at the deadline itself (here blocked on purpose for 0.6 s, while the
    transaction ends at 0.2 s)."""
    dev = server_thread.board.i2c["1"].device(TMP117)
    async with connect(server_thread) as c:
        dev.stall_s = 0.1  # one transaction, 2 x 100 ms on the bus; the deadline is 100 ms
        try:
            late = asyncio.ensure_future(c.i2c("1", chain([write(TMP117, [0x0F]),
                                                           read(TMP117, 2)]), timeout=0.1))
            for _ in range(2000):  # until the server has it on the bus worker
                if server_thread.server.jobs:
                    break
                await asyncio.sleep(0.001)
            server_thread.loop.call_soon_threadsafe(time.sleep, 0.6)  # block the loop
            r = await late
        finally:
            dev.stall_s = 0
        assert_deadline_result(r, 2, never_ran=False)
        assert "unknown" in r.failures[0].message

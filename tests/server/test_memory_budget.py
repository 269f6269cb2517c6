"""The answer budget (issue 14, finding 6): clients that never read cannot pin memory.

With the old defaults one client that asks for big reads and never reads its
socket pinned ≈36 MiB (146 frames of 31 × 8 KiB reads), and 16 of them took the
server from 47 to 628 MiB.  Now what a connection is owed plus what waits unread
in its write buffer is bounded per connection and in all; frames past it get
``limit-exceeded`` before they run.  Real sockets; the bound is checked against
the transports' own write buffers, not the budget's bookkeeping.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest
from conftest import Running, start_server_thread, stop_server_thread
from reliability.attacks import Probe, frame, hello, read_frame

from bridge.client import BlockingClient, read, write
from bridge.config import load_board
from bridge.server import LimitSettings, ServerPolicy
from bridge.server.budget import FLOOR
from protocol import I2CMsg
from protocol.virtio import I2C_FLAGS_M_RD, I2C_OUT_HDR, encode_i2c_addr

PER_CLIENT, TOTAL = 1 << 20, 3 << 20
ATTACKERS, FRAMES = 6, 40


@pytest.fixture
def budgeted() -> Iterator[Running]:
    limits = LimitSettings(client_answer_budget=PER_CLIENT, answer_budget=TOTAL)
    running, t = start_server_thread(load_board(None), policy=ServerPolicy(limit_settings=limits))
    try:
        yield running
    finally:
        stop_server_thread(running, t)


def big_read(rid: int) -> bytes:
    """31 reads of 8 KiB from the EEPROM: the biggest RESULT a 256 KiB frame allows."""
    hdr = I2C_OUT_HDR.pack(encode_i2c_addr(0x50, False), 0, I2C_FLAGS_M_RD)
    return frame([2, rid, "1", [[hdr, 8192]] * 31, None])


def held(running: Running) -> tuple[int, list[int]]:
    """What the answers hold now, measured on the transports: per connection and in all."""
    per = []
    for s in list(running.server.sessions):
        per.append(sum(s._costs.values()) + s.transport.get_write_buffer_size())
    return sum(per), per


def connect_non_readers(running: Running, name: str, count: int,
                        socks: list[socket.socket]) -> None:
    """``count`` clients ``name`` that take their WELCOME and from then on never read,
    with small receive buffers; added to ``socks`` one by one, so the caller closes all."""
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", running.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(hello(name))
        assert read_frame(s) is not None  # WELCOME; from now on it never reads
        s.setblocking(False)
        socks.append(s)


def send_without_reading(socks: list[socket.socket], data: bytes, seconds: float) -> None:
    """``data`` on every socket, as much as the server takes within ``seconds``."""
    deadline = time.monotonic() + seconds
    pending = {s: data for s in socks}
    while pending and time.monotonic() < deadline:
        for s, rest in list(pending.items()):
            try:
                n = s.send(rest)
            except BlockingIOError:
                continue
            pending[s] = rest[n:]
            if not pending[s]:
                del pending[s]
        time.sleep(0.01)


def test_clients_that_never_read_stay_within_the_budget_and_others_are_served(
    budgeted: Running,
) -> None:
    socks: list[socket.socket] = []
    try:
        connect_non_readers(budgeted, "hoarder", ATTACKERS, socks)
        send_without_reading(socks, b"".join(big_read(k + 1) for k in range(FRAMES)), 20)
        with BlockingClient("127.0.0.1", budgeted.port) as c:
            probe = Probe().run(
                lambda: c.transfer("1", [write(0x48, [0x0F]), read(0x48, 2)]), count=100,
                seconds=30, pause=0)
            time.sleep(0.5)
            total, per = held(budgeted)
    finally:
        for s in socks:
            s.close()
    assert probe.served == probe.tried == 100, probe.errors
    # Each connection: its own budget plus at most one read's worth of small answers;
    # all of them: the server's budget plus the floor of each.
    assert max(per) <= PER_CLIENT + 64 * 1024, per
    assert total <= TOTAL + len(per) * FLOOR, (total, per)
    assert budgeted.server.budget.used >= 0


def test_a_flood_of_tiny_bad_frames_is_not_amplified_into_memory(budgeted: Running) -> None:
    """A 5-byte bad frame earns a 57-byte ERROR: a client that sends megabytes of them
    and never reads used to make the server buffer ten times that.  Now a read is
    answered 16 KiB at a time, and once the peer stops taking answers the rest waits."""
    socks: list[socket.socket] = []
    bad = b"\x00\x00\x00\x01\xc0" * ((3 << 20) // 5)  # 3 MB of nil frames: 36 MB of ERRORs
    try:
        connect_non_readers(budgeted, "amplifier", 4, socks)
        send_without_reading(socks, bad, 10)  # as much as the server reads
        # Others are still served.  Not at once: until each flooder's kernel buffers
        # are full of ERRORs the server works for it (a chunk at a time, in turn with
        # the others); on a loaded 2-core machine that took 3.3 s, hence the wait.
        with BlockingClient("127.0.0.1", budgeted.port, timeout=30) as c:
            assert c.transfer("1", [write(0x48, [0x0F]), read(0x48, 2)]) == [b"\x01\x17"]
        _total, per = held(budgeted)
    finally:
        for s in socks:
            s.close()
    assert max(per) <= 256 * 1024 + 2 * 65536, per


def test_answers_the_kernel_took_in_part_pin_no_memory_the_budget_does_not_see() -> None:
    """Measured by the allocator, not by the budget's bookkeeping.  A write the socket
    takes in part stays pinned whole on uvloop while the transport counts only its
    unsent rest: with default limits, 24 clients that never read pinned 93 MiB of
    answers the budget put at 4 MiB.  Answers now go out in 64 KiB pieces."""
    import tracemalloc

    limits = LimitSettings()
    data = b"".join(big_read(k + 1) for k in range(FRAMES))
    tracemalloc.start()
    running, t = start_server_thread(load_board(None),
                                     policy=ServerPolicy(limit_settings=limits))
    socks = []
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(24):
            s = socket.create_connection(("127.0.0.1", running.port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            s.sendall(hello("hoarder"))
            assert read_frame(s) is not None
            s.settimeout(0.05)
            with contextlib.suppress(OSError):  # the server stops reading it
                s.sendall(data)
            socks.append(s)
        with BlockingClient("127.0.0.1", running.port, timeout=30) as c:  # all answered
            assert c.transfer("1", [write(0x48, [0x0F]), read(0x48, 2)]) == [b"\x01\x17"]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
        for s in socks:
            s.close()
        stop_server_thread(running, t)
    held_by_answers = sum(x.size_diff for x in after.compare_to(before, "filename")
                          if x.traceback[0].filename.endswith("bridge/server/session.py"))
    bound = limits.answer_budget + 25 * (FLOOR + 64 * 1024)  # a floor and a piece each
    assert held_by_answers <= bound, (held_by_answers, bound)


def test_the_cost_of_a_frame_is_its_result_room_and_its_data() -> None:
    from bridge.server.budget import i2c_cost
    from protocol import I2CRequest

    ev = I2CRequest(1, "1", (I2CMsg(0x50, 0, b"\x00\x10"), I2CMsg(0x50, I2C_FLAGS_M_RD, b"", 32)))
    assert i2c_cost(ev) == 64 + 128 * 2 + 2 + 32

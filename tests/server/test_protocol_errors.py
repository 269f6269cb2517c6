"""SPEC.md §9's error table against the real server over real sockets (issue 13 items 3-13).

Each test sends raw msgpack, as a second implementation would, and checks what
comes back on the wire: the ERROR's id and code, whether the server then closes,
and that the frames behind a refusal still run (or, after a fatal one, never do).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

from bridge.server import Server
from tests.reliability.helpers import read_frames

TMP117 = 0x48
EEPROM = 0x50
PROBE = [[struct.pack("<HHI", TMP117 << 1, 0, 0), b""]]
ID_READ = [[struct.pack("<HHI", TMP117 << 1, 0, 1), b"\x0f"],
           [struct.pack("<HHI", TMP117 << 1, 0, 2), 2]]


def packb(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def frame_body(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def frame(obj: Any) -> bytes:
    return frame_body(packb(obj))


HELLO = frame([0, 0, {"version": 1, "client": "errors-test"}])


def read_all(sock: socket.socket, timeout: float = 10.0) -> tuple[list[list[Any]], bool]:
    """Every frame until the server closes (True) or ``timeout`` passes (False)."""
    return read_frames(sock, timeout)


def read_n(sock: socket.socket, n: int, timeout: float = 10.0) -> list[list[Any]]:
    """Exactly ``n`` frames (the connection must stay open)."""
    sock.settimeout(timeout)
    out: list[list[Any]] = []
    buf = b""
    while len(out) < n:
        while len(buf) < 4 or len(buf) < 4 + int.from_bytes(buf[:4], "big"):
            chunk = sock.recv(65536)
            assert chunk, f"closed after {out}"
            buf += chunk
        size = int.from_bytes(buf[:4], "big")
        out.append(msgpack.unpackb(buf[4 : 4 + size]))
        buf = buf[4 + size :]
    return out


async def in_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def connect(server: Server) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=10)


# ---------------------------------------------------------------------------
# Before HELLO: one ERROR with id 0, then the connection closes (items 3, 10, 13)
# ---------------------------------------------------------------------------

BEFORE_HELLO: list[tuple[str, bytes, str]] = [
    ("result", frame([4, 1, b"\x00", [], []]), "malformed"),
    ("type-99", frame([99, 1]), "malformed"),
    ("lease-result", frame([9, 7, {"leases": []}]), "malformed"),
    ("empty-frame", b"\x00\x00\x00\x00", "malformed"),
    ("not-msgpack", frame_body(b"\xc1\xc1\xc1"), "malformed"),
    ("hello-1-item", frame([0]), "malformed"),
    ("hello-4-items", frame([0, 0, {}, 1]), "malformed"),
    ("ping-3-items", frame([6, 5, 5]), "malformed"),
    ("token-nil", frame([0, 0, {"version": 1, "token": None}]), "malformed"),
    ("version-float", frame([0, 0, {"version": 1.0}]), "malformed"),
    ("version-str", frame([0, 0, {"version": "1"}]), "malformed"),
    ("client-bin", frame([0, 0, {"client": b"agent"}]), "malformed"),
    ("hello-65-pairs", frame([0, 0, {f"k{i}": i for i in range(65)}]), "limit-exceeded"),
    ("i2c", frame([2, 7, "1", PROBE, None]), "handshake-required"),
]


@pytest.mark.parametrize(("sent", "code"), [b[1:] for b in BEFORE_HELLO],
                         ids=[b[0] for b in BEFORE_HELLO])
async def test_every_refusal_before_hello_is_fatal_with_id_0(server: Server, sent: bytes,
                                                            code: str) -> None:
    """What follows the refused frame in the same write (a HELLO and a request) is never
    answered: the stream is not trusted any more."""
    seq0 = server.board.i2c["1"].log_snapshot()[-1:]

    def probe() -> tuple[list[list[Any]], bool]:
        with connect(server) as s:
            s.sendall(sent + HELLO + frame([2, 3, "1", PROBE, None]))
            return read_all(s)

    frames, closed = await in_thread(probe)
    assert [f[:3] for f in frames] == [[5, 0, code]], frames
    assert closed
    assert server.board.i2c["1"].log_snapshot()[-1:] == seq0, "the request behind it ran"


# ---------------------------------------------------------------------------
# After HELLO: non-fatal refusals, with the id only of a request frame (items 4, 5, 8, 9)
# ---------------------------------------------------------------------------

AFTER_HELLO: list[tuple[str, bytes, int, str]] = [
    ("ping-3-items", frame([6, 5, 5]), 0, "malformed"),
    ("pong-1-item", frame([7]), 0, "malformed"),
    ("client-result", frame([4, 6, b"\x00", [], []]), 0, "malformed"),
    ("client-lease-result", frame([9, 7, {"leases": []}]), 0, "malformed"),
    ("type-99", frame([99, 5]), 0, "malformed"),
    ("empty-frame", b"\x00\x00\x00\x00", 0, "malformed"),
    ("hello-1-item", frame([0]), 0, "malformed"),
    ("trailing-byte", frame_body(packb([2, 21, "1", PROBE, None]) + b"\x00"), 21, "malformed"),
    ("truncated", frame_body(b"\x95\x02\x4d\xa1\x31"), 77, "malformed"),
    ("ext-type", frame_body(b"\x95\x02\x16" + packb("1") + packb(PROBE)
                            + b"\xd6\xff\x00\x00\x00\x00"), 22, "malformed"),
    ("str-4097", frame([2, 23, "b" * 4097, PROBE, None]), 23, "limit-exceeded"),
    ("id-0", frame([2, 0, "1", PROBE, None]), 0, "malformed"),
]


@pytest.mark.parametrize(("sent", "rid", "code"), [a[1:] for a in AFTER_HELLO],
                         ids=[a[0] for a in AFTER_HELLO])
async def test_refusals_after_hello_keep_the_connection_and_echo_only_request_ids(
        server: Server, sent: bytes, rid: int, code: str) -> None:
    def probe() -> list[list[Any]]:
        with connect(server) as s:
            s.sendall(HELLO)
            read_n(s, 1)
            s.sendall(sent + frame([2, 30, "1", ID_READ, None]))
            return read_n(s, 2)

    err, result = await in_thread(probe)
    assert err[:3] == [5, rid, code]
    assert result[:4] == [4, 30, b"\x00\x00", [b"\x01\x17"]]


async def test_a_duplicate_id_is_fatal_with_id_0_and_never_runs(server: Server) -> None:
    eeprom = server.board.i2c["1"].device(EEPROM)
    eeprom.stall_s = 0.3
    write = [[struct.pack("<HHI", EEPROM << 1, 0, 0), b"\x0f\xf0\x5a"]]

    def probe() -> tuple[list[list[Any]], bool]:
        with connect(server) as s:
            s.sendall(HELLO)
            read_n(s, 1)
            s.sendall(frame([2, 40, "1", [[struct.pack("<HHI", EEPROM << 1, 0, 2), 1]], None])
                      + frame([2, 40, "1", write, None]))
            return read_all(s)

    try:
        before = eeprom.memory[0x0FF0]
        frames, closed = await in_thread(probe)
    finally:
        eeprom.stall_s = 0
    errors = [f[:3] for f in frames if f[0] == 5]
    assert errors == [[5, 0, "duplicate-id"]]
    assert closed
    assert eeprom.memory[0x0FF0] == before


async def test_a_stream_ending_inside_a_frame_is_fatal_and_queued_work_never_runs(
        server: Server) -> None:
    """§9.2, §9.3 row 2: one ERROR (id 0), the close, no answer for the frames in
    flight; the write queued behind the running read is withdrawn, as for a drop."""
    eeprom = server.board.i2c["1"].device(EEPROM)
    eeprom.stall_s = 0.3
    write = [[struct.pack("<HHI", EEPROM << 1, 0, 0), b"\x0f\xf1\xa5"]]

    def probe() -> tuple[list[list[Any]], bool]:
        with connect(server) as s:
            s.sendall(HELLO)
            read_n(s, 1)
            s.sendall(frame([2, 60, "1", [[struct.pack("<HHI", EEPROM << 1, 0, 2), 1]], None])
                      + frame([2, 61, "1", write, None]) + b"\x00\x00")
            s.shutdown(socket.SHUT_WR)
            return read_all(s)

    try:
        before = eeprom.memory[0x0FF1]
        frames, closed = await in_thread(probe)
        await asyncio.sleep(0.6)  # the running read ends; the queued write had its chance
    finally:
        eeprom.stall_s = 0
    assert [f[:3] for f in frames] == [[5, 0, "malformed"]]
    assert closed
    assert eeprom.memory[0x0FF1] == before, "the write queued behind the read ran"


# ---------------------------------------------------------------------------
# Half-close (item 12)
# ---------------------------------------------------------------------------


async def test_a_half_close_with_nothing_in_flight_closes_at_once_without_a_ping(
        server: Server) -> None:
    def probe() -> tuple[list[list[Any]], bool]:
        with connect(server) as s:
            s.sendall(HELLO)
            read_n(s, 1)
            s.shutdown(socket.SHUT_WR)
            return read_all(s)

    frames, closed = await in_thread(probe)
    assert (frames, closed) == ([], True)


async def test_a_half_close_with_work_in_flight_gets_a_ping_then_the_answers_then_a_close(
        server: Server) -> None:
    eeprom = server.board.i2c["1"].device(EEPROM)
    eeprom.stall_s = 0.3
    read1 = [[struct.pack("<HHI", EEPROM << 1, 0, 2), 1]]

    def probe() -> tuple[list[list[Any]], bool]:
        with connect(server) as s:
            s.sendall(HELLO)
            read_n(s, 1)
            s.sendall(frame([2, 50, "1", read1, None]) + frame([2, 51, "1", ID_READ, None]))
            s.shutdown(socket.SHUT_WR)
            return read_all(s)

    try:
        frames, closed = await in_thread(probe)
    finally:
        eeprom.stall_s = 0
    assert frames[0][0] == 6, "the PING comes first, before any answer"
    assert 1 <= frames[0][1] <= 0xFFFFFFFF
    assert [f[:2] for f in frames[1:]] == [[4, 50], [4, 51]]
    assert closed


async def test_over_tls_a_close_notify_ends_the_connection(tls_server: Server,
                                                           pki: Any) -> None:
    """TLS has no half-close: after the client's close_notify nothing is answered."""
    server = tls_server
    eeprom = server.board.i2c["1"].device(EEPROM)
    eeprom.stall_s = 0.3
    ctx = ssl.create_default_context(cafile=str(Path(pki.ca)))
    read1 = [[struct.pack("<HHI", EEPROM << 1, 0, 2), 1]]

    def probe() -> tuple[list[list[Any]], bool]:
        raw = connect(server)
        s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        s.sendall(HELLO)
        read_n(s, 1)  # type: ignore[arg-type]
        s.sendall(frame([2, 60, "1", read1, None]))
        time.sleep(0.05)
        plain = s.unwrap()  # close_notify
        try:
            return read_all(plain, timeout=5)
        finally:
            plain.close()

    try:
        frames, closed = await in_thread(probe)
    finally:
        eeprom.stall_s = 0
    assert (frames, closed) == ([], True)

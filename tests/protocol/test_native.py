"""The C decoder and encoder (protocol/_native.c) give what the pure path gives.

The compiled build's ``protocol._native`` takes a server's common I2C frames and
encodes the common RESULT; anything else goes to the general path.  A
differential test: the same reads (random, edge and mutated frames, cut at random
points) through a server connection with the C decoder and one without, every
event, refusal (code, message, id, fatality), id in flight and buffered byte
compared; the C path shown taken for the common frames and not for the others.

In the pure-Python build the module is not built and these tests skip, saying so;
in the compiled build (``BUSBRIDGE_EXPECT_BUILD=compiled``, scripts/check_compiled.sh)
its absence is a failure.  ``BUSBRIDGE_NATIVE_FRAMES`` sets how many random frames
(default 20,000; the report's run used 300,000 under ``python -X dev``).
"""

from __future__ import annotations

import os
import random
import struct
import sys
from typing import Any

import msgpack
import pytest
from protocol_pair import handshake

from protocol.accel import _result_body, _result_frame, i2c_feed, result_body, result_frame
from protocol.connection import Connection, Role
from protocol.errors import ProtocolError
from protocol.events import Event, I2CRequest, Result
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.virtio import I2CMsg

try:
    from protocol import _native
except ImportError:
    if os.environ.get("BUSBRIDGE_EXPECT_BUILD") == "compiled":
        raise  # the compiled build must have it
    pytest.skip("protocol._native is not built (pure-Python build): the C decoder and "
                "encoder are tested in the compiled build (scripts/check_compiled.sh)",
                allow_module_level=True)

N = int(os.environ.get("BUSBRIDGE_NATIVE_FRAMES", "20000"))
SMALL = Limits(max_frame=450, max_requests=3, max_i2c_len=16, max_in_flight=5)
LIMITS = [DEFAULT_LIMITS, SMALL]


def server(limits: Limits, native: bool) -> Connection:
    conn = handshake(Connection(Role.SERVER, limits))
    if not native:
        conn._feed = None  # the general path only
    assert (conn._feed is not None) == native
    return conn


def summary(items: list[Event | ProtocolError]) -> list[object]:
    return [(e.code, e.message, e.request_id, e.fatal) if isinstance(e, ProtocolError) else e
            for e in items]


def hdr(addr: int, flags: int, pad: int = 0, ten: bool = False) -> bytes:
    field = ((addr & 0xFF) << 8 | 0xF0 | (addr >> 8 & 3) << 1) if ten else addr << 1
    return struct.pack("<HHI", field & 0xFFFF, pad, flags)


def common(rng: random.Random, rid: int, limits: Limits) -> list[Any]:
    """A common I2C frame body as a list (a register read, a write, a probe...)."""
    n = rng.randint(1, min(limits.max_requests, 4))
    reqs: list[list[Any]] = []
    for i in range(n):
        flags = 1 if i < n - 1 else 0
        addr = rng.choice([0x48, 0x50, 0, 0x77, rng.randint(0, 0x77)])
        if rng.random() < 0.5:
            reqs.append([hdr(addr, flags | 2), rng.randint(0, min(limits.max_i2c_len, 40))])
        else:
            reqs.append([hdr(addr, flags), rng.randbytes(rng.randint(0, limits.max_i2c_len))])
    bus = rng.choice(["1", "i2c-1", "b" * 31, "c" * 32, "d" * 64])
    return [2, rid, bus, reqs, rng.choice([None, None, 1, 100, 3_600_000])]


def oddity(rng: random.Random, f: list[Any], limits: Limits) -> list[Any] | bytes:
    """``f`` with one thing uncommon or wrong: each is the general path's to take or refuse."""
    reqs = f[3]
    i = rng.randrange(len(reqs))
    m = reqs[i]
    k = rng.randrange(24)
    if k == 0:
        f[1] = rng.choice([0, -1, 0x1_0000_0000, 2**64 - 1, "7", None, 1.0, True])
    elif k == 1:
        f[2] = rng.choice(["", "e" * 65, "é", "bus\udcff".encode(errors="surrogateescape"),
                           b"1", 1, None, "x" * 40])
    elif k == 2:
        f[3] = rng.choice([[], None, [m] * 16, [m] * (limits.max_requests + 1), m, b"x"])
    elif k == 3:
        m[0] = hdr(rng.randint(0, 0x3FF), m[0][4] if len(m[0]) == 8 else 0, ten=True)
    elif k == 4:
        m[0] = hdr(rng.choice([0x78, 0x79, 0x7A, 0x7B]), 0)
    elif k == 5:
        m[0] = hdr(0x48, m[0][4], pad=rng.choice([1, 0x100, 0xFFFF]))
    elif k == 6:
        m[0] = hdr(0x48, rng.choice([4, 8, 0x100, 0x8000_0000, 3, 1]))
    elif k == 7:
        m[0] = rng.choice([m[0][:7], m[0] + b"\0", m[0].hex(), None, 5])
    elif k == 8:
        m[1] = rng.choice([-1, limits.max_i2c_len + 1, 2**32, 2**40, None, "ab", 1.5])
    elif k == 9:
        m[1] = rng.choice([bytes(limits.max_i2c_len + 1), bytes(limits.max_i2c_len)])
    elif k == 10:
        reqs[i] = rng.choice([[m[0]], [*m, 0], m[0], None])
    elif k == 11:
        reqs[-1][0] = hdr(0x48, 1 | (reqs[-1][0][4] & 2 if len(reqs[-1][0]) == 8 else 0))
    elif k == 12:
        f[4] = rng.choice([0, -1, 3_600_001, 2**40, "1", 1.0, False])
    elif k == 13:
        f.append(rng.choice([None, 0]))
    elif k == 14:
        f.pop()
    elif k == 15:
        f[0] = rng.choice([3, 4, 5, 6, 8, 10, 99, -2, "2"])
    elif k == 16:  # reads whose RESULT would (about) not fit in max_frame
        n = min(limits.max_requests, 15)
        f[3] = [[hdr(0x48, 3), limits.max_i2c_len]] * (n - 1) + [[hdr(0x48, 2), rng.choice(
            [limits.max_i2c_len, limits.max_frame - 64 - 128 * n - limits.max_i2c_len * (n - 1),
             limits.max_frame - 63 - 128 * n - limits.max_i2c_len * (n - 1)])]]
    body = msgpack.packb(f, use_bin_type=True)
    if k == 17:  # the same values in longer encodings msgpack also reads
        return _widened(rng, f)
    if k == 18:
        return body + rng.choice([b"\xc0", b"\x00", b"\x91"])
    if k == 19 and len(body) > 1:
        return body[: rng.randrange(1, len(body))]
    if k >= 20:  # a few bytes changed anywhere
        b = bytearray(body)
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    return f


def _widened(rng: random.Random, f: list[Any]) -> bytes:
    """``f`` packed with one int, str, bin or array in a longer form than msgpack's own."""
    p = msgpack.Packer(use_bin_type=True)
    kind = rng.randrange(4)
    out = [b"\x95" if kind else b"\xdc\x00\x05", p.pack(f[0])]
    rid = f[1]
    out.append(struct.pack(">BQ", 0xCF, rid) if kind == 1 and type(rid) is int and rid >= 0
               else p.pack(rid))
    bus = f[2]
    out.append(b"\xda" + struct.pack(">H", len(bus.encode())) + bus.encode()
               if kind == 2 and type(bus) is str else p.pack(bus))
    out.append(b"".join([b"\xdc" + struct.pack(">H", len(f[3]))] + [p.pack(r) for r in f[3]])
               if kind == 3 and type(f[3]) is list else p.pack(f[3]))
    out.extend(p.pack(x) for x in f[4:])
    return b"".join(out)


def framed(body: bytes, rng: random.Random) -> bytes:
    n = len(body)
    if rng.random() < 0.01:  # a prefix that lies
        n = rng.choice([0, n - 1, n + 1, 0xFFFFFFFF, 600, 601])
    return struct.pack(">I", max(n, 0)) + body


def stream(rng: random.Random, limits: Limits, n: int) -> bytes:
    out = []
    for _ in range(n):
        rid = rng.choice([rng.randint(1, 40), rng.randint(1, 0xFFFFFFFF), 1, 127, 128, 255,
                          256, 65535, 65536, 0xFFFFFFFF])
        f = common(rng, rid, limits)
        out.append(framed(msgpack.packb(f, use_bin_type=True) if rng.random() < 0.6
                          else _body(oddity(rng, f, limits)), rng))
    return b"".join(out)


def _body(x: list[Any] | bytes) -> bytes:
    return x if isinstance(x, bytes) else msgpack.packb(x, use_bin_type=True)


def run_both(rng: random.Random, limits: Limits, data: bytes) -> int:
    """Feed ``data`` to both servers in the same random pieces; returns the events taken."""
    fast, slow = server(limits, True), server(limits, False)
    seen = 0
    pos = 0
    while pos < len(data) and not fast.closed:
        cut = min(len(data), pos + rng.choice([1, 7, 64, 500, 4096, 65536]))
        piece: bytes | bytearray | memoryview = data[pos:cut]
        piece = rng.choice([piece, bytearray(piece), memoryview(piece)])
        a, b = fast.receive(piece), slow.receive(piece)
        assert summary(a) == summary(b)
        assert fast.in_flight == slow.in_flight
        assert fast.buffered == slow.buffered
        assert fast.state == slow.state
        seen += len(a)
        for rid in rng.sample(sorted(fast.in_flight), k=min(3, len(fast.in_flight))):
            fast.withdraw(rid)
            slow.withdraw(rid)
        pos = cut
    if not fast.closed:
        assert summary(fast.receive(b"")) == summary(slow.receive(b""))
    return seen


@pytest.mark.parametrize("limits", LIMITS, ids=["default", "small"])
def test_random_and_mutated_reads_decode_as_the_general_path_does(limits: Limits) -> None:
    rng = random.Random(19)
    frames = 0
    while frames < N // 2:
        k = rng.randint(1, 200)
        run_both(rng, limits, stream(rng, limits, k))
        frames += k


def test_common_frames_are_taken_in_c_and_uncommon_ones_are_not() -> None:
    rng = random.Random(7)
    conn = server(DEFAULT_LIMITS, True)
    feed = conn._feed
    assert feed is not None
    for rid in range(1, 400):
        f = common(rng, rid, DEFAULT_LIMITS)
        data = framed(msgpack.packb(f, use_bin_type=True), random.Random(0))
        out: list[Any] = []
        assert feed(data, 0, out) == len(data)
        assert out == [I2CRequest(rid, f[2], tuple(
            I2CMsg(h[0] >> 1, h[4], b"" if h[4] & 2 else buf, buf if h[4] & 2 else 0)
            for h, buf in f[3]), f[4])]
        conn.withdraw(rid)
    slow = server(DEFAULT_LIMITS, False)
    refused = 0
    for rid in range(1, 3000):
        f = common(rng, rid, DEFAULT_LIMITS)
        body = _body(oddity(rng, f, DEFAULT_LIMITS))
        data = struct.pack(">I", len(body)) + body
        out = []
        took = feed(data, 0, out)
        general = slow.receive(data)
        if took:  # an oddity that is still the common shape (a 40-char bus, a data byte...)
            assert took == len(data)
            assert out == general
            assert slow.in_flight == conn.in_flight
        else:
            assert not out
            refused += isinstance(general[0], ProtocolError) if general else 0
        for c in (conn, slow):
            for r in c.in_flight:  # (a changed byte may have changed the id)
                c.withdraw(r)
        if slow.closed:
            slow = server(DEFAULT_LIMITS, False)
    assert refused > 1500  # most oddities are refusals, none of them taken in C


def test_pipelined_frames_in_one_call_and_the_rest_left_where_it_starts() -> None:
    conn = server(DEFAULT_LIMITS, True)
    feed = conn._feed
    assert feed is not None
    one = [2, 1, "1", [[hdr(0x48, 1), b"\x01"], [hdr(0x48, 2), 2]], None]
    frames = [framed(msgpack.packb([2, rid, *one[2:]], use_bin_type=True), random.Random(0))
              for rid in range(1, 65)]
    tenbit = framed(msgpack.packb([2, 99, "1", [[hdr(0x123, 2, ten=True), 2]], None],
                                  use_bin_type=True), random.Random(0))
    data = b"".join(frames) + tenbit + frames[0][:9]
    out: list[Any] = []
    stop = feed(bytearray(data), 0, out)
    assert stop == sum(map(len, frames))
    assert len(out) == 64
    assert conn.in_flight == frozenset(range(1, 65))
    assert feed(data, stop, out) == stop  # the 10-bit frame: the general path's
    assert feed(memoryview(data), len(data) - 9, out) == len(data) - 9  # not all here
    # a duplicate id is the general path's too (its refusal is fatal)
    assert feed(frames[5], 0, out) == 0
    assert len(out) == 64
    (err,) = conn.receive(frames[5])
    assert isinstance(err, ProtocolError)
    assert err.fatal
    assert err.message == "request id 6 is already in flight"


def test_admission_limits_and_live_subscriptions_are_left_to_the_general_path() -> None:
    limits = Limits(max_in_flight=2)
    fast, slow = server(limits, True), server(limits, False)
    for conn in (fast, slow):
        conn._subs.live.add(3)
    data = b"".join(framed(msgpack.packb([2, rid, "1", [[hdr(0x48, 0), b""]], None],
                                         use_bin_type=True), random.Random(0))
                    for rid in (3, 1, 2, 4, 5))
    a = fast.receive(data)
    assert summary(a) == summary(slow.receive(data))
    assert [type(x).__name__ for x in a] == ["ProtocolError", "I2CRequest", "I2CRequest",
                                            "ProtocolError", "ProtocolError"]


def test_the_decoder_holds_no_reference_it_should_not() -> None:
    conn = server(DEFAULT_LIMITS, True)
    feed = conn._feed
    assert feed is not None
    data = bytearray(framed(msgpack.packb([2, 1000, "1", [[hdr(0x48, 2), 2]], None],
                                          use_bin_type=True), random.Random(0)))
    before = sys.getrefcount(data)
    for _i in range(100):
        out: list[Any] = []
        feed(data, 0, out)
        conn.withdraw(1000)
    assert sys.getrefcount(data) == before
    data += b"\0"  # no buffer export left: a bytearray with one cannot be resized


def test_a_failing_constructor_propagates_and_leaves_nothing_in_flight() -> None:
    calls = []

    def boom(*args: object) -> object:
        calls.append(args)
        raise RuntimeError("boom")

    in_flight: set[int] = set()
    dec = _native.Decoder(in_flight, set(), I2CMsg, boom, 1 << 18, 64, 8192, 256)
    data = framed(msgpack.packb([2, 77, "1", [[hdr(0x48, 2), 2]], 5], use_bin_type=True),
                  random.Random(0))
    with pytest.raises(RuntimeError, match="boom"):
        dec.feed(data, 0, [])
    assert not in_flight
    assert len(calls) == 1
    assert calls[0][0] == 77
    assert calls[0][3] == 5
    with pytest.raises(ValueError, match="pos outside"):
        dec.feed(data, len(data) + 1, [])
    with pytest.raises(TypeError):
        dec.feed(data, 0, ())  # type: ignore[arg-type]


def test_no_feed_on_a_client() -> None:
    assert i2c_feed(False, set(), set(), DEFAULT_LIMITS) is None
    assert Connection(Role.CLIENT)._feed is None


def test_the_c_result_encoder_makes_the_pure_bytes() -> None:
    assert result_body is _native.result_body
    assert result_frame is _native.result_frame
    rng = random.Random(5)
    for _ in range(20000):
        rid = rng.choice([1, 127, 128, 255, 256, 65535, 65536, 0xFFFFFFFF, 0, -1,
                          0x1_0000_0000, rng.randint(1, 0xFFFFFFFF), True])
        status = rng.choice([bytes(rng.randint(0, 3)), bytes(255), bytes(256),
                             bytearray(b"\0"), memoryview(b"\0")])
        reads: Any = [rng.randbytes(rng.choice([0, 2, 255, 256]))
                      for _ in range(rng.choice([0, 1, 2, 15, 16]))]
        if rng.random() < 0.05:
            reads.append(rng.choice([bytearray(b"x"), "x", None]))
        if rng.random() < 0.05:
            reads = tuple(reads)
        assert result_body(rid, status, reads) == (
            _result_body(rid, status, list(reads)) if type(reads) is list else None)
        assert result_frame(rid, status, reads) == (
            _result_frame(rid, status, list(reads)) if type(reads) is list else None)
        if type(reads) is list and type(rid) is int:
            ev = Result(rid, b"\0", [r for r in reads if type(r) is bytes], [])
            body = result_body(ev.id, ev.status, ev.reads)
            if body is not None:
                assert msgpack.unpackb(body) == [4, rid, b"\0", ev.reads, []]

"""The client's C decoder of the common RESULT (protocol/_native.c) gives what Python gives.

``ClientConnection.receive`` hands the bytes to ``protocol._native.ResultDecoder``
first, then to its pure fast path, then to ``Connection.receive``.  A differential
test: the same RESULT streams (fitting, misfitting, mutated, other frames; ids in
flight, answered, unknown; cut at random points) through three client connections:
with the C decoder, with the pure fast path only, and with the general path only.
Every event, refusal (code, message, id, fatality), id in flight, recorded shape,
buffered byte and state is compared; the C path is shown taken for the common frames
and left for the others.

In the pure-Python build the module is not built and these tests skip, saying so; in
the compiled build (``BUSBRIDGE_EXPECT_BUILD=compiled``, scripts/check_compiled.sh)
its absence is a failure.  ``BUSBRIDGE_NATIVE_FRAMES`` sets how many random frames.
"""

from __future__ import annotations

import os
import random
import struct
from typing import Any

import msgpack
import pytest
from protocol_pair import handshake

from protocol.admin import AdminRequest
from protocol.errors import ProtocolError
from protocol.events import Event, I2CRequest, Result
from protocol.fastpath import ClientConnection
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.virtio import I2C_FLAGS_M_RD, I2CMsg

try:
    from protocol import _native  # noqa: F401  (only whether it is built)
except ImportError:
    if os.environ.get("BUSBRIDGE_EXPECT_BUILD") == "compiled":
        raise  # the compiled build must have it
    pytest.skip("protocol._native is not built (pure-Python build): the C decoder of the "
                "client's RESULT is tested in the compiled build (scripts/check_compiled.sh)",
                allow_module_level=True)

N = int(os.environ.get("BUSBRIDGE_NATIVE_FRAMES", "20000"))
LIMITS = [DEFAULT_LIMITS, Limits(max_frame=1000, max_requests=3, max_in_flight=8)]


def client(limits: Limits, kind: str) -> ClientConnection:
    """A client after a real WELCOME: ``c`` with the C decoder, ``py`` with the pure
    fast path only, ``general`` with ``Connection.receive`` only."""
    conn = handshake(ClientConnection(limits))
    assert conn._cfeed is not None
    if kind != "c":
        conn._cfeed = None
    if kind == "general":
        conn._small = 0  # no frame is small enough for the fast path
    return conn


def summary(items: list[Event | ProtocolError]) -> list[object]:
    return [(e.code, e.message, e.request_id, e.fatal) if isinstance(e, ProtocolError) else e
            for e in items]


def send_some(rng: random.Random, conns: list[ClientConnection]) -> None:
    """The same few requests from each client: I2C with 0..3 reads, or an ADMIN (no shape)."""
    for _ in range(rng.randint(0, 4)):
        rid = rng.choice([rng.randint(1, 20), rng.randint(1, 0xFFFFFFFF), 127, 128, 255, 256,
                          65535, 65536, 0xFFFFFFFF])
        if rid in conns[0].in_flight or len(conns[0].in_flight) >= 6:
            continue
        if rng.random() < 0.1:
            req: Any = AdminRequest(rid, "sim.devices", {})
        else:
            msgs = tuple(I2CMsg(0x48, I2C_FLAGS_M_RD, b"", rng.choice([0, 1, 2, 4, 9]))
                         if rng.random() < 0.6 else I2CMsg(0x48, 0, bytes([1, 2]), 0)
                         for _ in range(rng.randint(1, 3)))
            req = I2CRequest(rid, "1", msgs, None)
        for c in conns:
            c.send(req)


def fitting(rng: random.Random, conn: ClientConnection, rid: int) -> list[Any]:
    """A RESULT body (as a list) that answers ``rid`` as its recorded shape asks."""
    shape = conn._expect.get(rid)
    if shape is None:
        n = rng.randint(0, 3)
        return [4, rid, bytes(n), [rng.randbytes(rng.randint(0, 4))
                                   for _ in range(rng.randint(0, 2))], []]
    status = bytes(rng.choice([0, 0, 0, 1, 2]) for _ in range(shape[0]))
    reads = [rng.randbytes(length if status[i] == 0 else 0) for i, length in shape[1]]
    return [4, rid, status, reads, []]


def mutated(rng: random.Random, f: list[Any]) -> bytes:
    """``f`` with one thing uncommon or wrong, packed: the general path's to take or refuse."""
    k = rng.randrange(16)
    if k == 0:
        f[1] = rng.choice([0, -1, 0x1_0000_0000, 2**64 - 1, "7", None, 1.0, True, 99999])
    elif k == 1:
        f[2] = rng.choice([b"", f[2] + b"\0", f[2][:-1], b"\1" * len(f[2]), "\0", None])
    elif k == 2:
        f[3] = rng.choice([[], f[3] + [b""], f[3][:-1], [r + b"x" for r in f[3]],
                           ["ab" for _ in f[3]], None, [b"y" * 70]])
    elif k == 3:
        f[4] = rng.choice([[[0, 1, "nack"]], [None], None, [[0, 1]]])
    elif k == 4:
        f.append(None)
    elif k == 5:
        f.pop()
    elif k == 6:
        f[0] = rng.choice([5, 3, 7, 9, "4", -4])
    body = msgpack.packb(f, use_bin_type=True)
    if k == 7:  # longer encodings msgpack also reads
        p = msgpack.Packer(use_bin_type=True)
        rid = f[1]
        parts = [b"\xdc\x00\x05" if rng.random() < 0.3 else b"\x95",
                 rng.choice([b"\x04", b"\xcc\x04", b"\xd0\x04"]),
                 struct.pack(">BQ", 0xCF, rid) if type(rid) is int and rid >= 0 else p.pack(rid),
                 b"\xc5" + struct.pack(">H", len(f[2])) + f[2] if rng.random() < 0.5
                 else p.pack(f[2]),
                 b"\xdc" + struct.pack(">H", len(f[3])) + b"".join(p.pack(r) for r in f[3]),
                 p.pack(f[4])]
        return b"".join(parts)
    if k == 8:
        return body + rng.choice([b"\xc0", b"\x00", b"\x91"])
    if k == 9 and len(body) > 1:
        return body[: rng.randrange(1, len(body))]
    if k == 10:
        return msgpack.packb([5, f[1] if type(f[1]) is int else 1, "internal", "boom"])
    if k >= 11:
        b = bytearray(body)
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    return body


def frames(rng: random.Random, conn: ClientConnection, n: int) -> bytes:
    out = []
    ids = sorted(conn.in_flight)
    rng.shuffle(ids)  # each answered once; then an id not in flight (fatal)
    for _ in range(n):
        rid = ids.pop() if ids and rng.random() < 0.97 else rng.randint(1, 300)
        f = fitting(rng, conn, rid)
        body = msgpack.packb(f, use_bin_type=True) if rng.random() < 0.9 else mutated(rng, f)
        size = len(body)
        if rng.random() < 0.01:  # a prefix that lies
            size = rng.choice([0, size - 1, size + 1, 0xFFFFFFFF, 60, 61])
        out.append(struct.pack(">I", max(size, 0)) + body)
    return b"".join(out)


def run_both(rng: random.Random, limits: Limits, taken: list[int]) -> int:
    """One connection's life in the three clients; returns the events the C client got,
    and adds those its C decoder took to ``taken[0]``."""
    conns = [client(limits, kind) for kind in ("c", "py", "general")]
    feed = conns[0]._cfeed
    assert feed is not None

    def counted(buf: Any, pos: int, out: list[Any]) -> int:
        before = len(out)
        end = feed(buf, pos, out)
        taken[0] += len(out) - before
        return end

    conns[0]._cfeed = counted
    seen = 0
    for _ in range(20):
        send_some(rng, conns)
        data = frames(rng, conns[0], rng.randint(1, len(conns[0].in_flight) + 1))
        pos = 0
        while pos < len(data):
            cut = min(len(data), pos + rng.choice([1, 3, 7, 40, 500]))
            piece = data[pos:cut]
            got = [summary(c.receive(rng.choice([piece, bytearray(piece), memoryview(piece)])))
                   for c in conns]
            assert got[0] == got[1] == got[2]
            for c in conns[1:]:
                assert c.in_flight == conns[0].in_flight
                assert c._expect == conns[0]._expect
                assert c.buffered == conns[0].buffered
                assert c.state == conns[0].state
            seen += len(got[0])
            pos = cut
            if conns[0].closed:
                return seen
    return seen


@pytest.mark.parametrize("limits", LIMITS, ids=["default", "small"])
def test_random_result_streams_match_python(limits: Limits) -> None:
    rng = random.Random(f"cresult-{limits.max_frame}")
    seen = 0
    taken = [0]
    for _ in range(max(1, N // 60)):
        seen += run_both(rng, limits, taken)
    assert seen > N // 40  # the streams got somewhere before a fatal frame
    # many in C; the others (a frame cut, anything uncommon) in Python
    assert seen // 5 < taken[0] < seen


def test_common_results_are_taken_in_c_and_others_left() -> None:
    """Three register reads' RESULTs are taken in one C call; a misfit, a RESULT for an id
    not in flight and one with a failure stop it at their offset, and stay in flight."""
    conn = client(DEFAULT_LIMITS, "c")
    for rid in (1, 2, 300, 4, 5):
        conn.send(I2CRequest(rid, "1", (I2CMsg(0x48, 0, b"\x00", 0),
                                        I2CMsg(0x48, I2C_FLAGS_M_RD, b"", 2)), None))

    def frame(f: list[Any]) -> bytes:
        body = msgpack.packb(f, use_bin_type=True)
        return struct.pack(">I", len(body)) + body

    common = b"".join(frame([4, rid, b"\0\0", [b"\x12\x34"], []]) for rid in (1, 2, 300))
    for odd in ([4, 4, b"\0\0", [b"\x12"], []], [4, 9, b"\0\0", [b"\1\2"], []],
                [4, 4, b"\0\1", [b""], [[1, 1, "nack"]]]):
        out: list[Any] = []
        assert conn._cfeed is not None
        assert conn._cfeed(common + frame(odd), 0, out) == len(common)
        assert [ev.id for ev in out] == [1, 2, 300]
        assert out[0] == Result(1, b"\0\0", [b"\x12\x34"], [])
        assert conn.in_flight == {4, 5}
        assert set(conn._expect) == {4, 5}
        for rid in (1, 2, 300):  # again in flight, for the next odd frame
            conn.send(I2CRequest(rid, "1", (I2CMsg(0x48, 0, b"\x00", 0),
                                            I2CMsg(0x48, I2C_FLAGS_M_RD, b"", 2)), None))

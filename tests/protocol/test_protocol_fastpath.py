"""The server's fast paths give what the general ones give, byte for byte.

``encode_result`` writes the common RESULT (no failures, short reads) from
precomputed msgpack headers; everything else goes through msgpack.  A
differential test: many random and edge RESULTs through both, the bytes
compared, and the fallback shown taken for what the fast path does not take.
"""

from __future__ import annotations

import random

import msgpack
import pytest

from protocol.accel import _result_body
from protocol.codec import encode_result, frame, frame_result
from protocol.events import Failure, Result
from protocol.virtio import I2CMsg

EDGE_IDS = [1, 2, 127, 128, 255, 256, 65535, 65536, 0xFFFFFFFF]


def general(ev: Result) -> bytes:
    """What msgpack makes of a RESULT (the encoder before the fast path)."""
    fails = [[f.index, f.errno, f.message] for f in ev.failures]
    return msgpack.packb([4, ev.id, ev.status, ev.reads, fails], use_bin_type=True)


def random_result(rng: random.Random) -> Result:
    rid = rng.choice([*EDGE_IDS, rng.randint(1, 0xFFFFFFFF)])
    n = rng.choice([0, 1, 2, 3, 15, 16, 255, 256, rng.randint(0, 300)])
    status = bytes(rng.choice([0, 0, 0, 1]) for _ in range(n))
    reads = [rng.randbytes(rng.choice([0, 1, 2, 255, 256, rng.randint(0, 400)]))
             for _ in range(rng.choice([0, 1, 2, 15, 16, rng.randint(0, 20)]))]
    fails = [Failure(rng.randint(0, 9), rng.randint(0, 200), "x" * rng.randint(0, 40))
             for _ in range(rng.choice([0, 0, 0, 1, 2]))]
    return Result(rid, status, reads, fails)


def test_random_results_encode_as_msgpack_does() -> None:
    rng = random.Random(19)
    fast = 0
    for _ in range(5000):
        ev = random_result(rng)
        assert encode_result(ev) == general(ev), ev
        assert frame_result(ev) == frame(general(ev)), ev  # the whole frame in one piece
        fast += _result_body(ev.id, ev.status, ev.reads) is not None and not ev.failures
    assert 500 < fast < 5000  # both paths were taken


@pytest.mark.parametrize("rid", EDGE_IDS)
def test_register_read_result_takes_the_fast_path(rid: int) -> None:
    ev = Result(rid, b"\0\0", [b"\x0c\x80"], [])
    body = _result_body(rid, ev.status, ev.reads)
    assert body is not None
    assert body == encode_result(ev) == general(ev)
    assert msgpack.unpackb(body) == [4, rid, b"\0\0", [b"\x0c\x80"], []]


@pytest.mark.parametrize(("status", "reads"), [
    (bytes(256), []),                       # status over a bin 8
    (b"\0", [b"a" * 256]),                  # a read over a bin 8
    (b"\0" * 16, [b"x"] * 16),              # 16 reads: no fixarray
    (b"\0", [bytearray(b"ab")]),            # not bytes (a backend's): msgpack packs it
    (b"\0", [memoryview(b"ab")]),
])
def test_uncommon_results_fall_back_to_msgpack(status: bytes, reads: list[bytes]) -> None:
    assert _result_body(7, status, reads) is None
    ev = Result(7, status, reads, [])
    assert encode_result(ev) == general(ev)


def test_a_status_that_is_not_bytes_is_not_the_fast_ones() -> None:
    # (Result refuses one in the compiled build; the pure-Python one takes it.)
    assert _result_body(7, bytearray(b"\0"), [b"ab"]) is None


def test_a_result_with_failures_is_never_the_fast_one() -> None:
    ev = Result(9, b"\1", [], [Failure(0, 6, "no ACK")])
    assert encode_result(ev) == general(ev)
    assert msgpack.unpackb(encode_result(ev))[4] == [[0, 6, "no ACK"]]


def test_i2c_msg_keeps_its_dataclass_behaviour() -> None:
    """I2CMsg's __init__ is written out (compiled); it still behaves as the dataclass did."""
    import dataclasses

    m = I2CMsg(0x48, 2, length=2)
    assert m == I2CMsg(0x48, flags=2, data=b"", length=2, ten_bit=False)
    assert repr(m) == "I2CMsg(addr=72, flags=2, data=b'', length=2, ten_bit=False)"
    assert dataclasses.replace(m, addr=0x49).addr == 0x49
    assert [f.default for f in dataclasses.fields(m)][1:] == [0, b"", 0, False]
    with pytest.raises(TypeError):
        I2CMsg()  # type: ignore[call-arg]
    with pytest.raises(AttributeError):
        m.extra = 1  # type: ignore[attr-defined]

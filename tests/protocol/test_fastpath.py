"""The client's request fast path (protocol/fastpath.py) against the general encoder.

Every request goes through a plain client :class:`Connection` (``send`` of the
event) and through a :class:`ClientConnection` (``send_i2c``) with the same id:
the bytes, the refusal and its message, and the ids in flight must agree, the
first time (the general path, which fills the cache) and again with a new id
(the cached tail).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import msgpack
import pytest
from protocol_pair import handshake

from protocol import (
    DEFAULT_LIMITS,
    Connection,
    Event,
    I2CRequest,
    Limits,
    LocalProtocolError,
    ProtocolError,
    Role,
)
from protocol.codec import frame
from protocol.events import ChainedI2CRequest
from protocol.fastpath import ClientConnection
from protocol.limits import MAX_REQUEST_ID
from protocol.virtio import I2C_FLAGS_M_RD, I2CMsg, read, write

#: Small enough that many random requests break it; a register read's RESULT room
#: (64 + 2 x 128 + 2 bytes) still fits.
SMALL = Limits(max_frame=400, max_requests=2, max_i2c_len=3)
#: Too small for any two-message request's RESULT.
TINY = Limits(max_frame=300, max_requests=2, max_i2c_len=3)
IDS = [1, 5, 127, 128, 200, 255, 256, 4095, 65535, 65536, 1 << 24, MAX_REQUEST_ID - 1,
       MAX_REQUEST_ID]


def outcome(call: Callable[[], bytes]) -> tuple[str, object]:
    try:
        return "sent", call()
    except LocalProtocolError as e:
        return "refused", str(e)


def pair(limits: Limits) -> tuple[Connection, ClientConnection]:
    general = handshake(Connection(Role.CLIENT), limits)
    fast = handshake(ClientConnection(), limits)
    assert isinstance(fast, ClientConnection)
    return general, fast


def both(general: Connection, fast: ClientConnection, rid: int, bus: str,
         msgs: list[I2CMsg], timeout_ms: int | None, chained: bool) -> tuple[str, object]:
    kind = ChainedI2CRequest if chained else I2CRequest
    want = outcome(lambda: general.send(kind(rid, bus, tuple(msgs), timeout_ms)))
    got = outcome(lambda: fast.send_i2c(rid, bus, msgs, timeout_ms, chained))
    assert got == want, (rid, bus, msgs, timeout_ms, chained)
    assert fast.in_flight == general.in_flight
    return got


def random_msg(rng: random.Random) -> I2CMsg:
    ten = rng.random() < 0.1
    addr = rng.choice([0x48, 0x50, 0x7F, 0x80, 0x3FF, -1] if ten or rng.random() < 0.2
                      else [0x48, 0x50, 0x10])
    flags = rng.choice([0, 0, 1, I2C_FLAGS_M_RD, I2C_FLAGS_M_RD, 3, 4])
    data = rng.choice([b"", b"\x00", b"\x01\x02", b"\xff" * 3, b"\x10" * 5])
    length = rng.choice([0, 1, 2, 2, 3, 5, -1])
    return I2CMsg(addr, flags, data, length, ten)


@pytest.mark.parametrize("limits", [DEFAULT_LIMITS, SMALL], ids=["default", "small"])
def test_random_requests_match_the_general_encoder(limits: Limits) -> None:
    rng = random.Random(19)
    general, fast = pair(limits)
    seen = {"sent": 0, "refused": 0}
    for i in range(3000):
        n = rng.choice([1, 1, 2, 2, 2, 3])
        msgs = [random_msg(rng) for _ in range(n)]
        bus = rng.choice(["1", "1", "i2c-7", "", "x" * 65])
        timeout_ms = rng.choice([None, None, 5, 0, 3_600_001])
        chained = rng.random() < 0.6
        rid = IDS[i % len(IDS)] if i < 2 * len(IDS) else 1000 + i
        if rid in general.in_flight:  # the same id again: both refuse it
            both(general, fast, rid, bus, msgs, timeout_ms, chained)
            continue
        kind, _ = both(general, fast, rid, bus, msgs, timeout_ms, chained)
        seen[kind] += 1
        # The same request again with a new id: the cached tail when it was sent.
        both(general, fast, 500_000 + i, bus, msgs, timeout_ms, chained)
    assert seen["sent"] > 200, seen
    assert seen["refused"] > 200, seen


def test_register_read_takes_the_tail_and_uncommon_requests_do_not() -> None:
    general, fast = pair(DEFAULT_LIMITS)
    reg = [write(0x48, b"\x00"), read(0x48, 2)]
    for rid in IDS:  # every size of id in front of the one cached tail
        assert both(general, fast, rid, "1", reg, None, True)[0] == "sent"
    assert len(fast._tails) == 1
    three = [write(0x48, b"\x00"), read(0x48, 2), read(0x49, 1)]
    assert both(general, fast, 7, "1", three, None, True)[0] == "sent"
    assert both(general, fast, 8, "1", three, None, True)[0] == "sent"
    assert len(fast._tails) == 1  # more than two messages: always the general path
    assert both(general, fast, 9, "1", [write(0x48, b"\x00" * 200)], None, False)[0] == "sent"
    assert len(fast._tails) == 1  # a frame over the cached size is not kept


def test_ids_out_of_range_or_in_flight_are_refused_on_a_hit_too() -> None:
    general, fast = pair(DEFAULT_LIMITS)
    reg = [write(0x48, b"\x00"), read(0x48, 2)]
    both(general, fast, 1, "1", reg, 100, True)
    for rid in (0, -1, MAX_REQUEST_ID + 1, 1):
        assert both(general, fast, rid, "1", reg, 100, True)[0] == "refused"


def test_a_new_welcome_limits_drop_cached_tails() -> None:
    """A tail checked against one server's limits is not used against another's."""
    fast = ClientConnection()
    general = Connection(Role.CLIENT)
    reg = [write(0x48, b"\x00"), read(0x48, 2)]
    # Before WELCOME, checked against the client's own limits: sent, and its tail kept.
    assert both(general, fast, 1, "1", reg, None, True)[0] == "sent"
    assert len(fast._tails) == 1
    handshake(general, TINY)
    handshake(fast, TINY)
    assert both(general, fast, 2, "1", reg, None, True)[0] == "refused"


def test_the_cache_is_bounded() -> None:
    general, fast = pair(DEFAULT_LIMITS)
    for i in range(600):
        both(general, fast, i + 1, "1", [write(0x48, bytes([i % 256, i // 256]))], None, False)
        assert len(fast._tails) <= 256


def test_next_id_counts_up_skips_ids_in_flight_and_wraps() -> None:
    general, fast = pair(DEFAULT_LIMITS)
    reg = [write(0x48, b"\x00"), read(0x48, 2)]
    for conn in (general, fast):
        conn.send(I2CRequest(3, "1", tuple(reg)))  # in flight: next_id must skip it
    assert [fast.next_id() for _ in range(4)] == [general.next_id() for _ in range(4)] == [
        1, 2, 4, 5]
    for conn in (general, fast):
        conn._last_id = MAX_REQUEST_ID - 1
    assert [fast.next_id() for _ in range(3)] == [general.next_id() for _ in range(3)] == [
        MAX_REQUEST_ID, 1, 2]


@pytest.mark.parametrize("limits", [DEFAULT_LIMITS, SMALL], ids=["default", "small"])
def test_random_results_are_taken_as_the_general_decoder_takes_them(limits: Limits) -> None:
    """RESULT frames of every shape, common or not, through both clients' receive."""
    rng = random.Random(4)
    ids = list(range(1, 40))
    for _ in range(300):
        general = handshake(Connection(Role.CLIENT, limits))
        fast = handshake(ClientConnection(limits))
        assert isinstance(fast, ClientConnection)
        for conn in (general, fast):
            for rid in ids:
                conn.send(I2CRequest(rid, "1", (read(0x48, 2),)))
        for _ in range(rng.randint(1, 4)):
            item: list[object] = [
                4,
                rng.choice([*ids, 0, 99, True, "1", -1, 2.0]),
                rng.choice([b"\0", b"\0\0", b"\0\0", b"\x01", "s", None]),
                rng.choice([[b"\x0c\x80"]] * 6 + [[], [b"a", b"b"], [b"a", 1], ["x"], None]),
                rng.choice([[]] * 6 + [[[0, 5, "EIO"]], [[0, "5", "EIO"]], None]),
            ]
            if rng.random() < 0.05:
                item = item[:rng.randint(1, 4)] + (["extra"] if rng.random() < 0.5 else [])
            data = frame(msgpack.packb(item))
            if rng.random() < 0.3:  # more frames in one read, the last one maybe cut short
                for _ in range(rng.randint(1, 4)):
                    data += frame(msgpack.packb([4, rng.choice(ids), b"\0", [b"\0"], []]))
                if rng.random() < 0.3:
                    data = data[:rng.randint(1, len(data))]
            # Misfits included: both check each RESULT against its request (SPEC §4.5).
            want = general.receive(data) if not general.closed else None
            got = fast.receive(data) if not fast.closed else None
            assert summary(got) == summary(want), item
            assert fast.in_flight == general.in_flight


def summary(items: list[Event | ProtocolError] | None) -> object:
    if items is None:
        return None
    return [(e.code, str(e), e.fatal, e.request_id) if isinstance(e, ProtocolError) else e
            for e in items]

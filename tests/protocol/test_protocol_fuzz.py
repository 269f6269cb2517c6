"""Property tests: garbage never crashes a Connection; valid events round-trip exactly."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_pair import answering, expecting, handshake, put_in_flight

from protocol import (
    NEED_DATA,
    Connection,
    Error,
    ErrorCode,
    Event,
    Failure,
    Hello,
    I2CMsg,
    I2CRequest,
    Limits,
    Ping,
    Pong,
    ProtocolError,
    Result,
    Role,
    SpiRequest,
    SpiTransfer,
    SpiTransferHead,
    Welcome,
    encode_body,
    frame,
)
from protocol.limits import MAX_REQUEST_ID, MAX_TIMEOUT_MS, result_room
from protocol.virtio import I2C_FLAGS_FAIL_NEXT, I2C_FLAGS_M_RD

# Small limits keep examples fast and make the limit checks reachable.
LIMITS = Limits(max_frame=4096, max_requests=8, max_i2c_len=64, max_spi_len=64, max_in_flight=4)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

EVENT_TYPES = (Hello, Welcome, I2CRequest, SpiRequest, Result, Error, Ping, Pong)


def drain(conn: Connection, data: bytes) -> list[Event]:
    """Feed ``data`` and pull events until the connection wants more or fails.

    Only :class:`ProtocolError` may escape ``next_event``; non-fatal ones are skipped
    as a server would, after answering with an ERROR frame.  The loop is bounded:
    every call either consumes a whole frame (at least 4 bytes) or stops.
    """
    conn.receive_data(data)
    conn.receive_data(b"")  # EOF: a truncated frame must be reported, not waited for
    events: list[Event] = []
    for _ in range(len(data) // 4 + 2):
        err: ProtocolError | None = None
        try:
            ev = conn.next_event()
        except ProtocolError as e:
            err = e
        if err is not None:
            assert isinstance(err.code, ErrorCode)
            assert 0 <= err.request_id <= MAX_REQUEST_ID
            if err.fatal:
                assert conn.closed
                return events
            continue
        if ev is None or ev is NEED_DATA:
            return events
        assert isinstance(ev, EVENT_TYPES)
        events.append(ev)
    raise AssertionError("next_event neither progressed nor stopped")


def reencodes(ev: Event, role: Role) -> None:
    """A decoded event is valid: it encodes, and decodes back to itself."""
    conn = Connection(role, LIMITS)
    if not isinstance(ev, Hello | Welcome):
        handshake(conn)
    if isinstance(ev, Result | Error) and ev.id:
        put_in_flight(conn, [ev.id])
    conn.receive_data(frame(encode_body(ev)))
    assert conn.next_event() == ev


# ---------------------------------------------------------------------------
# Garbage
# ---------------------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=300), handshaken=st.booleans())
def test_random_bytes_only_raise_protocol_errors(data: bytes, handshaken: bool) -> None:
    conn = Connection(Role.SERVER, LIMITS)
    if handshaken:
        handshake(conn)
    drain(conn, data)


@FUZZ
@given(bodies=st.lists(st.binary(max_size=80), max_size=5), role=st.sampled_from(Role))
def test_random_bodies_with_valid_prefixes(bodies: list[bytes], role: Role) -> None:
    conn = handshake(Connection(role, LIMITS))
    drain(conn, b"".join(frame(b) for b in bodies))


def _msgpack_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.floats(allow_nan=False),
        st.text(max_size=10),
        st.binary(max_size=40),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=6),
            st.dictionaries(st.text(max_size=8), inner, max_size=4),
        ),
        max_leaves=25,
    )


@FUZZ
@given(
    head=st.integers(min_value=0, max_value=9),
    rest=st.lists(_msgpack_values(), max_size=6),
    role=st.sampled_from(Role),
    handshaken=st.booleans(),
)
def test_wellformed_msgpack_of_any_shape(
    head: int, rest: list[Any], role: Role, handshaken: bool
) -> None:
    """Arrays that start like a frame but hold anything: only events or ProtocolError."""
    conn = Connection(role, LIMITS)
    if handshaken:
        handshake(conn)
    if role is Role.CLIENT or handshaken:  # a server has requests in flight only after HELLO
        put_in_flight(conn, range(1, 4))  # so some RESULT/ERROR frames reach deep checks
    body = msgpack.packb([head, *rest], use_bin_type=True)
    for ev in drain(conn, frame(body)):
        reencodes(ev, role)


# ---------------------------------------------------------------------------
# Valid events
# ---------------------------------------------------------------------------

request_ids = st.integers(min_value=1, max_value=MAX_REQUEST_ID)
timeouts = st.none() | st.integers(min_value=1, max_value=MAX_TIMEOUT_MS)
bus_names = st.text(min_size=1, max_size=64)
# 7-bit 0x78..0x7B share their encoding with 10-bit 0x000..0x300 (SPEC.md §5.2).
seven_bit = st.integers(min_value=0, max_value=0x7F).filter(lambda a: not 0x78 <= a <= 0x7B)


@st.composite
def i2c_msgs(draw: st.DrawFn) -> I2CMsg:
    ten = draw(st.booleans())
    addr = draw(st.integers(min_value=0, max_value=0x3FF) if ten else seven_bit)
    fail_next = draw(st.booleans())
    if draw(st.booleans()):
        flags = I2C_FLAGS_M_RD | (I2C_FLAGS_FAIL_NEXT if fail_next else 0)
        return I2CMsg(addr, flags, b"", draw(st.integers(0, LIMITS.max_i2c_len)), ten)
    data = draw(st.binary(max_size=LIMITS.max_i2c_len))
    return I2CMsg(addr, I2C_FLAGS_FAIL_NEXT if fail_next else 0, data, 0, ten)


@st.composite
def i2c_requests(draw: st.DrawFn) -> I2CRequest:
    msgs = draw(st.lists(i2c_msgs(), min_size=1, max_size=LIMITS.max_requests))
    last = msgs[-1]
    msgs[-1] = I2CMsg(last.addr, last.flags & ~I2C_FLAGS_FAIL_NEXT, last.data, last.length,
                      last.ten_bit)
    return I2CRequest(draw(request_ids), draw(bus_names), tuple(msgs), draw(timeouts))


u8 = st.integers(0, 0xFF)
u32 = st.integers(0, 0xFFFF_FFFF)


@st.composite
def spi_requests(draw: st.DrawFn) -> SpiRequest:
    cs = draw(u8)
    transfers = []
    for _ in range(draw(st.integers(1, LIMITS.max_requests))):
        head = SpiTransferHead(cs, draw(u8), draw(u8), draw(u8), draw(u8), draw(u32), draw(u32),
                               draw(u32), draw(u32), draw(u32), draw(u32))
        tx = draw(st.none() | st.binary(max_size=LIMITS.max_spi_len))
        rx_len = draw(st.integers(0, LIMITS.max_spi_len))
        transfers.append(SpiTransfer(head, tx, rx_len))
    return SpiRequest(draw(request_ids), draw(bus_names), cs, tuple(transfers), draw(timeouts))


def fits(ev: I2CRequest | SpiRequest) -> bool:
    if isinstance(ev, I2CRequest):
        n, rx = len(ev.msgs), sum(m.length for m in ev.msgs)
    else:
        n, rx = len(ev.transfers), sum(t.rx_len for t in ev.transfers)
    return result_room(n, rx) <= LIMITS.max_frame and len(encode_body(ev)) <= LIMITS.max_frame


def results(ids: st.SearchStrategy[int] = request_ids) -> st.SearchStrategy[Result]:
    return st.builds(
        Result,
        ids,
        st.binary(min_size=1, max_size=LIMITS.max_requests),
        st.lists(st.binary(max_size=LIMITS.max_i2c_len), max_size=LIMITS.max_requests),
        st.lists(
            st.builds(Failure, st.integers(0, 2**32), st.integers(-(2**31), 2**31), st.text()),
            max_size=3,
        ),
    )


@FUZZ
@given(ev=st.one_of(i2c_requests(), spi_requests()).filter(fits))
def test_valid_requests_round_trip_exactly(ev: I2CRequest | SpiRequest) -> None:
    client = handshake(Connection(Role.CLIENT, LIMITS), LIMITS)
    data = client.send(ev)
    server = handshake(Connection(Role.SERVER, LIMITS))
    server.receive_data(data)
    assert server.next_event() == ev
    assert server.next_event() is NEED_DATA
    assert frame(encode_body(ev)) == data


def fits_a_request(ev: Result) -> Result:
    """``ev`` made to answer a request (SPEC.md §4.5): no more read entries than status
    bytes, and a failed read's entry empty (the k-th entry on the k-th request)."""
    reads = [r if not ev.status[k] else b"" for k, r in enumerate(ev.reads[:len(ev.status)])]
    return Result(ev.id, ev.status, reads, ev.failures)


@FUZZ
@given(ev=results().map(fits_a_request))
def test_valid_results_round_trip_exactly(ev: Result) -> None:
    data = answering(ev.id, LIMITS).send(ev)
    client = expecting(handshake(Connection(Role.CLIENT, LIMITS), LIMITS), ev)
    client.receive_data(data)
    assert client.next_event() == ev
    assert client.in_flight == set()


# ---------------------------------------------------------------------------
# Mutated valid frames
# ---------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, events: st.SearchStrategy[Any]) -> bytes:
    data = bytearray(frame(encode_body(draw(events))))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data) - 1))
        if draw(st.booleans()):
            data[i] ^= 1 << draw(st.integers(0, 7))  # flip a bit
        else:
            data[i] = draw(u8)  # replace a byte
    if draw(st.booleans()):  # and sometimes truncate or extend
        data = data[: draw(st.integers(0, len(data)))] + draw(st.binary(max_size=4))
    return bytes(data)


@FUZZ
@given(data=mutated(st.one_of(i2c_requests(), spi_requests()).filter(fits)),
       handshaken=st.booleans())
def test_mutated_requests_give_a_valid_event_or_a_protocol_error(
    data: bytes, handshaken: bool
) -> None:
    conn = Connection(Role.SERVER, LIMITS)
    if handshaken:
        handshake(conn)
    for ev in drain(conn, data):
        reencodes(ev, Role.SERVER)
        if isinstance(ev, I2CRequest):
            assert not ev.msgs[-1].flags & I2C_FLAGS_FAIL_NEXT
            assert len(ev.msgs) <= LIMITS.max_requests
            assert all(m.size <= LIMITS.max_i2c_len for m in ev.msgs)
        elif isinstance(ev, SpiRequest):
            assert all(t.head.chip_select_id == ev.cs for t in ev.transfers)
            assert all(t.length <= LIMITS.max_spi_len for t in ev.transfers)


@FUZZ
@given(data=mutated(results(st.integers(1, 200))))
def test_mutated_results_give_a_valid_event_or_a_protocol_error(data: bytes) -> None:
    conn = handshake(Connection(Role.CLIENT, LIMITS))
    put_in_flight(conn, range(1, 256))  # mutated ids still match a request in flight
    for ev in drain(conn, data):
        reencodes(ev, Role.CLIENT)


# ---------------------------------------------------------------------------
# Streams: where TCP splits them must not matter; handshake maps of any shape
# ---------------------------------------------------------------------------


@settings(FUZZ, max_examples=60)
@given(evs=st.lists(st.one_of(i2c_requests(), spi_requests()).filter(fits), min_size=1,
                    max_size=4, unique_by=lambda e: e.id),
       cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=6),
       garbage=st.binary(max_size=12))
def test_chunking_never_changes_what_is_decoded(
    evs: list[I2CRequest | SpiRequest], cuts: list[int], garbage: bytes
) -> None:
    """The same bytes, fed whole or cut anywhere, give the same events and errors."""
    data = b"".join(frame(encode_body(e)) for e in evs) + frame(garbage)

    def decode(chunks: list[bytes]) -> list[Any]:
        conn = handshake(Connection(Role.SERVER, Limits(max_in_flight=16)))
        out: list[Any] = []
        for chunk in [*(c for c in chunks if c), b""]:  # b"" is the end of the stream
            conn.receive_data(chunk)
            for _ in range(len(data)):
                try:
                    ev = conn.next_event()
                except ProtocolError as e:
                    out.append((e.code, e.request_id, e.fatal))
                    if e.fatal:
                        return out
                    continue
                if ev is None or ev is NEED_DATA:
                    break
                out.append(ev)
        return out

    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    whole = decode([data])
    assert whole[: len(evs)] == evs
    assert decode(chunks) == whole


@FUZZ
@given(info=st.dictionaries(st.sampled_from(["version", "client", "token", "x"]),
                            _msgpack_values(), max_size=4),
       rid=st.integers(min_value=0, max_value=3))
def test_any_hello_map_is_accepted_or_refused_fatally(info: dict[str, Any], rid: int) -> None:
    conn = Connection(Role.SERVER, LIMITS)
    conn.receive_data(frame(msgpack.packb([0, rid, info], use_bin_type=True)))
    err: ProtocolError | None = None
    try:
        ev = conn.next_event()
    except ProtocolError as e:
        err = e
    if err is not None:
        assert err.fatal
        assert conn.closed
        assert not conn.handshaken
        assert err.code in (ErrorCode.MALFORMED, ErrorCode.UNSUPPORTED_VERSION,
                            ErrorCode.LIMIT_EXCEEDED)
        return
    assert isinstance(ev, Hello)
    assert conn.handshaken
    assert ev.info.version == 1

"""The sans-I/O Connection: framing, round trips, the handshake, limits and errors."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgpack
import pytest
from protocol_pair import expecting, handshake, put_in_flight

from protocol import (
    DEFAULT_LIMITS,
    NEED_DATA,
    Connection,
    Error,
    ErrorCode,
    Event,
    Failure,
    Hello,
    HelloInfo,
    I2CBusInfo,
    I2CMsg,
    I2CRequest,
    Limits,
    LimitsInfo,
    LocalProtocolError,
    Ping,
    Pong,
    ProtocolError,
    Result,
    Role,
    SpiBusInfo,
    SpiConfig,
    SpiRequest,
    SpiTransfer,
    SpiTransferHead,
    Welcome,
    WelcomeInfo,
    chain,
    encode_body,
    frame,
    read,
    write,
)
from protocol.limits import MAX_REQUEST_ID, result_room
from protocol.virtio import I2C_FLAGS_FAIL_NEXT, I2C_FLAGS_M_RD

HDR_W48 = bytes.fromhex("9000000000000000")  # write 0x48
HDR_R48 = bytes.fromhex("9000000002000000")  # read 0x48
HEAD_CS0 = SpiTransferHead(bits_per_word=8).pack()


def packb(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def raw_frame(obj: Any) -> bytes:
    return frame(packb(obj))


def server(limits: Limits = DEFAULT_LIMITS, *, handshaken: bool = True) -> Connection:
    conn = Connection(Role.SERVER, limits)
    return handshake(conn) if handshaken else conn


def client(*in_flight: int) -> Connection:
    """A client with requests ``in_flight``; those SERVER_EVENTS' RESULTs answer fit theirs."""
    conn = handshake(Connection(Role.CLIENT))
    fits = {e.id: e for e in SERVER_EVENTS if isinstance(e, Result)}
    expecting(conn, *(fits[i] for i in in_flight if i in fits))
    return put_in_flight(conn, [i for i in in_flight if i not in fits])


def feed(conn: Connection, data: bytes) -> list[Event]:
    conn.receive_data(data)
    return list(conn.events())


def refuse(conn: Connection, data: bytes) -> ProtocolError:
    conn.receive_data(data)
    with pytest.raises(ProtocolError) as info:
        conn.next_event()
    return info.value


WELCOME = Welcome(
    WelcomeInfo(
        server="busbridge test",
        board="bench",
        i2c=[I2CBusInfo(name="1", functionality=0x0EFF0009, max_msg_len=8192, description="x")],
        spi=[SpiBusInfo(name="0", config=SpiConfig(cs_max_number=2, max_freq_hz=1000))],
        limits=LimitsInfo(
            max_frame=4096, max_requests=8, max_i2c_len=32, max_spi_len=64, max_in_flight=4
        ),
    )
)
I2C_REQ = I2CRequest(
    7,
    "1",
    (*chain([write(0x48, [0x0F]), read(0x48, 2)]), write(0x3C), read(0x3C, 0),
     write(0x2A5, b"\xaa", ten_bit=True)),
    timeout_ms=500,
)
SPI_REQ = SpiRequest(
    8,
    "0",
    1,
    (
        SpiTransfer(SpiTransferHead(chip_select_id=1, cs_change=1, freq=10**6), b"\x9f\x00", 2),
        SpiTransfer(SpiTransferHead(chip_select_id=1, mode=3), None, 16),
        SpiTransfer(SpiTransferHead(chip_select_id=1), b"\x01", 0),
    ),
)
RESULT = Result(7, b"\x00\x00\x00\x01\x01", [b"\x12\x34", b""], [Failure(3, 6, "no ACK")])

CLIENT_EVENTS: list[Event] = [I2C_REQ, SPI_REQ, Ping(3), Pong(4)]
SERVER_EVENTS: list[Event] = [
    RESULT,
    Result(8, b"\x00\x00\x00", [b"\x00\x01", bytes(16)], []),
    Error(9, ErrorCode.UNKNOWN_BUS, "no bus"),
    Error(0, ErrorCode.SHUTTING_DOWN, "bye"),
    Ping(5),
    Pong(6),
]


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------


def test_full_session_round_trip() -> None:
    c = Connection(Role.CLIENT)
    s = Connection(Role.SERVER)
    hello = Hello(HelloInfo(client="tests"))
    assert feed(s, c.send(hello)) == [hello]
    assert s.handshaken
    assert feed(c, s.send(WELCOME)) == [WELCOME]
    assert c.handshaken
    assert c.peer_limits == Limits(4096, 8, 32, 64, 4)

    for ev in (I2C_REQ, SPI_REQ):
        assert feed(s, c.send(ev)) == [ev]
    assert c.in_flight == s.in_flight == {7, 8}
    assert feed(c, s.send(RESULT)) == [RESULT]
    err = Error(8, ErrorCode.INTERNAL, "oops")
    assert feed(c, s.send(err)) == [err]
    assert c.in_flight == s.in_flight == set()
    assert feed(s, c.send(Ping(1))) == [Ping(1)]
    assert feed(c, s.send(Pong(1))) == [Pong(1)]


@pytest.mark.parametrize("ev", CLIENT_EVENTS, ids=lambda e: type(e).__name__)
def test_client_events_round_trip(ev: Event) -> None:
    assert feed(server(), frame(encode_body(ev))) == [ev]


@pytest.mark.parametrize("ev", SERVER_EVENTS, ids=lambda e: type(e).__name__)
def test_server_events_round_trip(ev: Event) -> None:
    assert feed(client(7, 8, 9), frame(encode_body(ev))) == [ev]


def test_handshake_events_round_trip() -> None:
    hello = Hello(HelloInfo(version=1, client="x" * 256))
    assert feed(server(handshaken=False), frame(encode_body(hello))) == [hello]
    assert feed(Connection(Role.CLIENT), frame(encode_body(WELCOME))) == [WELCOME]


def test_zero_length_requests_keep_their_direction() -> None:
    ev = I2CRequest(1, "1", (write(0x3C), read(0x3C, 0)))
    body = encode_body(ev)
    assert packb([bytes.fromhex("7800000000000000"), b""]) in body  # ... c4 00
    assert packb([bytes.fromhex("7800000002000000"), 0]) in body  # read length 0
    (got,) = feed(server(), frame(body))
    assert isinstance(got, I2CRequest)
    assert [(m.is_read, m.size) for m in got.msgs] == [(False, 0), (True, 0)]


def test_unknown_handshake_keys_are_ignored() -> None:
    data = raw_frame([0, 0, {"version": 1, "client": "c", "from_the_future": [1, 2]}])
    assert feed(server(handshaken=False), data) == [Hello(HelloInfo(client="c"))]
    w = WELCOME.info.model_dump()
    w["new_key"] = {"a": 1}
    w["i2c"][0]["new_bus_key"] = 3
    assert feed(Connection(Role.CLIENT), raw_frame([1, 0, w])) == [WELCOME]


def test_internal_error_keeps_its_message() -> None:
    (ev,) = feed(client(5), raw_frame([5, 5, "internal", "backend crashed"]))
    assert ev == Error(5, ErrorCode.INTERNAL, "backend crashed")


def test_unknown_error_code_degrades_to_internal_keeping_the_text() -> None:
    (ev,) = feed(client(5), raw_frame([5, 5, "brand-new-code", "details"]))
    assert ev == Error(5, ErrorCode.INTERNAL, "brand-new-code: details")


# ---------------------------------------------------------------------------
# Framing: partial delivery, several frames per chunk, EOF
# ---------------------------------------------------------------------------


def _stream(events: Iterable[Event]) -> bytes:
    return b"".join(frame(encode_body(e)) for e in events)


def test_byte_by_byte_delivery_gives_the_same_events() -> None:
    data = _stream(CLIENT_EVENTS)
    conn = server()
    got: list[Event] = []
    for i in range(len(data)):
        conn.receive_data(data[i : i + 1])
        got.extend(conn.events())
        if i < len(data) - 1:
            assert conn.next_event() is NEED_DATA
    assert got == CLIENT_EVENTS
    assert conn.buffered == 0


def test_several_frames_in_one_chunk() -> None:
    conn = client(7, 8, 9)
    assert feed(conn, _stream(SERVER_EVENTS)) == SERVER_EVENTS
    assert conn.next_event() is NEED_DATA


def test_frame_split_across_chunks_at_every_point() -> None:
    data = _stream([I2C_REQ, Ping(1)])
    for cut in range(len(data) + 1):
        conn = server()
        got = feed(conn, data[:cut]) + feed(conn, data[cut:])
        assert got == [I2C_REQ, Ping(1)], cut


def test_many_frames_through_the_buffer() -> None:
    conn = server()
    pings = [Ping(i) for i in range(1, 20001)]  # > 64 KiB: exercises buffer compaction
    data = _stream(pings)
    got: list[Event] = []
    for i in range(0, len(data), 4093):
        got += feed(conn, data[i : i + 4093])
    assert got == pings
    assert conn.buffered == 0


def test_clean_eof_between_frames() -> None:
    conn = server()
    conn.receive_data(frame(encode_body(Ping(1))))
    conn.receive_data(b"")
    assert conn.next_event() == Ping(1)
    assert conn.next_event() is None
    assert list(conn.events()) == []


@pytest.mark.parametrize("cut", [1, 3, 4, 10])
def test_eof_inside_a_frame_is_fatal(cut: int) -> None:
    conn = server()
    conn.receive_data(frame(encode_body(I2C_REQ))[:cut])
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    with pytest.raises(ProtocolError) as info:
        conn.next_event()
    assert info.value.fatal
    assert info.value.code is ErrorCode.MALFORMED
    assert conn.closed


# ---------------------------------------------------------------------------
# The handshake
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("ev", [I2C_REQ, SPI_REQ], ids=["i2c", "spi"])
def test_request_before_hello_is_fatal(ev: Event) -> None:
    conn = server(handshaken=False)
    e = refuse(conn, frame(encode_body(ev)))
    assert (e.code, e.fatal, e.request_id) == (ErrorCode.HANDSHAKE_REQUIRED, True, 0)
    assert conn.closed
    with pytest.raises(ProtocolError):  # nothing more is decoded
        conn.next_event()


def test_ping_before_hello_is_allowed() -> None:
    conn = server(handshaken=False)
    assert feed(conn, frame(encode_body(Ping(9)))) == [Ping(9)]
    assert not conn.handshaken


@pytest.mark.parametrize("version", [0, 2, 99])
def test_wrong_version_is_fatal(version: int) -> None:
    conn = server(handshaken=False)
    e = refuse(conn, raw_frame([0, 0, {"version": version, "client": "old"}]))
    assert (e.code, e.fatal) == (ErrorCode.UNSUPPORTED_VERSION, True)
    assert not conn.handshaken
    assert conn.closed


def test_client_refuses_a_welcome_of_another_version() -> None:
    w = WELCOME.info.model_dump()
    w["version"] = 2
    e = refuse(Connection(Role.CLIENT), raw_frame([1, 0, w]))
    assert (e.code, e.fatal) == (ErrorCode.UNSUPPORTED_VERSION, True)


@pytest.mark.parametrize(
    "bad",
    [
        [0, 0, {"version": "one"}],
        [0, 0, {"client": "x" * 257}],
        [0, 0, [1]],
        [0, 0],
    ],
    ids=["version-type", "client-too-long", "not-a-map", "no-map"],
)
def test_malformed_hello_is_fatal(bad: Any) -> None:
    e = refuse(server(handshaken=False), raw_frame(bad))
    assert (e.code, e.fatal) == (ErrorCode.MALFORMED, True)


def test_second_hello_is_fatal() -> None:
    conn = server(handshaken=False)
    feed(conn, frame(encode_body(Hello(HelloInfo()))))
    e = refuse(conn, frame(encode_body(Hello(HelloInfo()))))
    assert (e.code, e.fatal) == (ErrorCode.MALFORMED, True)


def test_welcome_without_limits_is_fatal() -> None:
    w = WELCOME.info.model_dump()
    del w["limits"]
    e = refuse(Connection(Role.CLIENT), raw_frame([1, 0, w]))
    assert (e.code, e.fatal) == (ErrorCode.MALFORMED, True)


def test_welcome_with_a_short_spi_config_is_fatal() -> None:
    w = WELCOME.info.model_dump()
    w["spi"][0]["config"] = bytes(31)
    e = refuse(Connection(Role.CLIENT), raw_frame([1, 0, w]))
    assert (e.code, e.fatal) == (ErrorCode.MALFORMED, True)


def test_server_refuses_frame_types_it_does_not_accept() -> None:
    # Before the handshake: fatal, id 0.  After: only that frame is refused, and its
    # id is not echoed: a RESULT is no request frame (SPEC.md §9.1).
    e = refuse(server(handshaken=False), frame(encode_body(RESULT)))
    assert (e.code, e.fatal, e.request_id) == (ErrorCode.MALFORMED, True, 0)
    conn = server()
    e = refuse(conn, frame(encode_body(RESULT)))
    assert (e.code, e.fatal, e.request_id) == (ErrorCode.MALFORMED, False, 0)
    assert feed(conn, frame(encode_body(Ping(1)))) == [Ping(1)]


def test_client_refuses_request_frames() -> None:
    e = refuse(client(), frame(encode_body(I2C_REQ)))
    assert e.fatal


# ---------------------------------------------------------------------------
# Limits
# ---------------------------------------------------------------------------


def test_oversize_length_prefix_is_fatal_before_the_body_arrives() -> None:
    conn = server(Limits(max_frame=1000))
    conn.receive_data((1001).to_bytes(4, "big"))  # only the prefix: the body is never read
    with pytest.raises(ProtocolError) as info:
        conn.next_event()
    assert (info.value.code, info.value.fatal) == (ErrorCode.FRAME_TOO_LARGE, True)
    assert conn.closed


def test_prefix_at_max_frame_is_accepted() -> None:
    conn = server(Limits(max_frame=3), handshaken=False)  # no HELLO fits; PING needs none
    assert feed(conn, frame(encode_body(Ping(1)))) == [Ping(1)]  # 3-byte body


def test_huge_prefix_is_refused_without_allocating() -> None:
    conn = server()
    e = refuse(conn, b"\xff\xff\xff\xff")
    assert e.code is ErrorCode.FRAME_TOO_LARGE
    assert e.fatal


def _assert_limit(conn: Connection, data: bytes, rid: int) -> None:
    e = refuse(conn, data)
    assert (e.code, e.fatal, e.request_id) == (ErrorCode.LIMIT_EXCEEDED, False, rid)
    assert not conn.closed
    assert rid not in conn.in_flight
    # The stream is intact: the next frame decodes.
    assert feed(conn, frame(encode_body(Ping(77)))) == [Ping(77)]


LIM = Limits(max_frame=4096, max_requests=4, max_i2c_len=16, max_spi_len=32, max_in_flight=2)


def test_oversize_read_length() -> None:
    _assert_limit(server(LIM), raw_frame([2, 11, "1", [[HDR_R48, 17]], None]), 11)
    assert feed(server(LIM), raw_frame([2, 11, "1", [[HDR_R48, 16]], None]))


def test_oversize_write_buffer() -> None:
    _assert_limit(server(LIM), raw_frame([2, 12, "1", [[HDR_W48, bytes(17)]], None]), 12)


def test_too_many_i2c_requests() -> None:
    reqs = [[HDR_W48, b"\x00"]] * 5
    _assert_limit(server(LIM), raw_frame([2, 13, "1", reqs, None]), 13)


def test_too_many_requests_beyond_the_msgpack_array_limit() -> None:
    reqs = [[HDR_W48, b"\x00"]] * 65  # the decoder refuses the array before building it
    _assert_limit(server(), raw_frame([2, 14, "1", reqs, None]), 14)


def test_oversize_spi_transfer() -> None:
    _assert_limit(server(LIM), raw_frame([3, 15, "0", 0, [[HEAD_CS0, None, 33]], None]), 15)
    _assert_limit(server(LIM), raw_frame([3, 16, "0", 0, [[HEAD_CS0, bytes(33), 0]], None]), 16)


def test_too_many_spi_transfers() -> None:
    xfers = [[HEAD_CS0, b"\x00", 0]] * 5
    _assert_limit(server(LIM), raw_frame([3, 17, "0", 0, xfers, None]), 17)


def test_bin_above_the_decoder_limit_is_refused_with_the_id() -> None:
    # max_bin_len is max(max_i2c_len, max_spi_len, 64): a 65536+1 byte write never
    # becomes a bytes object.
    _assert_limit(server(), raw_frame([2, 18, "1", [[HDR_W48, bytes(65537)]], None]), 18)


def test_reads_whose_result_would_not_fit_in_max_frame() -> None:
    lim = Limits(max_frame=1000, max_requests=8, max_i2c_len=1000, max_spi_len=1000)
    # 64 + 128 * 2 + 680 = 1000: fits exactly; one more byte does not.
    ok = [[HDR_R48, 340], [HDR_R48, 340]]
    assert result_room(2, 680) == 1000
    assert feed(server(lim), raw_frame([2, 19, "1", ok, None]))
    too_big = [[HDR_R48, 340], [HDR_R48, 341]]
    _assert_limit(server(lim), raw_frame([2, 19, "1", too_big, None]), 19)
    _assert_limit(server(lim), raw_frame([3, 20, "0", 0, [[HEAD_CS0, None, 1000 - 191]], None]),
                  20)


def test_a_result_for_an_accepted_request_can_always_be_sent() -> None:
    """Regression: 40 reads of 8 KiB used to be accepted, run, and then unanswerable."""
    s = server()
    big = I2CRequest(1, "1", tuple(read(0x50, 8192) for _ in range(40)))
    _assert_limit(s, frame(encode_body(big)), 1)
    fits = I2CRequest(2, "1", tuple(read(0x50, 8192) for _ in range(31)))
    (ev,) = feed(s, frame(encode_body(fits)))
    assert ev == fits
    res = Result(2, bytes(31), [bytes(8192)] * 31, [Failure(i, 5, "x" * 100) for i in range(31)])
    assert len(s.send(res)) - 4 <= s.limits.max_frame


def test_max_in_flight() -> None:
    conn = server(LIM)
    ping = [[HDR_W48, b""]]
    feed(conn, raw_frame([2, 1, "1", ping, None]) + raw_frame([2, 2, "1", ping, None]))
    assert conn.in_flight == {1, 2}
    _assert_limit(conn, raw_frame([2, 3, "1", ping, None]), 3)
    conn.send(Result(1, b"\x00", [], []))  # answering frees a slot
    assert [e.id for e in feed(conn, raw_frame([2, 3, "1", ping, None]))] == [3]  # type: ignore[union-attr]


def test_duplicate_in_flight_id_is_fatal() -> None:
    conn = server()
    probe = [[HDR_W48, b""]]
    feed(conn, raw_frame([2, 5, "1", probe, None]))
    e = refuse(conn, raw_frame([3, 5, "0", 0, [[HEAD_CS0, b"\x00", 0]], None]))
    assert (e.code, e.fatal) == (ErrorCode.DUPLICATE_ID, True)
    assert conn.closed


def test_an_id_can_be_reused_once_answered() -> None:
    conn = server()
    probe = raw_frame([2, 5, "1", [[HDR_W48, b""]], None])
    feed(conn, probe)
    conn.send(Error(5, ErrorCode.UNKNOWN_BUS, "no"))
    assert len(feed(conn, probe)) == 1


# ---------------------------------------------------------------------------
# Bad requests and malformed frames (non-fatal, carry the id)
# ---------------------------------------------------------------------------


def _assert_refused(data: bytes, code: ErrorCode, rid: int) -> None:
    conn = server()
    e = refuse(conn, data)
    assert (e.code, e.fatal, e.request_id) == (code, False, rid)
    assert rid not in conn.in_flight
    assert feed(conn, frame(encode_body(Ping(1)))) == [Ping(1)]


@pytest.mark.parametrize(
    ("hdr", "buf"),
    [
        (bytes.fromhex("9000000004000000"), b""),  # reserved flag bit 2
        (bytes.fromhex("9000000000000080"), b""),  # reserved flag bit 31
        (bytes.fromhex("9100000000000000"), b""),  # addr bit 0 set
        (bytes.fromhex("9001000000000000"), b""),  # 7-bit addr with a high byte
    ],
    ids=["flag-bit-2", "flag-bit-31", "addr-bit-0", "addr-high-byte"],
)
def test_bad_out_hdr_is_a_bad_request(hdr: bytes, buf: bytes) -> None:
    _assert_refused(raw_frame([2, 21, "1", [[HDR_W48, b""], [hdr, buf]], None]),
                    ErrorCode.BAD_REQUEST, 21)


def test_frame_ending_inside_a_chain_is_a_bad_request() -> None:
    open_chain = bytes.fromhex("9000000001000000")  # write with FAIL_NEXT
    _assert_refused(raw_frame([2, 22, "1", [[HDR_W48, b""], [open_chain, b"\x01"]], None]),
                    ErrorCode.BAD_REQUEST, 22)


def test_spi_head_on_another_chip_select_is_a_bad_request() -> None:
    head = SpiTransferHead(chip_select_id=1).pack()
    _assert_refused(raw_frame([3, 23, "0", 0, [[head, b"\x00", 0]], None]),
                    ErrorCode.BAD_REQUEST, 23)


def test_spi_param_problems_are_not_protocol_errors() -> None:
    """Zero length or a full-duplex mismatch decode fine; the server answers PARAM_ERR."""
    xfers = [[HEAD_CS0, None, 0], [HEAD_CS0, b"\x00\x00", 3], [HEAD_CS0, b"", 0]]
    (ev,) = feed(server(), raw_frame([3, 24, "0", 0, xfers, None]))
    assert isinstance(ev, SpiRequest)
    assert len(ev.transfers) == 3


@pytest.mark.parametrize(
    "body",
    [
        [2, 31, "1", [[HDR_R48, b"\x00"]], None],  # read with a bin buf
        [2, 31, "1", [[HDR_W48, 3]], None],  # write with a length
        [2, 31, "1", [[HDR_W48, "text"]], None],  # write data as str
        [2, 31, "1", [[HDR_R48, -1]], None],  # negative read length
        [2, 31, "1", [[HDR_W48[:7], b""]], None],  # out_hdr too short
        [2, 31, "1", [[HDR_W48.hex(), b""]], None],  # out_hdr as str
        [2, 31, "1", [[HDR_W48, b"", 0]], None],  # request with 3 items
        [2, 31, "1", [], None],  # no requests
        [2, 31, "", [[HDR_W48, b""]], None],  # empty bus name
        [2, 31, "b" * 65, [[HDR_W48, b""]], None],  # bus name too long
        [2, 31, 1, [[HDR_W48, b""]], None],  # bus as int
        [2, 31, "1", [[HDR_W48, b""]], 0],  # timeout 0
        [2, 31, "1", [[HDR_W48, b""]], 3_600_001],  # timeout too long
        [2, 31, "1", [[HDR_W48, b""]], 1.5],  # float timeout
        [2, 31, "1", [[HDR_W48, b""]]],  # missing timeout
        [3, 31, "0", 256, [[HEAD_CS0, None, 1]], None],  # cs out of range
        [3, 31, "0", 0, [[HEAD_CS0[:31], None, 1]], None],  # short head
        [3, 31, "0", 0, [[HEAD_CS0, "tx", 0]], None],  # tx as str
        [3, 31, "0", 0, [[HEAD_CS0, None, True]], None],  # bool rx_len
        [3, 31, "0", 0, [[HEAD_CS0, None]], None],  # transfer with 2 items
    ],
)
def test_wrong_shape_is_malformed_with_the_id(body: list[Any]) -> None:
    _assert_refused(raw_frame(body), ErrorCode.MALFORMED, 31)


@pytest.mark.parametrize(
    ("body", "rid"),
    [
        (packb([2, 41, "1", [[HDR_W48, b""]], None]) + b"\xc0", 41),  # trailing data
        (packb([2, 42, "1", [[HDR_W48, b""]], None])[:-3], 42),  # truncated msgpack
        (b"\x95\x02\x2b\xc1", 43),  # 0xc1 is never used in msgpack
        (b"\xc1", 0),
        (b"", 0),
        (packb({"type": 2}), 0),  # not an array
        (packb([2]), 0),  # too short
        (packb(["2", 44]), 0),  # type as str
        (packb([2, 0, "1", [[HDR_W48, b""]], None]), 0),  # id 0
        (packb([2, MAX_REQUEST_ID + 1, "1", [[HDR_W48, b""]], None]), 0),  # id too big
        (packb([2, -45, "1", [[HDR_W48, b""]], None]), 0),  # negative id
        (packb([6, 0]), 0),  # PING id 0
        (packb([2, 46, "1", [[HDR_W48, msgpack.ExtType(1, b"x")]], None]), 46),  # ext type
    ],
    ids=["trailing", "truncated", "reserved-byte", "only-c1", "empty", "map", "short",
         "str-type", "id-0", "id-too-big", "negative-id", "ping-id-0", "ext"],
)
def test_malformed_frames_are_not_fatal(body: bytes, rid: int) -> None:
    _assert_refused(frame(body), ErrorCode.MALFORMED, rid)


def test_unknown_frame_type_after_handshake_is_not_fatal_and_echoes_no_id() -> None:
    _assert_refused(raw_frame([99, 50]), ErrorCode.MALFORMED, 0)


# ---------------------------------------------------------------------------
# The client role
# ---------------------------------------------------------------------------


def test_client_rejects_a_result_for_an_unknown_id() -> None:
    conn = client(1)
    e = refuse(conn, frame(encode_body(Result(2, b"\x00", [], []))))
    assert e.fatal
    assert conn.closed


def test_client_rejects_an_error_for_an_unknown_id_but_accepts_id_0() -> None:
    assert feed(client(), frame(encode_body(Error(0, ErrorCode.INTERNAL, "x"))))
    e = refuse(client(), frame(encode_body(Error(3, ErrorCode.INTERNAL, "x"))))
    assert e.fatal


def test_client_rejects_a_second_answer_for_the_same_id() -> None:
    conn = client(1)
    feed(conn, frame(encode_body(Result(1, b"\x00", [], []))))
    e = refuse(conn, frame(encode_body(Result(1, b"\x00", [], []))))
    assert e.fatal


@pytest.mark.parametrize(
    "body",
    [
        [4, 1, b"\x00", [], [], None],  # 6 items
        [4, 1, "00", [], []],  # status as str
        [4, 1, b"\x00", ["text"], []],  # read as str
        [4, 1, b"\x00", [], [[0, 5]]],  # failure with 2 items
        [4, 1, b"\x00", [], [[0, "EIO", "x"]]],  # errno as str
        [5, 1, "internal"],  # ERROR with 3 items
    ],
)
def test_client_treats_a_bad_answer_as_fatal(body: list[Any]) -> None:
    e = refuse(client(1), raw_frame(body))
    assert (e.code, e.fatal) == (ErrorCode.MALFORMED, True)


def test_client_send_tracks_in_flight() -> None:
    c = client()
    c.send(I2C_REQ)
    assert c.in_flight == {7}
    feed(c, frame(encode_body(RESULT)))
    assert c.in_flight == set()


# ---------------------------------------------------------------------------
# send() refuses locally what the peer's limits forbid
# ---------------------------------------------------------------------------


def _peer_limited(limits: Limits = LIM) -> Connection:
    return handshake(Connection(Role.CLIENT), limits)


@pytest.mark.parametrize(
    ("ev", "words"),
    [
        (I2CRequest(1, "1", tuple(write(0x48, b"\x00") for _ in range(5))), "limit 4"),
        (I2CRequest(1, "1", (write(0x48, bytes(17)),)), "limit 16"),
        (I2CRequest(1, "1", (read(0x48, 17),)), "limit 16"),
        (I2CRequest(1, "1", (I2CMsg(0x48, I2C_FLAGS_FAIL_NEXT, b"\x01"),)), "FAIL_NEXT"),
        (I2CRequest(1, "1", ()), "at least one"),
        (I2CRequest(0, "1", (write(0x48),)), "out of range"),
        (I2CRequest(MAX_REQUEST_ID + 1, "1", (write(0x48),)), "out of range"),
        (SpiRequest(1, "0", 0, (SpiTransfer(SpiTransferHead(), None, 33),)), "limit 32"),
        (SpiRequest(1, "0", 0, (SpiTransfer(SpiTransferHead(), bytes(33), 0),)), "limit 32"),
        (SpiRequest(1, "0", 0, tuple(SpiTransfer(SpiTransferHead(), b"\x00")
                                     for _ in range(5))), "limit 4"),
    ],
)
def test_send_refuses_what_the_peer_forbids(ev: Event, words: str) -> None:
    c = _peer_limited()
    with pytest.raises(LocalProtocolError, match=words):
        c.send(ev)
    assert c.in_flight == set()


def test_send_refuses_a_frame_above_the_peers_max_frame() -> None:
    c = _peer_limited(Limits(max_frame=300, max_requests=64, max_i2c_len=8192))
    assert len(c.send(I2CRequest(1, "1", (write(0x48, bytes(279)),)))) == 4 + 300
    with pytest.raises(LocalProtocolError, match="exceeds the peer's limit 300"):
        c.send(I2CRequest(2, "1", (write(0x48, bytes(280)),)))
    assert c.in_flight == {1}


def test_send_refuses_reads_whose_result_would_not_fit() -> None:
    c = _peer_limited(Limits(max_frame=1000, max_requests=8, max_i2c_len=1000))
    c.send(I2CRequest(1, "1", (read(0x48, 340), read(0x48, 340))))
    with pytest.raises(LocalProtocolError, match="RESULT would not fit"):
        c.send(I2CRequest(2, "1", (read(0x48, 340), read(0x48, 341))))
    # The client's own receive limit counts too.
    c = handshake(Connection(Role.CLIENT, Limits(max_frame=1000)), Limits())
    with pytest.raises(LocalProtocolError, match="max_frame 1000"):
        c.send(SpiRequest(1, "0", 0, (SpiTransfer(SpiTransferHead(), None, 900),)))


def test_send_refuses_a_duplicate_id_and_server_side_requests() -> None:
    c = _peer_limited()
    c.send(I2CRequest(1, "1", (write(0x48),)))
    with pytest.raises(LocalProtocolError, match="in flight"):
        c.send(I2CRequest(1, "1", (write(0x48),)))
    with pytest.raises(LocalProtocolError, match="only a client"):
        server().send(I2CRequest(2, "1", (write(0x48),)))


def test_send_accepts_exactly_the_limits() -> None:
    c = _peer_limited()
    c.send(I2CRequest(1, "1", tuple(write(0x48, bytes(16)) for _ in range(4))))
    c.send(SpiRequest(2, "0", 0, (SpiTransfer(SpiTransferHead(), bytes(32), 32),)))
    assert c.in_flight == {1, 2}


def test_server_send_settles_the_id() -> None:
    s = server()
    feed(s, frame(encode_body(I2C_REQ)))
    assert s.in_flight == {7}
    s.send(RESULT)
    assert s.in_flight == set()


def test_flags_word_is_kept_verbatim() -> None:
    ev = I2CRequest(1, "1", (I2CMsg(0x48, I2C_FLAGS_FAIL_NEXT | I2C_FLAGS_M_RD, b"", 1),
                             I2CMsg(0x48, I2C_FLAGS_M_RD, b"", 1)))
    (got,) = feed(server(), frame(encode_body(ev)))
    assert isinstance(got, I2CRequest)
    assert [m.flags for m in got.msgs] == [3, 2]


def test_next_id_skips_ids_in_flight_and_wraps_at_the_maximum() -> None:
    conn = Connection(Role.CLIENT)
    assert [conn.next_id() for _ in range(3)] == [1, 2, 3]
    put_in_flight(conn, {4, 5})  # e.g. requests whose answers are late
    assert conn.next_id() == 6
    conn._last_id = MAX_REQUEST_ID - 1
    put_in_flight(conn, [1])
    assert [conn.next_id(), conn.next_id()] == [MAX_REQUEST_ID, 2]

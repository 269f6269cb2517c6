"""SPEC.md §9's error table on the sans-I/O connection: which code, fatal or not, which id.

Each test is one row or one rule of the table (issue 13 items 3-5, 8-10, 13): the id
an ERROR carries is read from the body's head (§9.1), fatal refusals carry 0, a
server refuses everything fatally before HELLO, and the handshake maps are typed
as strictly as every other frame.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from protocol_pair import handshake

from protocol import (
    Connection,
    ErrorCode,
    Hello,
    HelloInfo,
    Ping,
    ProtocolError,
    Role,
    encode_body,
    frame,
)
from protocol.refusals import REQUEST_TYPES, peek_id

HDR_W48 = bytes.fromhex("9000000000000000")  # write 0x48
HELLO = frame(encode_body(Hello(HelloInfo(client="t"))))


def packb(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def server(*, handshaken: bool = True) -> Connection:
    conn = Connection(Role.SERVER)
    return handshake(conn) if handshaken else conn


def refusal(conn: Connection, data: bytes) -> ProtocolError:
    """The one refusal ``data`` gets; it must come before any event."""
    items = conn.receive(data)
    assert items, "the frame was not refused"
    first = items[0]
    assert isinstance(first, ProtocolError), f"accepted as {first!r}"
    return first


def still_open(conn: Connection) -> bool:
    """The connection decodes the next frame (a PING) as if nothing happened."""
    return conn.receive(frame(encode_body(Ping(9)))) == [Ping(9)]


def ext(type_: int, data: bytes) -> bytes:
    """A msgpack ext of 1, 2, 4, 8 or 16 bytes (fixext)."""
    codes = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
    return bytes([codes[len(data)], type_ & 0xFF]) + data


I2C_42 = packb([2, 42, "1", [[HDR_W48, b""]], None])


# ---------------------------------------------------------------------------
# §9.1: the id an ERROR carries is read from the head of the body
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "rid", "code"),
    [
        (I2C_42 + b"\x00", 42, ErrorCode.MALFORMED),  # trailing byte
        (b"\x95\x02\x4d\xa1\x31", 77, ErrorCode.MALFORMED),  # [2, 77, "1"  of a 5-array
        (b"\x95\x02\x2a\xa2\xff\xfe" + packb([[HDR_W48, b""]]) + b"\xc0", 42,
         ErrorCode.MALFORMED),  # a bus name that is not UTF-8
        (I2C_42[:-1] + ext(-1, bytes(4)), 42, ErrorCode.MALFORMED),  # timestamp ext
        (packb([2, 42, "b" * 4097, [[HDR_W48, b""]], None]), 42,
         ErrorCode.LIMIT_EXCEEDED),  # str over 4096 bytes: never built
        (packb([2, 42, "1", [[HDR_W48, b""]] * 65, None]), 42,
         ErrorCode.LIMIT_EXCEEDED),  # array over max(max_requests, 8)
        (b"\x95\xd0\x02\xce\x00\x00\x00\x2a\xa1\x31" + packb([[HDR_W48, b""]]) + b"\xc0\x00",
         42, ErrorCode.MALFORMED),  # type as int8, id as uint32: any width is read
        (packb([8, 42, "list"]), 42, ErrorCode.MALFORMED),  # LEASE with 3 items
        (packb([3, 42, "0", 0]), 42, ErrorCode.MALFORMED),  # SPI with 4 items
    ],
    ids=["trailing", "truncated", "utf8", "ext", "str-4097", "array-65", "wide-ints",
         "lease-3", "spi-4"],
)
def test_a_request_frames_id_is_read_from_the_head(body: bytes, rid: int,
                                                   code: ErrorCode) -> None:
    conn = server()
    e = refusal(conn, frame(body))
    assert (e.code, e.request_id, e.fatal) == (code, rid, False)
    assert peek_id(body) == rid
    assert still_open(conn)


@pytest.mark.parametrize(
    "body",
    [
        packb([6, 5, 5]),  # PING: no request frame
        packb([7, 5, 5]),  # PONG
        packb([4, 6, b"\x00", [], []]),  # a client-sent RESULT
        packb([9, 7, {"leases": []}]),  # a client-sent LEASE_RESULT
        packb([5, 8, "internal", "x"]),  # a client-sent ERROR
        packb([1, 9, {}]),  # a client-sent WELCOME
        packb([99, 5]),  # a type no version defines
        packb([2]),  # one item: no id
        packb([2, 0, "1", [[HDR_W48, b""]], None]),  # id 0 is no id
        packb([2, 2**32, "1", [[HDR_W48, b""]], None]),  # nor is 2**32
        packb([2, True, "1", [[HDR_W48, b""]], None]),  # nor a bool
        packb([2, 5.0, "1", [[HDR_W48, b""]], None]),  # nor a float
        packb([2.0, 5, "1", [[HDR_W48, b""]], None]),  # a float type is no type
        packb({"type": 2, "id": 5}),  # not an array
        b"\xc1\x95\x02\x05",  # not msgpack from the first byte
        b"",  # nothing at all
    ],
    ids=["ping", "pong", "result", "lease-result", "error", "welcome", "type-99",
         "one-item", "id-0", "id-2-32", "id-bool", "id-float", "type-float", "map",
         "c1", "empty"],
)
def test_no_id_is_read_from_anything_else(body: bytes) -> None:
    """Only a request frame's id is ever echoed: a client closes on an ERROR whose id is
    not in flight (§7), and a PING's id is never in flight."""
    conn = server()
    e = refusal(conn, frame(body))
    assert e.code is ErrorCode.MALFORMED
    assert (e.request_id, e.fatal) == (0, False)
    assert peek_id(body) == 0
    assert still_open(conn)


def test_request_types_are_the_request_frames_of_section_4() -> None:
    assert {2, 3, 8, 10} == REQUEST_TYPES


# ---------------------------------------------------------------------------
# Item 4: PING and PONG have exactly two items
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("body", [[6, 5, 5], [6], [7, 5, 5], [7], [6, 5, None]],
                         ids=["ping-3", "ping-1", "pong-3", "pong-1", "ping-nil"])
def test_ping_and_pong_arity_is_checked(body: list[Any]) -> None:
    conn = server()
    e = refusal(conn, frame(packb(body)))
    assert (e.code, e.request_id, e.fatal) == (ErrorCode.MALFORMED, 0, False)
    assert still_open(conn)


def test_a_ping_of_the_wrong_arity_before_hello_is_fatal() -> None:
    conn = server(handshaken=False)
    e = refusal(conn, frame(packb([6, 5, 5])))
    assert (e.code, e.request_id, e.fatal) == (ErrorCode.MALFORMED, 0, True)
    assert conn.closed


# ---------------------------------------------------------------------------
# Items 3 and 10: before HELLO every refusal is fatal and carries id 0
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (packb([4, 1, b"\x00", [], []]), ErrorCode.MALFORMED),  # RESULT before HELLO
        (packb([99, 1]), ErrorCode.MALFORMED),  # unknown type before HELLO
        (packb([9, 1, {"leases": []}]), ErrorCode.MALFORMED),
        (packb([2, 1, "1", [[HDR_W48, b""]], None]), ErrorCode.HANDSHAKE_REQUIRED),
        (packb([8, 1, "list", {}]), ErrorCode.HANDSHAKE_REQUIRED),
        (packb([2, 1, "1"]), ErrorCode.HANDSHAKE_REQUIRED),  # its content is not checked
        (b"", ErrorCode.MALFORMED),  # an empty frame
        (b"\xc1\xc1\xc1", ErrorCode.MALFORMED),  # not msgpack
        (I2C_42 + b"\x00", ErrorCode.MALFORMED),  # a request that does not decode
        (packb({"a": 1}), ErrorCode.MALFORMED),  # not an array
        (packb([0]), ErrorCode.MALFORMED),  # an invalid HELLO, like [0, 0, {}, 1]
        (packb([0, 0, {}, 1]), ErrorCode.MALFORMED),
        (packb([6, 0]), ErrorCode.MALFORMED),  # PING id 0
        (packb([0, 0, {f"k{i}": i for i in range(65)}]),
         ErrorCode.LIMIT_EXCEEDED),  # a HELLO map over 64 pairs
    ],
    ids=["result", "type-99", "lease-result", "i2c", "lease", "short-i2c", "empty",
         "garbage", "undecodable-i2c", "map", "hello-1", "hello-4", "ping-id-0",
         "hello-65-pairs"],
)
def test_every_refusal_before_hello_is_fatal_with_id_0(body: bytes, code: ErrorCode) -> None:
    conn = server(handshaken=False)
    e = refusal(conn, frame(body))
    assert (e.code, e.request_id, e.fatal) == (code, 0, True)
    assert conn.closed
    with pytest.raises(ProtocolError):  # nothing more is decoded
        conn.receive(frame(encode_body(Ping(1))))


def test_fatal_refusals_after_hello_carry_id_0() -> None:
    conn = server()
    conn.receive(frame(I2C_42))
    e = refusal(conn, frame(I2C_42))  # the same id again, still in flight
    assert (e.code, e.request_id, e.fatal) == (ErrorCode.DUPLICATE_ID, 0, True)
    second = refusal(server(), HELLO)
    assert (second.code, second.request_id, second.fatal) == (ErrorCode.MALFORMED, 0, True)


def test_a_fatal_protocol_error_never_carries_an_id() -> None:
    e = ProtocolError(ErrorCode.MALFORMED, "x", request_id=5, fatal=True)
    assert e.request_id == 0
    assert ProtocolError(ErrorCode.MALFORMED, "x", request_id=5).as_fatal().request_id == 0


def test_after_hello_an_empty_frame_and_a_one_item_array_are_not_fatal() -> None:
    conn = server()
    for body in (b"", packb([0]), packb([6])):
        e = refusal(conn, frame(body))
        assert (e.code, e.request_id, e.fatal) == (ErrorCode.MALFORMED, 0, False)
    assert still_open(conn)


def test_the_frames_behind_a_fatal_refusal_are_not_decoded() -> None:
    conn = server(handshaken=False)
    items = conn.receive(frame(b"\xc1") + HELLO + frame(encode_body(Ping(3))))
    assert len(items) == 1
    assert isinstance(items[0], ProtocolError)
    assert items[0].fatal


# ---------------------------------------------------------------------------
# Item 13 and gap 23: the handshake maps are typed strictly; nil is a wrong type
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hello",
    [
        {"version": 1, "token": None},
        {"version": 1.0},
        {"version": True},
        {"version": "1"},
        {"version": None},
        {"client": None},
        {"client": b"agent"},
        {"leases": None},
        {"leases": [b"q3JvZkQ1bXlfc2VjcmV0"]},
        {"token": b"s3cret-t0ken"},
        {"token": ""},
        {"token": "t" * 257},
    ],
    ids=["token-nil", "version-float", "version-true", "version-str", "version-nil",
         "client-nil", "client-bin", "leases-nil", "lease-bin", "token-bin", "token-empty",
         "token-257"],
)
def test_a_hello_with_a_wrong_type_is_a_fatal_malformed(hello: dict[str, Any]) -> None:
    conn = server(handshaken=False)
    e = refusal(conn, frame(packb([0, 0, hello])))
    assert (e.code, e.request_id, e.fatal) == (ErrorCode.MALFORMED, 0, True)


def test_a_well_formed_token_is_accepted_by_the_decoder() -> None:
    """Whether the server wants tokens is the server's business; the decoder checks form."""
    (ev,) = server(handshaken=False).receive(frame(packb([0, 0, {"token": "t" * 256}])))
    assert isinstance(ev, Hello)
    assert ev.info.token == "t" * 256


def test_python_callers_may_still_pass_no_token_as_none() -> None:
    assert HelloInfo(client="c", token=None).token is None
    assert b"token" not in encode_body(Hello(HelloInfo(client="c", token=None)))


@pytest.mark.parametrize(
    ("key", "value"),
    [("version", "1"), ("board", b"demo"), ("server", None)],
)
def test_a_client_refuses_a_welcome_with_a_wrong_type(key: str, value: Any) -> None:
    limits = {"max_frame": 4096, "max_requests": 1, "max_i2c_len": 1, "max_spi_len": 1,
              "max_in_flight": 1}
    welcome: dict[str, Any] = {"version": 1, "limits": limits, key: value}
    e = refusal(Connection(Role.CLIENT), frame(packb([1, 0, welcome])))
    assert (e.code, e.fatal) == (ErrorCode.MALFORMED, True)


def test_a_welcome_with_float_limits_is_refused() -> None:
    limits = {"max_frame": 4096.0, "max_requests": 1, "max_i2c_len": 1, "max_spi_len": 1,
              "max_in_flight": 1}
    e = refusal(Connection(Role.CLIENT), frame(packb([1, 0, {"limits": limits}])))
    assert (e.code, e.fatal) == (ErrorCode.MALFORMED, True)


# ---------------------------------------------------------------------------
# The client: every violation by the server is fatal (§9)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"\xc1", b"", packb({"a": 1}), packb([6, 0]),
                                  packb([2, 1, "1", [], None])],
                         ids=["garbage", "empty", "map", "ping-id-0", "request"])
def test_a_client_treats_every_violation_as_fatal(body: bytes) -> None:
    conn = handshake(Connection(Role.CLIENT))
    e = refusal(conn, frame(body))
    assert e.fatal
    assert conn.closed
    with pytest.raises(ProtocolError):  # nothing more is decoded
        conn.receive(frame(encode_body(Ping(1))))


def test_a_refusal_after_hello_does_not_stop_the_frames_behind_it() -> None:
    conn = server()
    items = conn.receive(frame(packb([6, 5, 5])) + frame(encode_body(Ping(4))))
    assert isinstance(items[0], ProtocolError)
    assert not items[0].fatal
    assert items[1:] == [Ping(4)]


# ---------------------------------------------------------------------------
# §9.4: which refusal wins when a frame breaks several rules
# ---------------------------------------------------------------------------

HDR_R48 = bytes.fromhex("9000000002000000")  # read 0x48
HDR_RESERVED = bytes.fromhex("9000000004000000")  # reserved flag bit 2
HDR_OPEN_CHAIN = bytes.fromhex("9000000003000000")  # read with FAIL_NEXT


@pytest.mark.parametrize(
    ("body", "code"),
    [
        # timeout_ms is checked before the requests
        ([2, 61, "1", [[HDR_R48, 9000]], 0], ErrorCode.MALFORMED),
        # requests in order, each wholly before the next
        ([2, 61, "1", [[HDR_RESERVED, 0], [HDR_R48, 9000]], None], ErrorCode.BAD_REQUEST),
        ([2, 61, "1", [[HDR_R48, 9000], [HDR_RESERVED, 0]], None], ErrorCode.LIMIT_EXCEEDED),
        # the frame as a whole last: the open chain before the RESULT-size rule
        ([2, 61, "1", [[HDR_R48, 8192]] * 31 + [[HDR_OPEN_CHAIN, 8192]], None],
         ErrorCode.BAD_REQUEST),
        # the bus name comes before everything in the requests
        ([2, 61, "", [[HDR_RESERVED, 0]], None], ErrorCode.MALFORMED),
    ],
    ids=["timeout-first", "request-0-first", "request-0-limit", "chain-before-room",
         "bus-first"],
)
def test_decoding_refuses_for_the_first_problem_in_item_order(body: list[Any],
                                                              code: ErrorCode) -> None:
    e = refusal(server(), frame(packb(body)))
    assert (e.code, e.request_id) == (code, 61)

"""LEASE / LEASE_RESULT codec: round trips through both roles, and every refusal."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from protocol_pair import ConnectionPair, handshake, put_in_flight

from protocol import (
    NEED_DATA,
    Connection,
    ErrorCode,
    Hello,
    HelloInfo,
    LeaseInfo,
    LeaseOp,
    LeaseRequest,
    LeaseResult,
    LocalProtocolError,
    ProtocolError,
    Role,
    frame,
)

TOKEN = "t" * 32


def server() -> Connection:
    return handshake(Connection(Role.SERVER))


def client() -> Connection:
    return handshake(Connection(Role.CLIENT))


def decode(conn: Connection, data: bytes) -> Any:
    conn.receive_data(data)
    ev = conn.next_event()
    assert conn.next_event() is NEED_DATA
    return ev


def raw(obj: Any) -> bytes:
    return frame(msgpack.packb(obj, use_bin_type=True))


def refused(conn: Connection, obj: Any) -> ProtocolError:
    conn.receive_data(raw(obj))
    with pytest.raises(ProtocolError) as e:
        conn.next_event()
    return e.value


requests = st.one_of(
    st.builds(lambda rid, bus, a, ttl, h: LeaseRequest(rid, LeaseOp.TAKE, kind="i2c", bus=bus,
                                                       address=a, ttl=ttl, holder=h),
              st.integers(1, 0xFFFFFFFF), st.text(min_size=1, max_size=64),
              st.none() | st.integers(0, 0x3FF), st.integers(1, 86400),
              st.text(max_size=256)),
    st.builds(lambda rid, bus, cs, ttl: LeaseRequest(rid, LeaseOp.TAKE, kind="spi", bus=bus,
                                                     cs=cs, ttl=ttl),
              st.integers(1, 0xFFFFFFFF), st.text(min_size=1, max_size=64),
              st.none() | st.integers(0, 255), st.integers(1, 86400)),
    st.builds(lambda rid, ttl: LeaseRequest(rid, LeaseOp.RENEW, token=TOKEN, ttl=ttl),
              st.integers(1, 0xFFFFFFFF), st.none() | st.integers(1, 86400)),
    st.builds(lambda rid: LeaseRequest(rid, LeaseOp.RELEASE, token=TOKEN),
              st.integers(1, 0xFFFFFFFF)),
    st.builds(lambda rid: LeaseRequest(rid, LeaseOp.LIST), st.integers(1, 0xFFFFFFFF)),
)


@given(requests)
def test_lease_requests_round_trip(req: LeaseRequest) -> None:
    c = client()
    data = c.send(req)
    assert req.id in c.in_flight
    assert decode(server(), data) == req


infos = st.builds(LeaseInfo, st.text(max_size=16), st.sampled_from(["i2c", "spi"]),
                  st.text(min_size=1, max_size=64), st.none() | st.integers(0, 0x3FF),
                  st.none() | st.integers(0, 255), st.text(max_size=64), st.text(max_size=64),
                  st.integers(1, 86400), st.text(max_size=30), st.integers(0, 86_400_000))


@given(st.integers(1, 0xFFFFFFFF), st.lists(infos, max_size=5),
       st.none() | st.just(TOKEN), st.none() | st.booleans())
def test_lease_results_round_trip(rid: int, leases: list[LeaseInfo], token: str | None,
                                  released: bool | None) -> None:
    res = LeaseResult(rid, leases, token, released)
    pair = ConnectionPair().handshake()
    pair.client_sends(LeaseRequest(rid, LeaseOp.LIST))  # rid is in flight on both sides
    s, c = pair.server, pair.client
    data = s.send(res)
    assert rid not in s.in_flight  # answered
    assert decode(c, data) == res
    assert rid not in c.in_flight


@pytest.mark.parametrize(("frame_", "code", "text"), [
    ([8, 1, "take"], ErrorCode.MALFORMED, "must be [8, id, op, params]"),
    ([8, 0, "list", {}], ErrorCode.MALFORMED, "request id"),
    ([8, 1, 3, {}], ErrorCode.MALFORMED, "op must be a string"),
    ([8, 1, "grab", {}], ErrorCode.BAD_REQUEST, "unknown LEASE op 'grab'"),
    ([8, 1, "take", {1: 2}], ErrorCode.MALFORMED, "map key"),
    ([8, 1, "take", {"kind": "i2c", "bus": "", "ttl": 5}], ErrorCode.MALFORMED, "bus must be"),
    ([8, 1, "take", {"kind": "i2c", "bus": "1", "ttl": "5"}], ErrorCode.MALFORMED,
     "ttl must be an integer"),
    ([8, 1, "take", {"kind": "i2c", "bus": "1", "ttl": True}], ErrorCode.MALFORMED,
     "ttl must be an integer"),
    ([8, 1, "take", {"kind": "i2c", "bus": "1", "ttl": 86401}], ErrorCode.BAD_REQUEST,
     "out of range 1..86400"),
    ([8, 1, "take", {"kind": "i2c", "bus": "1", "cs": 1, "ttl": 5}], ErrorCode.BAD_REQUEST,
     "an I2C lease has no cs"),
    ([8, 1, "take", {"kind": "spi", "bus": "0", "cs": 256, "ttl": 5}], ErrorCode.BAD_REQUEST,
     "cs 256 out of range 0..255"),
    ([8, 1, "take", {"kind": "i2c", "bus": "1", "ttl": 5, "holder": "h" * 257}],
     ErrorCode.BAD_REQUEST, "holder longer than 256"),
    ([8, 1, "renew", {}], ErrorCode.MALFORMED, "token must be a string"),
    ([8, 1, "renew", {"token": "short"}], ErrorCode.BAD_REQUEST, "16..128 printable ASCII"),
    ([8, 1, "release", {"token": "é" * 20}], ErrorCode.BAD_REQUEST, "16..128 printable ASCII"),
])
def test_bad_lease_frames_are_refused_without_killing_the_connection(
        frame_: list[Any], code: ErrorCode, text: str) -> None:
    s = server()
    e = refused(s, frame_)
    assert e.code is code
    assert text in e.message
    assert not e.fatal
    assert e.request_id == (frame_[1] if isinstance(frame_[1], int) else 0)
    assert not s.in_flight  # a refused frame is not in flight
    # The next frame decodes.
    assert decode(s, raw([8, 2, "list", {}])) == LeaseRequest(2, LeaseOp.LIST)


def test_unknown_params_are_ignored_for_forward_compatibility() -> None:
    ev = decode(server(), raw([8, 1, "take", {"kind": "i2c", "bus": "1", "ttl": 5,
                                              "priority": 3}]))
    assert ev == LeaseRequest(1, LeaseOp.TAKE, kind="i2c", bus="1", ttl=5)


def test_a_lease_id_already_in_flight_is_a_fatal_duplicate() -> None:
    s = server()
    decode(s, raw([8, 1, "list", {}]))
    e = refused(s, [2, 1, "1", [[bytes(8), b""]], None])
    assert e.code is ErrorCode.DUPLICATE_ID
    assert e.fatal


def test_a_lease_frame_before_hello_is_fatal() -> None:
    e = refused(Connection(Role.SERVER), [8, 1, "list", {}])
    assert e.code is ErrorCode.HANDSHAKE_REQUIRED
    assert e.fatal


@pytest.mark.parametrize(("body", "text"), [
    ([9, 1], "must be [9, id, map]"),
    ([9, 1, {}], "leases must be an array"),
    ([9, 1, {"leases": [{"id": "x"}]}], "lacks"),
    ([9, 1, {"leases": [], "token": "short"}], "bad token"),
    ([9, 1, {"leases": [], "released": 1}], "released must be a boolean"),
])
def test_a_bad_lease_result_is_a_fatal_violation_by_the_server(body: list[Any], text: str
                                                                ) -> None:
    c = put_in_flight(client(), [1])
    e = refused(c, body)
    assert e.fatal
    assert text in e.message


def test_a_lease_result_for_an_id_not_in_flight_is_fatal() -> None:
    e = refused(client(), [9, 5, {"leases": []}])
    assert e.fatal
    assert "unknown request id 5" in e.message


def test_a_server_does_not_accept_lease_results_and_a_client_no_lease_requests() -> None:
    assert refused(server(), [9, 1, {"leases": []}]).code is ErrorCode.MALFORMED
    assert refused(client(), [8, 1, "list", {}]).fatal
    with pytest.raises(LocalProtocolError):
        Connection(Role.SERVER).send(LeaseRequest(1, LeaseOp.LIST))


def test_hello_lease_tokens_are_checked_and_never_echoed() -> None:
    ok = Hello(HelloInfo(client="c", leases=[TOKEN]))
    assert decode(Connection(Role.SERVER), Connection(Role.CLIENT).send(ok)) == ok
    secret = "not a token but a secret-ish \x01 value"
    e = refused(Connection(Role.SERVER), [0, 0, {"version": 1, "leases": [secret]}])
    assert e.fatal
    assert e.code is ErrorCode.MALFORMED
    assert secret not in e.message
    e = refused(Connection(Role.SERVER), [0, 0, {"version": 1, "leases": [TOKEN] * 17}])
    assert e.fatal
    assert TOKEN not in e.message
    assert TOKEN not in repr(HelloInfo(leases=[TOKEN]))


def test_hello_without_leases_is_the_version_1_hello() -> None:
    """Old servers and the spec vector see the very same bytes as before leases."""
    assert Connection(Role.CLIENT).send(Hello(HelloInfo(client="agent"))) == raw(
        [0, 0, {"version": 1, "client": "agent"}])

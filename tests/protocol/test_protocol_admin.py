"""ADMIN / ADMIN_RESULT / EVENT: what each side accepts, refuses, and when EVENTs may flow."""

from __future__ import annotations

from typing import Any

import pytest
from protocol_pair import ConnectionPair, handshake

from protocol import Connection, Error, ErrorCode, LocalProtocolError, ProtocolError, Role
from protocol.admin import AdminEvent, AdminRequest, AdminResult
from protocol.codec import frame
from protocol.events import Event, FrameType, I2CRequest
from protocol.leases import LeaseOp, LeaseRequest
from protocol.virtio import I2C_FLAGS_M_RD, I2CMsg


def _body(f: list[Any]) -> bytes:
    import msgpack

    return frame(msgpack.packb(f, use_bin_type=True))


def _server_takes(f: list[Any]) -> Any:
    conn = handshake(Connection(Role.SERVER))
    (item,) = conn.receive(_body(f))
    return item


def test_admin_round_trips_through_both_roles() -> None:
    pair = ConnectionPair().handshake()
    req = AdminRequest(5, "sim.set", {"kind": "i2c", "bus": "1", "addr": 0x48,
                                      "values": {"temperature": 31.25, "mode": "oneshot"}})
    assert pair.client_sends(req) == [req]
    assert pair.server.in_flight == {5}
    res = AdminResult(5, {"values": {"temperature": 31.25}})
    assert pair.server_sends(res) == [res]
    assert pair.client.in_flight == frozenset()
    assert pair.server.in_flight == frozenset()


@pytest.mark.parametrize(("f", "code", "words"), [
    ([10, 3, "sim.get"], ErrorCode.MALFORMED, "must be [10, id, op, params]"),
    ([10, 3, 7, {}], ErrorCode.MALFORMED, "op must be a string"),
    ([10, 3, "sim.get", []], ErrorCode.MALFORMED, "params a map"),
    ([10, 3, "sim.frob", {}], ErrorCode.BAD_REQUEST, "unknown admin op 'sim.frob'"),
    ([10, 3, "sim.get", {"kind": "i2c", "bus": "1"}], ErrorCode.MALFORMED, "addr is required"),
    ([10, 3, "sim.get", {"kind": "i2c", "bus": 1, "addr": 72}], ErrorCode.MALFORMED,
     "bus must be a string"),
    ([10, 3, "sim.get", {"kind": "usb", "bus": "1", "addr": 72}], ErrorCode.BAD_REQUEST,
     "kind must be 'i2c' or 'spi'"),
    ([10, 3, "sim.get", {"kind": "i2c", "bus": "1", "addr": 0x90}], ErrorCode.BAD_REQUEST,
     "set ten_bit"),
    ([10, 3, "sim.get", {"kind": "i2c", "bus": "1", "addr": 0x48, "cs": 0}],
     ErrorCode.BAD_REQUEST, "not both"),
    ([10, 3, "sim.get", {"kind": "spi", "bus": "0", "addr": 0x48}], ErrorCode.BAD_REQUEST,
     "named by cs"),
    ([10, 3, "sim.set", {"kind": "i2c", "bus": "1", "addr": 72, "values": {}}],
     ErrorCode.BAD_REQUEST, "values is empty"),
    ([10, 3, "sim.set", {"kind": "i2c", "bus": "1", "addr": 72, "values": {"t": [1]}}],
     ErrorCode.MALFORMED, "must be a number, boolean or string"),
    ([10, 3, "sim.log", {"kind": "i2c", "bus": "1", "limit": 5000}], ErrorCode.BAD_REQUEST,
     "limit 5000 out of range 1..1000"),
    ([10, 3, "trace.stop", {}], ErrorCode.MALFORMED, "id (an integer) is required"),
    ([10, 3, "lease.release", {"lease": 5}], ErrorCode.MALFORMED, "lease must be a string"),
])
def test_a_bad_admin_frame_is_refused_with_its_id_and_the_connection_goes_on(
        f: list[Any], code: ErrorCode, words: str) -> None:
    conn = handshake(Connection(Role.SERVER))
    (item,) = conn.receive(_body(f))
    assert isinstance(item, ProtocolError)
    assert (item.code, item.request_id, item.fatal) == (code, 3, False)
    assert words in item.message
    assert conn.in_flight == frozenset()
    ok = AdminRequest(4, "sim.devices", {})
    assert conn.receive(Connection(Role.CLIENT).send(ok)) == [ok]


def test_admin_before_hello_is_handshake_required_and_fatal() -> None:
    conn = Connection(Role.SERVER)
    (item,) = conn.receive(_body([10, 1, "sim.devices", {}]))
    assert isinstance(item, ProtocolError)
    assert (item.code, item.fatal) == (ErrorCode.HANDSHAKE_REQUIRED, True)


def test_events_flow_from_the_start_answer_until_the_stop_answer() -> None:
    pair = ConnectionPair().handshake()
    pair.client_sends(AdminRequest(9, "trace.start", {"bus": "1"}))
    with pytest.raises(LocalProtocolError, match="no open subscription"):
        pair.server.send(AdminEvent(9, {"kind": "i2c"}))  # not before its answer
    pair.server_sends(AdminResult(9, {"queue": 256}))
    assert pair.client.subscriptions == pair.server.subscriptions == {9}
    ev = AdminEvent(9, {"kind": "i2c", "bus": "1"})
    assert pair.server_sends(ev) == [ev]
    # The id left flight with its answer, but the client never picks it for a new request.
    assert all(pair.client.next_id() != 9 for _ in range(20))
    with pytest.raises(LocalProtocolError, match="live subscription"):
        pair.client.send(AdminRequest(9, "sim.devices", {}))
    pair.client_sends(AdminRequest(40, "trace.stop", {"id": 9}))
    assert pair.server_sends(ev) == [ev]  # still open until the stop is answered
    pair.server_sends(AdminResult(40, {}))
    assert pair.client.subscriptions == pair.server.subscriptions == frozenset()
    with pytest.raises(LocalProtocolError):
        pair.server.send(ev)


def test_a_client_closes_on_an_event_it_did_not_subscribe_to() -> None:
    client = handshake(Connection(Role.CLIENT))
    server = handshake(Connection(Role.SERVER))
    server.receive(Connection(Role.CLIENT).send(AdminRequest(9, "trace.start", {})))
    server.send(AdminResult(9, {}))
    data = server.send(AdminEvent(9, {"kind": "i2c"}))  # for a subscription of another client
    (item,) = client.receive(data)
    assert isinstance(item, ProtocolError)
    assert item.fatal
    assert "EVENT for id 9" in item.message


def test_an_error_answer_opens_no_subscription_and_stops_none() -> None:
    pair = ConnectionPair().handshake()
    pair.client_sends(AdminRequest(9, "trace.start", {}))
    pair.server_sends(Error(9, ErrorCode.DENIED, "no admin rule"))
    assert pair.client.subscriptions == pair.server.subscriptions == frozenset()
    pair.client_sends(AdminRequest(10, "trace.start", {}))
    pair.server_sends(AdminResult(10, {}))
    pair.client_sends(AdminRequest(11, "trace.stop", {"id": 10}))
    pair.server_sends(Error(11, ErrorCode.BAD_REQUEST, "no"))
    assert pair.client.subscriptions == pair.server.subscriptions == {10}


def test_a_server_refuses_a_second_trace_start_with_a_live_subscription_id() -> None:
    server = handshake(Connection(Role.SERVER))
    peer = Connection(Role.CLIENT)
    server.receive(peer.send(AdminRequest(9, "trace.start", {})))
    server.send(AdminResult(9, {}))
    (item,) = server.receive(frame(b"\x94\x0a\x09\xabtrace.start\x80"))
    assert isinstance(item, ProtocolError)
    assert (item.code, item.request_id, item.fatal) == (ErrorCode.BAD_REQUEST, 9, False)


@pytest.mark.parametrize("request_frame", [
    AdminRequest(9, "sim.devices", {}),
    LeaseRequest(9, LeaseOp.LIST),
    I2CRequest(9, "1", (I2CMsg(0x48, I2C_FLAGS_M_RD, length=2),)),
])
def test_any_request_frame_reusing_a_live_subscription_id_is_refused(
        request_frame: Event) -> None:
    """SPEC §4.12: the id of a live subscription MUST NOT be used for another request
    frame; the server answers `bad-request` with that id and runs nothing."""
    server = handshake(Connection(Role.SERVER))
    peer = Connection(Role.CLIENT)
    server.receive(peer.send(AdminRequest(9, "trace.start", {})))
    server.send(AdminResult(9, {}))
    (item,) = server.receive(Connection(Role.CLIENT).send(request_frame))
    assert isinstance(item, ProtocolError)
    assert (item.code, item.request_id, item.fatal) == (ErrorCode.BAD_REQUEST, 9, False)
    assert "live subscription" in item.message
    assert server.in_flight == frozenset()


def test_a_client_refuses_locally_what_the_server_would_refuse_but_sends_unknown_ops() -> None:
    client = handshake(Connection(Role.CLIENT))
    with pytest.raises(LocalProtocolError, match="values"):
        client.send(AdminRequest(1, "sim.set", {"kind": "i2c", "bus": "1", "addr": 72}))
    assert client.in_flight == frozenset()
    with pytest.raises(LocalProtocolError, match=r"sim\.devices"):
        client.send(AdminRequest(1, "sim.devices", {"bus": "1", "x": object()}))
    data = client.send(AdminRequest(2, "sim.teleport", {}))  # a newer server may know it
    assert data[4:6] == bytes([0x94, FrameType.ADMIN])
    assert client.in_flight == {2}


@pytest.mark.parametrize("f", [[11, 5, []], [11, 5], [12, 9, "x"]])
def test_a_badly_shaped_answer_or_event_is_fatal_for_the_client(f: list[Any]) -> None:
    client = handshake(Connection(Role.CLIENT))
    client.send(AdminRequest(5, "sim.devices", {}))
    (item,) = client.receive(_body(f))
    assert isinstance(item, ProtocolError)
    assert item.fatal


def test_a_client_sent_admin_result_or_event_is_refused_by_the_server() -> None:
    for f in ([11, 5, {}], [12, 5, {}]):
        item = _server_takes(f)
        assert isinstance(item, ProtocolError)
        assert item.code is ErrorCode.MALFORMED
    with pytest.raises(LocalProtocolError, match="only a server sends"):
        Connection(Role.CLIENT).send(AdminResult(1, {}))
    with pytest.raises(LocalProtocolError, match="only a client sends"):
        Connection(Role.SERVER).send(AdminRequest(1, "sim.devices", {}))

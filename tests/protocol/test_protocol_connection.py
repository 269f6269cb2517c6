"""The Connection state machine: its states, who may send what, and the ids in flight."""

from __future__ import annotations

import pytest
from protocol_pair import ConnectionPair, handshake, put_in_flight, request

from protocol import (
    ChainedI2CRequest,
    Connection,
    Error,
    ErrorCode,
    Hello,
    HelloInfo,
    I2CMsg,
    I2CRequest,
    Limits,
    LocalProtocolError,
    Ping,
    ProtocolError,
    ProtocolViolation,
    Result,
    Role,
    State,
    chain,
    encode_body,
    frame,
    read,
    write,
)
from protocol.virtio import I2C_FLAGS_FAIL_NEXT


def test_a_session_moves_through_the_states_of_spec_section_6() -> None:
    pair = ConnectionPair()
    assert (pair.client.state, pair.server.state) == (State.AWAIT_WELCOME, State.AWAIT_HELLO)
    pair.handshake()
    assert (pair.client.state, pair.server.state) == (State.OPEN, State.OPEN)
    # A fatal refusal closes the receiving side; it can still send the ERROR that says why.
    (err,) = pair.server.receive(frame(encode_body(Hello(HelloInfo()))))
    assert isinstance(err, ProtocolError)
    assert err.fatal
    assert pair.server.state is State.CLOSED
    assert pair.server_sends(Error(0, err.code, err.message)) == [
        Error(0, ErrorCode.MALFORMED, "second HELLO on one connection")]
    with pytest.raises(ProtocolError, match="already failed"):
        pair.server.receive(frame(encode_body(Ping(1))))


def test_requests_pipelined_behind_hello_are_accepted_before_welcome_arrives() -> None:
    pair = ConnectionPair()
    got = pair.client_sends(Hello(HelloInfo(client="eager")), request(1))
    assert [type(e) for e in got] == [Hello, I2CRequest]
    assert pair.server_sends(Result(1, b"\x00", [], [])) == [Result(1, b"\x00", [], [])]
    assert pair.client.state is State.AWAIT_WELCOME  # answers do not need WELCOME


@pytest.mark.parametrize(("role", "event", "words"), [
    (Role.CLIENT, Result(1, b"\x00", [], []), "only a server sends answers"),
    (Role.CLIENT, Error(1, ErrorCode.INTERNAL, "x"), "only a server sends answers"),
    (Role.SERVER, Hello(HelloInfo()), "only a client sends HELLO"),
    (Role.SERVER, ChainedI2CRequest(1, "1", (write(0x48),)), "only a client sends requests"),
])
def test_each_role_sends_only_its_own_frames(role: Role, event: object, words: str) -> None:
    conn = Connection(role)
    with pytest.raises(LocalProtocolError, match=words):
        conn.send(event)  # type: ignore[arg-type]
    assert conn.in_flight == frozenset()


def test_send_refuses_what_is_not_an_event() -> None:
    with pytest.raises(TypeError, match="not a protocol event"):
        Connection(Role.CLIENT).send("hello")  # type: ignore[arg-type]


def test_both_protocol_errors_are_protocol_violations() -> None:
    with pytest.raises(ProtocolViolation):
        Connection(Role.SERVER).send(request(1))
    conn = Connection(Role.SERVER)
    (err,) = conn.receive(frame(b"\xc1"))
    assert isinstance(err, ProtocolViolation)


def test_the_ids_in_flight_are_a_snapshot_nobody_else_can_change() -> None:
    pair = ConnectionPair().handshake()
    pair.client_sends(request(7))
    ids = pair.server.in_flight
    assert ids == {7}
    with pytest.raises(AttributeError):
        ids.discard(7)  # type: ignore[attr-defined]
    assert pair.server.in_flight == {7}


def test_a_withdrawn_request_frees_its_id_on_the_server_only() -> None:
    pair = ConnectionPair().handshake()
    pair.client_sends(request(5))
    pair.server.withdraw(5)  # its transport is gone: the answer will never be written
    assert pair.server.in_flight == frozenset()
    assert pair.server.receive(pair.client.send(request(6))) == [request(6)]
    with pytest.raises(LocalProtocolError, match="only a server"):
        pair.client.withdraw(5)
    assert pair.client.in_flight == {5, 6}  # the server still answers them


def test_a_chained_request_goes_out_as_chain_would_mark_it() -> None:
    msgs = (I2CMsg(0x48, I2C_FLAGS_FAIL_NEXT), write(0x48, b"\x0f"), read(0x48, 2))
    marked = I2CRequest(3, "1", tuple(chain(msgs)), 100)
    pair = ConnectionPair().handshake()
    data = pair.client.send(ChainedI2CRequest(3, "1", msgs, 100))
    assert data == frame(encode_body(marked))
    assert pair.server.receive(data) == [marked]
    assert msgs[0].flags == I2C_FLAGS_FAIL_NEXT  # the caller's messages are untouched
    assert pair.client.in_flight == {3}


def test_a_chained_request_is_checked_against_the_peers_limits_like_any_other() -> None:
    c = handshake(Connection(Role.CLIENT), Limits(max_requests=2))
    with pytest.raises(LocalProtocolError, match="limit 2"):
        c.send(ChainedI2CRequest(1, "1", (write(0x48), write(0x48), read(0x48, 1))))
    assert c.in_flight == frozenset()


def test_the_pull_view_and_receive_share_one_state() -> None:
    """next_event decodes through receive: the handshake it sees is the same."""
    conn = Connection(Role.SERVER)
    conn.receive_data(frame(encode_body(Hello(HelloInfo()))))
    assert isinstance(conn.next_event(), Hello)
    assert conn.state is State.OPEN
    assert put_in_flight(conn, [1]).in_flight == {1}

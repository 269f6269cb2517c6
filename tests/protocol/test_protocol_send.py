"""What a Connection refuses to send: the caller's mistake is its own exception, on its
side, before a byte goes out (instead of an ERROR from the peer, or a confused client).

A client's request frame with a bus name, ``timeout_ms`` or read length every server
refuses (SPEC.md §4.3, §4.4, §10); a server's answer to a request it was never sent,
before HELLO, or after the fatal ERROR that ended the connection (§7, §9.2).
"""

from __future__ import annotations

import pytest
from protocol_pair import answering, handshake, put_in_flight

from protocol import (
    Connection,
    Error,
    ErrorCode,
    Hello,
    HelloInfo,
    I2CRequest,
    LeaseResult,
    LocalProtocolError,
    ProtocolError,
    Result,
    Role,
    SpiRequest,
    encode_body,
    frame,
)
from protocol.virtio import SpiTransfer, SpiTransferHead, read, write


def client() -> Connection:
    return handshake(Connection(Role.CLIENT))


@pytest.mark.parametrize("bus", ["", "b" * 65, b"1", 1])
def test_a_client_does_not_send_a_bus_name_every_server_refuses(bus: object) -> None:
    conn = client()
    with pytest.raises(LocalProtocolError, match="bus must be"):
        conn.send(I2CRequest(1, bus, (write(0x48),)))  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="bus must be"):
        conn.send(SpiRequest(2, bus, 0, (SpiTransfer(SpiTransferHead(), b"\x00"),)))  # type: ignore[arg-type]
    assert conn.in_flight == set()  # nothing went out, no id is taken


def test_a_bus_name_of_64_characters_goes_out() -> None:
    assert client().send(I2CRequest(1, "é" * 64, (write(0x48),)))


@pytest.mark.parametrize("timeout", [0, -1, 3_600_001, 1.5, True])
def test_a_client_does_not_send_a_timeout_out_of_range(timeout: object) -> None:
    conn = client()
    with pytest.raises(LocalProtocolError, match="timeout_ms"):
        conn.send(I2CRequest(1, "1", (write(0x48),), timeout))  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="timeout_ms"):
        conn.send(SpiRequest(2, "0", 0, (SpiTransfer(SpiTransferHead(), b"\x00"),),
                             timeout))  # type: ignore[arg-type]
    assert conn.in_flight == set()


@pytest.mark.parametrize("timeout", [None, 1, 3_600_000])
def test_timeouts_in_range_go_out(timeout: int | None) -> None:
    assert client().send(I2CRequest(1, "1", (write(0x48),), timeout))


def test_a_client_does_not_send_a_negative_read_length() -> None:
    conn = client()
    with pytest.raises(LocalProtocolError, match="negative"):
        conn.send(I2CRequest(1, "1", (write(0x50, b"\x00"), read(0x50, -1))))
    with pytest.raises(LocalProtocolError, match="negative"):
        conn.send(SpiRequest(2, "0", 0, (SpiTransfer(SpiTransferHead(), None, -4),)))
    assert conn.in_flight == set()


def test_a_server_answers_only_what_it_was_sent() -> None:
    conn = answering(7)
    for ev in (Result(8, b"\x00", [], []), Error(8, ErrorCode.UNKNOWN_BUS, "x"),
               LeaseResult(8, released=True)):
        with pytest.raises(LocalProtocolError, match="request 8 is not in flight"):
            conn.send(ev)
    assert conn.in_flight == {7}
    assert conn.send(Result(7, b"\x00", [], []))
    with pytest.raises(LocalProtocolError, match="not in flight"):  # answered already
        conn.send(Result(7, b"\x00", [], []))


def test_a_server_answers_nothing_before_hello() -> None:
    conn = Connection(Role.SERVER)
    with pytest.raises(LocalProtocolError, match="no HELLO"):
        conn.send(Result(1, b"\x00", [], []))
    with pytest.raises(LocalProtocolError, match="no HELLO"):
        conn.send(Error(1, ErrorCode.MALFORMED, "x"))
    assert conn.send(Error(0, ErrorCode.HANDSHAKE_REQUIRED, "send HELLO first"))


def test_a_refused_frame_is_owed_its_error_once() -> None:
    """A refusal's id is never in flight (§9.1), yet its ERROR must go out, once."""
    conn = handshake(Connection(Role.SERVER))
    (e,) = conn.receive(frame(encode_body(I2CRequest(77, "1", (write(0x48),), 0))))
    assert isinstance(e, ProtocolError)
    assert (e.request_id, e.fatal) == (77, False)
    assert conn.in_flight == set()
    assert conn.send(Error(77, e.code, e.message))
    with pytest.raises(LocalProtocolError, match="request 77 is not in flight"):
        conn.send(Error(77, e.code, e.message))


def test_after_its_fatal_error_a_server_sends_nothing() -> None:
    """Answers to frames read before the fatal one may still go out; after the fatal
    ERROR that ends the connection, nothing does (§9.2)."""
    conn = put_in_flight(handshake(Connection(Role.SERVER)), [5])
    items = conn.receive(frame(encode_body(I2CRequest(5, "1", (write(0x48),)))))
    assert [(type(e), getattr(e, "fatal", None)) for e in items] == [(ProtocolError, True)]
    assert conn.closed
    assert conn.send(Result(5, b"\x00", [], []))  # read before the duplicate: answered
    assert conn.send(Error(0, ErrorCode.DUPLICATE_ID, "x"))
    with pytest.raises(LocalProtocolError, match="ended with a fatal ERROR"):
        conn.send(Error(0, ErrorCode.MALFORMED, "again"))


def test_refusals_read_with_the_fatal_one_are_all_answered_in_order() -> None:
    """An empty frame (non-fatal, id 0), a frame refused with its id, then a second
    HELLO (fatal) in one read: every ERROR goes out, the fatal one last."""
    conn = handshake(Connection(Role.SERVER))
    hello = frame(encode_body(Hello(HelloInfo(client="again"))))
    bad = frame(encode_body(I2CRequest(9, "1", (write(0x48),), 0)))
    items = conn.receive(frame(b"") + bad + hello)
    assert [(e.request_id, e.fatal) for e in items if isinstance(e, ProtocolError)] == [
        (0, False), (9, False), (0, True)]
    for e in items:
        assert isinstance(e, ProtocolError)
        assert conn.send(Error(e.request_id, e.code, e.message))
    with pytest.raises(LocalProtocolError, match="ended with a fatal ERROR"):
        conn.send(Error(0, ErrorCode.MALFORMED, "again"))

"""A RESULT that does not fit the request it answers is a fatal server violation
(SPEC.md §4.5: one status byte per request, one read entry per read request, holding
exactly the bytes asked for when its status is OK and none otherwise; §9.3: a client
closes on any violation).  Found by an outside tester: the clients had returned such
answers as data (an smbus2 drop-in read_word_data gave 0 for an empty entry)."""

from __future__ import annotations

import msgpack
import pytest
from protocol_pair import handshake

from protocol import (
    Connection,
    ErrorCode,
    I2CRequest,
    ProtocolError,
    Result,
    Role,
    SpiRequest,
    read,
    write,
)
from protocol.codec import frame
from protocol.fastpath import ClientConnection
from protocol.virtio import SpiTransfer, SpiTransferHead

REG_READ = (write(0x48, b"\x0f"), read(0x48, 2))


def answer(rid: int, status: bytes, reads: list[bytes]) -> bytes:
    return frame(msgpack.packb([4, rid, status, reads, []]))


def sent(conn: ClientConnection, rid: int) -> ClientConnection:
    conn.send_i2c(rid, "1", REG_READ, None, True)  # the clients' path, cached after once
    return conn


@pytest.mark.parametrize(("status", "reads", "why"), [
    (b"\x00", [b"\x01\x17"], "1 status bytes for 2 requests"),
    (b"\x00\x00\x00", [b"\x01\x17"], "3 status bytes for 2 requests"),
    (b"\x00\x00", [], "0 read entries for 1 reads"),
    (b"\x00\x00", [b"\x01\x17", b"\x00"], "2 read entries for 1 reads"),
    (b"\x00\x00", [b"\x01"], "holds 1 bytes, not 2"),
    (b"\x00\x00", [b"\x01\x17\x00"], "holds 3 bytes, not 2"),
    (b"\x00\x00", [b""], "holds 0 bytes, not 2"),
    (b"\x00\x01", [b"\x01\x17"], "holds 2 bytes, not 0"),  # a failed read carries no data
])
def test_a_result_that_does_not_fit_its_request_is_fatal(status: bytes, reads: list[bytes],
                                                         why: str) -> None:
    for repeat in (False, True):  # the first send (general encoder) and a cached one
        ping_first = frame(msgpack.packb([6, 7]))  # a PING first: the general decoder's read
        for data in (answer(2, status, reads), ping_first + answer(2, status, reads)):
            c = handshake(ClientConnection())
            assert isinstance(c, ClientConnection)
            if repeat:
                sent(c, 1)
                c.receive(answer(1, b"\x00\x00", [b"\x01\x17"]))
            sent(c, 2)
            items = c.receive(data + answer(2, b"\x00\x00", [b"\x01\x17"]))
            err = items[-1]
            assert isinstance(err, ProtocolError)
            assert err.fatal
            assert err.code is ErrorCode.MALFORMED
            assert why in err.message
            assert not any(isinstance(i, Result) for i in items)
            assert c.closed


def test_results_that_fit_are_taken_whatever_their_outcome() -> None:
    conn = handshake(ClientConnection())
    assert isinstance(conn, ClientConnection)
    sent(conn, 1)
    sent(conn, 2)
    conn.send(I2CRequest(3, "1", (read(0x48, 0), write(0x48, b"\x01"))))  # a 0-byte read
    head = SpiTransferHead(chip_select_id=0)
    conn.send(SpiRequest(4, "0", 0, (SpiTransfer(head, b"\x9f", 0),
                                     SpiTransfer(head, None, 3)), None))
    items = conn.receive(answer(1, b"\x00\x00", [b"\x01\x17"])
                         + answer(2, b"\x01\x01", [b""])  # failed: empty entries
                         + answer(3, b"\x00\x00", [b""])
                         + answer(4, b"\x00\x00", [b"\xef\x40\x16"]))
    assert [type(i) for i in items] == [Result] * 4
    assert not conn.closed


@pytest.mark.parametrize("reads", [[], [b"\x01"], [b"\x01\x17", b""]])
def test_the_sans_io_connection_itself_refuses_a_misfit(reads: list[bytes]) -> None:
    """A third party driving ``Connection(Role.CLIENT)`` directly (not busbridge's own
    clients) gets the same check: it lives in the state machine, not in a client."""
    for spi in (False, True):
        c = handshake(Connection(Role.CLIENT))
        head = SpiTransferHead(chip_select_id=0)
        c.send(SpiRequest(5, "0", 0, (SpiTransfer(head, b"\x9f", 0),
                                      SpiTransfer(head, None, 2)), None) if spi
               else I2CRequest(5, "1", REG_READ))
        items = c.receive(answer(5, b"\x00\x00", reads))
        assert len(items) == 1
        err = items[0]
        assert isinstance(err, ProtocolError)
        assert err.fatal
        assert err.code is ErrorCode.MALFORMED
        assert "RESULT of request 5 does not fit" in err.message
        assert c.closed


def test_an_error_answer_forgets_the_shape() -> None:
    """An ERROR answers the request; a later request with the same id has its own shape."""
    c = handshake(Connection(Role.CLIENT))
    c.send(I2CRequest(5, "1", REG_READ))
    assert [type(i).__name__ for i in c.receive(frame(msgpack.packb(
        [5, 5, "no-such-bus", "no bus 1"])))] == ["Error"]
    c.send(I2CRequest(5, "1", (write(0x48, b"\x01"),)))  # one write: no read entry
    assert [type(i) for i in c.receive(answer(5, b"\x00", []))] == [Result]
    assert not c.closed

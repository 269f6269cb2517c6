"""Every error a client raises is a BusBridgeError and also the built-in type callers catch."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from bridge.buses.sim import RegisterMapDevice
from bridge.client import (
    AsyncClient,
    BlockingClient,
    BusBridgeError,
    Client,
    ClientAuth,
    ConnectionLost,
    ConnectTimeout,
    InvalidRequest,
    RequestTimeout,
)
from protocol import read, write


@pytest.fixture
def silent_listener() -> Iterator[tuple[str, int]]:
    """A TCP port on 127.0.0.1 that accepts connections (the kernel does) and never speaks."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()


def test_a_stalled_answer_is_a_request_timeout_for_both_sync_clients(server_thread: Any) -> None:
    server_thread.board.i2c["2"].add(
        RegisterMapDevice(0x31, value_bits=8, registers={0: 1}, stall_s=1.5))
    for cls in (BlockingClient, Client):
        with cls.from_url(server_thread.url, timeout=0.2) as c:
            with pytest.raises(RequestTimeout) as slow:
                c.transfer("2", [write(0x31, [0x00]), read(0x31, 1)])
            assert isinstance(slow.value, BusBridgeError)
            assert isinstance(slow.value, TimeoutError)
            assert slow.value.errno == errno.ETIMEDOUT


async def test_a_request_over_the_limit_is_refused_before_sending(client: AsyncClient) -> None:
    with pytest.raises(InvalidRequest) as big:
        await client.transfer("1", [read(0x48, 10**6)])
    assert isinstance(big.value, BusBridgeError)
    assert isinstance(big.value, ValueError)
    with pytest.raises(InvalidRequest):
        await client.i2c_raw("1", [(b"\x00", 1)])  # an out_hdr is 4 bytes
    assert await client.ping() > 0  # nothing was sent: the connection is fine


def test_bad_settings_are_invalid_requests() -> None:
    with pytest.raises(InvalidRequest, match="port"):
        Client.from_url("lab-pi:seventy")
    with pytest.raises(InvalidRequest, match="token"):
        ClientAuth(token="")


async def test_a_server_that_never_welcomes_is_a_connect_timeout(
        silent_listener: tuple[str, int]) -> None:
    host, port = silent_listener
    with pytest.raises(ConnectTimeout) as asyncio_side:
        await AsyncClient.connect(host, port, timeout=0.3)
    with pytest.raises(ConnectTimeout) as blocking_side:
        BlockingClient(host, port, timeout=0.3)
    for e in (asyncio_side.value, blocking_side.value):
        assert isinstance(e, BusBridgeError)
        assert isinstance(e, TimeoutError)
        assert e.errno == errno.ETIMEDOUT
        assert "WELCOME" in str(e)


@pytest.mark.parametrize("cls", [Client, BlockingClient])
def test_every_call_on_a_closed_client_is_connection_lost(
        server_thread: Any, cls: type[Client] | type[BlockingClient]) -> None:
    c = cls.from_url(server_thread.url)
    c.close()
    with pytest.raises(ConnectionLost, match="not connected"):
        c.transfer("1", [read(0x48, 1)])
    with pytest.raises(ConnectionLost, match="not connected"):
        c.ping()
    if isinstance(c, Client):
        with pytest.raises(ConnectionLost, match="not connected"):
            c.leases()


def test_what_a_caller_builds_wrong_is_an_invalid_request_before_anything_is_sent(
    server_thread: Any,
) -> None:
    import bridge.client as bc

    eeprom = server_thread.board.i2c["1"]
    before = len(eeprom.log_snapshot())
    bad_builds = [
        lambda: bc.write(0x50, [0x00, 256]),   # not a byte
        lambda: bc.read(0x50, -1),             # a negative length
        lambda: bc.spi_xfer([0x9F, 300]),      # not a byte either
        lambda: bc.parse_address("host:99999"),
    ]
    for build in bad_builds:
        with pytest.raises(InvalidRequest) as e:
            build()
        assert isinstance(e.value, ValueError)
        assert isinstance(e.value, BusBridgeError)
    for cls in (BlockingClient, Client):
        with pytest.raises(InvalidRequest, match="timeout"):
            cls.from_url(server_thread.url, timeout=0)
        with pytest.raises(InvalidRequest, match="client"):
            cls.from_url(server_thread.url, name="x" * 300)  # HELLO allows 256
        with cls.from_url(server_thread.url) as c:
            with pytest.raises(InvalidRequest, match="timeout"):
                c.transfer("1", [bc.write(0x50, [0x00, 0x00, 0xAA])], timeout=-1)
            assert c.ping() > 0
    assert len(eeprom.log_snapshot()) == before  # nothing of the above reached the bus


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), 0, -1.0])
def test_a_timeout_that_is_not_a_finite_positive_number_is_an_invalid_request(
        server_thread: Any, bad: Any) -> None:
    """``inf`` used to escape as OverflowError from the socket layer."""
    with BlockingClient(server_thread.host, server_thread.port) as c:
        with pytest.raises(InvalidRequest):
            c.transfer("1", [write(0x48, [0x0F]), read(0x48, 2)], timeout=bad)
        assert c.transfer("1", [write(0x48, [0x0F]), read(0x48, 2)]) == [b"\x01\x17"]
    with pytest.raises(InvalidRequest):
        BlockingClient(server_thread.host, server_thread.port, timeout=bad)


def test_a_request_deadline_is_never_sooner_than_asked() -> None:
    from bridge.client.requests import _server_ms
    assert _server_ms(0.0015) == 2  # was truncated to 1 ms
    assert _server_ms(0.07) == 70  # 0.07 * 1000 is 70.00000000000001 in binary
    assert _server_ms(1e-9) == 1
    assert _server_ms(2.0) == 2000

"""BlockingClient: the drop-in layers' client, I/O on the caller's thread, over real TCP."""

from __future__ import annotations

import errno
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import start_server_thread, stop_server_thread

from bridge.buses.sim import RegisterMapDevice
from bridge.client import ClientAuth, ConnectionLost, RemoteError, TransferError, spi_xfer
from bridge.client.blocking import BlockingClient
from bridge.config import load_board
from bridge.server import LimitSettings, ServerPolicy
from bridge.server.auth import TlsSettings, build_server_security
from protocol import ErrorCode, read, write

TMP117 = 0x48


def test_register_read_eeprom_round_trip_and_flash_id(server_thread: Any) -> None:
    with BlockingClient.from_url(server_thread.url) as c:
        assert c.welcome.board == server_thread.board.name
        (ident,) = c.transfer("1", [write(TMP117, [0x0F]), read(TMP117, 2)])
        assert ident == b"\x01\x17"
        c.transfer("1", [write(0x50, [0x00, 0x20, 0xAB, 0xCD])])
        (back,) = c.transfer("1", [write(0x50, [0x00, 0x20]), read(0x50, 2)])
        assert back == b"\xab\xcd"
        assert c.xfer("0", 0, b"\x9f\x00\x00\x00") == b"\xff\xef\x40\x16"
        assert c.ping() > 0


def test_bus_errors_name_the_bus_and_address_and_the_connection_stays_usable(
        server_thread: Any) -> None:
    with BlockingClient.from_url(server_thread.url) as c:
        with pytest.raises(TransferError) as nack:
            c.transfer("1", [write(0x51, [0x00])])
        assert nack.value.errno == errno.ENXIO
        assert "i2c bus 1, message 0 (w1@0x51)" in str(nack.value)
        with pytest.raises(RemoteError) as unknown:
            c.transfer("7", [read(TMP117, 1)])
        assert unknown.value.code is ErrorCode.UNKNOWN_BUS
        with pytest.raises(TransferError) as param:
            c.spi_transfer("0", 0, [spi_xfer(b"\x00", speed_hz=60_000_000)])
        assert param.value.errno == errno.EINVAL
        with pytest.raises(ValueError, match="limit"):  # refused before anything is sent
            c.transfer("1", [read(TMP117, 10**6)])
        assert c.transfer("1", [write(TMP117, [0x0F]), read(TMP117, 2)]) == [b"\x01\x17"]


def test_a_late_answer_is_dropped_and_nothing_is_resent(server_thread: Any) -> None:
    bus = server_thread.board.i2c["2"]
    stalling = RegisterMapDevice(0x30, value_bits=8, registers={0: 0x5A}, stall_s=0.6)
    bus.add(stalling)
    # The client waits 0.2 s; the server (deadline 1 s) answers after the 0.6 s stall.
    with BlockingClient.from_url(server_thread.url, timeout=0.2) as c:
        seq0 = bus.log[-1].seq if bus.log else 0
        with pytest.raises(TimeoutError) as slow:
            c.transfer("2", [write(0x30, [0x00]), read(0x30, 1)])
        assert slow.value.errno == errno.ETIMEDOUT
        assert not isinstance(slow.value, TransferError)  # the client gave up, not the bus
        assert "not re-sent" in str(slow.value)
        stalling.stall_s = 0.0
        time.sleep(0.8)  # the stalled answer arrives in the meantime: it must be dropped
        assert c.transfer("1", [write(TMP117, [0x0F]), read(TMP117, 2)]) == [b"\x01\x17"]
    ran = [e for e in bus.log_snapshot() if e.seq > seq0 and e.msgs[0].addr == 0x30]
    assert len(ran) == 1  # the timed-out request ran once, never again


def test_threads_share_one_client_one_request_at_a_time(server_thread: Any) -> None:
    wrong: list[object] = []
    with BlockingClient.from_url(server_thread.url) as c:
        def reader(reg: int, want: bytes) -> None:
            for _ in range(100):
                got = c.transfer("1", [write(TMP117, [reg]), read(TMP117, 2)])
                if got != [want]:
                    wrong.append(got)

        ts = [threading.Thread(target=reader, args=(0x0F, b"\x01\x17")) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
    assert wrong == []


def test_a_server_goodbye_is_seen_between_calls() -> None:
    lim = LimitSettings(idle_timeout_s=0.2)
    running, t = start_server_thread(load_board(None), policy=ServerPolicy(limit_settings=lim))
    try:
        c = BlockingClient.from_url(running.url)
        assert c.connected
        deadline = time.monotonic() + 5
        while c.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not c.connected  # noticed without a request, so a drop-in can reconnect
        with pytest.raises(ConnectionLost, match="idle-timeout"):
            c.transfer("1", [read(TMP117, 1)])
    finally:
        stop_server_thread(running, t)


def test_tls_with_the_servers_ca(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "server.pem"))
    pem = str(tmp_path / "server.pem")
    sec = build_server_security(TlsSettings(cert=pem, key=pem), [], False)
    running, t = start_server_thread(load_board(None), policy=ServerPolicy(security=sec))
    try:
        with BlockingClient(running.host, running.port,
                            auth=ClientAuth(cafile=str(tmp_path / "ca.pem"))) as c:
            assert c.transfer("1", [write(TMP117, [0x0F]), read(TMP117, 2)]) == [b"\x01\x17"]
        with pytest.raises(ssl.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
            BlockingClient(running.host, running.port, auth=ClientAuth(tls=True))
    finally:
        stop_server_thread(running, t)

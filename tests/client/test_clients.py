"""What the clients add over the wire, against a real server on 127.0.0.1: bus errors
raised with the board's errno, the raw virtio level, lost connections, threads
sharing one Client, and TLS/token settings taken from the environment."""

from __future__ import annotations

import asyncio
import errno
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Running, start_server_thread, stop_server_thread

from bridge.client import AsyncClient, Client, ClientAuth, ConnectionLost, TransferError
from bridge.config import Board
from bridge.server import Server, ServerPolicy
from bridge.server.settings import LimitSettings
from protocol import I2C_FLAGS_FAIL_NEXT, read, write

TMP117 = 0x48
ABSENT = 0x51
TOKEN = "tok-" + "x" * 40


async def test_convenient_transfer_raises_oserror_with_board_errno(client: AsyncClient) -> None:
    with pytest.raises(TransferError) as ei:
        await client.transfer("1", [write(ABSENT, [0]), read(ABSENT, 1)])
    assert isinstance(ei.value, OSError)
    assert ei.value.errno == errno.ENXIO
    assert "0x51" in str(ei.value)
    assert "bus 1" in str(ei.value)


async def test_raw_out_hdr_level(client: AsyncClient) -> None:
    hdr_w = struct.pack("<HHI", TMP117 << 1, 0, I2C_FLAGS_FAIL_NEXT)
    hdr_r = struct.pack("<HHI", TMP117 << 1, 0, 0x2)
    result = await client.i2c_raw("1", [(hdr_w, b"\x0f"), (hdr_r, 2)])
    assert result.status == b"\x00\x00"
    assert result.reads == [b"\x01\x17"]


async def test_lost_connection_fails_in_flight_requests(
    server: Server, board: Board
) -> None:
    c = await AsyncClient.connect(server.host, server.port)
    board.i2c["1"].device(TMP117).stall_s = 0.3
    try:
        fut = asyncio.ensure_future(c.i2c("1", [write(TMP117)]))
        await asyncio.sleep(0.05)
        for s in list(server.sessions):
            s.transport.abort()
        with pytest.raises(ConnectionLost, match="not re-sent"):
            await fut
        with pytest.raises(ConnectionLost):
            await c.i2c("1", [write(TMP117)])
    finally:
        board.i2c["1"].device(TMP117).stall_s = 0
        await c.close()
    await asyncio.sleep(0.4)


def test_sync_client_from_threads(server_thread: object) -> None:
    url = server_thread.url  # type: ignore[attr-defined]
    with Client.from_url(url) as c:
        assert c.transfer("1", [write(TMP117, [0x0F]), read(TMP117, 2)]) == [b"\x01\x17"]
        assert c.xfer(0, 1, b"\x01\x02\x03") == b"\x01\x02\x03"
        assert c.ping() < 1.0


def test_client_auth_from_env_reads_the_token_file(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    auth = ClientAuth.from_env({"BUSBRIDGE_TOKEN_FILE": str(f), "BUSBRIDGE_TLS_CA": "/ca.pem"})
    assert (auth.token, auth.cafile, auth.uses_tls) == (TOKEN, "/ca.pem", True)
    assert auth.env()["BUSBRIDGE_TOKEN"] == TOKEN


def test_a_client_left_open_is_closed_before_the_interpreter_ends(server_thread: Running) -> None:
    """A script that never closes its Client: the loop's thread is stopped at exit (left
    running, a timer of it fired during the C library's exit handlers after Python was
    finalized, and the process died of SIGSEGV about once in 100 runs)."""
    program = (
        "import atexit, threading\n"
        "def check():  # registered first, so it runs after the client's own exit hook\n"
        "    alive = [t.name for t in threading.enumerate() if t.name == 'busbridge-client']\n"
        "    print('loop threads left:', len(alive))\n"
        "atexit.register(check)\n"
        "from bridge.client import Client\n"
        f"c = Client('127.0.0.1', {server_thread.port})\n"
        "print('leases:', len(c.leases()))\n"
    )
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["leases: 0", "loop threads left: 0"]


async def test_more_concurrent_requests_than_the_server_allows_in_flight_all_succeed(
        board: Board) -> None:
    """SPEC §10: a client must not exceed the server's max_in_flight.  20 transfers at
    once on a server that holds 4 per connection, behind a device that stalls: the client
    holds back the rest and sends them as answers make room (it used to send all 20, and
    16 came back limit-exceeded)."""
    policy = ServerPolicy(limit_settings=LimitSettings(max_in_flight=4))
    running, t = start_server_thread(board, policy=policy)
    dev = board.i2c["1"].device(TMP117)
    try:
        c = await AsyncClient.connect(running.host, running.port, timeout=60)
        try:
            dev.stall_s = 0.01  # type: ignore[attr-defined]
            reads = await asyncio.gather(*[
                c.transfer("1", [write(TMP117, [0x0F]), read(TMP117, 2)]) for _ in range(20)])
            dev.stall_s = 0  # type: ignore[attr-defined]
            assert reads == [[b"\x01\x17"]] * 20
            assert c.conn.in_flight == frozenset()
        finally:
            await c.close()
    finally:
        dev.stall_s = 0  # type: ignore[attr-defined]
        stop_server_thread(running, t)

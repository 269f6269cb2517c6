"""Server behaviour over real TCP on 127.0.0.1, against the default simulated board."""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
import time

import msgpack
import pytest

from bridge.client import AsyncClient, RemoteError, TransferError, spi_xfer
from bridge.config import Board
from bridge.server import Server
from protocol import (
    ErrorCode,
    I2CMsg,
    I2CStatus,
    SpiResult,
    chain,
    read,
    write,
)

TMP117 = 0x48
THIGH = 0x02
TLOW = 0x03
ABSENT = 0x51


async def read_reg(client: AsyncClient, reg: int, bus: str = "1", addr: int = TMP117) -> int:
    (data,) = await client.transfer(bus, [write(addr, [reg]), read(addr, 2)])
    return int.from_bytes(data, "big")


async def test_register_read_returns_device_id(client: AsyncClient) -> None:
    assert await read_reg(client, 0x0F) == 0x0117


async def test_welcome_lists_the_default_board(client: AsyncClient) -> None:
    w = client.welcome
    assert w is not None
    assert {b.name for b in w.i2c} == {"1", "2"}
    spi = w.spi_bus("0")
    assert spi is not None
    assert spi.config.max_freq_hz == 50_000_000


async def test_nack_mid_chain_fails_rest_and_later_writes_never_reach_the_device(
    client: AsyncClient,
) -> None:
    before_hi = await read_reg(client, THIGH)
    before_lo = await read_reg(client, TLOW)
    new_hi = before_hi ^ 0x0100
    msgs = chain([
        write(TMP117, [THIGH, new_hi >> 8, new_hi & 0xFF]),   # runs
        write(TMP117, [0x0F]),
        read(TMP117, 2),                                       # runs: reads the ID
        read(ABSENT, 1),                                       # NACK
        write(TMP117, [TLOW, 0x12, 0x34]),                     # must not run
    ])
    result = await client.i2c("1", msgs)
    assert list(result.status) == [I2CStatus.OK, I2CStatus.OK, I2CStatus.OK,
                                   I2CStatus.ERR, I2CStatus.ERR]
    assert result.reads == [b"\x01\x17", b""]
    (failure,) = result.failures
    assert failure.index == 3
    assert failure.errno == errno.ENXIO
    assert "i2c bus 1" in failure.message
    assert "0x51" in failure.message
    assert await read_reg(client, THIGH) == new_hi
    assert await read_reg(client, TLOW) == before_lo


async def test_independent_chains_in_one_frame_run_in_order(client: AsyncClient) -> None:
    msgs = [
        *chain([write(ABSENT, [0]), write(TMP117, [TLOW, 0x0A, 0x0B])]),  # fails as a whole
        *chain([write(TMP117, [0x0F]), read(TMP117, 2)]),                # still runs
    ]
    result = await client.i2c("1", msgs)
    assert list(result.status) == [1, 1, 0, 0]
    assert result.reads == [b"\x01\x17"]
    assert await read_reg(client, TLOW) != 0x0A0B


async def test_zero_length_probe_and_quick_read(client: AsyncClient) -> None:
    present = await client.i2c("1", [write(TMP117)])
    absent = await client.i2c("1", [write(ABSENT)])
    quick_read = await client.i2c("1", [read(TMP117, 0)])
    assert present.status == b"\x00"
    assert absent.status == b"\x01"
    assert absent.failures[0].errno == errno.ENXIO
    assert quick_read.status == b"\x00"
    assert quick_read.reads == [b""]


async def test_ten_bit_address(client: AsyncClient, board: Board) -> None:
    ten = [d for d in board.i2c["2"].devices() if d.ten_bit]
    assert ten, "default board has a 10-bit device on bus 2"
    addr = ten[0].address
    ok = await client.i2c("2", [I2CMsg(addr, 0, b"", 0, True)])
    assert ok.status == b"\x00"
    # The same number as a 7-bit address is a different device (absent).
    if addr <= 0x7F:
        assert (await client.i2c("2", [write(addr)])).status == b"\x01"
    miss = await client.i2c("2", [I2CMsg(addr ^ 0x100, 0, b"", 0, True)])
    assert miss.status == b"\x01"


async def test_two_clients_hammering_one_bus_never_split_chains(server: Server) -> None:
    """Each chain writes a value and reads it back; an interleaved chain would read another's."""

    async def hammer(tag: int) -> None:
        c = await AsyncClient.connect(server.host, server.port)
        try:
            async def one(i: int) -> None:
                value = (tag << 12) | i
                # 450 chains queue on one bus: the fixture's 1 s deadline is for one
                # request, not for the whole queue on a busy machine.
                (back,) = await c.transfer("1", [
                    write(TMP117, [THIGH, value >> 8, value & 0xFF]),
                    write(TMP117, [THIGH]),
                    read(TMP117, 2),
                ], timeout=60)
                assert int.from_bytes(back, "big") == value

            await asyncio.gather(*(one(i) for i in range(150)))
        finally:
            await c.close()

    await asyncio.gather(hammer(1), hammer(2), hammer(3))
    log = list(server.board.i2c["1"].log)
    assert log, "the simulated bus logs its transactions"


async def test_one_clients_requests_to_a_bus_complete_in_order(client: AsyncClient) -> None:
    order: list[int] = []

    async def one(i: int) -> None:
        await client.transfer("1", [write(TMP117, [TLOW, 0, i])])
        order.append(i)

    await asyncio.gather(*(one(i) for i in range(64)))
    assert order == list(range(64))
    assert await read_reg(client, TLOW) == 63


async def test_buses_run_concurrently_and_one_bus_is_serialised(
    client: AsyncClient, board: Board
) -> None:
    board.i2c["1"].device(TMP117).stall_s = 0.4
    try:
        t0 = time.monotonic()
        slow = asyncio.ensure_future(client.i2c("1", [write(TMP117)]))
        await asyncio.sleep(0.05)
        other_bus = await client.i2c("2", [write(0x18)])
        t_other = time.monotonic() - t0
        same_bus = await client.i2c("1", [write(0x50)])
        t_same = time.monotonic() - t0
        assert (await slow).status == b"\x00"
    finally:
        board.i2c["1"].device(TMP117).stall_s = 0
    assert other_bus.status == b"\x00"
    assert t_other < 0.3
    assert same_bus.status == b"\x00"
    assert t_same >= 0.35


async def test_deadline_turns_a_stalled_device_into_an_error(
    client: AsyncClient, board: Board
) -> None:
    dev = board.i2c["1"].device(TMP117)
    # Generous on a busy machine: the answers must come well before the stall ends.
    stall = dev.stall_s = 5.0
    try:
        t0 = time.monotonic()
        stuck = asyncio.ensure_future(client.i2c("1", [write(TMP117)], timeout=1.0))
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(
            client.i2c("1", [write(TMP117, [TLOW, 0x77, 0x77])], timeout=1.0))
        r1, r2 = await asyncio.gather(stuck, queued)
        assert time.monotonic() - t0 < stall  # answered while the device still stalls
    finally:
        dev.stall_s = 0
    assert r1.status == b"\x01"
    assert r1.failures[0].errno == errno.ETIMEDOUT
    assert "unknown" in r1.failures[0].message
    assert r2.status == b"\x01"
    assert r2.failures[0].errno == errno.ETIMEDOUT
    assert "never" in r2.failures[0].message
    # The stalled one finishes; then the bus works again and the write never ran.
    await asyncio.sleep(stall)
    (data,) = await client.transfer("1", [write(TMP117, [TLOW]), read(TMP117, 2)], timeout=30.0)
    assert int.from_bytes(data, "big") != 0x7777


async def test_spi_flash_jedec_id(client: AsyncClient) -> None:
    rx = await client.xfer("0", 0, b"\x9f\x00\x00\x00", speed_hz=1_000_000)
    assert rx[1:] == b"\xef\x40\x16"


async def test_spi_param_err_runs_nothing_of_the_message(client: AsyncClient) -> None:
    result = await client.spi("0", 0, [
        spi_xfer(b"\x06"),                                   # WREN: valid, must not run
        spi_xfer(b"\x00", speed_hz=80_000_000),              # above the 50 MHz max
    ])
    assert list(result.status) == [SpiResult.TRANS_ERR, SpiResult.PARAM_ERR]
    assert result.failures[0].index == 1
    assert "freq" in result.failures[0].message
    (status,) = await client.spi_transfer("0", 0, [spi_xfer(b"\x05", 0), spi_xfer(None, 1)])
    assert status[0] & 0x02 == 0, "WREN must not have reached the flash"


async def test_spi_param_err_has_one_failure_per_invalid_transfer(client: AsyncClient) -> None:
    """SPEC §4.5 (vector result-spi-param-err-two): each invalid transfer gets its own
    entry, in index order; the valid one, not run, gets TRANS_ERR and none."""
    result = await client.spi("0", 0, [
        spi_xfer(b"\x00\x00", bits_per_word=12),               # not in the mask
        spi_xfer(b"\x06"),                                    # WREN: valid, must not run
        spi_xfer(b"\x00", speed_hz=80_000_000),               # above the 50 MHz max
    ])
    assert list(result.status) == [SpiResult.PARAM_ERR, SpiResult.TRANS_ERR,
                                   SpiResult.PARAM_ERR]
    assert [(f.index, f.errno) for f in result.failures] == [(0, errno.EINVAL),
                                                             (2, errno.EINVAL)]
    assert "bits_per_word 12" in result.failures[0].message
    assert "freq" in result.failures[1].message


async def test_spi_param_err_answer_keeps_per_bus_order(
    client: AsyncClient, board: Board
) -> None:
    done: list[str] = []
    board.spi["0"].device(1).stall_s = 0.2
    try:
        async def first() -> None:
            await client.spi("0", 1, [spi_xfer(b"\x01")])
            done.append("valid")

        async def second() -> None:
            result = await client.spi("0", 1, [spi_xfer(b"\x01", bits_per_word=7)])
            assert result.status == bytes([SpiResult.PARAM_ERR])
            done.append("param_err")

        await asyncio.gather(first(), second())
    finally:
        board.spi["0"].device(1).stall_s = 0
    assert done == ["valid", "param_err"]


async def test_spi_bad_chip_select_is_param_err(client: AsyncClient) -> None:
    result = await client.spi("0", 7, [spi_xfer(b"\x9f\x00")])
    assert result.status == bytes([SpiResult.PARAM_ERR])
    with pytest.raises(TransferError) as ei:
        await client.spi_transfer("0", 7, [spi_xfer(b"\x9f\x00")])
    assert ei.value.errno == errno.EINVAL


async def test_spi_bus_failure_is_trans_err(client: AsyncClient, board: Board) -> None:
    dev = board.spi["0"].device(1)
    dev.fail = True
    try:
        result = await client.spi("0", 1, [spi_xfer(b"\x01\x02"), spi_xfer(b"\x03")])
    finally:
        dev.fail = False
    assert list(result.status) == [SpiResult.TRANS_ERR, SpiResult.TRANS_ERR]
    assert result.failures
    assert result.failures[0].errno == errno.EIO
    assert await client.xfer("0", 1, b"\x55\xaa") == b"\x55\xaa"


async def test_unknown_bus_is_a_precise_error_and_the_connection_survives(
    client: AsyncClient,
) -> None:
    with pytest.raises(RemoteError) as ei:
        await client.i2c("9", [write(TMP117)])
    assert ei.value.code is ErrorCode.UNKNOWN_BUS
    assert "'9'" in ei.value.message
    assert "'1'" in ei.value.message
    assert await read_reg(client, 0x0F) == 0x0117


def _frame(obj: object) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


def _recv_frame(sock: socket.socket) -> list[object]:
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        assert chunk, "connection closed before a frame"
        head += chunk
    n = int.from_bytes(head, "big")
    body = b""
    while len(body) < n:
        body += sock.recv(n - len(body))
    out = msgpack.unpackb(body)
    assert isinstance(out, list)
    return out


def _raw_connect(server: Server) -> socket.socket:
    s = socket.create_connection((server.host, server.port), timeout=5)
    s.sendall(_frame([0, 0, {"version": 1, "client": "raw-test"}]))
    assert _recv_frame(s)[0] == 1  # WELCOME
    return s


async def test_over_limit_frame_closes_only_that_connection(
    server: Server, client: AsyncClient
) -> None:
    def attack() -> tuple[list[object], bytes]:
        s = _raw_connect(server)
        s.sendall((0x7FFF_FFFF).to_bytes(4, "big") + b"\x00" * 64)
        err = _recv_frame(s)
        rest = s.recv(100)
        s.close()
        return err, rest

    task = asyncio.get_running_loop().run_in_executor(None, attack)
    reads = [await read_reg(client, 0x0F) for _ in range(20)]
    err, rest = await task
    assert err[0] == 5
    assert err[2] == "frame-too-large"
    assert rest == b"", "the server closed the offending connection"
    assert reads == [0x0117] * 20
    assert await read_reg(client, 0x0F) == 0x0117


async def test_malformed_and_invalid_frames_get_errors_and_the_connection_goes_on(
    server: Server,
) -> None:
    def probe() -> list[list[object]]:
        s = _raw_connect(server)
        out = []
        body = b"\x95\x02\x07\xc1"  # array header, type, id 7, then an invalid byte
        s.sendall(len(body).to_bytes(4, "big") + body)
        out.append(_recv_frame(s))
        hdr = struct.pack("<HHI", 0x48 << 1, 0, 0x80)  # reserved flag bit
        s.sendall(_frame([2, 8, "1", [[hdr, b""]], None]))
        out.append(_recv_frame(s))
        hdr = struct.pack("<HHI", 0x48 << 1, 0, 0x2)
        s.sendall(_frame([2, 9, "1", [[hdr, 100_000]], None]))  # over-long read
        out.append(_recv_frame(s))
        s.sendall(_frame([2, 10, "1", [[struct.pack("<HHI", 0x48 << 1, 0, 0), b"\x0f"],
                                       [hdr, 2]], None]))
        out.append(_recv_frame(s))
        s.close()
        return out

    malformed, reserved, too_long, ok = await asyncio.get_running_loop().run_in_executor(
        None, probe)
    assert malformed[:3] == [5, 7, "malformed"]
    assert reserved[:3] == [5, 8, "bad-request"]
    assert too_long[:3] == [5, 9, "limit-exceeded"]
    assert ok[:3] == [4, 10, b"\x00\x00"]
    assert ok[3] == [b"\x01\x17"]


async def test_request_before_hello_is_refused(server: Server) -> None:
    def probe() -> tuple[list[object], bytes]:
        s = socket.create_connection((server.host, server.port), timeout=5)
        hdr = struct.pack("<HHI", 0x48 << 1, 0, 0)
        s.sendall(_frame([2, 1, "1", [[hdr, b""]], None]))
        err = _recv_frame(s)
        rest = s.recv(10)
        s.close()
        return err, rest

    err, rest = await asyncio.get_running_loop().run_in_executor(None, probe)
    assert err[2] == "handshake-required"
    assert rest == b""


async def test_graceful_shutdown_completes_in_flight_requests(board: Board) -> None:
    server = Server(board, host="127.0.0.1", port=0)
    await server.start()
    c = await AsyncClient.connect(server.host, server.port)
    board.i2c["1"].device(TMP117).stall_s = 0.2
    try:
        fut = asyncio.ensure_future(c.i2c("1", [write(TMP117)]))
        await asyncio.sleep(0.05)
        await server.close(grace=2.0)
        assert (await fut).status == b"\x00"
    finally:
        board.i2c["1"].device(TMP117).stall_s = 0
        await c.close()

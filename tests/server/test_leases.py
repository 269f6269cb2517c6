"""Leases on the data path: real TCP clients against a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import msgpack
import pytest

from bridge.client import AsyncClient, RemoteError, read, spi_xfer, write
from bridge.config import Board
from bridge.server import Server
from bridge.server.leases import LeaseTable
from protocol import ErrorCode, frame

EEPROM, TMP117 = 0x50, 0x48
BUSY = re.compile(
    r"^busy: i2c bus 1 address 0x50 held by \"(?P<holder>.+)\" \((?P<client>[^)]+)\) until "
    r"(?P<until>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) \(lease (?P<id>[0-9a-f]{8})\)$")


class FakeClock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def connect(server: Server, name: str = "", leases: tuple[str, ...] = ()) -> AsyncClient:
    return await AsyncClient.connect(server.host, server.port, name=name, leases=leases)


def i2c_log(board: Board, bus: str = "1") -> list[int]:
    """Addresses of the transactions the simulated bus saw, in order."""
    return [e.msgs[0].addr for e in board.i2c[bus].log_snapshot()]  # type: ignore[attr-defined]


@pytest.fixture
async def clients(server: Server) -> AsyncIterator[tuple[AsyncClient, AsyncClient]]:
    a = await connect(server, "ci job 7")
    b = await connect(server, "someone else")
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_second_client_gets_busy_naming_holder_and_expiry_and_touches_no_bus(
    clients: tuple[AsyncClient, AsyncClient], board: Board
) -> None:
    a, b = clients
    lease = await a.lease_take(1, EEPROM, ttl=30)
    before = i2c_log(board)
    with pytest.raises(RemoteError) as e:
        await b.transfer(1, [write(EEPROM, [0, 0]), read(EEPROM, 4)])
    assert e.value.code is ErrorCode.BUSY
    m = BUSY.match(e.value.message)
    assert m is not None, e.value.message
    assert m["holder"] == "ci job 7"
    assert m["id"] == lease.id
    until = datetime.strptime(m["until"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    left = (until - datetime.now(UTC)).total_seconds()
    assert 25 < left <= 30.5
    assert i2c_log(board) == before, "a refused request must not reach the bus"
    # The holder's own requests run.
    (data,) = await a.transfer(1, [write(EEPROM, [0, 0]), read(EEPROM, 4)])
    assert len(data) == 4
    assert i2c_log(board)[-1] == EEPROM


async def test_take_of_a_leased_scope_is_busy_too(clients: tuple[AsyncClient, AsyncClient]
                                                  ) -> None:
    a, b = clients
    held = await a.lease_take(1, EEPROM, ttl=30)
    with pytest.raises(RemoteError) as e:
        await b.lease_take(1, ttl=30)  # the whole bus overlaps the address
    assert e.value.code is ErrorCode.BUSY
    assert held.id in e.value.message
    with pytest.raises(RemoteError) as e2:
        await b.lease_take(1, EEPROM, ttl=30)
    assert e2.value.code is ErrorCode.BUSY


async def test_an_address_lease_leaves_other_addresses_and_buses_usable(
    clients: tuple[AsyncClient, AsyncClient], board: Board
) -> None:
    a, b = clients
    await a.lease_take(1, EEPROM, ttl=30)
    (ident,) = await b.transfer(1, [write(TMP117, [0x0F]), read(TMP117, 2)])
    assert ident == b"\x01\x17"
    await b.lease_take(1, TMP117, ttl=30)  # a different address can be leased by another
    await b.transfer(2, [write(0x18)])
    # A frame mixing a free and a leased address is refused as a whole.
    before = i2c_log(board)
    result = b.i2c(1, [write(TMP117), write(EEPROM)])
    with pytest.raises(RemoteError, match="address 0x50"):
        await result
    assert i2c_log(board) == before


async def test_a_bus_lease_blocks_every_address_and_spi_cs_leases_are_per_cs(
    clients: tuple[AsyncClient, AsyncClient], board: Board
) -> None:
    a, b = clients
    await a.lease_take(1, ttl=30)
    with pytest.raises(RemoteError,
                       match=r'^busy: i2c bus 1 held by "ci job 7" \(anonymous\) until '):
        await b.i2c(1, [write(TMP117)])
    await a.lease_take(0, cs=1, ttl=30)  # kind inferred from cs: the SPI loopback
    with pytest.raises(RemoteError, match=r'^busy: spi bus 0 cs 1 held by "ci job 7"'):
        await b.xfer(0, 1, b"\x01\x02")
    before = len(board.spi["0"].log_snapshot())  # type: ignore[attr-defined]
    (jedec,) = await b.spi_transfer(0, 0, [spi_xfer(b"\x9f\x00\x00\x00")])
    assert jedec[1:] == b"\xef\x40\x16"
    assert len(board.spi["0"].log_snapshot()) == before + 1  # type: ignore[attr-defined]
    assert await a.xfer(0, 1, b"\x01\x02") == b"\x01\x02"


async def test_release_lets_the_second_client_in_and_is_idempotent(
    clients: tuple[AsyncClient, AsyncClient]
) -> None:
    a, b = clients
    lease = await a.lease_take(1, EEPROM, ttl=30)
    with pytest.raises(RemoteError):
        await b.i2c(1, [write(EEPROM)])
    assert await a.lease_release(lease) is True
    assert await a.lease_release(lease) is False  # idempotent
    assert await b.lease_release(lease.token) is False
    result = await b.i2c(1, [write(EEPROM)])
    assert result.status == b"\x00"
    assert await b.leases() == []


async def test_another_connection_presenting_the_token_passes(
    server: Server, clients: tuple[AsyncClient, AsyncClient]
) -> None:
    a, b = clients
    lease = await a.lease_take(1, EEPROM, ttl=30)
    child = await connect(server, "child", leases=(lease.token,))
    try:
        assert (await child.i2c(1, [write(EEPROM)])).status == b"\x00"
    finally:
        await child.close()
    with pytest.raises(RemoteError):
        await b.i2c(1, [write(EEPROM)])


async def test_the_taker_disconnecting_does_not_release(server: Server) -> None:
    a = await connect(server, "ci step 1")
    lease = await a.lease_take(1, EEPROM, ttl=30)
    await a.close()
    b = await connect(server, "other")
    try:
        with pytest.raises(RemoteError, match='held by "ci step 1"'):
            await b.i2c(1, [write(EEPROM)])
        assert [x.id for x in await b.leases()] == [lease.id]
    finally:
        await b.close()


async def test_list_shows_leases_without_tokens(clients: tuple[AsyncClient, AsyncClient]
                                                ) -> None:
    a, b = clients
    lease = await a.lease_take(1, EEPROM, ttl=30, holder="nightly flash test")
    (info,) = await b.leases()
    assert info.id == lease.id
    assert info.holder == "nightly flash test"
    assert info.peer == "127.0.0.1"
    assert (info.kind, info.bus, info.address, info.cs, info.ttl) == ("i2c", "1", EEPROM, None, 30)
    assert 29_000 < info.remaining_ms <= 30_000
    assert lease.token not in repr(info)
    assert lease.token not in repr(lease)


async def test_renew_extends_from_now(clients: tuple[AsyncClient, AsyncClient]) -> None:
    a, _ = clients
    lease = await a.lease_take(1, EEPROM, ttl=30)
    info = await a.lease_renew(lease, ttl=600)
    assert info.ttl == 600
    assert 599_000 < info.remaining_ms <= 600_000
    info = await a.lease_renew(lease.token)  # default: the lease's own ttl
    assert info.ttl == 600


async def test_expiry_with_an_injected_clock(board: Board) -> None:
    clock = FakeClock()
    table = LeaseTable(clock=clock, max_ttl=120)
    seen: list[list[str]] = []
    table.add_listener(lambda snap: seen.append([x["id"] for x in snap]))
    async with Server(board, host="127.0.0.1", port=0, leases=table) as server:
        a = await connect(server, "holder")
        b = await connect(server, "waiter")
        try:
            lease = await a.lease_take(1, EEPROM, ttl=60)
            clock.now += 59.999
            with pytest.raises(RemoteError):
                await b.i2c(1, [write(EEPROM)])
            renewed = await a.lease_renew(lease)  # from now: 59.999 + 60
            assert renewed.remaining_ms == 60_000
            clock.now += 60.0  # exactly at the expiry: dead, no timer involved
            assert (await b.i2c(1, [write(EEPROM)])).status == b"\x00"
            with pytest.raises(RemoteError) as e:
                await a.lease_renew(lease)
            assert e.value.code is ErrorCode.NO_LEASE
            assert await a.lease_release(lease) is False
            assert await b.leases() == []
            with pytest.raises(RemoteError, match="maximum of 120 s"):
                await a.lease_take(1, ttl=121)
        finally:
            await a.close()
            await b.close()
    assert seen == [[lease.id], [lease.id], []]  # take, renew, expiry


async def test_a_real_short_ttl_expires_end_to_end(server: Server) -> None:
    a = await connect(server, "short")
    b = await connect(server, "waiter")
    changes: list[int] = []
    gone = asyncio.Event()

    def listener(snap: list[dict[str, object]]) -> None:
        changes.append(len(snap))
        if not snap:
            gone.set()

    server.leases.add_listener(listener)
    try:
        await a.lease_take(1, EEPROM, ttl=1)
        with pytest.raises(RemoteError):
            await b.i2c(1, [write(EEPROM)])
        # The expiry timer tells listeners without any request arriving.
        await asyncio.wait_for(gone.wait(), 5)
        assert changes == [1, 0]
        assert (await b.i2c(1, [write(EEPROM)])).status == b"\x00"
    finally:
        await a.close()
        await b.close()


async def test_bad_lease_requests_get_precise_errors(
    server: Server, clients: tuple[AsyncClient, AsyncClient]
) -> None:
    a, _ = clients
    cases: list[tuple[dict[str, object], ErrorCode, str]] = [
        ({"bus": 7}, ErrorCode.UNKNOWN_BUS, "no I2C bus '7' on board"),
        ({"bus": 0, "cs": 5}, ErrorCode.BAD_REQUEST, "spi bus 0 has chip selects 0..1; no cs 5"),
        ({"bus": 1, "ttl": 0}, ErrorCode.BAD_REQUEST, "LEASE ttl 0 out of range 1..86400"),
        ({"bus": 1, "ttl": 7200}, ErrorCode.BAD_REQUEST, "exceeds this server's maximum of 3600"),
        ({"bus": 1, "address": 0x400}, ErrorCode.BAD_REQUEST, "address 1024 out of range"),
        ({"bus": 0, "kind": "spi", "address": 3}, ErrorCode.BAD_REQUEST,
         "an SPI lease has no address"),
    ]
    for kw, code, text in cases:
        with pytest.raises(RemoteError) as e:
            await a.lease_take(**kw)  # type: ignore[arg-type]
        assert e.value.code is code, kw
        assert text in e.value.message, (kw, e.value.message)
    with pytest.raises(RemoteError) as e:
        await a.lease_renew("x" * 20)
    assert e.value.code is ErrorCode.NO_LEASE
    with pytest.raises(RemoteError) as e:
        await a.lease_renew("short")
    assert e.value.code is ErrorCode.BAD_REQUEST
    # The connection survives every refusal.
    assert (await a.i2c(1, [write(EEPROM)])).status == b"\x00"


async def test_raw_malformed_lease_frames_are_refused_and_the_connection_lives(
    server: Server
) -> None:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    pack = msgpack.Packer(use_bin_type=True).pack

    async def ask(obj: object) -> list[object]:
        writer.write(frame(pack(obj)))
        n = int.from_bytes(await reader.readexactly(4), "big")
        return msgpack.unpackb(await reader.readexactly(n))  # type: ignore[no-any-return]

    try:
        writer.write(frame(pack([0, 0, {"version": 1, "client": "raw"}])))
        n = int.from_bytes(await reader.readexactly(4), "big")
        await reader.readexactly(n)
        assert await ask([8, 1, "steal", {}]) == [
            5, 1, "bad-request", "unknown LEASE op 'steal' (ops: take, renew, release, list)"]
        assert await ask([8, 2, "take", []]) == [
            5, 2, "malformed", "LEASE op must be a string and params a map"]
        assert await ask([8, 3, "take", {"kind": "i2c", "bus": "1"}]) == [
            5, 3, "malformed", "LEASE take: ttl (seconds) is required"]
        assert await ask([8, 4, "take", {"kind": "gpio", "bus": "1", "ttl": 5}]) == [
            5, 4, "bad-request", "LEASE take: kind must be 'i2c' or 'spi', not 'gpio'"]
        assert await ask([8, 5, "release", {"token": 5}]) == [
            5, 5, "malformed", "LEASE release: a lease token must be a string"]
        assert await ask([8, 6, "list"]) == [
            5, 6, "malformed", "LEASE frame must be [8, id, op, params]"]
        ok = await ask([8, 7, "list", {}])
        assert ok == [9, 7, {"leases": [], "total": 0}]
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_lease_frame_before_hello_is_handshake_required(server: Server) -> None:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(frame(msgpack.packb([8, 1, "list", {}])))
        n = int.from_bytes(await reader.readexactly(4), "big")
        assert msgpack.unpackb(await reader.readexactly(n))[2] == "handshake-required"
        assert await reader.read() == b""  # fatal: closed
    finally:
        writer.close()


async def test_lease_logs_never_carry_the_token(
    clients: tuple[AsyncClient, AsyncClient], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = clients
    root = logging.getLogger("busbridge")
    root.addHandler(caplog.handler)  # the CLI's log setup may have stopped propagation
    with caplog.at_level(logging.DEBUG, logger="busbridge"):
        lease = await a.lease_take(1, EEPROM, ttl=30)
        await a.lease_renew(lease)
        with pytest.raises(RemoteError):
            await b.i2c(1, [write(EEPROM)])
        with pytest.raises(RemoteError):
            await b.lease_take(1, ttl=5)
        await a.lease_release(lease)
    root.removeHandler(caplog.handler)
    msgs = [r.getMessage() for r in caplog.records]
    for m in ("lease taken", "lease renewed", "request denied by lease", "lease denied",
              "lease released"):
        assert m in msgs
    dump = repr([(r.getMessage(), getattr(r, "fields", None)) for r in caplog.records])
    assert lease.id in dump
    assert lease.token not in dump


def test_table_overlap_rules_without_a_server() -> None:
    clock = FakeClock()
    t = LeaseTable(clock=clock)
    bus = t.take("i2c", "1", ttl=10, holder="a")
    assert t.blocking("i2c", "1", [0x10], ()) is bus
    assert t.blocking("i2c", "1", [0x10], {bus.token}) is None
    assert t.blocking("i2c", "2", [0x10], ()) is None
    assert t.blocking("spi", "1", [0], ()) is None  # kinds are separate namespaces
    # The holder may add an address lease inside its own bus lease.
    inner = t.take("i2c", "1", address=0x10, ttl=20, holder="a", tokens={bus.token})
    t.release(bus.token)
    assert t.blocking("i2c", "1", [0x11], ()) is None
    assert t.blocking("i2c", "1", [0x11, 0x10], ()) is inner
    clock.now += 20
    assert t.blocking("i2c", "1", [0x10], ()) is None
    assert t.held == {}  # expired on the check: the hot path's dict is empty again


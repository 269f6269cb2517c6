"""The admin channel's sim and lease ops over real TCP, as a test or a lab admin uses them."""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Sequence

import pytest

from bridge.buses.base import BusError, I2CBackend
from bridge.client import AsyncClient, RemoteError, TransferError, read, write
from bridge.config import Board, load_board
from bridge.server import Server, ServerPolicy
from bridge.server.acl import AccessRule, Acl
from protocol import ErrorCode, I2CMsg

TMP117 = 0x48


async def temperature(c: AsyncClient, bus: str = "1") -> float:
    (data,) = await c.transfer(bus, [write(TMP117, b"\x00"), read(TMP117, 2)])
    return int.from_bytes(data, "big", signed=True) * 0.0078125


async def test_a_value_set_over_the_wire_is_what_the_chip_then_measures(
        client: AsyncClient) -> None:
    assert client.welcome is not None
    assert "admin" in client.welcome.capabilities
    assert await client.sim.set(1, TMP117, temperature=31.25) == {"temperature": 31.25}
    assert await temperature(client) == 31.25
    assert await client.sim.get(1, TMP117) == {"temperature": 31.25}


async def test_sim_ops_keep_their_place_among_the_bus_requests(client: AsyncClient) -> None:
    """Pipelined without waiting: each read sees exactly the sets sent before it."""
    await client.sim.set(1, TMP117, temperature=20.0)
    got = await asyncio.gather(
        temperature(client),
        client.sim.set(1, TMP117, temperature=31.25),
        temperature(client),
        client.sim.set(1, TMP117, temperature=-5.0),
        temperature(client),
    )
    assert [got[0], got[2], got[4]] == [20.0, 31.25, -5.0]


async def test_a_fault_injected_over_the_wire_reaches_the_next_transactions(
        client: AsyncClient) -> None:
    await client.sim.fault(1, 0x50, "nack-next", count=2)
    for _ in range(2):
        with pytest.raises(TransferError) as info:
            await client.transfer(1, [read(0x50, 1)])
        assert info.value.errno == errno.ENXIO
    (data,) = await client.transfer(1, [write(0x50, b"\x00\x00"), read(0x50, 1)])
    assert len(data) == 1


async def test_devices_lists_every_simulated_chip_with_its_quantities(
        client: AsyncClient) -> None:
    devices = await client.sim.devices()
    tmp = next(d for d in devices if (d["kind"], d["bus"], d.get("addr")) == ("i2c", "1", 0x48))
    assert tmp["model"] == "tmp117"
    assert [q["name"] for q in tmp["quantities"]] == ["temperature"]
    assert tmp["quantities"][0]["unit"] == "°C"
    assert {"nack", "nack-next", "stuck"} <= {f["name"] for f in tmp["faults"]}
    assert {d["bus"] for d in await client.sim.devices(2)} == {"2"}
    assert any(d["kind"] == "spi" and d["cs"] == 0 for d in devices)


async def test_a_screenshot_is_a_png_of_what_the_display_shows(client: AsyncClient) -> None:
    png = await client.sim.screenshot(1, 0x3C, scale=1)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == 128  # IHDR width
    with pytest.raises(RemoteError, match="not a display"):
        await client.sim.screenshot(1, TMP117)


async def test_the_log_pages_through_what_the_bus_did(client: AsyncClient) -> None:
    start = (await client.sim.log(1, limit=1000))
    while start.more:
        start = await client.sim.log(1, since=start.next, limit=1000)
    for reg in range(5):
        await client.transfer(1, [write(TMP117, [reg]), read(TMP117, 2)])
    await client.i2c(1, [read(0x33, 1)])  # nobody there: a NACK in the log
    first = await client.sim.log(1, since=start.next, limit=4)
    assert first.more
    assert len(first.entries) == 4
    rest = await client.sim.log(1, since=first.next, limit=100)
    assert not rest.more
    entries = first.entries + rest.entries
    assert [e["seq"] for e in entries] == list(range(start.next + 1, start.next + 7))
    assert [e["msgs"][0]["data"] for e in entries[:5]] == [bytes([r]) for r in range(5)]
    assert entries[0]["msgs"][1]["rw"] == "r"
    assert len(entries[0]["msgs"][1]["data"]) == 2
    assert entries[5]["errno"] == errno.ENXIO
    assert entries[5]["msgs"][0]["status"] == 1
    assert all(e["t"] > 1e9 for e in entries)


@pytest.mark.parametrize(("op", "params", "code", "words"), [
    ("sim.get", {"kind": "i2c", "bus": "7", "addr": 0x48}, ErrorCode.UNKNOWN_BUS, "no I2C bus '7'"),
    ("sim.get", {"kind": "i2c", "bus": "1", "addr": 0x33}, ErrorCode.BAD_REQUEST,
     "no device at 0x33"),
    ("sim.set", {"kind": "i2c", "bus": "1", "addr": 0x48, "values": {"humidity": 3.0}},
     ErrorCode.BAD_REQUEST, "no quantity 'humidity'"),
    ("sim.fault", {"kind": "i2c", "bus": "1", "addr": 0x48, "fault": "melt"},
     ErrorCode.BAD_REQUEST, "no fault 'melt'"),
    ("sim.fault", {"kind": "i2c", "bus": "1", "addr": 0x50, "fault": "nack-next", "cnt": 2},
     ErrorCode.BAD_REQUEST, "takes no parameter 'cnt'"),
    ("trace.stop", {"id": 99}, ErrorCode.BAD_REQUEST, "no trace 99"),
    ("sim.frob", {}, ErrorCode.BAD_REQUEST, "unknown admin op"),
])
async def test_what_the_server_cannot_do_is_refused_precisely_and_the_connection_goes_on(
        client: AsyncClient, op: str, params: dict[str, object], code: ErrorCode,
        words: str) -> None:
    with pytest.raises(RemoteError) as info:
        await client.admin(op, params)
    assert info.value.code is code
    assert words in info.value.message
    assert await temperature(client) > -256


class RealBus(I2CBackend):
    """A bus that is not simulated (as a Linux adapter is, to the admin channel)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def transfer(self, msgs: Sequence[I2CMsg]) -> list[bytes]:
        raise BusError(errno.ENXIO, "no ACK")


async def test_sim_ops_on_a_bus_that_is_not_simulated_say_so() -> None:
    board = load_board(None)
    board.i2c["9"] = RealBus("9")
    async with Server(board, port=0) as server:
        c = await AsyncClient.connect("127.0.0.1", server.port)
        with pytest.raises(RemoteError, match="bus 9 is not simulated") as info:
            await c.sim.set(9, 0x48, temperature=1.0)
        assert info.value.code is ErrorCode.BAD_REQUEST
        await c.close()


def _acl_server(board: Board, *rules: AccessRule) -> Server:
    return Server(board, port=0, policy=ServerPolicy(acl=Acl(list(rules))))


async def test_admin_needs_an_admin_rule_once_rules_exist_and_the_denial_is_logged(
        board: Board, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "busbridge")
    rules = (AccessRule(client="*", bus="*", access="read-write"),
             AccessRule(client="*", bus="i2c:1", admin=True))
    async with _acl_server(board, *rules) as server:
        c = await AsyncClient.connect("127.0.0.1", server.port)
        await c.sim.set(1, TMP117, temperature=12.5)  # covered by the admin rule
        assert await temperature(c) == 12.5
        with pytest.raises(RemoteError) as info:
            await c.sim.set(2, 0x18, temperature=12.5)
        assert info.value.code is ErrorCode.DENIED
        assert "admin ops on i2c bus '2'" in info.value.message
        (rec,) = [r for r in caplog.records if r.getMessage() == "request denied"]
        assert rec.fields["op"] == "sim.set"  # type: ignore[attr-defined]
        with pytest.raises(RemoteError, match="admin ops on"):
            await c.admin("trace.start", {})  # every bus: needs rules covering all
        async with c.trace(bus=1):
            pass  # one covered bus is enough for a trace of it
        assert {d["bus"] for d in await c.sim.devices()} == {"1"}
        await c.close()


async def test_an_admin_rule_grants_no_reads_and_no_rule_grants_no_admin(board: Board) -> None:
    async with _acl_server(board, AccessRule(client="*", bus="*", admin=True)) as server:
        c = await AsyncClient.connect("127.0.0.1", server.port)
        await c.sim.set(1, TMP117, temperature=1.0)
        with pytest.raises(RemoteError) as info:
            await temperature(c)
        assert info.value.code is ErrorCode.DENIED
        await c.close()
    async with _acl_server(load_board(None), AccessRule(client="*", bus="*")) as server:
        c = await AsyncClient.connect("127.0.0.1", server.port)
        assert await temperature(c) > -256
        for call in (c.sim.devices(), c.sim.get(1, TMP117), c.admin("lease.release",
                                                                      {"lease": "x"})):
            with pytest.raises(RemoteError) as info:
                await call
            assert info.value.code is ErrorCode.DENIED
        await c.close()


def test_an_admin_rule_that_also_names_access_or_addresses_is_refused() -> None:
    with pytest.raises(ValueError, match="admin rule"):
        AccessRule(client="*", bus="i2c:1", admin=True, addresses=[(0x48, 0x48)])
    with pytest.raises(ValueError, match="admin rule"):
        AccessRule(client="*", bus="*", admin=True, access="read-only")


async def test_an_admin_force_releases_a_lease_by_its_public_id(
        server: Server, client: AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "busbridge")
    holder = await AsyncClient.connect("127.0.0.1", server.port, name="stuck ci job")
    lease = await holder.lease_take(1, 0x50, ttl=600, holder="ci job 7")
    with pytest.raises(RemoteError) as info:
        await client.transfer(1, [write(0x50, b"\x00\x00\x01")])
    assert info.value.code is ErrorCode.BUSY
    got = await client.admin("lease.release", {"lease": lease.id})
    assert got["released"] is True
    assert got["lease"]["holder"] == "ci job 7"
    await client.transfer(1, [write(0x50, b"\x00\x00\x01")])  # free again
    assert (await client.admin("lease.release", {"lease": lease.id}))["released"] is False
    assert await client.leases() == []
    (rec,) = [r for r in caplog.records if r.getMessage() == "lease force-released"]
    assert rec.fields["holder"] == "ci job 7"  # type: ignore[attr-defined]
    assert rec.fields["by"].startswith("anonymous at 127.0.0.1:")  # type: ignore[attr-defined]
    await holder.close()


async def test_sync_clients_have_the_same_controller(board: Board) -> None:
    from bridge.client import BlockingClient, Client

    async with Server(board, port=0) as server:
        def use() -> list[float]:
            out = []
            for cls in (Client, BlockingClient):
                with cls("127.0.0.1", server.port) as c:
                    c.sim.set(1, TMP117, temperature=25.5)
                    (data,) = c.transfer(1, [write(TMP117, b"\x00"), read(TMP117, 2)])
                    out.append(int.from_bytes(data, "big") * 0.0078125)
                    assert c.sim.get(1, TMP117) == {"temperature": 25.5}
                    assert c.sim.log(1, limit=1).entries
            return out

        assert await asyncio.to_thread(use) == [25.5, 25.5]

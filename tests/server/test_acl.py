"""Access rules over real TCP: a denied request gets ``denied`` and never reaches a bus."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from conftest import serve_with_access_rules

from bridge.client import AsyncClient, ClientAuth, RemoteError, read, spi_xfer, write
from bridge.config import Board
from bridge.server import Server, ServerPolicy
from bridge.server.acl import AccessRule, Acl
from protocol import ErrorCode, I2CRequest, SpiRequest
from protocol.virtio import SpiTransfer, SpiTransferHead

CI, ADMIN = "ci-token-" + "c" * 32, "admin-token-" + "a" * 32

RULES = [
    AccessRule(client="ci", bus="i2c:1", addresses=["0x48"], access="read-only"),
    AccessRule(client="ci", bus="spi:0", chip_selects=[1], access="read-only"),
    AccessRule(client="admin", bus="*"),
    AccessRule(client="*", bus="i2c:2", access="read-only"),
]


@pytest.fixture
async def acl_server(board: Board) -> AsyncIterator[Server]:
    async with serve_with_access_rules(board, {"ci": CI, "admin": ADMIN}, RULES) as s:
        yield s


@pytest.fixture
async def ci(acl_server: Server) -> AsyncIterator[AsyncClient]:
    async with await AsyncClient.connect("127.0.0.1", acl_server.port,
                                         auth=ClientAuth(token=CI)) as c:
        yield c


@pytest.fixture
async def admin(acl_server: Server) -> AsyncIterator[AsyncClient]:
    async with await AsyncClient.connect("127.0.0.1", acl_server.port,
                                         auth=ClientAuth(token=ADMIN)) as c:
        yield c


def bus_log(board: Board, name: str) -> list[object]:
    return board.i2c[name].log_snapshot()  # type: ignore[attr-defined, no-any-return]


async def denied(coro: object) -> RemoteError:
    with pytest.raises(RemoteError) as e:
        await coro  # type: ignore[misc]
    assert e.value.code == ErrorCode.DENIED
    return e.value


async def test_read_only_rule_allows_reads_and_probes(ci: AsyncClient, board: Board) -> None:
    before = len(bus_log(board, "1"))
    (data,) = await ci.transfer("1", [read(0x48, 2)])
    assert len(data) == 2
    probe = await ci.i2c("1", [write(0x48)])  # zero-length: a probe, counted as a read
    assert list(probe.status) == [0]
    assert len(bus_log(board, "1")) == before + 2


async def test_write_under_a_read_only_rule_is_denied_naming_it_and_touches_no_bus(
    ci: AsyncClient, admin: AsyncClient, board: Board, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="busbridge")
    (limit,) = await admin.transfer("1", [write(0x48, [0x02]), read(0x48, 2)])
    before = len(bus_log(board, "1"))
    err = await denied(ci.transfer("1", [write(0x48, [0x02, 0x12, 0x34])]))
    assert err.message == ("access rule 0 (client 'ci', i2c:1 0x48, read-only) forbids "
                           "writes: i2c bus '1' address 0x48 (message 0)")
    # A register read needs its pointer write: a write too, and the whole chain is refused.
    await denied(ci.transfer("1", [write(0x48, [0x0F]), read(0x48, 2)]))
    assert len(bus_log(board, "1")) == before  # the sim bus saw nothing
    assert await admin.transfer("1", [write(0x48, [0x02]), read(0x48, 2)]) == [limit]
    (rec,) = [r for r in caplog.records if r.getMessage() == "request denied"][:1]
    fields = rec.fields  # type: ignore[attr-defined]
    assert (fields["identity"], fields["bus"]) == ("token:ci", "i2c:1")
    assert "access rule 0" in fields["reason"]


async def test_address_outside_every_rule_is_denied(ci: AsyncClient, board: Board) -> None:
    before = len(bus_log(board, "1"))
    err = await denied(ci.transfer("1", [read(0x50, 4)]))
    assert err.message == "no access rule lets client 'token:ci' use i2c bus '1' address 0x50 " \
                          "(message 0)"
    assert len(bus_log(board, "1")) == before


async def test_one_denied_message_refuses_the_whole_frame(ci: AsyncClient, board: Board) -> None:
    before = len(bus_log(board, "1"))
    err = await denied(ci.i2c("1", [read(0x48, 2), read(0x50, 1)]))
    assert "(message 1)" in err.message
    assert len(bus_log(board, "1")) == before


async def test_wildcard_client_rule_applies_to_everyone(ci: AsyncClient, board: Board) -> None:
    (data,) = await ci.transfer("2", [read(0x18, 2)])
    assert len(data) == 2
    err = await denied(ci.transfer("2", [write(0x18, [0x01, 0x00, 0x00])]))
    assert err.message.startswith("access rule 3 (client '*', i2c:2, read-only)")


async def test_spi_chip_select_and_read_only_without_read_commands(
        ci: AsyncClient, admin: AsyncClient, board: Board) -> None:
    spi = board.spi["0"]
    before = len(spi.log_snapshot())  # type: ignore[attr-defined]
    # Receive-only still clocks zeros out on MOSI: without read_commands it is refused.
    err = await denied(ci.spi_transfer("0", 1, [spi_xfer(None, 4)]))
    assert err.message == ("access rule 1 (client 'ci', spi:0 cs 1, read-only) forbids "
                           "writes: spi bus '0' cs 1: on SPI every transfer clocks bytes out "
                           "on MOSI, and the rule lists no read_commands")
    await denied(ci.xfer("0", 1, b"\x01\x02"))
    err = await denied(ci.xfer("0", 0, b"\x9f\x00\x00\x00"))
    assert err.message == "no access rule lets client 'token:ci' use spi bus '0' cs 0"
    assert len(spi.log_snapshot()) == before  # type: ignore[attr-defined]
    assert await admin.xfer("0", 0, b"\x9f\x00\x00\x00") == b"\xff\xef\x40\x16"


async def test_unconfigured_server_runs_no_checks(server: Server, client: AsyncClient) -> None:
    await client.transfer("1", [write(0x48, [0x0F]), read(0x48, 2)])
    assert [s.guard for s in server.sessions] == [None]


async def test_anonymous_clients_only_get_wildcard_rules(board: Board) -> None:
    s = Server(board, host="127.0.0.1", port=0, policy=ServerPolicy(acl=Acl(RULES)))
    await s.start()
    try:
        async with await AsyncClient.connect("127.0.0.1", s.port) as c:
            assert len((await c.transfer("2", [read(0x48, 2)]))[0]) == 2
            err = await denied(c.transfer("1", [read(0x48, 2)]))
            assert "client 'anonymous'" in err.message
    finally:
        await s.close(grace=1.0)


def test_ten_bit_rules_match_ten_bit_addresses_only() -> None:
    acl = Acl([AccessRule(client="*", bus="i2c:*", addresses=["0x2a0-0x2af"], ten_bit=True),
               AccessRule(client="*", bus="i2c:*", addresses=[0x48])]).for_client("x")
    assert acl.check(I2CRequest(1, "2", (read(0x2A5, 1, ten_bit=True),))) is None
    assert acl.check(I2CRequest(1, "2", (read(0x48, 1, ten_bit=True),))) is not None
    assert acl.check(I2CRequest(1, "2", (read(0x48, 1),))) is None
    head = SpiTransferHead(chip_select_id=0, bits_per_word=8)
    assert acl.check(SpiRequest(1, "0", 0, (SpiTransfer(head, None, 1),))) is not None


async def test_a_lease_needs_read_write_access_to_its_whole_scope(
    ci: AsyncClient, admin: AsyncClient,
) -> None:
    err = await denied(ci.lease_take("1", 0x48, ttl=5))  # read-only there
    assert err.message == ("no access rule lets client 'token:ci' lease i2c bus '1' address 0x48: "
                           "a lease needs read-write access to all of its scope")
    await denied(ci.lease_take("2", ttl=5))  # a read-only rule for the whole bus
    await denied(ci.lease_take("0", cs=1, ttl=5))
    assert await ci.leases() == []  # listing is not taking
    lease = await admin.lease_take("1", ttl=5)  # read-write on everything
    assert [x.id for x in await ci.leases()] == [lease.info.id]
    assert await admin.lease_release(lease)


async def test_a_client_no_rule_covers_gets_denied_not_unknown_bus(ci: AsyncClient) -> None:
    """SPEC §9.4: access rules come before the bus lookup, so a client learns nothing
    about which buses exist from buses it may not use."""
    err = await denied(ci.i2c("9", [read(0x48, 1)]))
    assert "no access rule" in err.message

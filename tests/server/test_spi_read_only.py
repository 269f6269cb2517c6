"""Read-only SPI (issue 14, finding 1): no byte a read-only client chooses reaches a device.

SPI is full duplex, so a "read" clocks bytes out too (zeros for a receive-only
transfer), and to a register chip the first byte is a command: a receive-only
transfer used to write 0x00 into a register map.  A read-only rule now admits
only messages whose MOSI bytes, per chip-select assertion, are one of its
``read_commands`` followed by zeros, in its SPI mode, 8 bits per word.  The
tests attack over a real socket and look at what the simulated devices saw.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
from conftest import serve_with_access_rules

from bridge.buses.sim.spi import SimSpiBus, to_wire
from bridge.client import AsyncClient, ClientAuth, RemoteError, spi_xfer
from bridge.config import Board
from bridge.config.board import board_from_toml_text
from bridge.server import Server
from bridge.server.acl import AccessRule, ReadCommands, mosi_segments
from protocol import ErrorCode
from protocol.virtio import SpiMode

CI, ADMIN = "ci-token-" + "c" * 32, "admin-token-" + "a" * 32

BOARD = """
name = "spi-ro"
[[spi]]
name = "0"
backend = "sim"
cs_max_number = 4

[[spi.devices]]
type = "spi_regmap"
cs = 0
registers = { 0 = 0x11, 1 = 0x22, 2 = 0x33, 3 = 0x44 }

[[spi.devices]]
type = "lis3dh"
cs = 1

[[spi.devices]]
type = "nor_flash"
cs = 2
size = 65536

[[spi.devices]]
type = "spi_regmap"
cs = 3
registers = { 0 = 0x5a }
"""

REGMAP_READ = ["1xxxxxxx"]  # bit 7 set: read (ST, Bosch)
FLASH_READ = ["03 xx xx xx", "9f"]  # READ DATA with a 24-bit address; JEDEC ID

RULES = [
    AccessRule(client="token:ci", bus="spi:0", chip_selects=[0, 1], access="read-only",
               read_commands=REGMAP_READ),
    AccessRule(client="token:ci", bus="spi:0", chip_selects=[2], access="read-only",
               read_commands=FLASH_READ),
    AccessRule(client="token:ci", bus="spi:0", chip_selects=[3], access="read-only"),
    AccessRule(client="token:admin", bus="*"),
]


@pytest.fixture
def spi_board() -> Board:
    return board_from_toml_text(BOARD)


@pytest.fixture
async def server(spi_board: Board) -> AsyncIterator[Server]:
    async with serve_with_access_rules(spi_board, {"ci": CI, "admin": ADMIN}, RULES) as s:
        yield s


async def connect(server: Server, token: str) -> AsyncClient:
    return await AsyncClient.connect("127.0.0.1", server.port, auth=ClientAuth(token=token))


def registers(board: Board) -> dict[int, dict[int, int]]:
    bus = board.spi["0"]
    assert isinstance(bus, SimSpiBus)
    return {cs: dict(dev.registers) for cs, dev in bus.devices().items()  # type: ignore[attr-defined]
            if hasattr(dev, "registers")}


def wire_segments(bus: SimSpiBus) -> list[tuple[int, bytes]]:
    """(cs, bytes on MOSI) of every chip-select assertion the bus ran, in wire order."""
    out = []
    for entry in bus.log_snapshot():
        wired = [t for t in entry.transfers]
        for _first, mosi in mosi_segments(wired):
            out.append((entry.cs, mosi))
        # mosi_segments works on memory order; every admitted transfer is 8-bit MSB-first,
        # so memory order is wire order: check that too.
        for t in wired:
            data = t.tx if t.tx is not None else bytes(t.rx_len)
            lsb = bool(t.head.mode & SpiMode.LSB_FIRST)
            assert to_wire(data, t.head.bits_per_word, lsb) == data
    return out


async def test_the_attacks_of_the_review_touch_no_register(server: Server, spi_board: Board
                                                           ) -> None:
    """Each way a read-only client could put its own bytes on MOSI is refused whole."""
    before = registers(spi_board)
    bus = spi_board.spi["0"]
    assert isinstance(bus, SimSpiBus)
    ci = await connect(server, CI)
    attacks = {
        "receive-only (clocks 00: write register 0)": (0, [spi_xfer(None, 4)]),
        "full duplex starting 00": (0, [spi_xfer([0x00, 0xAA])]),
        "read command, then data": (0, [spi_xfer([0x81, 0x55])]),
        "a second assertion after cs_change": (
            0, [spi_xfer([0x80], cs_change=True), spi_xfer([0x01, 0x99])]),
        "LSB first (0x82 arrives as 0x41)": (1, [spi_xfer([0x82, 0x00],
                                                          mode=int(SpiMode.LSB_FIRST))]),
        "16-bit words (80 00 arrives as 00 80)": (0, [spi_xfer([0x80, 0x00], bits_per_word=16)]),
        "another clock phase": (1, [spi_xfer([0x80, 0x00], mode=1)]),
        "loopback mode": (0, [spi_xfer([0x00, 0x11], mode=int(SpiMode.LOOP))]),
        "flash program (02)": (2, [spi_xfer([0x02, 0, 0, 0, 0xAB])]),
        "flash write enable (06)": (2, [spi_xfer([0x06])]),
        "no read_commands: even receive-only": (3, [spi_xfer(None, 1)]),
    }
    try:
        for what, (cs, xfers) in attacks.items():
            with pytest.raises(RemoteError) as e:
                await ci.spi_transfer("0", cs, xfers)
            assert e.value.code is ErrorCode.DENIED, what
        assert bus.log_snapshot() == []  # nothing reached the bus at all
        assert registers(spi_board) == before
        # What the rules allow still works, and reads the untouched registers.
        (rx,) = await ci.spi_transfer("0", 0, [spi_xfer([0x80, 0, 0, 0, 0])])
        assert rx == b"\xff\x11\x22\x33\x44"
        _, who = await ci.spi_transfer("0", 1, [spi_xfer([0x8F]), spi_xfer(None, 1)])
        assert who == b"\x33"  # LIS3DH WHO_AM_I
        (jedec,) = await ci.spi_transfer("0", 2, [spi_xfer([0x9F, 0, 0, 0])])
        assert len(jedec) == 4
    finally:
        await ci.close()


async def test_random_messages_never_put_a_chosen_byte_on_mosi(server: Server,
                                                               spi_board: Board) -> None:
    """400 random messages from the read-only client: whatever ran clocked out only a
    listed command followed by zeros, and no register changed."""
    rng = random.Random(1414)
    before = registers(spi_board)
    bus = spi_board.spi["0"]
    assert isinstance(bus, SimSpiBus)
    ci = await connect(server, CI)
    ran = 0
    refused: list[ErrorCode] = []
    try:
        for _ in range(400):
            cs = rng.choice([0, 1, 2, 3])
            xfers = []
            for _k in range(rng.randint(1, 3)):
                n = rng.choice([1, 2, 4])
                tx = None if rng.random() < 0.3 else bytes(
                    rng.choice([0x00, 0x03, 0x80, 0x8F, 0x9F, rng.randrange(256)])
                    for _ in range(n))
                xfers.append(spi_xfer(tx, n if tx is None else None,
                                      mode=rng.choice([0, 0, 0, 1, 8, 16]),
                                      bits_per_word=rng.choice([8, 8, 8, 16]),
                                      cs_change=rng.random() < 0.2))
            try:
                await ci.spi_transfer("0", cs, xfers)
                ran += 1
            except RemoteError as e:
                refused.append(e.code)
    finally:
        await ci.close()
    commands = {0: ReadCommands.parse(REGMAP_READ), 1: ReadCommands.parse(REGMAP_READ),
                2: ReadCommands.parse(FLASH_READ)}
    segments = wire_segments(bus)
    assert set(refused) == {ErrorCode.DENIED}
    assert ran > 0  # some reads were allowed and ran
    assert len(segments) >= ran
    for cs, mosi in segments:
        assert cs in commands, (cs, mosi.hex())
        assert commands[cs].admits(mosi), (cs, mosi.hex())
    assert registers(spi_board) == before


def test_read_commands_are_checked_when_the_board_file_is_read() -> None:
    with pytest.raises(ValueError, match="not a byte"):
        AccessRule(client="*", bus="spi:0", access="read-only", read_commands=["0x3"])
    with pytest.raises(ValueError, match="read-only rules of SPI"):
        AccessRule(client="*", bus="spi:0", read_commands=["03"])  # read-write
    rc = ReadCommands.parse(["03 xx xx xx", "1xxxxxxx"])
    assert rc.admits(bytes([0x03, 1, 2, 3, 0, 0]))
    assert not rc.admits(bytes([0x03, 1, 2]))  # a command cut short
    assert not rc.admits(bytes([0x03, 1, 2, 3, 0, 1]))  # data after it
    assert rc.admits(bytes([0xC5, 0, 0]))
    assert not rc.admits(bytes([0x45]))

"""The simulated SPI register chips (spi_regmap, lis3dh) built from board TOML, through the
drop-in spidev they were added for."""

from __future__ import annotations

import pytest
from conftest import Running

from bridge.config import Board, BoardConfigError, board_config_from_toml_text, build_board
from bridge.dropin.spidev import SpiDev

# A MAX31856-style part: bit 7 set means WRITE, the address always auto-increments.
BOARD = """
name = "spi-regs"
[[spi]]
name = "0"
backend = "sim"
[[spi.devices]]
type = "spi_regmap"
cs = 0
rw_bit = 0x80
read_when_set = false
read_only = [0x0C]
registers = { 0x00 = 0x00, 0x01 = 0x03, 0x0C = 0x7F }
[[spi.devices]]
type = "lis3dh"
cs = 1
acceleration_mg = [-500, 250, 1000]
"""


@pytest.fixture
def sim() -> Board:
    """This module's board, for conftest's ``remote`` (served, the drop-ins pointed at it)."""
    return build_board(board_config_from_toml_text(BOARD))


def test_write_bit_set_register_map(remote: Running) -> None:
    dev = SpiDev(0, 0)
    assert dev.xfer2([0x00, 0, 0]) == [0xFF, 0x00, 0x03]  # read CR0, CR1 (auto-increment)
    dev.xfer2([0x80 | 0x00, 0x80, 0x05])  # write CR0, CR1
    dev.xfer2([0x80 | 0x0C, 0x00])  # read-only: ignored
    assert dev.xfer2([0x00, 0, 0]) == [0xFF, 0x80, 0x05]
    assert dev.xfer2([0x0C, 0]) == [0xFF, 0x7F]


def test_lis3dh_scales_with_full_scale_and_mode(remote: Running) -> None:
    dev = SpiDev(0, 1)

    def axes() -> list[int]:
        raw = bytes(dev.xfer2([0xC0 | 0x28] + [0] * 6)[1:])
        return [int.from_bytes(raw[i:i + 2], "little", signed=True) for i in (0, 2, 4)]

    assert [v >> 6 for v in axes()] == [-125, 62, 250]  # normal mode, +-2 g: 4 mg/digit
    dev.xfer2([0x23, 0x08 | 0x10])  # HR, +-4 g: 2 mg/digit, 12-bit
    assert [v >> 4 for v in axes()] == [-250, 125, 500]
    assert dev.xfer2([0x80 | 0x0F, 0])[1] == 0x33
    assert dev.xfer2([0x80 | 0x0F, 0, 0])[2] == 0x33  # no MS bit: the address stays


def test_bad_device_settings_name_the_device() -> None:
    with pytest.raises(BoardConfigError, match="spi_regmap"):
        board_config_from_toml_text(BOARD.replace("rw_bit = 0x80", "rw_bit = 0x180"))

"""Board TOML loading: the default board, and error messages a config author can act on."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.buses.sim import (
    Eeprom24,
    LoopbackDevice,
    Mcp9808,
    ModelDevice,
    RegisterMapDevice,
    SimI2CBus,
    SimSpiBus,
    SpiNorFlash,
    Tmp117,
)
from bridge.config import (
    BoardConfigError,
    board_from_toml_text,
    default_board_text,
    load_board,
    load_board_config,
)
from protocol.virtio import chain, read, write

MINIMAL = """
name = "t"
[[i2c]]
name = "1"
backend = "sim"
[[i2c.devices]]
type = "regmap"
address = 0x20
"""


def errors_of(text: str) -> str:
    with pytest.raises(BoardConfigError) as ei:
        board_from_toml_text(text, "board.toml")
    return str(ei.value)


# -- the default board ------------------------------------------------------------


def test_default_board_contents() -> None:
    board = load_board(None)
    assert board.name == "busbridge-sim"
    assert set(board.i2c) == {"1", "2"}
    assert set(board.spi) == {"0"}
    assert board.server.listen == "127.0.0.1:7707"
    assert board.server.request_timeout_ms == 1000

    bus1 = board.i2c["1"]
    assert isinstance(bus1, SimI2CBus)
    ee = bus1.device(0x50)
    assert isinstance(ee, Eeprom24)
    assert (ee.size, ee.page_size, ee.address_bytes) == (4096, 32, 2)
    tmp = bus1.device(0x48)
    assert isinstance(tmp, ModelDevice)
    assert isinstance(tmp.model, Tmp117)
    assert tmp.model.peek(0x0F) == 0x0117
    assert tmp.model.peek(0x01) & 0x0FFF == 0x0220

    bus2 = board.i2c["2"]
    assert isinstance(bus2, SimI2CBus)
    mcp = bus2.device(0x18)
    assert isinstance(mcp, ModelDevice)
    assert isinstance(mcp.model, Mcp9808)
    assert (mcp.model.peek(0x06), mcp.model.peek(0x07)) == (0x0054, 0x0400)
    assert bus2.device(0x2A5, ten_bit=True).ten_bit

    spi = board.spi["0"]
    assert isinstance(spi, SimSpiBus)
    flash = spi.device(0)
    assert isinstance(flash, SpiNorFlash)
    assert flash.jedec_id == b"\xef\x40\x16"
    assert flash.size == 4 * 1024 * 1024
    assert isinstance(spi.device(1), LoopbackDevice)
    assert spi.config.max_freq_hz == 50_000_000
    assert spi.info().config.cs_max_number == 2
    board.close()


def test_default_boards_are_independent() -> None:
    a, b = load_board(None), load_board(None)
    a.i2c["1"].transfer([write(0x50, b"\x00\x00X")])
    probe = chain([write(0x50, b"\x00\x00"), read(0x50, 1)])
    assert a.i2c["1"].transfer(probe) == [b"X"]
    assert b.i2c["1"].transfer(probe) == [b"\xff"]


def test_load_board_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(default_board_text().replace('"busbridge-sim"', '"copy"'))
    board = load_board(path)
    assert board.name == "copy"
    assert board.source == str(path)
    assert load_board_config(str(path)).spi[0].devices[0].type == "nor_flash"


def test_minimal_board_defaults() -> None:
    board = board_from_toml_text(MINIMAL)
    assert board.spi == {}
    assert board.server.port == 7707
    assert board.server.request_timeout == 1.0
    bus = board.i2c["1"]
    bus.transfer([write(0x20, b"\x00\x07")])
    assert bus.transfer(chain([write(0x20, b"\x00"), read(0x20, 1)])) == [b"\x07"]


def test_hex_string_register_keys_and_eeprom_model_preset() -> None:
    board = board_from_toml_text(
        MINIMAL.replace("address = 0x20", 'address = "0x20"\nregisters = { 0x10 = 5, "17" = 6 }')
        + '[[i2c.devices]]\ntype = "eeprom"\naddress = 0x50\nmodel = "24C16"\n'
    )
    dev = board.i2c["1"].device(0x20)
    assert isinstance(dev, RegisterMapDevice)
    assert (dev.get(0x10), dev.get(17)) == (5, 6)
    ee = board.i2c["1"].device(0x57)  # a 24C16 answers 0x50..0x57
    assert isinstance(ee, Eeprom24)
    assert (ee.size, ee.page_size) == (2048, 16)


def test_spi_cs_max_number_defaults_to_highest_cs_plus_one() -> None:
    board = board_from_toml_text(
        'name = "t"\n[[spi]]\nname = "s"\nbackend = "sim"\n'
        '[[spi.devices]]\ntype = "loopback"\ncs = 3\n'
    )
    assert board.spi["s"].config.cs_max_number == 4


# -- validation errors --------------------------------------------------------------


def test_duplicate_address_names_file_bus_and_devices() -> None:
    msg = errors_of(MINIMAL + '[[i2c.devices]]\ntype = "regmap"\naddress = 0x20\n')
    assert "board.toml" in msg
    assert "i2c bus '1'" in msg
    assert "duplicate address 0x20: device #0 (regmap) and device #1 (regmap)" in msg


def test_multi_address_eeprom_overlap_is_a_duplicate() -> None:
    text = MINIMAL.replace("0x20", "0x53") + (
        '[[i2c.devices]]\ntype = "eeprom"\naddress = 0x50\nmodel = "24c16"\n'
    )
    assert "duplicate address 0x53" in errors_of(text)


def test_address_out_of_range() -> None:
    msg = errors_of(MINIMAL.replace("0x20", "0x80"))
    assert "device #0 (regmap at 0x80)" in msg
    assert "7-bit address 0x80 out of range 0x08..0x77" in msg
    msg = errors_of(MINIMAL.replace("0x20", "0x400\nten_bit = true"))
    assert "10-bit address 0x400 out of range" in msg


def test_chip_select_beyond_cs_max_number() -> None:
    msg = errors_of(
        'name = "t"\n[[spi]]\nname = "0"\nbackend = "sim"\ncs_max_number = 2\n'
        '[[spi.devices]]\ntype = "loopback"\ncs = 2\n'
    )
    assert "spi bus '0'" in msg
    assert "chip select 2, but cs_max_number is 2" in msg


def test_unknown_backend_is_a_clear_error() -> None:
    msg = errors_of(MINIMAL.replace('backend = "sim"', 'backend = "gpio"'))
    assert "i2c bus '1': unknown backend 'gpio' (known: 'sim', 'linux', 'replay')" in msg
    msg = errors_of(MINIMAL.replace('backend = "sim"\n', ""))
    assert "i2c bus '1': missing 'backend'" in msg


def test_unknown_device_type_and_typo_setting() -> None:
    msg = errors_of(MINIMAL.replace('"regmap"', '"thermometer"'))
    assert "unknown device type 'thermometer'" in msg
    msg = errors_of(MINIMAL + "adress = 0x21\n")
    assert "device #0 (regmap at 0x20) > adress: unknown setting" in msg


def test_register_checks() -> None:
    msg = errors_of(MINIMAL + "registers = { 0x100 = 1 }\n")
    assert "register 0x100 does not fit the 8-bit pointer" in msg
    msg = errors_of(MINIMAL + "registers = { 0x01 = 0x1FF }\n")
    assert "value 0x1ff of register 0x1 exceeds 8 bits" in msg


def test_eeprom_checks() -> None:
    base = 'name = "t"\n[[i2c]]\nname = "1"\nbackend = "sim"\n[[i2c.devices]]\ntype = "eeprom"\n'
    assert "unknown EEPROM model '24c99'" in errors_of(base + 'address = 0x50\nmodel = "24c99"\n')
    assert "must be a multiple of 8" in errors_of(base + 'address = 0x51\nmodel = "24c16"\n')
    assert "give either model" in errors_of(base + "address = 0x50\nsize = 4096\n")


def test_several_problems_reported_at_once_and_bad_server_settings() -> None:
    msg = errors_of(
        MINIMAL.replace("0x20", "0x7F") + '[server]\nlisten = "localhost"\nrequest_timeout_ms = 0\n'
    )
    assert "0x7f out of range" in msg
    assert "server > listen: 'localhost' must be host:port" in msg
    assert "server > request_timeout_ms: Input should be greater than 0" in msg


def test_duplicate_bus_names() -> None:
    msg = errors_of(MINIMAL + '[[i2c]]\nname = "1"\nbackend = "sim"\n')
    assert "two i2c buses are named '1'" in msg


def test_toml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    assert "not valid TOML" in errors_of("name = \n")
    missing = tmp_path / "nope.toml"
    with pytest.raises(BoardConfigError, match=r"nope\.toml"):
        load_board(missing)

"""Test control by bus and address (what the admin channel's sim ops call), and the
chip types in board files."""

from __future__ import annotations

import errno
import time

import pytest

from bridge.buses.base import BusError
from bridge.buses.sim import SimI2CBus
from bridge.buses.sim.control import Controllable, devices, find
from bridge.config import BoardConfigError, board_from_toml_text, load_board
from protocol.virtio import read, write

CATALOGUE = {"tmp117", "bme280", "sht31", "ssd1306", "ina219", "mcp23017", "ds3231", "mcp9808",
             "lm75", "lis3dh", "mpu6050", "pca9685", "ads1115", "eeprom", "nor_flash"}


def test_the_default_board_has_every_catalogue_chip() -> None:
    board = load_board(None)
    listed = devices(board.i2c, board.spi)
    assert {d["model"] for d in listed} >= CATALOGUE
    for d in listed:
        assert isinstance(d["faults"], list)
        assert all({"name", "unit", "min", "max", "settable"} <= set(q) for q in d["quantities"])
    where = {(d["bus"], d["addr"]) for d in listed if d["kind"] == "i2c"}
    assert where >= {("1", 0x48), ("2", 0x49)}
    assert all(d["bus"] == "1" for d in devices(board.i2c, board.spi, "1"))


def test_find_sets_what_a_bus_read_then_returns() -> None:
    board = load_board(None)
    ctl = find(board.i2c, board.spi, "i2c", "1", 0x48)
    assert isinstance(ctl, Controllable)
    assert ctl.set(temperature=31.25) == {"temperature": 31.25}
    (data,) = board.i2c["1"].transfer([write(0x48, b"\x00"), read(0x48, 2)])
    assert int.from_bytes(data, "big") * 0.0078125 == 31.25
    with pytest.raises(KeyError, match="no device at 0x33"):
        find(board.i2c, board.spi, "i2c", "1", 0x33)
    with pytest.raises(KeyError, match="no i2c bus '7'"):
        find(board.i2c, board.spi, "i2c", "7", 0x48)


def test_a_real_bus_is_not_simulated() -> None:
    class Real:
        pass

    with pytest.raises(ValueError, match="bus 3 is not simulated"):
        find({"3": Real()}, {}, "i2c", "3", 0x48)  # type: ignore[dict-item]


def test_eeprom_write_cycle_nacks_and_its_control() -> None:
    board = load_board(None)
    bus = board.i2c["1"]
    ctl = find(board.i2c, board.spi, "i2c", "1", 0x50)
    assert ctl.get() == {"write_time_s": 0.0}
    ctl.set(write_time_s=0.5)  # the datasheets say 5 ms; long enough for a busy host here
    bus.transfer([write(0x50, b"\x00\x10\xaa")])
    with pytest.raises(BusError) as info:
        bus.transfer([write(0x50, b"\x00\x10"), read(0x50, 1)])  # ACK polling
    assert info.value.errno == errno.ENXIO
    deadline = time.monotonic() + 30
    while True:  # ACK polling, as drivers do: bounded
        try:
            assert bus.transfer([write(0x50, b"\x00\x10"), read(0x50, 1)]) == [b"\xaa"]
            break
        except BusError:
            assert time.monotonic() < deadline
    ctl.set(write_time_s=0.0)
    bus.transfer([write(0x50, b"\x00\x10\xbb")])
    assert bus.transfer([write(0x50, b"\x00\x10"), read(0x50, 1)]) == [b"\xbb"]
    ctl.inject("nack-next", count=1)
    with pytest.raises(BusError):
        bus.transfer([read(0x50, 1)])
    ctl.inject("busy", seconds=60.0)
    with pytest.raises(BusError):
        bus.transfer([read(0x50, 1)])


def test_generic_devices_have_their_fault_knobs() -> None:
    board = load_board(None)
    demo = find(board.i2c, board.spi, "i2c", "2", 0x2A5, ten_bit=True)
    assert [f.name for f in demo.faults()] == ["nack", "nack-after-bytes", "stall", "clear"]
    demo.inject("nack")
    with pytest.raises(BusError):
        board.i2c["2"].transfer([read(0x2A5, 1, ten_bit=True)])
    demo.inject("clear")
    assert board.i2c["2"].transfer([read(0x2A5, 1, ten_bit=True)]) == [b"\xa5"]
    flash = find(board.i2c, board.spi, "spi", "0", 0)
    assert set(flash.get()) == {"program_time_s", "erase_time_s"}
    assert "fail" in [f.name for f in flash.faults()]


CHIP_BOARD = """
name = "chips"
[[i2c]]
name = "1"
backend = "sim"
[[i2c.devices]]
type = "{type}"
address = {address}
{extra}
"""


@pytest.mark.parametrize(("typ", "address", "extra", "problem"), [
    ("tmp117", "0x50", "", "answers at 0x48, 0x49, 0x4a, 0x4b, not 0x50"),
    ("bme280", "0x76", "values = { temperature = 200.0 }", "outside -40..85"),
    ("bme280", "0x76", "values = { pressure = { sequence = [1000, 2000] } }", "outside 300..1100"),
    ("sht31", "0x44", "values = { humidty = 5.0 }", "no quantity 'humidty'"),
    ("ssd1306", "0x3c", "height = 48", "height"),
    ("ds3231", "0x68", 'values = { time = "1999-01-01T00:00:00" }', "2000..2199"),
])
def test_chip_entries_are_checked(typ: str, address: str, extra: str, problem: str) -> None:
    with pytest.raises(BoardConfigError, match=problem):
        board_from_toml_text(CHIP_BOARD.format(type=typ, address=address, extra=extra))


def test_chip_entries_build_with_their_values_and_options() -> None:
    text = CHIP_BOARD.format(type="ina219", address="0x41",
                             extra="shunt_ohms = 0.01\nvalues = { current = 2.0 }")
    board = board_from_toml_text(text)
    bus = board.i2c["1"]
    assert isinstance(bus, SimI2CBus)
    (data,) = bus.transfer([write(0x41, b"\x01"), read(0x41, 2)])
    assert int.from_bytes(data, "big") == 2000  # 20 mV across 10 mΩ, in 10 µV
    spi = board_from_toml_text(
        'name = "s"\n[[spi]]\nname = "0"\nbackend = "sim"\n[[spi.devices]]\ntype = "lis3dh"\n'
        "cs = 0\nvalues = { accel_x = -1.0 }\n")
    ctl = find(spi.i2c, spi.spi, "spi", "0", 0)
    assert ctl.get()["accel_x"] == -1.0
    assert "fail" in [f.name for f in ctl.faults()]

"""busio I2C/SPI (Blinka's surface) with adafruit_bus_device and Adafruit drivers.

Third-party code, unmodified from PyPI: adafruit-circuitpython-busdevice,
adafruit-circuitpython-mcp9808 (I2C) and adafruit-circuitpython-lis3dh (SPI),
against the chips of tests/boards/dropin.toml.
"""

from __future__ import annotations

import errno
import time

import adafruit_lis3dh
import adafruit_mcp9808
import pytest
from adafruit_bus_device import i2c_device, spi_device
from conftest import Running, i2c_log, spi_log, start_server_thread, stop_server_thread

from bridge import dropin
from bridge.config import Board
from bridge.dropin import board, digitalio
from bridge.dropin.busio import I2C, SPI
from protocol.virtio import SpiMode

MCP9808, EEPROM, BME280 = 0x18, 0x50, 0x76


def test_adafruit_mcp9808_reads_and_writes(remote: Running, sim: Board) -> None:
    sensor = adafruit_mcp9808.MCP9808(board.I2C())  # probes, then checks the IDs
    assert sensor.temperature == pytest.approx(24.0625)
    assert sensor.resolution == 3
    sensor.resolution = 1
    sensor.upper_temperature = 40
    sensor.critical_temperature = 85
    assert sensor.resolution == 1
    assert sensor.upper_temperature == 40.0
    assert sensor.critical_temperature == 85.0
    chip = sim.i2c["1"].device(MCP9808)  # type: ignore[attr-defined]
    assert chip.get(0x08) == 1
    assert chip.get(0x02) == 0x0280


def test_adafruit_lis3dh_over_spi_with_a_gpio_chip_select(remote: Running, sim: Board) -> None:
    cs = digitalio.DigitalInOut(board.CE1)
    accel = adafruit_lis3dh.LIS3DH_SPI(board.SPI(), cs)  # reads WHO_AM_I, writes CTRL1/4/5
    x, y, z = accel.acceleration
    assert (x, y) == (0.0, 0.0)
    assert z == pytest.approx(9.58, abs=0.01)
    assert accel.range == adafruit_lis3dh.RANGE_2_G
    accel.range = adafruit_lis3dh.RANGE_8_G
    accel.data_rate = adafruit_lis3dh.DATARATE_100_HZ
    assert accel.range == adafruit_lis3dh.RANGE_8_G
    assert accel.data_rate == adafruit_lis3dh.DATARATE_100_HZ
    chip = sim.spi["0"].device(1)  # type: ignore[attr-defined]
    assert chip.registers[0x23] >> 4 & 3 == 2  # CTRL_REG4 FS = +-8 g
    assert accel.acceleration[2] == pytest.approx(9.58, abs=0.02)  # same 1 g at 4 mg/digit
    # Address byte and data in ONE message on CS 1: the GPIO frame was kept.
    last = spi_log(sim)[-1]
    assert last.cs == 1
    assert next(t.tx[0] for t in last.transfers) == 0xE8


def test_i2cdevice_probe_sees_oserror_for_a_missing_chip(remote: Running) -> None:
    """adafruit_bus_device probes with a zero-length write, then a 1-byte read; only
    OSError means "no device"."""
    i2c = board.I2C()
    i2c_device.I2CDevice(i2c, EEPROM)
    with pytest.raises(ValueError, match="No I2C device at address: 0x33"):
        i2c_device.I2CDevice(i2c, 0x33)
    assert i2c.try_lock()  # the failed probe unlocked the bus
    i2c.unlock()


def test_bus_failures_are_plain_oserror(remote: Running) -> None:
    i2c = I2C(board.SCL, board.SDA)
    with pytest.raises(OSError, match="No such device") as info:
        i2c.writeto(0x33, b"\x00")
    assert type(info.value) is OSError
    assert info.value.errno == errno.ENXIO


def test_scan_lists_the_chips(remote: Running) -> None:
    i2c = I2C(board.SCL, board.SDA)
    assert i2c.try_lock()
    assert i2c.scan() == [MCP9808, EEPROM, BME280]
    i2c.unlock()


def test_writeto_then_readfrom_is_one_combined_transaction(remote: Running, sim: Board) -> None:
    i2c = I2C(board.SCL, board.SDA)
    out, into = bytearray([0xFF, 0x06, 0xFF]), bytearray(4)
    before = len(i2c_log(sim))
    i2c.writeto_then_readfrom(MCP9808, out, into, out_start=1, out_end=2, in_start=1, in_end=3)
    assert into == b"\x00\x00\x54\x00"
    (entry,) = i2c_log(sim)[before:]
    assert [m.describe() for m in entry.msgs] == ["w1@0x18", "r2@0x18"]  # type: ignore[attr-defined]
    i2c.writeto_then_readfrom(MCP9808, b"\x07", into, stop=True)  # Blinka's stop=True: two
    assert len(i2c_log(sim)) - before == 3


def test_try_lock_and_configure_never_touch_the_network(sim: Board) -> None:
    running, t = start_server_thread(sim)
    try:
        s = dropin.connect(running.url)
        i2c = I2C(board.SCL, board.SDA, session=s)
        spi = SPI(board.SCK, board.MOSI, session=s)
    finally:
        stop_server_thread(running, t)  # the server is gone from here on
    try:
        t0 = time.monotonic()
        for _ in range(1000):
            assert i2c.try_lock()
            assert not i2c.try_lock()  # held: refused at once, not waited for
            i2c.unlock()
            assert spi.try_lock()
            spi.configure(baudrate=1_000_000, polarity=1, phase=1)
            spi.unlock()
        assert time.monotonic() - t0 < 1.0
        assert spi.frequency == 1_000_000
        with pytest.raises(OSError, match=r"cannot reach|not connected"):
            i2c.writeto(EEPROM, b"")  # only real transfers need the server
    finally:
        dropin.disconnect()


def test_configure_needs_the_lock_and_travels_in_the_transfer(remote: Running, sim: Board
                                                               ) -> None:
    spi = SPI(board.SCK, board.MOSI, board.MISO)
    with pytest.raises(RuntimeError, match="try_lock"):
        spi.configure(baudrate=2_000_000)
    assert spi.try_lock()
    spi.configure(baudrate=2_000_000, polarity=1, phase=0, bits=8)
    buf = bytearray(3)
    spi.write_readinto(b"\x01\x02\x03", buf)  # CS 0: the loopback
    spi.unlock()
    assert buf == b"\x01\x02\x03"
    head = spi_log(sim)[-1].transfers[0].head  # type: ignore[attr-defined]
    assert (head.freq, head.mode & 3) == (2_000_000, 2)
    with pytest.raises(RuntimeError):
        spi.write_readinto(b"\x01\x02", bytearray(3))


def test_i2c_exit_releases_and_deinitialises(remote: Running) -> None:
    with I2C(board.SCL, board.SDA) as i2c:
        assert i2c.try_lock()
        i2c.unlock()
    with pytest.raises(ValueError, match="deinitialized"):
        i2c.try_lock()
    assert board.I2C() is board.I2C()  # Blinka's singleton


def test_unknown_pins_are_refused(remote: Running) -> None:
    with pytest.raises(ValueError, match="No Hardware I2C"):
        I2C(board.D5, board.D6)  # type: ignore[attr-defined]


def test_mapped_active_high_gpio_chip_select_frames_one_message(remote: Running, sim: Board
                                                                ) -> None:
    dropin.connect(remote.url, ["cs:D5=0.1"])  # D5 wired to the LIS3DH's CS
    device = spi_device.SPIDevice(board.SPI(), digitalio.DigitalInOut(board.D5),  # type: ignore[attr-defined]
                                  cs_active_value=True)
    buf = bytearray(1)
    with device as spi:
        spi.write(bytes([0x80 | 0x0F]))  # read WHO_AM_I
        spi.readinto(buf)
    assert buf[0] == 0x33
    entry = spi_log(sim)[-1]
    assert entry.cs == 1  # type: ignore[attr-defined]
    assert len(entry.transfers) == 2  # type: ignore[attr-defined]
    assert all(t.head.mode & SpiMode.CS_HIGH for t in entry.transfers)  # type: ignore[attr-defined]

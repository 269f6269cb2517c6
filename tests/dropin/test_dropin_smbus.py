"""The smbus2-compatible SMBus over a real server, with smbus2 0.6's traps.

The simulated board is tests/boards/dropin.toml; the third-party driver is
RPi.bme280 (PyPI ``RPi.bme280``), which is written against smbus2.
"""

from __future__ import annotations

import ctypes
import errno
import inspect
import multiprocessing
import os
import subprocess
import sys

import bme280
import pytest
import smbus2
from conftest import DROPIN_BOARD, Running, i2c_log, start_server_thread, stop_server_thread

from bridge import dropin
from bridge.client import Client, read, write
from bridge.config import Board, load_board
from bridge.dropin.smbus import I2cFunc, SMBus, _crc8, i2c_msg
from protocol.handshake import I2C_FUNC_I2C

BME280, MCP9808, EEPROM = 0x76, 0x18, 0x50


def test_rpi_bme280_driver_reads_and_configures_the_chip(remote: Running, sim: Board) -> None:
    """RPi.bme280, unmodified: calibration via read_word_data, a forced sample, block read."""
    with SMBus(1) as bus:
        assert bus.read_byte_data(BME280, 0xD0) == 0x60  # chip ID
        cal = bme280.load_calibration_params(bus, BME280)
        assert (cal.dig_T1, cal.dig_T2, cal.dig_T3) == (27504, 26435, -1000)  # datasheet
        data = bme280.sample(bus, BME280, cal, bme280.oversampling.x4)
        assert data.temperature == pytest.approx(25.08, abs=0.01)
        assert data.pressure == pytest.approx(1006.53, abs=0.01)
        assert data.humidity == pytest.approx(43.86, abs=0.01)
        # The oversampling the driver wrote is what the chip now reports.
        assert bus.read_byte_data(BME280, 0xF2) == 3  # ctrl_hum osrs_h = x4
        assert bus.read_byte_data(BME280, 0xF4) >> 2 == 0b011_011  # osrs_t, osrs_p = x4


def test_i2c_rdwr_fills_the_callers_read_messages_in_place(remote: Running, sim: Board) -> None:
    bus = SMBus(1)
    wr = i2c_msg.write(MCP9808, [0x06])
    rd = i2c_msg.read(MCP9808, 2)
    before = len(i2c_log(sim))
    assert bus.i2c_rdwr(wr, rd) is None
    assert list(rd) == [0x00, 0x54]
    assert bytes(rd) == b"\x00\x54"
    assert rd.buf[1] == b"\x54"  # ctypes buffer, as smbus2's
    # One combined transaction: write then repeated-START read.
    (entry,) = i2c_log(sim)[before:]
    assert [m.describe() for m in entry.msgs] == ["w1@0x18", "r2@0x18"]  # type: ignore[attr-defined]


def test_i2c_msg_behaves_like_smbus2s(remote: Running) -> None:
    real = smbus2
    pairs = [(i2c_msg.write(0x50, [1, 2, 0x41]), real.i2c_msg.write(0x50, [1, 2, 0x41])),
             (i2c_msg.write(0x50, "hi"), real.i2c_msg.write(0x50, "hi")),
             (i2c_msg.read(0x50, 3), real.i2c_msg.read(0x50, 3))]
    for ours, theirs in pairs:
        assert (ours.addr, ours.flags, ours.len) == (theirs.addr, theirs.flags, theirs.len)
        assert (list(ours), bytes(ours), repr(ours), str(ours), len(ours)) == (
            list(theirs), bytes(theirs), repr(theirs), str(theirs), len(theirs))
        assert isinstance(ours, ctypes.Structure)


def test_every_operation_has_smbus2s_signature() -> None:
    """Same parameter names and defaults, including the trailing ``force``."""
    real = smbus2
    names = [n for n, f in inspect.getmembers(real.SMBus, inspect.isfunction)
             if not n.startswith("_")]
    assert len(names) > 15
    for name in names:
        theirs = inspect.signature(getattr(real.SMBus, name))
        ours = inspect.signature(getattr(SMBus, name))
        assert [(p.name, p.default) for p in ours.parameters.values()] == [
            (p.name, p.default) for p in theirs.parameters.values()], name
    smbus_ops = [n for n in names if n not in ("open", "close", "enable_pec", "i2c_rdwr")]
    for name in smbus_ops:
        assert "force" in inspect.signature(getattr(SMBus, name)).parameters, name
    assert {f.name: f.value for f in I2cFunc} == {f.name: f.value for f in real.I2cFunc}


def test_block_reads_return_lists(remote: Running) -> None:
    bus = SMBus(1)
    bus.write_i2c_block_data(EEPROM, 0x10, [1, 2, 3, 4])
    got = bus.read_i2c_block_data(EEPROM, 0x10, 4)
    assert type(got) is list
    assert got == [1, 2, 3, 4]
    bus.write_i2c_block_data(EEPROM, 0x20, [3, 0xAA, 0xBB, 0xCC])  # a length-prefixed block
    block = bus.read_block_data(EEPROM, 0x20)
    assert type(block) is list
    assert block == [0xAA, 0xBB, 0xCC]


def test_word_and_byte_operations(remote: Running, sim: Board) -> None:
    bus = SMBus(1)
    assert bus.read_word_data(MCP9808, 0x07) == 0x0004  # SMBus words are little-endian
    bus.write_word_data(MCP9808, 0x02, 0x8001, force=True)  # 0x0180 big-endian on the chip
    assert bus.read_word_data(MCP9808, 0x02) == 0x8001
    bus.write_byte(EEPROM, 0x30)  # set the EEPROM's address pointer
    bus.write_byte_data(EEPROM, 0x30, 0x5A)
    bus.write_byte(EEPROM, 0x30)
    assert bus.read_byte(EEPROM) == 0x5A
    bus.write_quick(EEPROM)
    assert bus.address == EEPROM


@pytest.mark.parametrize("call", [
    lambda b: b.write_i2c_block_data(EEPROM, 0, [0] * 33),
    lambda b: b.read_i2c_block_data(EEPROM, 0, 33),
    lambda b: b.write_block_data(EEPROM, 0, [0] * 33),
    lambda b: b.block_process_call(EEPROM, 0, [0] * 33),
])
def test_blocks_over_32_bytes_raise_valueerror_before_any_io(
        remote: Running, sim: Board, call: object) -> None:
    bus = SMBus(1)
    before = len(i2c_log(sim))
    with pytest.raises(ValueError, match="32"):
        call(bus)  # type: ignore[operator]
    assert len(i2c_log(sim)) == before


def test_a_nack_is_a_plain_oserror_with_the_boards_errno(remote: Running) -> None:
    bus = SMBus(1)
    with pytest.raises(OSError, match="No such device") as info:
        bus.read_byte_data(0x33, 0)  # nobody there
    assert type(info.value) is OSError
    assert info.value.errno == errno.ENXIO
    with pytest.raises(OSError, match="No such device") as info:
        bus.write_quick(0x33)
    assert info.value.errno == errno.ENXIO


def test_open_fails_like_a_missing_device_node(remote: Running) -> None:
    with pytest.raises(FileNotFoundError) as info:
        SMBus(7)
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == "/dev/i2c-7"
    with pytest.raises(TypeError):
        SMBus(1.5)  # type: ignore[arg-type]


def test_mapped_local_bus_reaches_the_remote_bus(remote: Running) -> None:
    dropin.connect(remote.url, ["i2c:3=1"])
    assert SMBus(3).read_byte_data(BME280, 0xD0) == 0x60
    assert SMBus("/dev/i2c-3").read_byte_data(BME280, 0xD0) == 0x60


def test_funcs_reflect_the_remote_adapter() -> None:
    board = load_board(str(DROPIN_BOARD))
    board.i2c["1"].functionality = I2C_FUNC_I2C  # an adapter with no SMBus emulation, no PEC
    running, t = start_server_thread(board)
    try:
        s = dropin.connect(running.url)
        bus = SMBus(1, session=s)
        assert bus.funcs == I2cFunc.I2C
        with pytest.raises(OSError, match="SMBUS_PEC"):
            bus.pec = 1
        assert bus.pec == 0
    finally:
        dropin.disconnect()
        stop_server_thread(running, t)


def test_pec_is_sent_and_checked_when_the_adapter_has_it(remote: Running, sim: Board) -> None:
    bus = SMBus(1)
    assert bus.funcs & I2cFunc.SMBUS_PEC
    bus.pec = 1
    assert bus.pec == 1
    before = len(i2c_log(sim))
    bus.write_byte_data(EEPROM, 0x40, 0x12)
    (entry,) = i2c_log(sim)[before:]
    sent = entry.msgs[0].data  # type: ignore[attr-defined]
    assert sent[:2] == b"\x40\x12"
    assert sent[2] == _crc8(bytes([EEPROM << 1, 0x40, 0x12]))
    # The simulated EEPROM sends no PEC byte: the check must fail, not pass silently.
    with pytest.raises(OSError, match="PEC mismatch") as info:
        bus.read_byte_data(MCP9808, 0x06)
    assert info.value.errno == errno.EBADMSG
    # A chip that does send the right PEC byte: store value + PEC in the EEPROM.
    bus.pec = 0
    bus.write_i2c_block_data(EEPROM, 0x60, [0x42, _crc8(bytes([EEPROM << 1 | 1, 0x42]))])
    bus.write_byte(EEPROM, 0x60)  # address pointer
    bus.pec = 1
    assert bus.read_byte(EEPROM) == 0x42
    bus.close()
    assert bus.pec == 0
    assert bus.fd is None


def test_rdwr_flags_a_virtio_adapter_cannot_do_are_refused(remote: Running) -> None:
    bus = SMBus(1)
    msg = i2c_msg.read(MCP9808, 2)
    msg.flags |= 0x4000  # I2C_M_NOSTART
    with pytest.raises(OSError, match="Operation not supported") as info:
        bus.i2c_rdwr(i2c_msg.write(MCP9808, [6]), msg)
    assert info.value.errno == errno.EOPNOTSUPP


def test_importing_the_drop_in_never_needs_smbus2_or_spidev() -> None:
    """The guest side has neither installed: block them and import everything."""
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ('smbus2', 'spidev'): raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import bridge.dropin, bridge.dropin.board, bridge.dropin.digitalio\n"
        "from bridge.dropin import SMBus, SpiDev, I2C, SPI, i2c_msg\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_a_callers_own_client_is_used_and_left_open(remote: Running) -> None:
    with Client.from_url(remote.url) as client:
        s = dropin.connect(client=client)
        assert SMBus(1, session=s).read_byte_data(BME280, 0xD0) == 0x60
        dropin.disconnect()
        assert client.transfer("1", [write(BME280, [0xD0]), read(BME280, 1)]) == [b"\x60"]


def _read_chip_id_in_child() -> None:
    os._exit(0 if SMBus(1).read_byte_data(BME280, 0xD0) == 0x60 else 3)


def test_a_forked_child_gets_its_own_connection(remote: Running) -> None:
    assert SMBus(1).read_byte_data(BME280, 0xD0) == 0x60  # the parent's connection is open
    child = multiprocessing.get_context("fork").Process(target=_read_chip_id_in_child)
    child.start()
    child.join(30)
    if child.exitcode is None:
        child.kill()
    assert child.exitcode == 0
    assert SMBus(1).read_byte_data(BME280, 0xD0) == 0x60  # and the parent's still works

"""The simulated I2C bus and its devices, driven directly (no server)."""

from __future__ import annotations

import errno
import threading
import time

import pytest

from bridge.buses.base import BusError
from bridge.buses.sim import Eeprom24, RegisterMapDevice, SimI2CBus
from bridge.config import load_board
from protocol.handshake import I2C_FUNC_10BIT_ADDR, I2C_FUNC_I2C, I2C_FUNC_SMBUS_QUICK
from protocol.virtio import chain, read, write


def _eeprom_bus(**kw: object) -> tuple[SimI2CBus, Eeprom24]:
    ee = Eeprom24(0x50, size=4096, page_size=32, **kw)  # type: ignore[arg-type]
    return SimI2CBus("t", devices=[ee]), ee


def ee_read(bus: SimI2CBus, addr: int, n: int) -> bytes:
    return bus.transfer(chain([write(0x50, addr.to_bytes(2, "big")), read(0x50, n)]))[0]


def ee_write(bus: SimI2CBus, addr: int, data: bytes) -> None:
    assert bus.transfer([write(0x50, addr.to_bytes(2, "big") + data)]) == []


# -- EEPROM -------------------------------------------------------------------


def test_eeprom_write_then_read_back() -> None:
    bus, ee = _eeprom_bus()
    ee_write(bus, 0x0123, b"hello")
    assert ee_read(bus, 0x0123, 5) == b"hello"
    assert ee_read(bus, 0x0120, 3) == b"\xff\xff\xff"  # erased neighbours
    assert ee.write_cycles == 1


def test_eeprom_16bit_addressing_reaches_high_memory() -> None:
    bus, ee = _eeprom_bus()
    ee_write(bus, 0x0F00, b"\xaa")
    ee_write(bus, 0x0000, b"\x55")
    assert ee.memory[0x0F00] == 0xAA
    assert ee.memory[0] == 0x55
    assert ee_read(bus, 0x0F00, 1) == b"\xaa"
    # Address bits above the part's size are ignored, like a real 24C32.
    assert ee_read(bus, 0xFF00, 1) == b"\xaa"


def test_eeprom_page_write_rolls_over_within_page() -> None:
    bus, _ = _eeprom_bus()
    ee_write(bus, 30, b"ABCD")  # page 0 is 0..31: C, D land at 0, 1
    assert ee_read(bus, 0, 32) == b"CD" + b"\xff" * 28 + b"AB"
    assert ee_read(bus, 32, 2) == b"\xff\xff"  # the next page was not touched


def test_eeprom_sequential_read_wraps_at_end_and_current_address_read() -> None:
    bus, ee = _eeprom_bus()
    ee.memory[0] = 0x11
    ee.memory[4095] = 0x99
    assert ee_read(bus, 4095, 2) == b"\x99\x11"
    # Current-address read continues where the last read stopped.
    assert bus.transfer([read(0x50, 1)]) == [b"\xff"]
    assert ee.pointer == 2


def test_eeprom_write_commits_at_stop_not_on_repeated_start() -> None:
    bus, ee = _eeprom_bus()
    # Data followed by a repeated START (not STOP): no write cycle, data lost.
    out = bus.transfer(chain([write(0x50, b"\x00\x10XY"), read(0x50, 2)]))
    assert out == [b"\xff\xff"]
    assert ee.memory[0x10:0x12] == b"\xff\xff"
    assert ee.write_cycles == 0


def test_eeprom_8bit_multiblock_part_answers_block_addresses() -> None:
    ee = Eeprom24(0x50, size=2048, page_size=16)  # 24C16: 0x50..0x57
    bus = SimI2CBus("t", devices=[ee])
    bus.transfer([write(0x53, b"\x20Q")])
    assert ee.memory[0x320] == ord("Q")
    assert bus.device(0x57) is ee
    assert bus.transfer(chain([write(0x53, b"\x20"), read(0x53, 1)])) == [b"Q"]


def test_eeprom_busy_write_cycle_nacks_address_for_ack_polling() -> None:
    bus, _ = _eeprom_bus(write_time_s=0.05)
    ee_write(bus, 0, b"z")
    with pytest.raises(BusError) as ei:
        bus.transfer([write(0x50)])
    assert ei.value.errno == errno.ENXIO
    time.sleep(0.06)
    assert bus.transfer([write(0x50)]) == []
    assert ee_read(bus, 0, 1) == b"z"


# -- register-map devices ----------------------------------------------------


def test_tmp117_device_id_via_pointer_write_and_read() -> None:
    bus = load_board(None).i2c["1"]
    assert bus.transfer(chain([write(0x48, b"\x0f"), read(0x48, 2)])) == [b"\x01\x17"]
    # Reset configuration 0x0220 with Data_Ready (bit 13) set; reading it clears the flag.
    assert bus.transfer(chain([write(0x48, b"\x01"), read(0x48, 2)])) == [b"\x22\x20"]
    assert bus.transfer(chain([write(0x48, b"\x01"), read(0x48, 2)])) == [b"\x02\x20"]


def test_tmp117_reads_around_25c() -> None:
    bus = load_board(None).i2c["1"]
    temps = [
        int.from_bytes(bus.transfer(chain([write(0x48, b"\x00"), read(0x48, 2)]))[0], "big")
        for _ in range(4)
    ]
    assert all(abs(t * 7.8125e-3 - 25.0) < 0.1 for t in temps)


def test_regmap_read_only_register_ignores_or_nacks_writes() -> None:
    ign = RegisterMapDevice(0x40, value_bits=16, registers={0x0F: 0x0117}, read_only=[0x0F])
    nak = RegisterMapDevice(
        0x41, value_bits=16, registers={0x0F: 0x0117}, read_only=[0x0F], read_only_writes="nack"
    )
    bus = SimI2CBus("t", devices=[ign, nak])
    assert bus.transfer([write(0x40, b"\x0f\x12\x34")]) == []  # ACKed, ignored
    assert ign.get(0x0F) == 0x0117
    with pytest.raises(BusError) as ei:
        bus.transfer([write(0x41, b"\x0f\x12\x34")])
    assert ei.value.errno == errno.EREMOTEIO
    assert "data byte 1" in ei.value.message
    assert nak.get(0x0F) == 0x0117


def test_regmap_sequence_and_counter_registers_change_on_read() -> None:
    dev = RegisterMapDevice(0x40, sequences={0: [1, 2, 3]}, registers={5: 250}, counters={5: 3})
    bus = SimI2CBus("t", devices=[dev])

    def rd(reg: int) -> int:
        return bus.transfer(chain([write(0x40, bytes([reg])), read(0x40, 1)]))[0][0]

    assert [rd(0) for _ in range(4)] == [1, 2, 3, 1]
    assert [rd(5) for _ in range(3)] == [250, 253, 0]  # wraps at 8 bits


def test_regmap_auto_increment_and_endianness() -> None:
    dev = RegisterMapDevice(0x40, pointer_bits=16, value_bits=16, endian="little")
    bus = SimI2CBus("t", devices=[dev])
    bus.transfer([write(0x40, b"\x01\x00" + b"\x34\x12\x78\x56")])
    assert dev.get(0x100) == 0x1234
    assert dev.get(0x101) == 0x5678
    assert bus.transfer(chain([write(0x40, b"\x01\x00"), read(0x40, 4)])) == [b"\x34\x12\x78\x56"]
    # Without auto-increment a long read repeats the pointed register.
    dev.auto_increment = False
    assert bus.transfer(chain([write(0x40, b"\x01\x00"), read(0x40, 4)])) == [b"\x34\x12" * 2]


def test_mcp9808_ids_and_8bit_resolution_register() -> None:
    bus = load_board(None).i2c["2"]
    assert bus.transfer(chain([write(0x18, b"\x06"), read(0x18, 2)])) == [b"\x00\x54"]
    assert bus.transfer(chain([write(0x18, b"\x07"), read(0x18, 2)])) == [b"\x04\x00"]
    assert bus.transfer(chain([write(0x18, b"\x08"), read(0x18, 1)])) == [b"\x03"]


def test_ten_bit_device() -> None:
    bus = load_board(None).i2c["2"]
    assert bus.functionality & I2C_FUNC_10BIT_ADDR
    msgs = chain([write(0x2A5, b"\x00", ten_bit=True), read(0x2A5, 2, ten_bit=True)])
    assert bus.transfer(msgs) == [b"\xa5\x10"]
    # The same number as a 7-bit address is a different (absent) device.
    with pytest.raises(BusError):
        bus.transfer([write(0x25)])
    counter = chain([write(0x2A5, b"\x10", ten_bit=True), read(0x2A5, 1, ten_bit=True)])
    assert [bus.transfer(counter)[0][0] for _ in range(3)] == [0, 1, 2]


# -- bus behaviour -------------------------------------------------------------


def test_functionality_bits() -> None:
    bus = SimI2CBus("t")
    assert bus.functionality & I2C_FUNC_I2C
    assert bus.functionality & I2C_FUNC_SMBUS_QUICK
    assert bus.info().functionality == bus.functionality


def test_absent_address_nack_names_bus_address_and_message() -> None:
    bus, _ee = _eeprom_bus()
    with pytest.raises(BusError) as ei:
        bus.transfer(chain([write(0x50, b"\x00\x00"), read(0x51, 2)]))
    e = ei.value
    assert (e.errno, e.index) == (errno.ENXIO, 1)
    # The reason only: the server prefixes bus, message index and address.
    assert e.message == "no ACK (no device)"


def test_write_after_nacked_message_never_reaches_device() -> None:
    bus, ee = _eeprom_bus()
    with pytest.raises(BusError) as ei:
        bus.transfer(chain([write(0x51, b"\x00"), write(0x50, b"\x00\x00SECRET")]))
    assert ei.value.index == 0
    assert ee.memory[:6] == b"\xff" * 6
    assert ee.write_cycles == 0
    entry = bus.log[-1]
    assert not entry.ok
    assert entry.index == 0
    assert entry.describe()[1].endswith("not run")


def test_completed_reads_before_failure_are_handed_back() -> None:
    bus, ee = _eeprom_bus()
    ee.memory[0:2] = b"ok"
    with pytest.raises(BusError) as ei:
        bus.transfer(chain([write(0x50, b"\x00\x00"), read(0x50, 2), read(0x33, 1)]))
    assert ei.value.index == 2
    assert ei.value.reads == [b"ok"]


def test_zero_length_probe_acks_present_and_nacks_absent() -> None:
    bus, ee = _eeprom_bus()
    assert bus.transfer([write(0x50)]) == []
    assert bus.transfer([read(0x50, 0)]) == [b""]
    with pytest.raises(BusError) as ei:
        bus.transfer([write(0x52)])
    assert ei.value.errno == errno.ENXIO
    ee.nack = True  # a device that stops answering
    with pytest.raises(BusError) as ei:
        bus.transfer([write(0x50)])
    assert "NACKed its address" in ei.value.message


def test_nack_after_bytes_is_a_data_nack_and_keeps_acked_bytes() -> None:
    bus, ee = _eeprom_bus()
    ee.nack_after_bytes = 4  # 2 address bytes + 2 data bytes
    with pytest.raises(BusError) as ei:
        ee_write(bus, 0, b"abcdef")
    assert (ei.value.errno, ei.value.index) == (errno.EREMOTEIO, 0)
    assert "data byte 4" in ei.value.message
    assert ee.memory[:4] == b"ab\xff\xff"  # the STOP after the NACK committed the ACKed bytes


def test_stall_blocks_for_the_configured_time() -> None:
    bus, _ee = _eeprom_bus(stall_s=0.05)
    t0 = time.monotonic()
    bus.transfer([write(0x50)])
    assert time.monotonic() - t0 >= 0.05


def test_timing_mode_takes_wire_time() -> None:
    bus = SimI2CBus(
        "t", devices=[Eeprom24(0x50, size=4096, page_size=32)], timing=True, frequency_hz=100_000
    )
    t0 = time.monotonic()
    bus.transfer(chain([write(0x50, b"\x00\x00"), read(0x50, 200)]))
    # (1+2)*9 + (1+200)*9 + 3 clocks at 100 kHz ~ 18.4 ms
    assert time.monotonic() - t0 >= 0.018


def test_chains_from_threads_are_never_interleaved() -> None:
    bus = SimI2CBus(
        "t", devices=[RegisterMapDevice(a, auto_increment=False) for a in (0x20, 0x21, 0x22, 0x23)]
    )

    def worker(addr: int) -> None:
        for k in range(50):
            msgs = chain([write(addr, bytes([k % 256, addr])), read(addr, 1), write(addr)])
            bus.transfer(msgs)

    threads = [threading.Thread(target=worker, args=(a,)) for a in (0x20, 0x21, 0x22, 0x23)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log = bus.log_snapshot()
    assert len(log) == 200
    assert [e.seq for e in log] == list(range(1, 201))
    for e in log:
        assert len(e.msgs) == 3
        assert len({m.addr for m in e.msgs}) == 1
        assert e.reads == (bytes([e.msgs[0].addr]),)


def test_log_is_bounded_and_can_be_disabled() -> None:
    bus = SimI2CBus("t", devices=[RegisterMapDevice(0x20)], log_size=3)
    for _ in range(5):
        bus.transfer([write(0x20, b"\x00")])
    assert [e.seq for e in bus.log] == [3, 4, 5]
    assert bus.log[-1].describe() == ["w1@0x20 00"]
    off = SimI2CBus("t", devices=[RegisterMapDevice(0x20)], log_size=0)
    off.transfer([write(0x20)])
    assert len(off.log) == 0


def test_device_management() -> None:
    bus = SimI2CBus("t")
    dev = bus.add(RegisterMapDevice(0x20))
    with pytest.raises(ValueError, match="already used"):
        bus.add(RegisterMapDevice(0x20))
    assert bus.device(0x20) is dev
    assert bus.remove(0x20) is dev
    with pytest.raises(KeyError, match="no device at 0x20"):
        bus.device(0x20)
    assert bus.transfer([]) == []


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("endian", ["big", "little"])
def test_a_register_reads_as_its_bytes_in_its_byte_order(bits: int, endian: str) -> None:
    """The register map builds a value's bytes from a table (not ``int.to_bytes``): every
    value reads back as ``to_bytes`` says, in both widths and byte orders."""
    dev = RegisterMapDevice(0x48, value_bits=bits, endian=endian,  # type: ignore[arg-type]
                            auto_increment=False)
    bus = SimI2CBus("1", devices=[dev])
    for value in [*range(0, 1 << bits, 251), (1 << bits) - 1]:
        dev.set(0x05, value)
        (got,) = bus.transfer(chain([write(0x48, b"\x05"), read(0x48, bits // 8)]))
        assert got == value.to_bytes(bits // 8, endian), value  # type: ignore[arg-type]

"""The simulated SPI bus, the NOR flash and the loopback device, driven directly."""

from __future__ import annotations

import errno
import time

import pytest

from bridge.buses.base import BusError
from bridge.buses.sim import LoopbackDevice, SimSpiBus, SpiDevice, SpiNorFlash, sim_spi_config
from bridge.config import load_board
from protocol.virtio import SpiMode, SpiTransfer, SpiTransferHead, check_spi_transfer

H = SpiTransferHead()
H_CHANGE = SpiTransferHead(cs_change=1)


def tx(data: bytes, head: SpiTransferHead = H) -> SpiTransfer:
    return SpiTransfer(head, data, 0)


def rx(n: int, head: SpiTransferHead = H) -> SpiTransfer:
    return SpiTransfer(head, None, n)


def duplex(data: bytes, head: SpiTransferHead = H) -> SpiTransfer:
    return SpiTransfer(head, data, len(data))


def flash_bus(**kw: object) -> tuple[SimSpiBus, SpiNorFlash]:
    flash = SpiNorFlash(size=64 * 1024, **kw)  # type: ignore[arg-type]
    return SimSpiBus("t", devices={0: flash}), flash


def cmd(bus: SimSpiBus, data: bytes, n_rx: int = 0) -> bytes:
    """One CS frame: write ``data``, then read ``n_rx`` bytes with CS held."""
    transfers = [tx(data)] + ([rx(n_rx)] if n_rx else [])
    out = bus.transfer(0, transfers)
    return out[0] if n_rx else b""


def status(bus: SimSpiBus) -> int:
    return cmd(bus, b"\x05", 1)[0]


def program(bus: SimSpiBus, addr: int, data: bytes) -> None:
    cmd(bus, b"\x06")
    cmd(bus, b"\x02" + addr.to_bytes(3, "big") + data)


def read_flash(bus: SimSpiBus, addr: int, n: int) -> bytes:
    return cmd(bus, b"\x03" + addr.to_bytes(3, "big"), n)


# -- NOR flash -------------------------------------------------------------------


def test_default_board_flash_jedec_id() -> None:
    bus = load_board(None).spi["0"]
    assert bus.transfer(0, [tx(b"\x9f"), rx(3)]) == [b"\xef\x40\x16"]
    # Full duplex in one transfer: the ID comes back after the opcode byte.
    assert bus.transfer(0, [duplex(b"\x9f\x00\x00\x00")]) == [b"\xff\xef\x40\x16"]
    assert bus.transfer(0, [tx(b"\xab\x00\x00\x00"), rx(1)]) == [b"\x15"]
    assert bus.transfer(0, [tx(b"\x90\x00\x00\x00"), rx(2)]) == [b"\xef\x15"]


def test_flash_reads_erased_and_wraps_at_end() -> None:
    bus, flash = flash_bus()
    flash.memory[0:2] = b"AB"
    assert read_flash(bus, 0, 4) == b"AB\xff\xff"
    assert read_flash(bus, flash.size - 1, 3) == b"\xffAB"
    # Fast read has one dummy byte after the address.
    assert cmd(bus, b"\x0b\x00\x00\x00\x00", 2) == b"AB"


def test_wren_program_read_back_and_wel_cleared() -> None:
    bus, _ = flash_bus()
    assert status(bus) == 0
    cmd(bus, b"\x06")
    assert status(bus) == 0x02  # WEL
    cmd(bus, b"\x02\x00\x01\x00hello")
    assert status(bus) == 0  # program clears WEL
    assert read_flash(bus, 0x100, 6) == b"hello\xff"


def test_program_without_wren_is_ignored() -> None:
    bus, flash = flash_bus()
    cmd(bus, b"\x02\x00\x00\x00data")
    assert read_flash(bus, 0, 4) == b"\xff" * 4
    cmd(bus, b"\x06")
    cmd(bus, b"\x04")  # WRDI
    cmd(bus, b"\x02\x00\x00\x00data")
    assert flash.memory[:4] == b"\xff" * 4


def test_program_only_clears_bits_and_wraps_within_page() -> None:
    bus, _ = flash_bus()
    program(bus, 0x10, b"\x0f")
    program(bus, 0x10, b"\xf3")  # 0x0f & 0xf3
    assert read_flash(bus, 0x10, 1) == b"\x03"
    program(bus, 0x2FE, b"WXYZ")  # page 0x200..0x2ff: Y, Z roll over to 0x200
    assert read_flash(bus, 0x2FE, 2) == b"WX"
    assert read_flash(bus, 0x200, 2) == b"YZ"
    assert read_flash(bus, 0x300, 1) == b"\xff"


def test_sector_erase_needs_wren_and_erases_4k() -> None:
    bus, flash = flash_bus()
    flash.memory[0x0FFF:0x1002] = b"\x00\x00\x00"
    cmd(bus, b"\x20\x00\x10\x00")  # no WREN: ignored
    assert flash.memory[0x1000] == 0
    cmd(bus, b"\x06")
    cmd(bus, b"\x20\x00\x10\x80")  # any address inside the sector
    assert read_flash(bus, 0x0FFF, 3) == b"\x00\xff\xff"
    assert status(bus) == 0


def test_erase_with_incomplete_address_is_ignored_but_keeps_wel() -> None:
    bus, flash = flash_bus()
    flash.memory[0] = 0
    cmd(bus, b"\x06")
    cmd(bus, b"\x20\x00\x00")  # CS rose after 2 address bytes
    assert flash.memory[0] == 0
    assert status(bus) == 0x02


def test_chip_erase() -> None:
    bus, flash = flash_bus()
    flash.memory[100] = 0
    cmd(bus, b"\x06")
    cmd(bus, b"\xc7")
    assert flash.memory[100] == 0xFF


def test_status_wip_while_busy_and_commands_ignored() -> None:
    bus, flash = flash_bus(erase_time_s=0.05)
    flash.memory[0] = 0
    cmd(bus, b"\x06")
    cmd(bus, b"\x20\x00\x00\x00")
    assert status(bus) & 0x01  # WIP
    assert read_flash(bus, 0, 1) == b"\xff"  # ignored while busy: MISO floats
    # Status can be polled continuously within one frame.
    assert bus.transfer(0, [tx(b"\x05"), rx(3)])[0][0] & 1
    time.sleep(0.06)
    assert status(bus) == 0
    assert read_flash(bus, 0, 1) == b"\xff"


def test_cs_change_frames_commands() -> None:
    bus, flash = flash_bus()
    flash.memory[0:4] = b"DATA"
    # cs_change=0: the read transfer continues the 0x03 command.
    assert bus.transfer(0, [tx(b"\x03\x00\x00\x00"), rx(4)]) == [b"DATA"]
    # cs_change=1: CS toggles, the read is a new (empty) command.
    assert bus.transfer(0, [tx(b"\x03\x00\x00\x00", H_CHANGE), rx(4)]) == [b"\xff" * 4]
    # WREN then program in one message, framed by cs_change.
    bus.transfer(0, [tx(b"\x06", H_CHANGE), tx(b"\x02\x00\x00\x10ok")])
    assert flash.memory[0x10:0x12] == b"ok"
    # Without cs_change the WREN frame swallows the program: nothing happens.
    bus.transfer(0, [tx(b"\x06"), tx(b"\x02\x00\x00\x20no")])
    assert flash.memory[0x20:0x22] == b"\xff\xff"


# -- loopback, empty chip selects, modes ---------------------------------------


def test_default_board_loopback_full_duplex() -> None:
    bus = load_board(None).spi["0"]
    data = bytes(range(64))
    assert bus.transfer(1, [duplex(data)]) == [data]
    # Half-duplex read: MOSI is 0x00, so the loopback returns zeros.
    assert bus.transfer(1, [tx(b"\xaa"), rx(2)]) == [b"\x00\x00"]


def test_empty_chip_select_reads_ff() -> None:
    bus = SimSpiBus("t", config=sim_spi_config(2), devices={0: LoopbackDevice()})
    assert bus.transfer(1, [duplex(b"\x00\x01\x02")]) == [b"\xff\xff\xff"]
    with pytest.raises(ValueError, match=r"chip select 2 outside 0\.\.1"):
        bus.add(2, LoopbackDevice())


def test_loop_mode_returns_tx_without_touching_device() -> None:
    bus, flash = flash_bus()
    loop = SpiTransferHead(mode=int(SpiMode.LOOP))
    assert bus.transfer(0, [duplex(b"\x9f\x01\x02\x03", loop)]) == [b"\x9f\x01\x02\x03"]
    # The flash saw no opcode: a WREN sent in loop mode does nothing.
    bus.transfer(0, [tx(b"\x06", loop)])
    assert not flash.wel


def test_wide_words_and_lsb_first_are_wire_order() -> None:
    seen: list[bytes] = []

    class Probe(SpiDevice):
        def exchange(self, mosi: bytes) -> bytes:
            seen.append(mosi)
            return mosi

    bus = SimSpiBus("t", devices={0: Probe()})
    w16 = SpiTransferHead(bits_per_word=16)
    # 0x1234 is stored little-endian but clocked high byte first.
    assert bus.transfer(0, [duplex(b"\x34\x12", w16)]) == [b"\x34\x12"]
    assert seen[-1] == b"\x12\x34"
    lsb = SpiTransferHead(mode=int(SpiMode.LSB_FIRST))
    bus.transfer(0, [tx(b"\x01", lsb)])
    assert seen[-1] == b"\x80"


def test_device_failure_is_eio_at_its_transfer() -> None:
    bus, flash = flash_bus()
    flash.fail = True
    flash.fail_index = 1
    with pytest.raises(BusError) as ei:
        bus.transfer(0, [tx(b"\x06", H_CHANGE), tx(b"\x20\x00\x00\x00")])
    assert ei.value.errno == errno.EIO
    assert ei.value.index == 1
    assert flash.wel  # transfer 0 ran, transfer 1 did not
    entry = bus.log[-1]
    assert not entry.ok
    assert entry.describe()[1].endswith("FAILED")


def test_config_defaults_and_validity() -> None:
    bus = load_board(None).spi["0"]
    cfg = bus.config
    assert cfg.cs_max_number == 2
    assert cfg.max_freq_hz == 50_000_000
    assert cfg.bits_per_word_mask == (1 << 7) | (1 << 15) | (1 << 31)
    assert cfg.mode_func_supported == 0x7F
    head = SpiTransferHead(chip_select_id=1, mode=0x1F, freq=50_000_000, cs_setup_ns=1000)
    assert check_spi_transfer(duplex(b"\x00", head), cfg) is None
    assert check_spi_transfer(duplex(b"\x00", SpiTransferHead(chip_select_id=2)), cfg)


def test_stall_and_timing() -> None:
    bus, _ = flash_bus(stall_s=0.03)
    t0 = time.monotonic()
    cmd(bus, b"\x05", 1)
    assert time.monotonic() - t0 >= 0.03
    slow = SimSpiBus("t", devices={0: LoopbackDevice()}, timing=True)
    t0 = time.monotonic()
    slow.transfer(0, [duplex(bytes(1250), SpiTransferHead(freq=1_000_000))])  # 10 kbit
    assert time.monotonic() - t0 >= 0.01


def test_log_records_messages() -> None:
    bus, _ = flash_bus()
    bus.transfer(0, [tx(b"\x9f"), rx(3)])
    entry = bus.log_snapshot()[-1]
    assert entry.ok
    assert entry.cs == 0
    assert entry.rx == (b"\xef\x40\x16",)
    assert entry.describe() == ["cs0 t0 tx 9f", "cs0 t1 rx ef 40 16"]

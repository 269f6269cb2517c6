"""Simulated SPI targets: a loopback plug, a JEDEC SPI NOR flash and a generic register chip."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Unpack

from .spi import SpiDevice, SpiDeviceOptions


class LoopbackDevice(SpiDevice):
    """MISO wired to MOSI: every byte comes straight back, full duplex."""

    per_byte = False

    def exchange(self, mosi: bytes) -> bytes:
        return mosi


# Opcodes (W25Qxx naming).
WRITE_ENABLE = 0x06
WRITE_DISABLE = 0x04
READ_STATUS = 0x05
READ_DATA = 0x03
FAST_READ = 0x0B
PAGE_PROGRAM = 0x02
SECTOR_ERASE = 0x20  # 4 KiB
BLOCK_ERASE_32K = 0x52
BLOCK_ERASE_64K = 0xD8
CHIP_ERASE = 0xC7
CHIP_ERASE_ALT = 0x60
JEDEC_ID = 0x9F
RELEASE_POWER_DOWN_ID = 0xAB
MANUFACTURER_DEVICE_ID = 0x90

STATUS_WIP = 0x01
STATUS_WEL = 0x02

_ERASE_SIZES = {SECTOR_ERASE: 4096, BLOCK_ERASE_32K: 32768, BLOCK_ERASE_64K: 65536}


class SpiNorFlash(SpiDevice):
    """A 3-byte-address SPI NOR flash in the W25Q/MX25 mould (default: W25Q32, 4 MiB).

    A command is one CS frame: opcode, then address/dummy/data bytes; it ends
    when CS goes inactive, so ``cs_change`` = 1 between two transfers ends a
    command and ``cs_change`` = 0 continues it.  As on real parts, the write
    commands (WREN, WRDI, program, erases) take effect at CS deassert and
    only if CS rose right after a whole command: an erase with a missing
    address byte is ignored.  Program and erase need WEL (set by WREN) and
    clear it; program can only turn bits 1 -> 0 and wraps within its
    256-byte page.  Reads are continuous and wrap at the end of memory.
    While a program/erase runs (``program_time_s``/``erase_time_s``, default
    instant) WIP is set and every command except Read Status is ignored.
    Unknown opcodes are ignored; MISO reads 0xFF whenever the flash does not
    drive it.  Status register writes and block protection are not modelled.
    """

    def __init__(
        self,
        *,
        size: int = 4 * 1024 * 1024,
        jedec_id: bytes = b"\xef\x40\x16",
        device_id: int = 0x15,
        page_size: int = 256,
        program_time_s: float = 0.0,
        erase_time_s: float = 0.0,
        **options: Unpack[SpiDeviceOptions],
    ) -> None:
        super().__init__(**options)
        if size <= 0 or size % 4096 or size > 1 << 24:
            raise ValueError(f"{self.name}: size {size} must be a multiple of 4 KiB up to 16 MiB")
        if page_size <= 0 or page_size & (page_size - 1) or size % page_size:
            raise ValueError(f"{self.name}: page_size {page_size} must be a power of two")
        self.size = size
        self.page_size = page_size
        self.jedec_id = bytes(jedec_id)
        self.device_id = device_id & 0xFF
        self.program_time_s = program_time_s
        self.erase_time_s = erase_time_s
        self.memory = bytearray(b"\xff") * size
        self.wel = False
        self._busy_until = 0.0
        self._handlers: dict[int, Callable[[bytes, int, bytearray], int]] = {
            READ_DATA: self._read_data,
            FAST_READ: self._read_data,
            READ_STATUS: self._read_status,
            PAGE_PROGRAM: self._program,
            JEDEC_ID: self._jedec,
            RELEASE_POWER_DOWN_ID: self._release_id,
            MANUFACTURER_DEVICE_ID: self._mfr_id,
            SECTOR_ERASE: self._take_address,
            BLOCK_ERASE_32K: self._take_address,
            BLOCK_ERASE_64K: self._take_address,
        }
        self._reset_frame()

    # -- state visible to tests -------------------------------------------

    @property
    def busy(self) -> bool:
        return time.monotonic() < self._busy_until

    @property
    def status(self) -> int:
        return (STATUS_WIP if self.busy else 0) | (STATUS_WEL if self.wel else 0)

    # -- CS framing ---------------------------------------------------------

    def _reset_frame(self) -> None:
        self._op: int | None = None
        self._ignored = False
        self._count = 0  # bytes clocked after the opcode
        self._addr = 0
        self._pp: dict[int, int] = {}  # page-program buffer: address -> byte

    def select(self) -> None:
        self._reset_frame()

    def deselect(self) -> None:
        op = self._op
        if op is not None and not self._ignored:
            self._execute(op)
        self._reset_frame()

    def exchange(self, mosi: bytes) -> bytes:
        out = bytearray()
        i = 0
        n = len(mosi)
        while i < n:
            if self._op is None:
                self._op = mosi[i]
                self._ignored = self.busy and self._op != READ_STATUS
                out.append(0xFF)
                i += 1
                continue
            handler = self._handlers.get(self._op)
            if handler is None or self._ignored:
                out += b"\xff" * (n - i)
                self._count += n - i
                break
            i += handler(mosi, i, out)
        return bytes(out)

    # -- per-command byte handlers: consume from mosi[i:], append MISO, return count

    def _address_byte(self, b: int) -> None:
        self._addr = ((self._addr << 8) | b) & 0xFFFFFF
        self._count += 1

    def _take_address(self, mosi: bytes, i: int, out: bytearray) -> int:
        if self._count < 3:
            self._address_byte(mosi[i])
        else:
            self._count += 1
        out.append(0xFF)
        return 1

    def _read_data(self, mosi: bytes, i: int, out: bytearray) -> int:
        dummy = 1 if self._op == FAST_READ else 0
        if self._count < 3 + dummy:
            return self._take_address(mosi, i, out)
        n = len(mosi) - i
        start = self._addr % self.size
        end = start + n
        if end <= self.size:
            out += self.memory[start:end]
        else:
            mem = bytes(self.memory)
            out += (mem[start:] + mem * (n // self.size + 1))[:n]
        self._addr = end % self.size
        self._count += n
        return n

    def _read_status(self, mosi: bytes, i: int, out: bytearray) -> int:
        out.append(self.status)  # re-sampled every byte, so WIP can be polled
        self._count += 1
        return 1

    def _program(self, mosi: bytes, i: int, out: bytearray) -> int:
        if self._count < 3:
            return self._take_address(mosi, i, out)
        page = self._addr % self.size
        page -= page % self.page_size
        for b in mosi[i:]:
            offset = (self._addr + self._count - 3) % self.page_size
            self._pp[page + offset] = b
            self._count += 1
        n = len(mosi) - i
        out += b"\xff" * n
        return n

    def _jedec(self, mosi: bytes, i: int, out: bytearray) -> int:
        k = self._count
        out.append(self.jedec_id[k] if k < len(self.jedec_id) else 0xFF)
        self._count += 1
        return 1

    def _release_id(self, mosi: bytes, i: int, out: bytearray) -> int:
        out.append(self.device_id if self._count >= 3 else 0xFF)
        self._count += 1
        return 1

    def _mfr_id(self, mosi: bytes, i: int, out: bytearray) -> int:
        if self._count < 3:
            return self._take_address(mosi, i, out)
        ids = (self.jedec_id[0] if self.jedec_id else 0xFF, self.device_id)
        out.append(ids[(self._count - 3 + self._addr) & 1])
        self._count += 1
        return 1

    # -- effects at CS deassert ---------------------------------------------

    def _execute(self, op: int) -> None:
        if op == WRITE_ENABLE and self._count == 0:
            self.wel = True
        elif op == WRITE_DISABLE and self._count == 0:
            self.wel = False
        elif not self.wel:
            return
        elif op == PAGE_PROGRAM and self._count > 3:
            for a, b in self._pp.items():
                self.memory[a] &= b
            self._finish(self.program_time_s)
        elif op in _ERASE_SIZES and self._count == 3:
            unit = _ERASE_SIZES[op]
            base = (self._addr % self.size) // unit * unit
            end = min(base + unit, self.size)
            self.memory[base:end] = b"\xff" * (end - base)
            self._finish(self.erase_time_s)
        elif op in (CHIP_ERASE, CHIP_ERASE_ALT) and self._count == 0:
            self.memory[:] = b"\xff" * self.size
            self._finish(self.erase_time_s)

    def _finish(self, duration: float) -> None:
        self.wel = False
        if duration > 0:
            self._busy_until = time.monotonic() + duration


class SpiRegisterDevice(SpiDevice):
    """An 8-bit register file behind an address byte, the protocol of most SPI sensors.

    The first byte of a CS frame is a register address with a read/write bit
    (and on ST parts an auto-increment bit); the bytes after it are register
    values, read or written.

    ``rw_bit`` in the address byte selects reading when set (ST, Bosch) or
    writing when set (``read_when_set=False``: Maxim, e.g. MAX31856).  With
    ``increment_bit`` (ST's MS bit) the address advances after each value
    only if that bit is set; without it the address always advances.
    ``read_only`` registers ignore writes.  MISO is 0xFF while the address
    byte is clocked in.
    """

    def __init__(
        self,
        *,
        registers: Mapping[int, int] | None = None,
        read_only: Iterable[int] = (),
        rw_bit: int = 0x80,
        read_when_set: bool = True,
        increment_bit: int | None = None,
        **options: Unpack[SpiDeviceOptions],
    ) -> None:
        super().__init__(**options)
        self.registers: dict[int, int] = {r & 0xFF: v & 0xFF for r, v in (registers or {}).items()}
        self.read_only = set(read_only)
        self.rw_bit = rw_bit
        self.read_when_set = read_when_set
        self.increment_bit = increment_bit
        self.addr_mask = 0xFF & ~rw_bit & ~(increment_bit or 0)
        self._addr: int | None = None
        self._reading = False
        self._increment = True

    def get(self, reg: int) -> int:
        """A register as a bus read would return it (no side effects)."""
        return self.registers.get(reg, 0)

    def put(self, reg: int, value: int) -> None:
        """A bus write of one register (read-only ones ignore it)."""
        if reg not in self.read_only:
            self.registers[reg] = value & 0xFF

    def select(self) -> None:
        self._addr = None

    def deselect(self) -> None:
        self._addr = None

    def exchange(self, mosi: bytes) -> bytes:
        out = bytearray()
        for b in mosi:
            if self._addr is None:
                self._reading = bool(b & self.rw_bit) == self.read_when_set
                self._increment = self.increment_bit is None or bool(b & self.increment_bit)
                self._addr = b & self.addr_mask
                out.append(0xFF)
                continue
            if self._reading:
                out.append(self.get(self._addr))
            else:
                self.put(self._addr, b)
                out.append(0xFF)
            if self._increment:
                self._addr = (self._addr + 1) & self.addr_mask
        return bytes(out)

"""Simulated I2C targets: a generic register-map chip, 24Cxx EEPROMs, and the adapter
that puts a chip model (``chips/``) on the bus."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final, Literal, Protocol

from .i2c import I2CDevice

Endian = Literal["big", "little"]

#: ``bytes([b])`` for every byte value (a register's bytes, built without ``to_bytes``).
_BYTE: Final[tuple[bytes, ...]] = tuple(bytes([b]) for b in range(256))


class BusHooks(Protocol):
    """The bus-side half of a chip model: the :class:`I2CDevice` hooks, forwarded."""

    def ack(self, address: int, read: bool) -> bool: ...
    def start(self, address: int, read: bool) -> None: ...
    def restart(self) -> None: ...
    def write(self, data: bytes) -> int: ...
    def read(self, length: int) -> bytes: ...
    def stop(self) -> None: ...


class ModelDevice(I2CDevice):
    """An I2C device whose behaviour is a chip model, an ordinary Python object.

    This module is compiled in the mypyc build (setup.py), and an interpreted
    class cannot subclass a compiled one; so chip models do not subclass
    :class:`I2CDevice`, they own one of these, which hands every bus event to
    ``model``.  The plain register map above keeps its compiled hot path;
    only chip models pay the forwarding call.  ``extra`` adds addresses the
    device answers besides ``address``.
    """

    def __init__(
        self,
        model: BusHooks,
        address: int,
        *,
        extra: tuple[int, ...] = (),
        ten_bit: bool = False,
        name: str = "",
        nack: bool = False,
        nack_after_bytes: int | None = None,
        stall_s: float = 0.0,
    ) -> None:
        super().__init__(
            address,
            ten_bit=ten_bit,
            name=name,
            nack=nack,
            nack_after_bytes=nack_after_bytes,
            stall_s=stall_s,
        )
        self.model = model
        self.extra = extra

    def addresses(self) -> tuple[int, ...]:
        return (self.address, *self.extra)

    def ack(self, address: int, read: bool) -> bool:
        return self.model.ack(address, read)

    def start(self, address: int, read: bool) -> None:
        self.model.start(address, read)

    def restart(self) -> None:
        self.model.restart()

    def write(self, data: bytes) -> int:
        return self.model.write(data)

    def read(self, length: int) -> bytes:
        return self.model.read(length)

    def stop(self) -> None:
        self.model.stop()


class RegisterMapDevice(I2CDevice):
    """A pointer-register chip, the shape of most I2C sensors (TMP117, MCP9808, LM75).

    A write sends the register pointer (``pointer_bits`` 8 or 16, big-endian)
    and then register values, each ``value_bits`` wide (``widths`` overrides
    it per register, e.g. the 8-bit config register of an LM75) in
    ``endian`` byte order; a value only lands once all its bytes arrived.  A
    read returns values from the pointer, starting at the first byte of the
    pointed register at every START.  With ``auto_increment`` the pointer
    moves to the next register after each value; without it (TMP117, LM75)
    longer reads repeat the same register.

    ``read_only`` registers ignore writes and ACK them, as TMP117 and MCP9808
    do; ``read_only_writes="nack"`` makes the device NACK the first byte of
    such a value instead.  ``sequences`` registers step through a list of
    values, one per read, and ignore writes (a sensor's result register);
    ``counters`` registers add their step on each read (a write sets the
    value the counting continues from).  Unset registers read ``default``.
    """

    def __init__(
        self,
        address: int,
        *,
        ten_bit: bool = False,
        name: str = "",
        pointer_bits: Literal[8, 16] = 8,
        value_bits: Literal[8, 16] = 8,
        endian: Endian = "big",
        auto_increment: bool = True,
        registers: Mapping[int, int] | None = None,
        widths: Mapping[int, int] | None = None,
        read_only: Iterable[int] = (),
        read_only_writes: Literal["ignore", "nack"] = "ignore",
        sequences: Mapping[int, Sequence[int]] | None = None,
        counters: Mapping[int, int] | None = None,
        default: int = 0,
        nack: bool = False,
        nack_after_bytes: int | None = None,
        stall_s: float = 0.0,
    ) -> None:
        super().__init__(
            address,
            ten_bit=ten_bit,
            name=name,
            nack=nack,
            nack_after_bytes=nack_after_bytes,
            stall_s=stall_s,
        )
        if pointer_bits not in (8, 16) or value_bits not in (8, 16):
            raise ValueError("pointer_bits and value_bits must be 8 or 16")
        self.pointer_bits = pointer_bits
        self.value_bits = value_bits
        self.endian: Endian = endian
        self.auto_increment = auto_increment
        self.n_registers = 1 << pointer_bits
        self.widths = dict(widths or {})
        for reg, w in self.widths.items():
            if w not in (8, 16):
                raise ValueError(f"register {reg:#x}: width must be 8 or 16")
        self.registers: dict[int, int] = {}
        for reg, value in (registers or {}).items():
            self.set(reg, value)
        self.read_only = set(read_only)
        self.read_only_writes = read_only_writes
        self.sequences = {r: list(v) for r, v in (sequences or {}).items() if v}
        self._seq_pos = dict.fromkeys(self.sequences, 0)
        self.counters = dict(counters or {})
        self.default = default
        self.pointer = 0
        # Per-transaction state.
        self._ptr_needed = 0  # pointer bytes still expected in this write
        self._ptr_acc = 0
        self._wbuf = bytearray()  # value bytes received for the current register
        self._rbuf = b""  # latched bytes of the register being read
        self._rpos = 0

    # -- register access, also for tests -------------------------------------

    def width(self, reg: int) -> int:
        return self.widths.get(reg, self.value_bits)

    def get(self, reg: int) -> int:
        """Current value without the side effects of a bus read."""
        if reg in self.sequences:
            seq = self.sequences[reg]
            return seq[self._seq_pos[reg] % len(seq)]
        return self.registers.get(reg, self.default)

    def set(self, reg: int, value: int) -> None:
        """Set a register behind the bus's back (read-only ones too)."""
        if not 0 <= reg < self.n_registers:
            raise ValueError(
                f"{self.name}: register {reg:#x} beyond the {self.pointer_bits}-bit pointer"
            )
        self.registers[reg] = value & ((1 << self.width(reg)) - 1)

    def _latch(self, reg: int) -> bytes:
        """The value a bus read of ``reg`` returns, applying its read side effect."""
        bits = self.widths.get(reg, self.value_bits) if self.widths else self.value_bits
        if self.sequences and reg in self.sequences:
            seq = self.sequences[reg]
            value = seq[self._seq_pos[reg] % len(seq)]
            self._seq_pos[reg] = (self._seq_pos[reg] + 1) % len(seq)
        else:
            value = self.registers.get(reg, self.default)
            if self.counters:
                step = self.counters.get(reg)
                if step is not None:
                    self.registers[reg] = (value + step) & ((1 << bits) - 1)
        # int.to_bytes, from a table of the 256 one-byte values: compiled, to_bytes is
        # a generic call with its byte order spelled as a string.
        if bits == 16:
            hi = _BYTE[(value >> 8) & 0xFF]
            lo = _BYTE[value & 0xFF]
            if self.endian == "big":
                return hi + lo
            if self.endian == "little":
                return lo + hi
        elif bits == 8 and (self.endian == "big" or self.endian == "little"):
            return _BYTE[value & 0xFF]
        return (value & ((1 << bits) - 1)).to_bytes(bits >> 3, self.endian)

    def _advance(self) -> None:
        if self.auto_increment:
            self.pointer = (self.pointer + 1) % self.n_registers

    # -- bus hooks -------------------------------------------------------------

    def _end_phase(self) -> None:
        """Close the current write or read: drop a half-written value, step past a read one."""
        if self._wbuf:  # a method call, compiled: only when there is something to drop
            self._wbuf.clear()
        if self._rbuf and self._rpos >= len(self._rbuf):
            self._advance()
        self._rbuf = b""
        self._rpos = 0
        self._ptr_needed = 0

    def start(self, address: int, read: bool) -> None:
        # _end_phase(), inline: this runs for every message.
        if self._wbuf:
            self._wbuf.clear()
        if self._rbuf:
            if self._rpos >= len(self._rbuf):
                self._advance()
            self._rbuf = b""
            self._rpos = 0
        if read:
            self._ptr_needed = 0
        else:
            self._ptr_needed = self.pointer_bits >> 3
            self._ptr_acc = 0

    def write(self, data: bytes) -> int:
        for n, b in enumerate(data):
            if self._ptr_needed:
                self._ptr_acc = (self._ptr_acc << 8) | b
                self._ptr_needed -= 1
                if not self._ptr_needed:
                    self.pointer = self._ptr_acc % self.n_registers
                continue
            reg = self.pointer
            if (
                not self._wbuf
                and self.read_only_writes == "nack"
                and (reg in self.read_only or reg in self.sequences)
            ):
                return n
            self._wbuf.append(b)
            if len(self._wbuf) * 8 < self.width(reg):
                continue
            if reg not in self.read_only and reg not in self.sequences:
                self.registers[reg] = int.from_bytes(self._wbuf, self.endian)
            self._wbuf.clear()
            self._advance()
        return len(data)

    def read(self, length: int) -> bytes:
        if not self._rbuf and length:
            # Fresh from a START: the common case is exactly one register.
            self._rbuf = latched = self._latch(self.pointer)
            if len(latched) == length:
                self._rpos = length
                return latched
            self._rpos = 0
        out = bytearray()
        while len(out) < length:
            if self._rpos >= len(self._rbuf):
                self._advance()
                self._rbuf = self._latch(self.pointer)
                self._rpos = 0
            take = min(length - len(out), len(self._rbuf) - self._rpos)
            out += self._rbuf[self._rpos : self._rpos + take]
            self._rpos += take
        return bytes(out)

    def stop(self) -> None:
        self._end_phase()


class Eeprom24(I2CDevice):
    """A 24Cxx serial EEPROM, up to 64 KiB.

    ``address_bytes`` 1 (24C01..24C16) or 2 (24C32..24C512).  With 1 byte,
    parts above 256 bytes use the low bits of the I2C address as the upper
    memory address bits (24C04 answers 2 addresses, 24C08 4, 24C16 8), so
    ``address`` must be aligned accordingly.  A write's data goes to a page
    buffer that rolls over within the page and is committed at STOP; a
    repeated START before the STOP aborts it, as the datasheets say a write
    cycle starts only on STOP.  Reads are sequential from the internal
    address counter and wrap at the end of memory; a read without a
    preceding address write is a current-address read.  While a write
    cycle of ``write_time_s`` runs (datasheets: 5 ms), the device NACKs its
    address, so drivers' ACK polling runs as on silicon; the default 0 makes
    writes instant.  ``clock`` is the time the write cycle is measured in (the
    server's monotonic clock; tests inject their own).  ``nack_next``, a
    fault, NACKs that many more address phases.
    """

    def __init__(
        self,
        address: int,
        *,
        size: int,
        page_size: int,
        address_bytes: Literal[1, 2] | None = None,
        ten_bit: bool = False,
        name: str = "",
        fill: int = 0xFF,
        write_time_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        nack: bool = False,
        nack_after_bytes: int | None = None,
        stall_s: float = 0.0,
    ) -> None:
        super().__init__(
            address,
            ten_bit=ten_bit,
            name=name,
            nack=nack,
            nack_after_bytes=nack_after_bytes,
            stall_s=stall_s,
        )
        if address_bytes is None:
            address_bytes = 1 if size <= 2048 else 2
        problem = eeprom_geometry_problem(address, size, page_size, address_bytes, ten_bit)
        if problem:
            raise ValueError(f"{self.name}: {problem}")
        self.size = size
        self.page_size = page_size
        self.address_bytes = address_bytes
        self.blocks = max(1, size // 256) if address_bytes == 1 else 1
        self.write_time_s = write_time_s
        self.clock = clock
        self.nack_next = 0
        self.memory = bytearray([fill & 0xFF]) * size
        self.pointer = 0
        self._busy_until = 0.0
        self._block = 0
        self._addr_needed = 0
        self._addr_acc = 0
        self._page_base = 0
        self._pending: dict[int, int] = {}  # memory address -> byte, until STOP
        self.write_cycles = 0  # committed page writes, for tests

    def addresses(self) -> tuple[int, ...]:
        return tuple(self.address + b for b in range(self.blocks))

    @property
    def busy(self) -> bool:
        return self.clock() < self._busy_until

    def start_write_cycle(self) -> None:
        """Begin a write cycle now (after a page write; or as the ``busy`` fault)."""
        if self.write_time_s > 0:
            self._busy_until = self.clock() + self.write_time_s

    def ack(self, address: int, read: bool) -> bool:
        if self.nack_next > 0:
            self.nack_next -= 1
            return False
        return not self.busy

    def start(self, address: int, read: bool) -> None:
        self._pending.clear()
        self._block = address - self.address
        self._addr_needed = 0 if read else self.address_bytes
        self._addr_acc = 0

    def restart(self) -> None:
        self._pending.clear()

    def write(self, data: bytes) -> int:
        for b in data:
            if self._addr_needed:
                self._addr_acc = (self._addr_acc << 8) | b
                self._addr_needed -= 1
                if not self._addr_needed:
                    high = self._block << 8 if self.address_bytes == 1 else 0
                    self.pointer = (high | self._addr_acc) % self.size
                    self._page_base = self.pointer - self.pointer % self.page_size
                continue
            self._pending[self.pointer] = b
            offset = (self.pointer + 1 - self._page_base) % self.page_size
            self.pointer = self._page_base + offset
        return len(data)

    def read(self, length: int) -> bytes:
        p = self.pointer
        end = p + length
        if end <= self.size:
            out = bytes(self.memory[p:end])
        else:
            mem = bytes(self.memory)
            out = (mem[p:] + mem * (length // self.size + 1))[:length]
        self.pointer = end % self.size
        return out

    def stop(self) -> None:
        if self._pending:
            for a, b in self._pending.items():
                self.memory[a] = b
            self._pending.clear()
            self.write_cycles += 1
            self.start_write_cycle()
        self._addr_needed = 0


#: Common parts: model -> (size, page size).
EEPROM_MODELS: dict[str, tuple[int, int]] = {
    "24c01": (128, 8),
    "24c02": (256, 8),
    "24c04": (512, 16),
    "24c08": (1024, 16),
    "24c16": (2048, 16),
    "24c32": (4096, 32),
    "24c64": (8192, 32),
    "24c128": (16384, 64),
    "24c256": (32768, 64),
    "24c512": (65536, 128),
}


def eeprom_geometry_problem(
    address: int, size: int, page_size: int, address_bytes: int, ten_bit: bool
) -> str | None:
    """Why this EEPROM geometry cannot exist, or None; shared with the config checks."""
    if size < 1 or size > 65536 or size & (size - 1):
        return f"size {size} must be a power of two up to 65536"
    if page_size < 1 or page_size > size or page_size & (page_size - 1):
        return f"page_size {page_size} must be a power of two no larger than the size"
    if address_bytes not in (1, 2):
        return f"address_bytes {address_bytes} must be 1 or 2"
    if address_bytes == 1 and size > 2048:
        return f"{size} bytes need 2 address bytes (1-byte parts stop at 2 KiB, 24C16)"
    blocks = max(1, size // 256) if address_bytes == 1 else 1
    if blocks > 1:
        if ten_bit:
            return "multi-address (24C04..24C16 style) parts cannot be 10-bit"
        if address % blocks:
            return (
                f"a {size}-byte part with 1 address byte answers {blocks} addresses; "
                f"its address must be a multiple of {blocks}, not {address:#04x}"
            )
        if address + blocks - 1 > 0x7F:
            return f"its {blocks} addresses from {address:#04x} run past 0x7f"
    return None

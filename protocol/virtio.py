"""virtio-i2c and virtio-spi structures, byte-exact and little-endian.

Layouts follow the virtio 1.3/1.4 specification (device types 34 and 45) and
Linux's ``include/uapi/linux/virtio_i2c.h`` / ``virtio_spi.h``.  Everything here
is pure data: no I/O, so the vhost-user agent, the server and peers written
against ``SPEC.md`` all share one definition.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import ClassVar, Final

# ---------------------------------------------------------------------------
# virtio-i2c (device id 34)
# ---------------------------------------------------------------------------

VIRTIO_ID_I2C_ADAPTER = 34
VIRTIO_ID_SPI = 45

#: Feature bit 0; mandatory since virtio 1.2's revision of the device.
VIRTIO_I2C_F_ZERO_LENGTH_REQUEST = 1 << 0

# Final: compiled, a constant, not a lookup in the module's dict.
I2C_FLAGS_FAIL_NEXT: Final = 0x1
I2C_FLAGS_M_RD: Final = 0x2
I2C_FLAGS_KNOWN: Final = I2C_FLAGS_FAIL_NEXT | I2C_FLAGS_M_RD

I2C_OUT_HDR = struct.Struct("<HHI")
I2C_OUT_HDR_SIZE: Final = I2C_OUT_HDR.size  # 8
I2C_IN_HDR_SIZE = 1


class I2CStatus(IntEnum):
    """``virtio_i2c_in_hdr.status``."""

    OK = 0
    ERR = 1


def encode_i2c_addr(addr: int, ten_bit: bool = False) -> int:
    """Encode an address into the le16 ``out_hdr.addr`` field (spec §5.21.6.1).

    7-bit: ``addr << 1``.  10-bit: low byte ``11110 A9 A8 0``, high byte ``A7..A0``.
    """
    if ten_bit:
        if not 0 <= addr <= 0x3FF:
            raise ValueError(f"10-bit I2C address out of range: {addr:#x}")
        return ((addr & 0xFF) << 8) | 0xF0 | ((addr >> 8) & 0x3) << 1
    if not 0 <= addr <= 0x7F:
        raise ValueError(f"7-bit I2C address out of range: {addr:#x}")
    return addr << 1


def decode_i2c_addr(field: int) -> tuple[int, bool]:
    """Decode ``out_hdr.addr`` into ``(address, ten_bit)``.

    The field is 10-bit iff its low byte is ``11110xx0``.  A 7-bit field has
    bit 0 clear and the high byte zero; anything else is malformed.
    """
    if field & 0x1:
        raise ValueError(f"I2C addr field {field:#06x}: bit 0 must be 0")
    if (field & 0xF9) == 0xF0:
        return ((field >> 1) & 0x3) << 8 | (field >> 8), True
    if field >> 8:
        raise ValueError(f"I2C addr field {field:#06x}: 7-bit address with non-zero high byte")
    return field >> 1, False


def format_i2c_addr(addr: int, ten_bit: bool) -> str:
    return f"{addr:#05x}(10-bit)" if ten_bit else f"{addr:#04x}"


@dataclass(slots=True, init=False)
class I2CMsg:
    """One virtio-i2c request: ``out_hdr`` + optional ``buf``.

    ``data`` is the write buffer (empty for reads and zero-length writes);
    ``length`` is the number of bytes to read (0 for writes).  ``flags`` holds
    the virtio flag word verbatim (FAIL_NEXT, M_RD).
    """

    addr: int
    flags: int = 0
    data: bytes = b""
    length: int = 0
    ten_bit: bool = False

    def __init__(self, addr: int, flags: int = 0, data: bytes = b"", length: int = 0,
                 ten_bit: bool = False) -> None:
        # Written out, not generated: mypyc compiles this one (the dataclass's own
        # __init__ stays interpreted, ~2k instructions per message built).
        self.addr = addr
        self.flags = flags
        self.data = data
        self.length = length
        self.ten_bit = ten_bit

    @property
    def is_read(self) -> bool:
        return bool(self.flags & I2C_FLAGS_M_RD)

    @property
    def fail_next(self) -> bool:
        return bool(self.flags & I2C_FLAGS_FAIL_NEXT)

    @property
    def size(self) -> int:
        """Bytes in ``buf``: read length or write length."""
        return self.length if self.flags & I2C_FLAGS_M_RD else len(self.data)

    def out_hdr(self) -> bytes:
        return I2C_OUT_HDR.pack(encode_i2c_addr(self.addr, self.ten_bit), 0, self.flags)

    @classmethod
    def from_out_hdr(cls, hdr: bytes, buf: bytes | int) -> I2CMsg:
        """Build from a raw 8-byte ``out_hdr`` and a write buffer or read length."""
        field, _pad, flags = I2C_OUT_HDR.unpack(hdr)
        addr, ten = decode_i2c_addr(field)
        if isinstance(buf, int):
            return cls(addr, flags, b"", buf, ten)
        return cls(addr, flags, bytes(buf), 0, ten)

    def describe(self) -> str:
        """i2ctransfer-style description, used in error messages."""
        kind = "r" if self.is_read else "w"
        return f"{kind}{self.size}@{format_i2c_addr(self.addr, self.ten_bit)}"


def read(addr: int, length: int, *, ten_bit: bool = False) -> I2CMsg:
    """A read request (M_RD); grouping into a transaction is done by :func:`chain`."""
    return I2CMsg(addr, I2C_FLAGS_M_RD, b"", length, ten_bit)


def write(
    addr: int, data: bytes | bytearray | Sequence[int] = b"", *, ten_bit: bool = False
) -> I2CMsg:
    """A write request; ``write(addr)`` is a zero-length write (probe / SMBus quick)."""
    return I2CMsg(addr, 0, bytes(data), 0, ten_bit)


def chain(msgs: Sequence[I2CMsg]) -> list[I2CMsg]:
    """Mark ``msgs`` as one combined transaction: FAIL_NEXT on all but the last."""
    out = []
    last = len(msgs) - 1
    for i, m in enumerate(msgs):
        flags = (m.flags & ~I2C_FLAGS_FAIL_NEXT) | (I2C_FLAGS_FAIL_NEXT if i < last else 0)
        out.append(I2CMsg(m.addr, flags, m.data, m.length, m.ten_bit) if flags != m.flags else m)
    return out


def split_chains(msgs: Sequence[I2CMsg]) -> Iterator[tuple[int, Sequence[I2CMsg]]]:
    """Yield ``(start_index, chain)``: runs closed by the first message without FAIL_NEXT.

    A trailing run whose last message still has FAIL_NEXT is yielded too; the
    frame decoder rejects such frames, so servers never see one.
    """
    start = 0
    for i, m in enumerate(msgs):
        if not m.flags & I2C_FLAGS_FAIL_NEXT:
            yield start, msgs[start : i + 1]
            start = i + 1
    if start < len(msgs):
        yield start, msgs[start:]


# ---------------------------------------------------------------------------
# virtio-spi (device id 45)
# ---------------------------------------------------------------------------


class SpiResult(IntEnum):
    """``virtio_spi_transfer_result.result``."""

    TRANS_OK = 0
    PARAM_ERR = 1
    TRANS_ERR = 2


class SpiMode(IntFlag):
    """``transfer_head.mode`` bits.  Note LOOP is bit 4 here, 0x20 in Linux's spidev."""

    CPHA = 1 << 0
    CPOL = 1 << 1
    CS_HIGH = 1 << 2
    LSB_FIRST = 1 << 3
    LOOP = 1 << 4


SPI_MODE_KNOWN = 0x1F

# Plain ints of the mode bits: IntFlag arithmetic runs Python code, and the
# checks below run for every transfer.
_CPHA = int(SpiMode.CPHA)
_CPOL = int(SpiMode.CPOL)
_CS_HIGH = int(SpiMode.CS_HIGH)
_LSB_FIRST = int(SpiMode.LSB_FIRST)
_LOOP = int(SpiMode.LOOP)

#: ``mode_func_supported`` bits in the config space.
SPI_MF_CPHA_0 = 1 << 0
SPI_MF_CPHA_1 = 1 << 1
SPI_MF_CPOL_0 = 1 << 2
SPI_MF_CPOL_1 = 1 << 3
SPI_MF_CS_HIGH = 1 << 4
SPI_MF_LSB_FIRST = 1 << 5
SPI_MF_LOOPBACK = 1 << 6

#: ``tx_nbits_supported`` / ``rx_nbits_supported`` bits (single is implied).
SPI_NBITS_DUAL = 1 << 0
SPI_NBITS_QUAD = 1 << 1
SPI_NBITS_OCTAL = 1 << 2

_NBITS_FLAG = {2: SPI_NBITS_DUAL, 4: SPI_NBITS_QUAD, 8: SPI_NBITS_OCTAL}


@dataclass(slots=True)
class SpiTransferHead:
    """``struct spi_transfer_head`` (32 bytes)."""

    STRUCT: ClassVar[struct.Struct] = struct.Struct("<BBBBB3xIIIIII")

    chip_select_id: int = 0
    bits_per_word: int = 8
    cs_change: int = 0
    tx_nbits: int = 0
    rx_nbits: int = 0
    mode: int = 0
    freq: int = 0
    word_delay_ns: int = 0
    cs_setup_ns: int = 0
    cs_delay_hold_ns: int = 0
    cs_change_delay_inactive_ns: int = 0

    def pack(self) -> bytes:
        return self.STRUCT.pack(
            self.chip_select_id,
            self.bits_per_word,
            self.cs_change,
            self.tx_nbits,
            self.rx_nbits,
            self.mode,
            self.freq,
            self.word_delay_ns,
            self.cs_setup_ns,
            self.cs_delay_hold_ns,
            self.cs_change_delay_inactive_ns,
        )

    @classmethod
    def unpack(cls, data: bytes) -> SpiTransferHead:
        """Parse 32 bytes; the 3 reserved bytes are ignored as the spec asks."""
        return cls(*cls.STRUCT.unpack(data))


SPI_TRANSFER_HEAD_SIZE = SpiTransferHead.STRUCT.size  # 32


@dataclass(slots=True)
class SpiTransfer:
    """One virtio-spi request: head, optional tx buffer, rx length.

    Half-duplex write: ``tx`` set, ``rx_len`` 0.  Half-duplex read: ``tx`` None,
    ``rx_len`` > 0.  Full duplex: both, with ``len(tx) == rx_len``.
    """

    head: SpiTransferHead
    tx: bytes | None = None
    rx_len: int = 0

    @property
    def length(self) -> int:
        return len(self.tx) if self.tx is not None else self.rx_len


@dataclass(frozen=True, slots=True)
class SpiConfig:
    """``struct virtio_spi_config`` (32 bytes): the controller's capabilities."""

    STRUCT: ClassVar[struct.Struct] = struct.Struct("<BBBBIIIIIII")

    cs_max_number: int = 1
    cs_change_supported: int = 1
    tx_nbits_supported: int = 0
    rx_nbits_supported: int = 0
    bits_per_word_mask: int = 0
    mode_func_supported: int = SPI_MF_CPHA_0 | SPI_MF_CPHA_1 | SPI_MF_CPOL_0 | SPI_MF_CPOL_1
    max_freq_hz: int = 0
    max_word_delay_ns: int = 0
    max_cs_setup_ns: int = 0
    max_cs_hold_ns: int = 0
    max_cs_inactive_ns: int = 0

    def pack(self) -> bytes:
        return self.STRUCT.pack(
            self.cs_max_number,
            self.cs_change_supported,
            self.tx_nbits_supported,
            self.rx_nbits_supported,
            self.bits_per_word_mask,
            self.mode_func_supported,
            self.max_freq_hz,
            self.max_word_delay_ns,
            self.max_cs_setup_ns,
            self.max_cs_hold_ns,
            self.max_cs_inactive_ns,
        )

    @classmethod
    def unpack(cls, data: bytes) -> SpiConfig:
        return cls(*cls.STRUCT.unpack(data))


SPI_CONFIG_SIZE = SpiConfig.STRUCT.size  # 32


def bytes_per_word(bits_per_word: int) -> int:
    """Memory size of one SPI word, as Linux's ``__spi_validate`` uses it."""
    if bits_per_word <= 8:
        return 1
    if bits_per_word <= 16:
        return 2
    return 4


def check_spi_transfer(t: SpiTransfer, cfg: SpiConfig) -> str | None:
    """Return why ``t`` must get PARAM_ERR under ``cfg``, or None if it is valid.

    Implements the device requirements of virtio-spi §5.23.6.2: every head
    field must be supported by the config space; a non-zero delay needs a
    non-zero advertised maximum; full-duplex buffers must be equally long.
    """
    h = t.head
    if h.chip_select_id >= cfg.cs_max_number:
        return f"chip select {h.chip_select_id} >= cs_max_number {cfg.cs_max_number}"
    if t.tx is not None and t.rx_len and len(t.tx) != t.rx_len:
        return f"full-duplex tx length {len(t.tx)} != rx length {t.rx_len}"
    if t.length == 0:
        return "zero-length transfer"
    if not 1 <= h.bits_per_word <= 32:
        return f"bits_per_word {h.bits_per_word} outside 1..32"
    if cfg.bits_per_word_mask and not cfg.bits_per_word_mask >> (h.bits_per_word - 1) & 1:
        return f"bits_per_word {h.bits_per_word} not in mask {cfg.bits_per_word_mask:#x}"
    if t.length % bytes_per_word(h.bits_per_word):
        return f"length {t.length} is not a whole number of {h.bits_per_word}-bit words"
    if h.cs_change > 1:
        return f"cs_change {h.cs_change} is not 0 or 1"
    if h.cs_change and not cfg.cs_change_supported:
        return "cs_change requested but not supported"
    for name, nbits, supported in (
        ("tx_nbits", h.tx_nbits, cfg.tx_nbits_supported),
        ("rx_nbits", h.rx_nbits, cfg.rx_nbits_supported),
    ):
        if nbits in (0, 1):
            continue
        flag = _NBITS_FLAG.get(nbits)
        if flag is None:
            return f"{name} {nbits} is not 0, 1, 2, 4 or 8"
        if not supported & flag:
            return f"{name} {nbits} not supported"
    if h.mode & ~SPI_MODE_KNOWN:
        return f"mode {h.mode:#x} has reserved bits set"
    mf = cfg.mode_func_supported
    cpha = SPI_MF_CPHA_1 if h.mode & _CPHA else SPI_MF_CPHA_0
    cpol = SPI_MF_CPOL_1 if h.mode & _CPOL else SPI_MF_CPOL_0
    if not mf & cpha:
        return f"CPHA={int(bool(h.mode & _CPHA))} not supported"
    if not mf & cpol:
        return f"CPOL={int(bool(h.mode & _CPOL))} not supported"
    for bit, cap, name in (
        (_CS_HIGH, SPI_MF_CS_HIGH, "CS_HIGH"),
        (_LSB_FIRST, SPI_MF_LSB_FIRST, "LSB_FIRST"),
        (_LOOP, SPI_MF_LOOPBACK, "LOOP"),
    ):
        if h.mode & bit and not mf & cap:
            return f"mode {name} not supported"
    if cfg.max_freq_hz and h.freq > cfg.max_freq_hz:
        return f"freq {h.freq} Hz above max {cfg.max_freq_hz} Hz"
    for name, value, limit in (
        ("word_delay_ns", h.word_delay_ns, cfg.max_word_delay_ns),
        ("cs_setup_ns", h.cs_setup_ns, cfg.max_cs_setup_ns),
        ("cs_delay_hold_ns", h.cs_delay_hold_ns, cfg.max_cs_hold_ns),
        ("cs_change_delay_inactive_ns", h.cs_change_delay_inactive_ns, cfg.max_cs_inactive_ns),
    ):
        if value > limit:
            if limit == 0:
                return f"{name} {value} requested but not supported"
            return f"{name} {value} above max {limit}"
    return None

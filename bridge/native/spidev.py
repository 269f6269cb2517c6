"""A remote SPI chip select as a local spidev device: the SPI core's side of spidev.

spidev's own checks on the caller's memory (EMSGSIZE against ``bufsiz``,
EFAULT) are done by whoever holds that memory (``csrc/spidev.c`` or
``cuse.py``); this is the ``spi_device`` those calls act on, with what
``spi_setup()`` and ``__spi_validate()`` (drivers/spi/spi.c, Linux 6.1) do.
One object per /dev/spidevB.C, shared by every process and descriptor, as the
kernel's mode, word size and speed are.

The controller is the remote bus, described by its ``virtio_spi_config``:
its mode bits, word sizes, lane widths and maximum clock become the
controller's ``mode_bits``, ``bits_per_word_mask`` and ``max_speed_hz``.
A transfer faster than that maximum is clocked at the maximum, as the SPI
core does for any controller that states one.  The board's verdict maps as
Linux's virtio-spi driver maps it: PARAM_ERR is EINVAL, TRANS_ERR is EIO.

Limits of the wire (docs/native.md): busbridge releases chip select after
every message, so ``cs_change`` on a message's last transfer ("keep CS
asserted until the next message") is not honoured; zero-length transfers
carry only their ``cs_change`` and delay, which move to the transfer before.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from protocol.handshake import SpiBusInfo
from protocol.virtio import (
    SPI_MF_CPHA_1,
    SPI_MF_CPOL_1,
    SPI_MF_CS_HIGH,
    SPI_MF_LOOPBACK,
    SPI_MF_LSB_FIRST,
    SPI_NBITS_DUAL,
    SPI_NBITS_OCTAL,
    SPI_NBITS_QUAD,
    SpiMode,
    SpiResult,
    SpiTransfer,
    SpiTransferHead,
)

from ..buses.linux import abi
from . import wire
from .link import ClientPool

#: spidev.c:62-67.
SPI_MODE_MASK = (abi.SPI_CPHA | abi.SPI_CPOL | abi.SPI_CS_HIGH | abi.SPI_LSB_FIRST
                 | abi.SPI_3WIRE | abi.SPI_LOOP | abi.SPI_NO_CS | abi.SPI_READY
                 | abi.SPI_TX_DUAL | abi.SPI_TX_QUAD | abi.SPI_TX_OCTAL | abi.SPI_RX_DUAL
                 | abi.SPI_RX_QUAD | abi.SPI_RX_OCTAL | 1 << 16)  # SPI_RX_CPHA_FLIP
SPI_MODE_USER_MASK = (1 << 17) - 1
_LANES = (abi.SPI_TX_DUAL | abi.SPI_TX_QUAD | abi.SPI_TX_OCTAL | abi.SPI_RX_DUAL
          | abi.SPI_RX_QUAD | abi.SPI_RX_OCTAL)
#: spidev's default module parameter ``bufsiz`` (spidev.c:86).
DEFAULT_BUFSIZ = 4096


@dataclass(slots=True)
class Xfer:
    """One ``struct spi_ioc_transfer`` with its tx bytes (``tx`` None: no tx_buf)."""

    length: int
    tx: bytes | None
    rx: bool
    speed_hz: int = 0
    delay_usecs: int = 0
    bits_per_word: int = 0
    cs_change: int = 0
    tx_nbits: int = 0
    rx_nbits: int = 0
    word_delay_usecs: int = 0

    @classmethod
    def unpack(cls, raw: bytes, tx: bytes | None) -> Xfer:
        (has_tx, has_rx, length, speed, delay, bits, cs_change, tx_nbits, rx_nbits,
         word_delay, _pad) = wire.SPI_IOC_TRANSFER.unpack(raw)
        return cls(length, tx if has_tx else None, bool(has_rx), speed, delay, bits, cs_change,
                   tx_nbits, rx_nbits, word_delay)


def controller_mode_bits(info: SpiBusInfo) -> int:
    """``ctlr->mode_bits`` of a controller described by a virtio_spi_config."""
    c = info.config
    bits = 0
    for cap, flag in ((SPI_MF_CPHA_1, abi.SPI_CPHA), (SPI_MF_CPOL_1, abi.SPI_CPOL),
                      (SPI_MF_CS_HIGH, abi.SPI_CS_HIGH), (SPI_MF_LSB_FIRST, abi.SPI_LSB_FIRST),
                      (SPI_MF_LOOPBACK, abi.SPI_LOOP)):
        if c.mode_func_supported & cap:
            bits |= flag
    for sup, dual, quad, octal in (
            (c.tx_nbits_supported, abi.SPI_TX_DUAL, abi.SPI_TX_QUAD, abi.SPI_TX_OCTAL),
            (c.rx_nbits_supported, abi.SPI_RX_DUAL, abi.SPI_RX_QUAD, abi.SPI_RX_OCTAL)):
        bits |= (dual if sup & SPI_NBITS_DUAL else 0) | (quad if sup & SPI_NBITS_QUAD else 0)
        bits |= octal if sup & SPI_NBITS_OCTAL else 0
    return bits


class SpidevNode:
    """/dev/spidevB.C: ``struct spi_device`` and ``struct spidev_data`` in one."""

    def __init__(self, link: ClientPool, info: SpiBusInfo, cs: int,
                 bufsiz: int = DEFAULT_BUFSIZ) -> None:
        self.link = link
        self.bus = info.name
        self.cs = cs
        self.bufsiz = bufsiz
        self.ctlr_mode_bits = controller_mode_bits(info)
        self.bpw_mask = info.config.bits_per_word_mask
        self.ctlr_max_speed_hz = info.config.max_freq_hz
        self.mode = 0
        self.bits_per_word = 8
        #: The device's maximum: the controller's (a device tree would say more).
        self.max_speed_hz = self.ctlr_max_speed_hz
        #: spidev's default transfer speed (spidev_probe: spi->max_speed_hz).
        self.speed_hz = self.max_speed_hz
        self.users = 0
        self.lock = threading.Lock()

    # -- state --------------------------------------------------------------

    def state(self) -> tuple[int, int, int]:
        """(mode & SPI_MODE_MASK, bits per word, spidev's speed) for the SPI_IOC_RD_* ioctls."""
        with self.lock:
            return self.mode & SPI_MODE_MASK, self.bits_per_word, self.speed_hz

    def opened(self) -> None:
        with self.lock:
            self.users += 1

    def released(self) -> None:
        """spidev_release(): the last close resets the speed to the device's maximum."""
        with self.lock:
            self.users = max(0, self.users - 1)
            if self.users == 0:
                self.speed_hz = self.max_speed_hz

    def _validate_bpw(self, bits: int) -> None:
        """``__spi_validate_bits_per_word`` (spi.c:3655-3667)."""
        if self.bpw_mask and (bits > 32 or not self.bpw_mask & (1 << (bits - 1))):
            raise OSError(errno.EINVAL, f"{bits} bits per word not supported by the controller")

    def _setup(self, mode: int, bits: int, max_speed: int) -> tuple[int, int, int]:
        """``__spi_setup`` (spi.c:3700-3790) for a proposed state; returns the state it sets."""
        if (mode & abi.SPI_TX_DUAL and mode & abi.SPI_TX_QUAD) or (
                mode & abi.SPI_RX_DUAL and mode & abi.SPI_RX_QUAD):
            raise OSError(errno.EINVAL, "dual and quad at the same time")
        if mode & abi.SPI_3WIRE and mode & _LANES:
            raise OSError(errno.EINVAL, "3-wire with dual/quad/octal lanes")
        bad = mode & ~(self.ctlr_mode_bits | abi.SPI_CS_WORD)
        ugly = bad & _LANES
        mode &= ~ugly  # "setup: ignoring unsupported mode bits"
        bad &= ~ugly
        if bad:
            raise OSError(errno.EINVAL, f"mode bits {bad:#x} not supported by the controller")
        if not bits:
            bits = 8
        else:
            self._validate_bpw(bits)
        if self.ctlr_max_speed_hz and (not max_speed or max_speed > self.ctlr_max_speed_hz):
            max_speed = self.ctlr_max_speed_hz
        return mode, bits, max_speed

    def set(self, what: int, value: int) -> None:
        """The SPI_IOC_WR_* ioctls (spidev.c:410-490); a refusal leaves the state as it was."""
        with self.lock:
            if what == wire.SPI_SET_MODE:
                if value & ~SPI_MODE_MASK:
                    raise OSError(errno.EINVAL, f"mode {value:#x} has unknown bits")
                value |= self.mode & ~SPI_MODE_MASK
                self.mode, _, self.max_speed_hz = self._setup(
                    value & SPI_MODE_USER_MASK, self.bits_per_word, self.max_speed_hz)
            elif what == wire.SPI_SET_LSB_FIRST:
                mode = (self.mode | abi.SPI_LSB_FIRST if value
                        else self.mode & ~abi.SPI_LSB_FIRST)
                self.mode, _, self.max_speed_hz = self._setup(mode, self.bits_per_word,
                                                              self.max_speed_hz)
            elif what == wire.SPI_SET_BITS:
                _, self.bits_per_word, self.max_speed_hz = self._setup(
                    self.mode, value, self.max_speed_hz)
            elif what == wire.SPI_SET_SPEED:
                if value == 0:
                    raise OSError(errno.EINVAL, "speed 0")
                # spi->max_speed_hz is set for spi_setup() and put back (478-488).
                self._setup(self.mode, self.bits_per_word, value)
                self.speed_hz = value
            else:
                raise OSError(errno.ENOTTY, "unknown setting")

    # -- messages -------------------------------------------------------------

    def read(self, count: int) -> bytes:
        """spidev_read(): one rx transfer at spidev's speed."""
        return self.message([Xfer(count, None, True)])[1][0] if count else b""

    def write(self, data: bytes) -> int:
        """spidev_write(): one tx transfer at spidev's speed."""
        return self.message([Xfer(len(data), data, False)])[0] if data else 0

    def message(self, xfers: Sequence[Xfer]) -> tuple[int, list[bytes]]:
        """SPI_IOC_MESSAGE(n): the total length and the rx bytes of each rx transfer."""
        with self.lock:
            mode, bits, max_speed, speed = (self.mode, self.bits_per_word, self.max_speed_hz,
                                            self.speed_hz)
        if not xfers:
            raise OSError(errno.EINVAL, "empty message")
        total = sum(x.length for x in xfers)
        pieces = [(i, x) for i, x in enumerate(xfers)]
        if mode & abi.SPI_CS_WORD:  # spi.c:3895-3916
            pieces = _split_words(pieces, (bits + 7) // 8)
        out: list[SpiTransfer] = []
        rx_at: list[int | None] = []  # per piece: its index in ``out`` when it clocks data
        for _, x in pieces:
            hz = x.speed_hz or speed or max_speed  # spidev.c:280, spi.c:3953
            if self.ctlr_max_speed_hz and hz > self.ctlr_max_speed_hz:
                hz = self.ctlr_max_speed_hz
            bpw = x.bits_per_word or bits
            self._validate_bpw(bpw)
            size = 1 if bpw <= 8 else 2 if bpw <= 16 else 4
            if x.length % size:
                raise OSError(errno.EINVAL, f"length {x.length} is not a whole number of "
                                            f"{bpw}-bit words")
            tx_nbits = (x.tx_nbits or 1) if x.tx is not None else 0
            rx_nbits = (x.rx_nbits or 1) if x.rx else 0
            _check_lanes(tx_nbits, mode, abi.SPI_TX_DUAL, abi.SPI_TX_QUAD)
            _check_lanes(rx_nbits, mode, abi.SPI_RX_DUAL, abi.SPI_RX_QUAD)
            if not x.length or (x.tx is None and not x.rx):
                # Nothing clocked (spi_transfer_one_message): its cs_change and
                # delay apply after the transfer before it.
                if out:
                    h = out[-1].head
                    h.cs_change = h.cs_change or int(bool(x.cs_change))
                    h.cs_delay_hold_ns += x.delay_usecs * 1000
                rx_at.append(None)
                continue
            head = SpiTransferHead(
                chip_select_id=self.cs, bits_per_word=bpw, cs_change=int(bool(x.cs_change)),
                tx_nbits=tx_nbits, rx_nbits=rx_nbits, mode=_virtio_mode(mode), freq=hz,
                word_delay_ns=x.word_delay_usecs * 1000, cs_delay_hold_ns=x.delay_usecs * 1000)
            out.append(SpiTransfer(head, x.tx, x.length if x.rx else 0))
            rx_at.append(len(out) - 1 if x.rx else None)
        got: dict[int, bytes] = {}
        if out:
            out[-1].head.cs_change = 0  # the wire always releases CS after a message
            result = self.link.spi(self.bus, self.cs, out)
            if any(result.status):
                err = errno.EINVAL if SpiResult.PARAM_ERR in result.status else errno.EIO
                f = result.failures[0] if result.failures else None
                raise OSError(err, f.message if f else "transfer failed")
            reads = iter(result.reads)
            got = {i: next(reads) for i, t in enumerate(out) if t.rx_len}
        rx: dict[int, bytearray] = {}
        for (i, x), at in zip(pieces, rx_at, strict=True):
            if x.rx:
                rx.setdefault(i, bytearray()).extend(got[at] if at is not None
                                                     else bytes(x.length))
        return total, [bytes(rx[i]) for i, x in enumerate(xfers) if x.rx]


def _check_lanes(nbits: int, mode: int, dual: int, quad: int) -> None:
    """spi.c:3990-4017 (Linux 6.1 accepts single, dual and quad on a transfer)."""
    if not nbits:
        return
    if nbits not in (1, 2, 4):
        raise OSError(errno.EINVAL, f"{nbits}-bit transfers not supported")
    if (nbits == 2 and not mode & (dual | quad)) or (nbits == 4 and not mode & quad):
        raise OSError(errno.EINVAL, f"{nbits}-bit transfer without the mode bit for it")


def _virtio_mode(mode: int) -> int:
    out = 0
    for lx, v in ((abi.SPI_CPHA, SpiMode.CPHA), (abi.SPI_CPOL, SpiMode.CPOL),
                  (abi.SPI_CS_HIGH, SpiMode.CS_HIGH), (abi.SPI_LSB_FIRST, SpiMode.LSB_FIRST),
                  (abi.SPI_LOOP, SpiMode.LOOP)):
        if mode & lx:
            out |= int(v)
    return out


def _split_words(pieces: Sequence[tuple[int, Xfer]], size: int) -> list[tuple[int, Xfer]]:
    """SPI_CS_WORD on a controller without it: one transfer per word, CS toggled after each."""
    out: list[tuple[int, Xfer]] = []
    for i, x in pieces:
        if x.length <= size:
            out.append((i, x))
            continue
        for at in range(0, x.length, size):
            tx = x.tx[at : at + size] if x.tx is not None else None
            out.append((i, Xfer(min(size, x.length - at), tx, x.rx, x.speed_hz, 0,
                                x.bits_per_word, 1, x.tx_nbits, x.rx_nbits,
                                x.word_delay_usecs)))
        out[-1][1].delay_usecs = x.delay_usecs
    for _, x in out[:-1]:
        x.cs_change = 1
    return out

"""An SPI controller on Linux spidev: one ``/dev/spidevB.C`` per chip select.

A virtio-spi message becomes ONE ``SPI_IOC_MESSAGE(n)`` ioctl, so the kernel
runs all its transfers under one CS assertion with per-transfer speed, word
size, lane widths, ``cs_change`` and delays.  The ``spidev`` package cannot
do that (one transfer per call, no ``cs_change``, no delays), hence the
hand-built ``spi_ioc_transfer`` array.

Field by field (virtio ``transfer_head`` -> ``spi_ioc_transfer``):

* ``freq`` -> ``speed_hz`` (0: the device's default).  The kernel does not
  clamp an explicit speed to the device tree's maximum, so the server's own
  ``max_freq_hz`` check is what keeps an over-speed transfer off a bus whose
  controller would take it;
* ``bits_per_word``, ``tx_nbits``, ``rx_nbits`` unchanged (0 on an unused
  direction, as the virtio driver sends them; the spi core turns 0 into 1 for
  a direction with a buffer);
* ``cs_change`` -> ``cs_change`` on every transfer but the last, where Linux
  would read it as "keep CS asserted after the message"; virtio always
  releases CS at the end of a message;
* ``cs_delay_hold_ns`` -> ``delay_usecs`` (µs after the transfer, before CS
  changes or the next transfer starts; rounded up, at most 65535 µs);
* ``word_delay_ns`` -> ``word_delay_usecs`` (rounded up, at most 255 µs);
* ``cs_setup_ns`` and ``cs_change_delay_inactive_ns``: spidev has no field
  for either (the kernel takes them from the device tree), so the bus
  advertises a maximum of 0 and any non-zero request gets PARAM_ERR;
* ``mode`` -> ``SPI_IOC_WR_MODE32`` before the message when it differs from
  the chip select's current mode (virtio LOOP, bit 4, is Linux SPI_LOOP 0x20),
  plus the bus's configured Linux-only flags (3WIRE, NO_CS, ...) and the
  TX/RX_DUAL/QUAD/OCTAL bits the message's lane widths need.  spidev holds
  one mode per device, so all transfers of a message must share ``mode``.

A failing ``SPI_IOC_MESSAGE`` gives an errno for the whole message (EINVAL
for a transfer the controller refuses, EIO for one that failed), so the whole
message is TRANS_ERR.  Measured on Linux 7.2's spidev (docs/board.md, "Tested
on").
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from protocol.virtio import SpiConfig, SpiMode, SpiTransfer

from ..base import BusError, SpiBackend
from . import abi

#: Representable maxima of the spi_ioc_transfer delay fields, in ns.
MAX_DELAY_USECS = 0xFFFF
MAX_WORD_DELAY_USECS = 0xFF
MAX_HOLD_NS = MAX_DELAY_USECS * 1000
MAX_WORD_DELAY_NS = MAX_WORD_DELAY_USECS * 1000
DEFAULT_BUFSIZ = 4096
BUFSIZ_PARAM = Path("/sys/module/spidev/parameters/bufsiz")

#: Linux-only mode flags a bus may set on every message (names as in the config file).
LINUX_MODE_FLAGS = {
    "3wire": abi.SPI_3WIRE,
    "no_cs": abi.SPI_NO_CS,
    "ready": abi.SPI_READY,
    "cs_word": abi.SPI_CS_WORD,
    "3wire_hiz": abi.SPI_3WIRE_HIZ,
}

_TX_LANES = {2: abi.SPI_TX_DUAL, 4: abi.SPI_TX_QUAD, 8: abi.SPI_TX_OCTAL}
_RX_LANES = {2: abi.SPI_RX_DUAL, 4: abi.SPI_RX_QUAD, 8: abi.SPI_RX_OCTAL}


def ns_to_us(ns: int) -> int:
    """Round up: a device asking for a delay must get at least that much."""
    return -(-ns // 1000)


def linux_mode(transfers: Sequence[SpiTransfer], extra: int = 0) -> int:
    """The ``SPI_IOC_WR_MODE32`` value for a message (its first transfer's mode)."""
    m = transfers[0].head.mode
    out = extra
    for bit, lx in ((SpiMode.CPHA, abi.SPI_CPHA), (SpiMode.CPOL, abi.SPI_CPOL),
                    (SpiMode.CS_HIGH, abi.SPI_CS_HIGH), (SpiMode.LSB_FIRST, abi.SPI_LSB_FIRST),
                    (SpiMode.LOOP, abi.SPI_LOOP)):
        if m & bit:
            out |= lx
    tx = max((t.head.tx_nbits for t in transfers if t.tx is not None), default=0)
    rx = max((t.head.rx_nbits for t in transfers if t.rx_len), default=0)
    return out | _TX_LANES.get(tx, 0) | _RX_LANES.get(rx, 0)


def read_bufsiz(path: Path = BUFSIZ_PARAM) -> int:
    """spidev's per-message buffer size (module parameter ``bufsiz``)."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return DEFAULT_BUFSIZ


class LinuxSpiBus(SpiBackend):
    """Chip selects mapped to spidev device files, opened at construction."""

    def __init__(
        self,
        name: str,
        devices: Mapping[int, str],
        config: SpiConfig,
        *,
        description: str = "",
        mode_flags: int = 0,
        bufsiz: int | None = None,
        kernel: abi.Kernel | None = None,
    ) -> None:
        self.name = name
        self.description = description or ", ".join(
            f"cs{cs}={p}" for cs, p in sorted(devices.items()))
        self.mode_flags = mode_flags
        self.bufsiz = bufsiz if bufsiz is not None else read_bufsiz()
        self._k = kernel if kernel is not None else abi.real_kernel()
        self._fds: dict[int, int] = {}
        self._mode: dict[int, int | None] = {}
        max_speed: list[int] = []
        try:
            for cs, path in sorted(devices.items()):
                try:
                    fd = self._k.open(path)
                except OSError as e:
                    raise ValueError(abi.open_hint(path, e, "spi")) from None
                self._fds[cs] = fd
                try:
                    mode = ctypes.c_uint32(0)
                    self._k.ioctl(fd, abi.SPI_IOC_RD_MODE32, ctypes.addressof(mode))
                    speed = ctypes.c_uint32(0)
                    self._k.ioctl(fd, abi.SPI_IOC_RD_MAX_SPEED_HZ, ctypes.addressof(speed))
                except OSError as e:
                    raise ValueError(
                        f"{path}: {e.strerror or e} (is it a spidev device?)") from None
                self._mode[cs] = mode.value
                max_speed.append(speed.value)
        except BaseException:
            self.close()
            raise
        if config.max_freq_hz == 0 and max_speed and min(max_speed):
            # Unconfigured: advertise what the device tree allows (the kernel would clamp).
            config = dataclasses.replace(config, max_freq_hz=min(max_speed))
        self.config = config

    def check(self, cs: int, transfers: Sequence[SpiTransfer]) -> list[str | None]:
        """Limits of spidev that ``virtio_spi_config`` cannot express."""
        if cs not in self._fds:
            return [f"no spidev device configured for chip select {cs}"] * len(transfers)
        if len(transfers) > abi.SPI_IOC_MAX_TRANSFERS:
            return [f"{len(transfers)} transfers in one message; SPI_IOC_MESSAGE takes at "
                    f"most {abi.SPI_IOC_MAX_TRANSFERS}"] * len(transfers)
        out: list[str | None] = []
        mode0 = transfers[0].head.mode
        tx_total = rx_total = 0
        for t in transfers:
            h = t.head
            tx_total += len(t.tx) if t.tx is not None else 0
            rx_total += t.rx_len
            if h.mode != mode0:
                out.append(f"mode {h.mode:#x} differs from the message's first transfer "
                           f"({mode0:#x}); spidev sets one mode per message")
            elif ns_to_us(h.word_delay_ns) > MAX_WORD_DELAY_USECS:
                out.append(f"word_delay_ns {h.word_delay_ns} exceeds spidev's "
                           f"{MAX_WORD_DELAY_USECS} µs")
            elif ns_to_us(h.cs_delay_hold_ns) > MAX_DELAY_USECS:
                out.append(f"cs_delay_hold_ns {h.cs_delay_hold_ns} exceeds spidev's "
                           f"{MAX_DELAY_USECS} µs")
            elif h.cs_setup_ns or h.cs_change_delay_inactive_ns:
                out.append("cs_setup_ns / cs_change_delay_inactive_ns cannot be set through "
                           "spidev")
            elif tx_total > self.bufsiz or rx_total > self.bufsiz:
                out.append(f"message exceeds spidev's buffer of {self.bufsiz} bytes per "
                           "direction (module parameter spidev.bufsiz)")
            else:
                out.append(None)
        return out

    def transfer(self, cs: int, transfers: Sequence[SpiTransfer]) -> list[bytes]:
        fd = self._fds.get(cs)
        if fd is None:
            raise BusError(errno.ENODEV, f"no spidev device for chip select {cs}")
        mode = linux_mode(transfers, self.mode_flags)
        if self._mode.get(cs) != mode:
            value = ctypes.c_uint32(mode)
            try:
                self._k.ioctl(fd, abi.SPI_IOC_WR_MODE32, ctypes.addressof(value))
            except OSError as e:
                self._mode[cs] = None  # unknown now: set it again next time
                err = e.errno or errno.EIO
                raise BusError(err, f"the controller refused mode {mode:#x}: "
                                    f"{os.strerror(err)}") from None
            self._mode[cs] = mode
        n = len(transfers)
        arr = (abi.SpiIocTransfer * n)()
        keep: list[ctypes.Array[ctypes.c_char]] = []
        rx_bufs: list[tuple[ctypes.Array[ctypes.c_char], int]] = []
        for i, t in enumerate(transfers):
            h = t.head
            x = arr[i]
            if t.tx is not None:
                txb = ctypes.create_string_buffer(t.tx, len(t.tx))
                keep.append(txb)
                x.tx_buf = ctypes.addressof(txb)
                x.tx_nbits = h.tx_nbits
            if t.rx_len:
                rxb = ctypes.create_string_buffer(t.rx_len)
                rx_bufs.append((rxb, t.rx_len))
                x.rx_buf = ctypes.addressof(rxb)
                x.rx_nbits = h.rx_nbits
            x.len = t.length
            x.speed_hz = h.freq
            x.delay_usecs = ns_to_us(h.cs_delay_hold_ns)
            x.bits_per_word = h.bits_per_word
            x.cs_change = h.cs_change if i < n - 1 else 0
            x.word_delay_usecs = ns_to_us(h.word_delay_ns)
        try:
            self._k.ioctl(fd, abi.SPI_IOC_MESSAGE(n), ctypes.addressof(arr))
        except OSError as e:
            err = e.errno or errno.EIO
            raise BusError(err, f"SPI_IOC_MESSAGE({n}) failed: {os.strerror(err)}") from None
        return [b.raw[:length] for b, length in rx_bufs]

    def close(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            self._k.close(fd)


__all__ = ["LINUX_MODE_FLAGS", "LinuxSpiBus", "linux_mode", "ns_to_us", "read_bufsiz"]

"""spidev-compatible ``SpiDev`` over busbridge (the surface of py-spidev 3.8).

Each ``xfer``/``readbytes``/``writebytes`` is one SPI message on the remote
chip select, as one ``SPI_IOC_MESSAGE(1)`` is on Linux.  Attribute checks
follow the C module: wrong types raise ``TypeError``; a setting the remote
controller cannot do (its ``virtio_spi_config``) fails with ``OSError``
EINVAL, as ``spi_setup`` would.  This module never imports the real spidev.
"""

from __future__ import annotations

import errno
import itertools
import os
from collections.abc import Sequence
from typing import Any, Literal

from protocol.virtio import (
    SPI_MF_CPHA_0,
    SPI_MF_CPHA_1,
    SPI_MF_CPOL_0,
    SPI_MF_CPOL_1,
    SPI_MF_CS_HIGH,
    SPI_MF_LOOPBACK,
    SPI_MF_LSB_FIRST,
    SpiConfig,
    SpiMode,
)

from ..client import spi_xfer
from .session import DropinSession, call, session

__all__ = ["SpiDev"]

#: spidev's default ``bufsiz``: the most one xfer/readbytes/writebytes moves.
SPIDEV_MAXPATH = 4096

_fds = itertools.count(2000)


def spi_mode_ok(cfg: SpiConfig, mode: int, cs_high: bool, lsb_first: bool, loop: bool) -> bool:
    """Whether the controller advertises every mode bit asked for."""
    mf = cfg.mode_func_supported
    need = (SPI_MF_CPHA_1 if mode & 1 else SPI_MF_CPHA_0) | (
        SPI_MF_CPOL_1 if mode & 2 else SPI_MF_CPOL_0)
    if cs_high:
        need |= SPI_MF_CS_HIGH
    if lsb_first:
        need |= SPI_MF_LSB_FIRST
    if loop:
        need |= SPI_MF_LOOPBACK
    return mf & need == need


def bits_ok(cfg: SpiConfig, bits: int) -> bool:
    return not cfg.bits_per_word_mask or bool(cfg.bits_per_word_mask >> (bits - 1) & 1)


def _einval(why: str) -> OSError:
    return OSError(errno.EINVAL, f"{os.strerror(errno.EINVAL)} ({why})")


def _values(values: Any, limit: int | None) -> bytes:
    try:
        items = list(values)
    except TypeError:
        raise TypeError("Argument must be a list of at least one, but not more than "
                        "4096 integers") from None
    if not items:
        raise TypeError("Empty argument list.")
    if limit is not None and len(items) > limit:
        raise OverflowError(f"Argument list size exceeds {limit} bytes.")
    for v in items:
        if not isinstance(v, int):
            raise TypeError(f"Non-Int/Long value in arguments: {id(v):x}.")
    return bytes(v & 0xFF for v in items)


def _xfer_args(name: str, args: tuple[int, ...]) -> tuple[int, int, int]:
    """``speed_hz, delay_usecs, bits_per_word`` of an ``xfer`` call (0: the device's)."""
    if len(args) > 3:
        raise TypeError(f"{name}() takes at most 4 arguments ({len(args) + 1} given)")
    speed_hz, delay_usecs, bits_per_word = (*args, 0, 0, 0)[:3]
    return speed_hz, delay_usecs, bits_per_word


class SpiDev:
    """py-spidev's ``SpiDev`` on a remote board's SPI bus.

    ``open(bus, device)`` takes a local bus number, mapped to a remote bus by
    ``busbridge run --map`` / ``BUSBRIDGE_MAP`` (identity by default), and
    the chip select.  ``session`` picks a connection other than the default.
    """

    def __init__(self, bus: int = -1, client: int = -1, *, session: DropinSession | None = None
                 ) -> None:
        self._session = session
        self._fd = -1
        self._bus = ""
        self._cs = 0
        self._cfg = SpiConfig()
        self._reset()
        if bus >= 0:
            self.open(bus, client)

    def _reset(self) -> None:
        self._mode = 0
        self._bits = 0
        self._speed = 0
        self._flags = {"cshigh": False, "lsbfirst": False, "threewire": False,
                       "loop": False, "no_cs": False}
        self.read0 = False

    # -- lifecycle ----------------------------------------------------------------

    def open(self, bus: int, device: int) -> None:
        s = self._session or session()
        path = f"/dev/spidev{bus}.{device}"
        name = s.resolve("spi", bus, path)
        info = s.welcome.spi_bus(name)
        assert info is not None
        if not 0 <= device < max(info.config.cs_max_number, 1):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        self._session, self._bus, self._cs, self._cfg = s, name, device, info.config
        self._fd = next(_fds)
        self._mode, self._bits, self._speed = 0, 8, info.config.max_freq_hz

    def open_path(self, path: str) -> None:
        stem = os.path.basename(path).removeprefix("spidev")
        bus, dot, dev = stem.partition(".")
        if not dot or not bus.isdigit() or not dev.isdigit():
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        self.open(int(bus), int(dev))

    def close(self) -> None:
        self._fd = -1
        self._reset()

    def fileno(self) -> int:
        return self._fd

    def __enter__(self) -> SpiDev:
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self.close()
        return False

    def _need_open(self) -> None:
        if self._fd < 0:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))

    # -- attributes -----------------------------------------------------------------

    @property
    def mode(self) -> int:
        return self._mode & 3

    @mode.setter
    def mode(self, value: int) -> None:
        if not isinstance(value, int):
            raise TypeError("The mode attribute must be an integer")
        if not 0 <= value <= 3:
            raise TypeError("The mode attribute must be an integerbetween 0 and 3.")
        self._need_open()
        f = self._flags
        if not spi_mode_ok(self._cfg, value, f["cshigh"], f["lsbfirst"], f["loop"]):
            raise _einval(f"SPI mode {value} not supported by remote bus {self._bus}")
        self._mode = value

    @property
    def bits_per_word(self) -> int:
        return self._bits

    @bits_per_word.setter
    def bits_per_word(self, value: int) -> None:
        if not isinstance(value, int):
            raise TypeError("The bits_per_word attribute must be an integer")
        if not 8 <= value <= 32:
            raise TypeError("invalid bits_per_word (8 to 32)")
        self._need_open()
        if not bits_ok(self._cfg, value):
            raise _einval(f"{value} bits per word not supported by remote bus {self._bus}")
        self._bits = value

    @property
    def max_speed_hz(self) -> int:
        return self._speed

    @max_speed_hz.setter
    def max_speed_hz(self, value: int) -> None:
        if not isinstance(value, int):
            raise TypeError("The max_speed_hz attribute must be an integer")
        self._need_open()
        self._speed = value & 0xFFFFFFFF

    def _flag(self, name: str, label: str, value: object) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"The {label} attribute must be boolean")
        self._need_open()
        if value and name in ("threewire", "no_cs"):
            raise _einval(f"virtio-spi has no {label} mode")
        flags = dict(self._flags, **{name: value})
        if not spi_mode_ok(self._cfg, self._mode, flags["cshigh"], flags["lsbfirst"],
                           flags["loop"]):
            raise _einval(f"{label} not supported by remote bus {self._bus}")
        self._flags = flags

    @property
    def cshigh(self) -> bool:
        return self._flags["cshigh"]

    @cshigh.setter
    def cshigh(self, value: object) -> None:
        self._flag("cshigh", "cshigh", value)

    @property
    def lsbfirst(self) -> bool:
        return self._flags["lsbfirst"]

    @lsbfirst.setter
    def lsbfirst(self, value: object) -> None:
        self._flag("lsbfirst", "lsbfirst", value)

    @property
    def threewire(self) -> bool:
        return self._flags["threewire"]

    @threewire.setter
    def threewire(self, value: object) -> None:
        self._flag("threewire", "3wire", value)

    @property
    def loop(self) -> bool:
        return self._flags["loop"]

    @loop.setter
    def loop(self, value: object) -> None:
        self._flag("loop", "loop", value)

    @property
    def no_cs(self) -> bool:
        return self._flags["no_cs"]

    @no_cs.setter
    def no_cs(self, value: object) -> None:
        self._flag("no_cs", "no_cs", value)

    # -- transfers --------------------------------------------------------------------

    def _message(self, tx: bytes | None, rx_len: int | None, speed_hz: int = 0,
                 delay_usecs: int = 0, bits_per_word: int = 0) -> bytes:
        self._need_open()
        mode = self._mode & 3
        if self._flags["cshigh"]:
            mode |= SpiMode.CS_HIGH
        if self._flags["lsbfirst"]:
            mode |= SpiMode.LSB_FIRST
        if self._flags["loop"]:
            mode |= SpiMode.LOOP
        speed = speed_hz or self._speed
        if self._cfg.max_freq_hz and (not speed or speed > self._cfg.max_freq_hz):
            speed = self._cfg.max_freq_hz  # the SPI core clamps to the controller
        t = spi_xfer(tx, rx_len, speed_hz=speed, mode=mode,
                     bits_per_word=bits_per_word or self._bits or 8,
                     cs_hold_ns=delay_usecs * 1000)
        s = self._session
        assert s is not None
        reads = call(lambda: s.client.spi_transfer(self._bus, self._cs, [t]))
        return reads[0] if reads else b""

    def readbytes(self, length: int) -> list[int]:
        n = min(max(int(length), 1), SPIDEV_MAXPATH)
        return list(self._message(None, n))

    def writebytes(self, values: Sequence[int]) -> None:
        self._message(_values(values, SPIDEV_MAXPATH), 0)

    def writebytes2(self, values: Any) -> None:
        """Any size, any buffer; sent in ``bufsiz`` chunks, one message each."""
        try:
            data = bytes(memoryview(values))
        except TypeError:
            data = _values(values, None) if len(values) else b""
        for i in range(0, len(data), SPIDEV_MAXPATH):
            self._message(data[i : i + SPIDEV_MAXPATH], 0)

    def _xfer(self, values: Any, speed_hz: int, delay_usecs: int, bits_per_word: int
              ) -> list[int] | tuple[int, ...]:
        rx = self._message(_values(values, SPIDEV_MAXPATH), None, speed_hz, delay_usecs,
                           bits_per_word)
        if isinstance(values, list):
            values[:] = list(rx)  # spidev overwrites the caller's list and returns it
            return values
        return tuple(rx)

    # xfer(values[, speed_hz, delay_usecs, bits_per_word]): positional only, as the C
    # module parses them; *args keeps a keyword a TypeError in the compiled build too
    # (mypyc accepts keywords for "/" parameters).

    def xfer(self, values: Any, *args: int) -> list[int] | tuple[int, ...]:
        return self._xfer(values, *_xfer_args("xfer", args))

    def xfer2(self, values: Any, *args: int) -> list[int] | tuple[int, ...]:
        return self._xfer(values, *_xfer_args("xfer2", args))

    def xfer3(self, values: Any, *args: int) -> tuple[int, ...]:
        """Any size, in ``bufsiz`` chunks (CS may toggle between them); returns a tuple."""
        speed_hz, delay_usecs, bits_per_word = _xfer_args("xfer3", args)
        data = _values(values, None)
        out = bytearray()
        for i in range(0, len(data), SPIDEV_MAXPATH):
            out += self._message(data[i : i + SPIDEV_MAXPATH], None, speed_hz, delay_usecs,
                                 bits_per_word)
        return tuple(out)

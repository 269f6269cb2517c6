"""python-smbus's ``SMBus`` (``import smbus``; Debian's python3-smbus) over busbridge.

The legacy API that smbus2 mirrors, with its own rules, checked against
python3-smbus 4.3: arguments are positional only; ``read_i2c_block_data(addr,
cmd, len=32)``; block writes take a ``list`` of at most 32 integers (anything
else is a TypeError, a longer list an OverflowError, as the C module raises);
values are truncated to their width; an unopened bus raises ``OSError(EBADF)``;
``pec`` is a bool attribute.  Every transaction is the one the smbus2 drop-in
(:mod:`bridge.dropin.smbus`) would run, so both modules behave alike on the
wire.
"""

from __future__ import annotations

import errno
import operator
import os

from .session import DropinSession
from .smbus import I2C_SMBUS_BLOCK_MAX
from .smbus import SMBus as _SMBus2

__all__ = ["SMBus"]

_LIST_ERROR = "Third argument must be a list of at least one, but not more than 32 integers"


def _block(vals: object) -> list[int]:
    if not isinstance(vals, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in vals):
        raise TypeError(_LIST_ERROR)
    if len(vals) > I2C_SMBUS_BLOCK_MAX:
        raise OverflowError(_LIST_ERROR)
    return [v & 0xFF for v in vals]


class SMBus:
    """``SMBus([bus])``: python-smbus's class on a remote board's bus.

    ``bus`` is a local bus number, mapped to a remote bus as for smbus2
    (``busbridge run --map``); ``session`` picks a connection other than the
    process's default (an addition; python-smbus has no such argument).
    """

    def __init__(self, bus: int = -1, /, *, session: DropinSession | None = None) -> None:
        self._dev = _SMBus2(session=session)
        if operator.index(bus) >= 0:
            self.open(bus)

    def open(self, bus: int, /) -> None:
        """Connect to bus number ``bus`` (an int, as python-smbus requires)."""
        self._dev.open(operator.index(bus))

    def close(self) -> None:
        self._dev.close()

    def _open_dev(self) -> _SMBus2:
        if self._dev.fd is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return self._dev

    @property
    def pec(self) -> bool:
        """True if Packet Error Codes (PEC) are enabled."""
        return bool(self._dev.pec)

    @pec.setter
    def pec(self, value: object) -> None:
        self._open_dev().enable_pec(bool(value))

    def write_quick(self, addr: int, /) -> None:
        self._open_dev().write_quick(addr)

    def read_byte(self, addr: int, /) -> int:
        return self._open_dev().read_byte(addr)

    def write_byte(self, addr: int, val: int, /) -> None:
        self._open_dev().write_byte(addr, val)

    def read_byte_data(self, addr: int, cmd: int, /) -> int:
        return self._open_dev().read_byte_data(addr, cmd)

    def write_byte_data(self, addr: int, cmd: int, val: int, /) -> None:
        self._open_dev().write_byte_data(addr, cmd, val)

    def read_word_data(self, addr: int, cmd: int, /) -> int:
        return self._open_dev().read_word_data(addr, cmd)

    def write_word_data(self, addr: int, cmd: int, val: int, /) -> None:
        self._open_dev().write_word_data(addr, cmd, val)

    def process_call(self, addr: int, cmd: int, val: int, /) -> int:
        return self._open_dev().process_call(addr, cmd, val)

    def read_block_data(self, addr: int, cmd: int, /) -> list[int]:
        return self._open_dev().read_block_data(addr, cmd)

    def write_block_data(self, addr: int, cmd: int, vals: list[int], /) -> None:
        data = _block(vals)
        self._open_dev().write_block_data(addr, cmd, data)

    def block_process_call(self, addr: int, cmd: int, vals: list[int], /) -> list[int]:
        data = _block(vals)
        return self._open_dev().block_process_call(addr, cmd, data)

    def read_i2c_block_data(self, addr: int, cmd: int, length: int = 32, /) -> list[int]:
        """python-smbus's ``read_i2c_block_data(addr, cmd, len=32)``."""
        dev = self._open_dev()
        if not 0 <= length <= I2C_SMBUS_BLOCK_MAX:  # the kernel's "Invalid block read size"
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return dev.read_i2c_block_data(addr, cmd, length)

    def write_i2c_block_data(self, addr: int, cmd: int, vals: list[int], /) -> None:
        data = _block(vals)
        self._open_dev().write_i2c_block_data(addr, cmd, data)

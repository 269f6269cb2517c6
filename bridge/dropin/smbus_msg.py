"""smbus2's ``i2c_msg``: a ctypes ``struct i2c_msg``, for :meth:`SMBus.i2c_rdwr`.

Its own module because it is a ``ctypes.Structure``: the compiled build
(setup.py) leaves it interpreted, as mypyc cannot compile a subclass of a
ctypes type, while :mod:`bridge.dropin.smbus` around it is compiled.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["I2C_M_RD", "i2c_msg"]

#: ``i2c_msg.flags``: a read (<uapi/linux/i2c.h>).
I2C_M_RD = 0x0001


class i2c_msg(ctypes.Structure):
    """``struct i2c_msg``: a ctypes structure, so ``msg.buf[i]`` works as with smbus2.

    :meth:`SMBus.i2c_rdwr` writes read data into ``buf`` in place.
    """

    _fields_ = [
        ("addr", ctypes.c_uint16),
        ("flags", ctypes.c_uint16),
        ("len", ctypes.c_uint16),
        ("buf", ctypes.POINTER(ctypes.c_char)),
    ]
    addr: int
    flags: int
    len: int
    buf: Any

    def __iter__(self) -> Iterator[int]:
        return iter(bytes(self))

    def __len__(self) -> int:
        return int(self.len)

    def __bytes__(self) -> bytes:
        return ctypes.string_at(self.buf, self.len) if self.len else b""

    def __repr__(self) -> str:
        return f"i2c_msg({self.addr},{self.flags},{bytes(self)!r})"

    def __str__(self) -> str:
        return bytes(self).decode(errors="ignore")

    @staticmethod
    def read(address: int, length: int) -> i2c_msg:
        arr = ctypes.create_string_buffer(length)
        return i2c_msg(addr=address, flags=I2C_M_RD, len=length,
                       buf=ctypes.cast(arr, ctypes.POINTER(ctypes.c_char)))._keep(arr)

    @staticmethod
    def write(address: int, buf: str | bytes | Sequence[int]) -> i2c_msg:
        data = bytes(map(ord, buf)) if isinstance(buf, str) else bytes(buf)
        arr = ctypes.create_string_buffer(data, len(data))
        return i2c_msg(addr=address, flags=0, len=len(data),
                       buf=ctypes.cast(arr, ctypes.POINTER(ctypes.c_char)))._keep(arr)

    def _keep(self, arr: ctypes.Array[ctypes.c_char]) -> i2c_msg:
        # The cast pointer does not own the buffer: keep it alive with the message.
        self.__dict__["_storage"] = arr
        return self

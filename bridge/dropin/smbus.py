"""smbus2-compatible ``SMBus``, ``i2c_msg`` and ``I2cFunc`` over busbridge.

Every SMBus operation becomes the I2C messages Linux's SMBus emulation
(``i2c_smbus_xfer_emulated``) would send to an I2C-only adapter such as
``i2c-virtio``, run as ONE combined transaction on the remote bus.  Results,
types and errors match smbus2 0.6: lists from block reads, ``ValueError``
for over-long blocks before any I/O, a plain ``OSError`` with the board's
errno for a bus failure.  This module never imports the real smbus2.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
from collections.abc import Sequence
from enum import IntFlag

from protocol.virtio import I2CMsg, read, write

from .session import DropinSession, call, session
from .smbus_msg import I2C_M_RD, i2c_msg

__all__ = ["I2C_M_RD", "I2C_SMBUS_BLOCK_MAX", "I2cFunc", "SMBus", "i2c_msg"]

I2C_SMBUS_BLOCK_MAX = 32
#: ``i2c_msg.flags`` bits from <uapi/linux/i2c.h> (I2C_M_RD is with ``i2c_msg``).
I2C_M_TEN = 0x0010
I2C_M_RECV_LEN = 0x0400
I2C_M_NO_RD_ACK = 0x0800
I2C_M_IGNORE_NAK = 0x1000
I2C_M_REV_DIR_ADDR = 0x2000
I2C_M_NOSTART = 0x4000
I2C_M_STOP = 0x8000
#: i2c-dev's limit on messages per I2C_RDWR.
I2C_RDWR_IOCTL_MAX_MSGS = 42


class I2cFunc(IntFlag):
    """Adapter functionality bits (``I2C_FUNCS``), as smbus2 names them."""

    I2C = 0x00000001
    ADDR_10BIT = 0x00000002
    PROTOCOL_MANGLING = 0x00000004
    SMBUS_PEC = 0x00000008
    NOSTART = 0x00000010
    SLAVE = 0x00000020
    SMBUS_BLOCK_PROC_CALL = 0x00008000
    SMBUS_QUICK = 0x00010000
    SMBUS_READ_BYTE = 0x00020000
    SMBUS_WRITE_BYTE = 0x00040000
    SMBUS_READ_BYTE_DATA = 0x00080000
    SMBUS_WRITE_BYTE_DATA = 0x00100000
    SMBUS_READ_WORD_DATA = 0x00200000
    SMBUS_WRITE_WORD_DATA = 0x00400000
    SMBUS_PROC_CALL = 0x00800000
    SMBUS_READ_BLOCK_DATA = 0x01000000
    SMBUS_WRITE_BLOCK_DATA = 0x02000000
    SMBUS_READ_I2C_BLOCK = 0x04000000
    SMBUS_WRITE_I2C_BLOCK = 0x08000000
    SMBUS_HOST_NOTIFY = 0x10000000

    SMBUS_BYTE = 0x00060000
    SMBUS_BYTE_DATA = 0x00180000
    SMBUS_WORD_DATA = 0x00600000
    SMBUS_BLOCK_DATA = 0x03000000
    SMBUS_I2C_BLOCK = 0x0C000000
    SMBUS_EMUL = 0x0EFF0008


def _crc8(data: bytes, crc: int = 0) -> int:
    """SMBus PEC: CRC-8, polynomial x^8 + x^2 + x + 1, MSB first."""
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


_fds = itertools.count(1000)


class SMBus:
    """smbus2's ``SMBus`` on a remote board's bus.

    ``bus`` is a local bus number (mapped to a remote bus by ``busbridge run
    --map`` / ``BUSBRIDGE_MAP``, identity by default), a ``/dev/i2c-N`` path, or
    a remote bus name.  ``session`` picks a connection other than the
    process's default.
    """

    def __init__(self, bus: int | str | None = None, force: bool = False, *,
                 session: DropinSession | None = None) -> None:
        self.fd: int | None = None
        self.funcs = I2cFunc(0)
        self._session = session
        self._bus = ""
        if bus is not None:
            self.open(bus)
        self.address: int | None = None
        self.force = force
        self._force_last: bool | None = None
        self._pec = 0

    def __enter__(self) -> SMBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self, bus: int | str) -> None:
        if isinstance(bus, bool) or not isinstance(bus, int | str):
            raise TypeError(f"Unexpected type(bus)={type(bus)}")
        s = self._session or session()
        if isinstance(bus, int):
            path, local = f"/dev/i2c-{bus}", str(bus)
        else:
            path = bus
            local = bus.removeprefix("/dev/i2c-") if bus.startswith("/dev/i2c-") else bus
        self._bus = s.resolve("i2c", local, path)
        self._session = s
        info = s.welcome.i2c_bus(self._bus)
        assert info is not None
        self.funcs = I2cFunc(info.functionality)
        self.fd = next(_fds)

    def close(self) -> None:
        if self.fd:
            self.fd = None
            self._pec = 0
            self.address = None
            self._force_last = None

    @property
    def pec(self) -> int:
        return self._pec

    @pec.setter
    def pec(self, enable: bool | int) -> None:
        self.enable_pec(enable)

    def enable_pec(self, enable: bool | int = True) -> None:
        if not (self.funcs & I2cFunc.SMBUS_PEC):
            raise OSError("SMBUS_PEC is not a feature")
        self._pec = int(enable)

    # -- plumbing ---------------------------------------------------------------

    def _set_address(self, address: int, force: bool | None = None) -> None:
        if self.fd is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        # I2C_SLAVE refuses what a 7-bit address cannot be (i2c-dev without I2C_TENBIT).
        if not isinstance(address, int) or not 0 <= address <= 0x7F:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        self.address = address
        self._force_last = force if force is not None else self.force

    def _xfer(self, msgs: list[I2CMsg], *, pec: bool = True) -> list[bytes]:
        """One combined transaction; with PEC on, append or check the PEC byte."""
        use_pec = pec and bool(self._pec)
        if use_pec:
            if msgs[-1].is_read:
                msgs[-1].length += 1
            else:
                last = msgs[-1]
                last.data += bytes([_crc8(bytes([last.addr << 1]) + last.data)])
        assert self._session is not None
        s = self._session
        reads = call(lambda: s.client.transfer(self._bus, msgs))
        if use_pec and msgs[-1].is_read:
            got = iter(reads)
            seen = b"".join(
                bytes([m.addr << 1 | 1]) + next(got) if m.is_read
                else bytes([m.addr << 1]) + m.data
                for m in msgs
            )
            if _crc8(seen[:-1]) != seen[-1]:
                raise OSError(errno.EBADMSG, f"{os.strerror(errno.EBADMSG)} (PEC mismatch)")
            reads[-1] = reads[-1][:-1]
        return reads

    def _write_read(self, addr: int, out: bytes, n: int) -> bytes:
        (data,) = self._xfer([write(addr, out), read(addr, n)])
        return data

    # -- SMBus protocol operations -------------------------------------------------

    def write_quick(self, i2c_addr: int, force: bool | None = None) -> None:
        self._set_address(i2c_addr, force)
        self._xfer([write(i2c_addr, b"")], pec=False)

    def read_byte(self, i2c_addr: int, force: bool | None = None) -> int:
        self._set_address(i2c_addr, force)
        (data,) = self._xfer([read(i2c_addr, 1)])
        return data[0]

    def write_byte(self, i2c_addr: int, value: int, force: bool | None = None) -> None:
        self._set_address(i2c_addr, force)
        self._xfer([write(i2c_addr, bytes([value & 0xFF]))])

    def read_byte_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        self._set_address(i2c_addr, force)
        return self._write_read(i2c_addr, bytes([register & 0xFF]), 1)[0]

    def write_byte_data(self, i2c_addr: int, register: int, value: int,
                        force: bool | None = None) -> None:
        self._set_address(i2c_addr, force)
        self._xfer([write(i2c_addr, bytes([register & 0xFF, value & 0xFF]))])

    def read_word_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        self._set_address(i2c_addr, force)
        return int.from_bytes(self._write_read(i2c_addr, bytes([register & 0xFF]), 2), "little")

    def write_word_data(self, i2c_addr: int, register: int, value: int,
                        force: bool | None = None) -> None:
        self._set_address(i2c_addr, force)
        self._xfer([write(i2c_addr, bytes([register & 0xFF])
                          + (value & 0xFFFF).to_bytes(2, "little"))])

    def process_call(self, i2c_addr: int, register: int, value: int,
                     force: bool | None = None) -> int:
        self._set_address(i2c_addr, force)
        out = bytes([register & 0xFF]) + (value & 0xFFFF).to_bytes(2, "little")
        return int.from_bytes(self._write_read(i2c_addr, out, 2), "little")

    def _block_reply(self, data: bytes) -> list[int]:
        # virtio-i2c cannot express I2C_M_RECV_LEN: read the longest block, trust its count.
        count = data[0]
        if not 1 <= count <= I2C_SMBUS_BLOCK_MAX:
            raise OSError(errno.EPROTO, f"{os.strerror(errno.EPROTO)} (block size {count})")
        return list(data[1 : count + 1])

    def read_block_data(self, i2c_addr: int, register: int,
                        force: bool | None = None) -> list[int]:
        self._set_address(i2c_addr, force)
        return self._block_reply(
            self._write_read(i2c_addr, bytes([register & 0xFF]), I2C_SMBUS_BLOCK_MAX + 1))

    def write_block_data(self, i2c_addr: int, register: int, data: Sequence[int],
                         force: bool | None = None) -> None:
        length = len(data)
        if length > I2C_SMBUS_BLOCK_MAX:
            raise ValueError(f"Data length cannot exceed {I2C_SMBUS_BLOCK_MAX} bytes")
        self._set_address(i2c_addr, force)
        self._xfer([write(i2c_addr, bytes([register & 0xFF, length])
                          + bytes(b & 0xFF for b in data))])

    def block_process_call(self, i2c_addr: int, register: int, data: Sequence[int],
                           force: bool | None = None) -> list[int]:
        length = len(data)
        if length > I2C_SMBUS_BLOCK_MAX:
            raise ValueError(f"Data length cannot exceed {I2C_SMBUS_BLOCK_MAX} bytes")
        self._set_address(i2c_addr, force)
        out = bytes([register & 0xFF, length]) + bytes(b & 0xFF for b in data)
        return self._block_reply(self._write_read(i2c_addr, out, I2C_SMBUS_BLOCK_MAX + 1))

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int,
                            force: bool | None = None) -> list[int]:
        if length > I2C_SMBUS_BLOCK_MAX:
            raise ValueError(f"Desired block length over {I2C_SMBUS_BLOCK_MAX} bytes")
        self._set_address(i2c_addr, force)
        return list(self._write_read(i2c_addr, bytes([register & 0xFF]), max(length, 0)))

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: Sequence[int],
                             force: bool | None = None) -> None:
        length = len(data)
        if length > I2C_SMBUS_BLOCK_MAX:
            raise ValueError(f"Data length cannot exceed {I2C_SMBUS_BLOCK_MAX} bytes")
        self._set_address(i2c_addr, force)
        self._xfer([write(i2c_addr, bytes([register & 0xFF]) + bytes(b & 0xFF for b in data))])

    def i2c_rdwr(self, *i2c_msgs: i2c_msg) -> None:
        """Run the messages as ONE combined transaction; read messages are filled in place."""
        if self.fd is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        if not i2c_msgs:
            return
        if len(i2c_msgs) > I2C_RDWR_IOCTL_MAX_MSGS:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        msgs: list[I2CMsg] = []
        for m in i2c_msgs:
            flags = int(m.flags)
            # virtio-i2c carries only the direction and the address width.
            if flags & ~(I2C_M_RD | I2C_M_TEN):
                raise OSError(errno.EOPNOTSUPP,
                              f"{os.strerror(errno.EOPNOTSUPP)} (i2c_msg flags {flags:#x}: "
                              "a virtio-i2c adapter only does I2C_M_RD and I2C_M_TEN)")
            ten = bool(flags & I2C_M_TEN)
            if ten and not self.funcs & I2cFunc.ADDR_10BIT:
                raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
            if not 0 <= m.addr <= (0x3FF if ten else 0x7F):
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            if flags & I2C_M_RD:
                msgs.append(read(m.addr, m.len, ten_bit=ten))
            else:
                msgs.append(write(m.addr, bytes(m), ten_bit=ten))
        assert self._session is not None
        s = self._session
        reads = iter(call(lambda: s.client.transfer(self._bus, msgs)))
        for m in i2c_msgs:
            if m.flags & I2C_M_RD:
                data = next(reads)
                ctypes.memmove(m.buf, data, min(len(data), m.len))

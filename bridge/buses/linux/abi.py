"""Linux i2c-dev / spidev userspace ABI: structures, ioctl numbers, a swappable ioctl layer.

Hand-rolled with ctypes instead of going through smbus2/spidev because the
bridge needs what those libraries do not offer: spidev's Python API sends one
transfer per call and has no per-transfer ``cs_change``, delays or
``word_delay``; smbus2 would do, but its ``i2c_rdwr`` hides how the request
reaches the kernel, and going through one layer for every ioctl is what lets
the tests record the exact bytes the kernel would receive.  The layouts are
checked against the kernel's own headers by ``tests/buses/test_linux_abi.py``.

Everything here is native-endian and native-sized, like the kernel's structs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as _e
import os
import platform
from typing import Protocol

# ---------------------------------------------------------------------------
# ioctl number encoding (<asm-generic/ioctl.h>; powerpc/mips/sparc/alpha differ)
# ---------------------------------------------------------------------------

if platform.machine().lower().startswith(("ppc", "powerpc", "mips", "sparc", "alpha")):
    _IOC_SIZEBITS, _IOC_NONE, _IOC_WRITE, _IOC_READ = 13, 1, 4, 2
else:
    _IOC_SIZEBITS, _IOC_NONE, _IOC_WRITE, _IOC_READ = 14, 0, 1, 2
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = 8
_IOC_SIZESHIFT = 16
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS


def _ioc(direction: int, kind: int, nr: int, size: int) -> int:
    return (direction << _IOC_DIRSHIFT) | (size << _IOC_SIZESHIFT) | (kind << _IOC_TYPESHIFT) | nr


def _iow(kind: int, nr: int, size: int) -> int:
    return _ioc(_IOC_WRITE, kind, nr, size)


def _ior(kind: int, nr: int, size: int) -> int:
    return _ioc(_IOC_READ, kind, nr, size)


# ---------------------------------------------------------------------------
# i2c-dev (<linux/i2c-dev.h>, <linux/i2c.h>)
# ---------------------------------------------------------------------------

I2C_RETRIES = 0x0701
I2C_TIMEOUT = 0x0702  # units of 10 ms
I2C_SLAVE = 0x0703
I2C_TENBIT = 0x0704
I2C_FUNCS = 0x0705
I2C_SLAVE_FORCE = 0x0706
I2C_RDWR = 0x0707
I2C_PEC = 0x0708
I2C_SMBUS = 0x0720

I2C_M_RD = 0x0001
I2C_M_TEN = 0x0010
I2C_M_RECV_LEN = 0x0400

I2C_RDWR_IOCTL_MAX_MSGS = 42
#: i2c-dev refuses longer messages with EINVAL.
I2C_DEV_MAX_MSG_LEN = 8192

I2C_SMBUS_READ = 1
I2C_SMBUS_WRITE = 0

I2C_SMBUS_QUICK = 0
I2C_SMBUS_BYTE = 1
I2C_SMBUS_BYTE_DATA = 2
I2C_SMBUS_WORD_DATA = 3
I2C_SMBUS_PROC_CALL = 4
I2C_SMBUS_BLOCK_DATA = 5
I2C_SMBUS_I2C_BLOCK_BROKEN = 6
I2C_SMBUS_BLOCK_PROC_CALL = 7
I2C_SMBUS_I2C_BLOCK_DATA = 8

I2C_SMBUS_BLOCK_MAX = 32


class I2cMsg(ctypes.Structure):
    """``struct i2c_msg``."""

    _fields_ = [
        ("addr", ctypes.c_uint16),
        ("flags", ctypes.c_uint16),
        ("len", ctypes.c_uint16),
        ("buf", ctypes.c_void_p),
    ]


class I2cRdwrIoctlData(ctypes.Structure):
    """``struct i2c_rdwr_ioctl_data``."""

    _fields_ = [("msgs", ctypes.c_void_p), ("nmsgs", ctypes.c_uint32)]


class I2cSmbusData(ctypes.Union):
    """``union i2c_smbus_data``: block[0] is the length for block transfers."""

    _fields_ = [
        ("byte", ctypes.c_uint8),
        ("word", ctypes.c_uint16),
        ("block", ctypes.c_uint8 * (I2C_SMBUS_BLOCK_MAX + 2)),
    ]


class I2cSmbusIoctlData(ctypes.Structure):
    """``struct i2c_smbus_ioctl_data``."""

    _fields_ = [
        ("read_write", ctypes.c_uint8),
        ("command", ctypes.c_uint8),
        ("size", ctypes.c_uint32),
        ("data", ctypes.c_void_p),
    ]


# ---------------------------------------------------------------------------
# spidev (<linux/spi/spidev.h>, <linux/spi/spi.h>)
# ---------------------------------------------------------------------------

SPI_IOC_MAGIC = ord("k")


class SpiIocTransfer(ctypes.Structure):
    """``struct spi_ioc_transfer`` (32 bytes on every architecture)."""

    _fields_ = [
        ("tx_buf", ctypes.c_uint64),
        ("rx_buf", ctypes.c_uint64),
        ("len", ctypes.c_uint32),
        ("speed_hz", ctypes.c_uint32),
        ("delay_usecs", ctypes.c_uint16),
        ("bits_per_word", ctypes.c_uint8),
        ("cs_change", ctypes.c_uint8),
        ("tx_nbits", ctypes.c_uint8),
        ("rx_nbits", ctypes.c_uint8),
        ("word_delay_usecs", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
    ]


SPI_IOC_TRANSFER_SIZE = ctypes.sizeof(SpiIocTransfer)
#: Largest n for which SPI_IOC_MESSAGE(n) encodes a size (``SPI_MSGSIZE``).
SPI_IOC_MAX_TRANSFERS = ((1 << _IOC_SIZEBITS) - 1) // SPI_IOC_TRANSFER_SIZE


def SPI_IOC_MESSAGE(n: int) -> int:
    """The kernel's macro: the ioctl number for a message of ``n`` transfers."""
    size = n * SPI_IOC_TRANSFER_SIZE
    return _iow(SPI_IOC_MAGIC, 0, size if size < 1 << _IOC_SIZEBITS else 0)


SPI_IOC_RD_MODE = _ior(SPI_IOC_MAGIC, 1, 1)
SPI_IOC_WR_MODE = _iow(SPI_IOC_MAGIC, 1, 1)
SPI_IOC_RD_LSB_FIRST = _ior(SPI_IOC_MAGIC, 2, 1)
SPI_IOC_WR_LSB_FIRST = _iow(SPI_IOC_MAGIC, 2, 1)
SPI_IOC_RD_BITS_PER_WORD = _ior(SPI_IOC_MAGIC, 3, 1)
SPI_IOC_WR_BITS_PER_WORD = _iow(SPI_IOC_MAGIC, 3, 1)
SPI_IOC_RD_MAX_SPEED_HZ = _ior(SPI_IOC_MAGIC, 4, 4)
SPI_IOC_WR_MAX_SPEED_HZ = _iow(SPI_IOC_MAGIC, 4, 4)
SPI_IOC_RD_MODE32 = _ior(SPI_IOC_MAGIC, 5, 4)
SPI_IOC_WR_MODE32 = _iow(SPI_IOC_MAGIC, 5, 4)

# Linux SPI mode bits (<linux/spi/spi.h> uapi).
SPI_CPHA = 0x01
SPI_CPOL = 0x02
SPI_CS_HIGH = 0x04
SPI_LSB_FIRST = 0x08
SPI_3WIRE = 0x10
SPI_LOOP = 0x20
SPI_NO_CS = 0x40
SPI_READY = 0x80
SPI_TX_DUAL = 0x100
SPI_TX_QUAD = 0x200
SPI_RX_DUAL = 0x400
SPI_RX_QUAD = 0x800
SPI_CS_WORD = 0x1000
SPI_TX_OCTAL = 0x2000
SPI_RX_OCTAL = 0x4000
SPI_3WIRE_HIZ = 0x8000


# ---------------------------------------------------------------------------
# The ioctl layer
# ---------------------------------------------------------------------------


class Kernel(Protocol):
    """What a Linux backend asks of the kernel; tests substitute a recorder.

    ``arg`` is the address of the argument (ctypes ``addressof``), exactly as
    ioctl(2) receives it, so a fake sees the same bytes the kernel would.
    Failures raise ``OSError`` with the kernel's errno.
    """

    def open(self, path: str) -> int: ...

    def close(self, fd: int) -> None: ...

    def ioctl(self, fd: int, request: int, arg: int) -> int: ...


class RealKernel:
    """ioctl(2) through libc, so the argument pointer reaches the kernel untouched."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._ioctl = libc.ioctl
        self._ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
        self._ioctl.restype = ctypes.c_int

    def open(self, path: str) -> int:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)

    def close(self, fd: int) -> None:
        os.close(fd)

    def ioctl(self, fd: int, request: int, arg: int) -> int:
        ret: int = self._ioctl(fd, request, arg)
        if ret < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return ret


_real: RealKernel | None = None


def real_kernel() -> RealKernel:
    global _real
    if _real is None:
        _real = RealKernel()
    return _real


def open_hint(path: str, err: OSError, kind: str) -> str:
    """A message for a device that cannot be opened, with what usually fixes it."""
    if err.errno == _e.ENOENT:
        fix = ("is the driver loaded? (modprobe i2c-dev; enable the bus in the board's "
               "device tree / config.txt)" if kind == "i2c" else
               "is the bus enabled and a spidev device bound to this chip select?")
        return f"{path}: no such device; {fix}"
    if err.errno in (_e.EACCES, _e.EPERM):
        fix = ("add the server's user to the i2c group (usermod -aG i2c USER), or a udev rule "
               'SUBSYSTEM=="i2c-dev", GROUP="i2c", MODE="0660"' if kind == "i2c" else
               'add a udev rule SUBSYSTEM=="spidev", GROUP="spi", MODE="0660" and put the '
               "server's user in that group")
        return f"{path}: permission denied; {fix} (see docs/board.md)"
    return f"{path}: cannot open: {err.strerror or err}"


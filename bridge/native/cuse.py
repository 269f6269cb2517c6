"""`busbridge mount`: the remote buses as real character devices, through CUSE.

CUSE (character devices in user space, ``/dev/cuse``, Linux's ``cuse``
module) lets a process create ``/dev/i2c-N`` and ``/dev/spidevB.C`` whose
open/read/write/ioctl calls the kernel forwards to it: static binaries,
setuid programs, Go programs and containers (``--device``) see them like any
device.  There is no maintained Python binding of libfuse's CUSE API, and the
protocol is small, so this speaks it directly (include/uapi/linux/fuse.h,
fs/fuse/cuse.c and fs/fuse/ioctl.c of Linux 6.1).

The kernel cannot know the layout of an ioctl's argument, so it asks the
server ("unrestricted" ioctls): the server answers FUSE_IOCTL_RETRY with the
regions of the caller's memory it wants copied in and those it will write,
and the kernel calls again with them (EFAULT for a bad pointer is the
kernel's).  The i2c-dev and spidev checks are those of ``csrc/i2cdev.c`` and
``csrc/spidev.c``, in the same order; the bus side is shared with the
preload library's agent (:mod:`.i2cdev`, :mod:`.spidev`).  Each ioctl
handler below is re-run on every retry with the bytes asked for so far, and
declares its writes before its first side effect (``commit``), so a transfer
runs exactly once.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..buses.linux import abi
from . import wire
from .agent import Agent
from .i2cdev import I2C_CLIENT_PEC, I2C_M_RD, I2C_M_RECV_LEN, I2C_M_TEN, I2cAdapter, Msg
from .spidev import SpidevNode, Xfer

log = logging.getLogger("busbridge.native")

CUSE_INIT = 4096
FUSE_OPEN, FUSE_READ, FUSE_WRITE, FUSE_RELEASE, FUSE_FLUSH = 14, 15, 16, 18, 25
FUSE_INTERRUPT, FUSE_IOCTL, FUSE_POLL = 36, 39, 40
FUSE_KERNEL_VERSION, FUSE_KERNEL_MINOR = 7, 31
CUSE_UNRESTRICTED_IOCTL = 1
FUSE_IOCTL_RETRY = 1 << 2
FUSE_IOCTL_32BIT = 1 << 3
FUSE_IOCTL_MAX_IOV = 256
FOPEN_NONSEEKABLE = 1 << 2

IN_HEADER = struct.Struct("=IIQQIIIHH")
OUT_HEADER = struct.Struct("=IiQ")
INIT_IN = struct.Struct("=IIII")
INIT_OUT = struct.Struct("=IIIIIIII40x")
OPEN_IN = struct.Struct("=II")
OPEN_OUT = struct.Struct("=QII")
RW_IN = struct.Struct("=QQIIQII")
WRITE_OUT = struct.Struct("=II")
IOCTL_IN = struct.Struct("=QIIQII")
IOCTL_OUT = struct.Struct("=iIII")
IOVEC = struct.Struct("=QQ")
#: Biggest read/write handed to us; i2c-dev clamps at 8192 (spidev's bufsiz is 4096).
MAX_IO = 8192
#: /dev/cuse reads need a buffer for the largest request: header + write payload.
READ_BUF = MAX_IO + 4096 + 128 * 1024


class Retry(Exception):
    """The handler needs more of the caller's memory (or must declare its writes)."""


@dataclass
class Memory:
    """The caller's memory as far as the kernel has copied it in for this call."""

    data: bytes
    out_size: int
    ins: list[tuple[int, int]] = field(default_factory=list)
    outs: list[tuple[int, int]] = field(default_factory=list)
    at: int = 0
    committed: bool = False

    def read(self, regions: Sequence[tuple[int, int]]) -> list[bytes]:
        """copy_from_user() of several regions at once (asked for together)."""
        regions = [(a, n) for a, n in regions]
        need = sum(n for _, n in regions)
        self.ins.extend(regions)
        if self.at + need > len(self.data):
            raise Retry
        out = []
        for _, n in regions:
            out.append(self.data[self.at : self.at + n])
            self.at += n
        return out

    def write_to(self, addr: int, n: int) -> None:
        self.outs.append((addr, n))

    def commit(self) -> None:
        """Before any side effect: the kernel must already hold every region we write."""
        if sum(n for _, n in self.outs) != self.out_size or self.at != len(self.data):
            raise Retry
        self.committed = True


@dataclass
class OpenFile:
    """struct file's private part: i2c-dev's anonymous client, or nothing for spidev."""

    accmode: int
    addr: int = 0
    flags: int = 0


class CuseDevice:
    """One character device: a /dev/cuse connection and its serving thread."""

    def __init__(self, agent: Agent, name: str, handle: int, funcs: int = 0,
                 bufsiz: int = 0) -> None:
        self.agent = agent
        self.name = name
        self.dev = agent.device(handle)
        self.handle = handle
        self.funcs = funcs
        self.bufsiz = bufsiz
        self.files: dict[int, OpenFile] = {}
        self._next_fh = 1
        self.fd = os.open("/dev/cuse", os.O_RDWR)
        self.ready = threading.Event()

    # -- the channel ----------------------------------------------------------

    def _reply(self, unique: int, error: int = 0, payload: bytes = b"") -> None:
        out = OUT_HEADER.pack(OUT_HEADER.size + len(payload), -error if error else 0, unique)
        try:
            os.write(self.fd, out + payload)
        except OSError as e:
            if e.errno != errno.ENOENT:  # ENOENT: the request was interrupted meanwhile
                raise

    def serve(self) -> None:
        while True:
            try:
                req = os.read(self.fd, READ_BUF)
            except OSError as e:
                if e.errno in (errno.EINTR, errno.EAGAIN, errno.ENOENT):
                    continue
                if e.errno == errno.ENODEV:  # unmounted / device removed
                    return
                raise
            if not req:
                return
            length, opcode, unique, _node, _uid, _gid, _pid, _x, _p = IN_HEADER.unpack_from(req)
            body = req[IN_HEADER.size : length]
            try:
                self._handle(opcode, unique, body)
            except OSError as e:
                self._reply(unique, e.errno or errno.EIO)

    def _handle(self, opcode: int, unique: int, body: bytes) -> None:
        if opcode == CUSE_INIT:
            _major, _minor, _unused, _flags = INIT_IN.unpack_from(body)
            info = f"DEVNAME={self.name}".encode() + b"\0"
            self._reply(unique, 0, INIT_OUT.pack(FUSE_KERNEL_VERSION, FUSE_KERNEL_MINOR, 0,
                                                 CUSE_UNRESTRICTED_IOCTL, MAX_IO, MAX_IO, 0, 0)
                        + info)
            self.ready.set()
        elif opcode == FUSE_OPEN:
            flags, _ = OPEN_IN.unpack_from(body)
            fh = self._next_fh
            self._next_fh += 1
            self.files[fh] = OpenFile(flags & os.O_ACCMODE)
            if isinstance(self.dev, SpidevNode):
                self.dev.opened()
            self._reply(unique, 0, OPEN_OUT.pack(fh, FOPEN_NONSEEKABLE, 0))
        elif opcode == FUSE_RELEASE:
            fh = struct.unpack_from("=Q", body)[0]
            if self.files.pop(fh, None) is not None and isinstance(self.dev, SpidevNode):
                self.dev.released()
            self._reply(unique)
        elif opcode == FUSE_FLUSH:
            self._reply(unique)
        elif opcode == FUSE_READ:
            fh, _off, size, *_ = RW_IN.unpack_from(body)
            self._reply(unique, 0, self._read(self.files[fh], size))
        elif opcode == FUSE_WRITE:
            fh, _off, size, *_ = RW_IN.unpack_from(body)
            data = body[RW_IN.size : RW_IN.size + size]
            n = self._write(self.files[fh], data)
            self._reply(unique, 0, WRITE_OUT.pack(n, 0))
        elif opcode == FUSE_IOCTL:
            fh, flags, cmd, arg, in_size, out_size = IOCTL_IN.unpack_from(body)
            if flags & FUSE_IOCTL_32BIT:
                # A 32-bit program: its i2c_msg, i2c_smbus_ioctl_data ... have other layouts.
                raise OSError(errno.EOPNOTSUPP, "32-bit callers are not supported")
            mem = Memory(body[IOCTL_IN.size : IOCTL_IN.size + in_size], out_size)
            f = self.files[fh]
            try:
                result, data = self._ioctl(f, cmd, arg, mem)
            except Retry:
                iov = b"".join(IOVEC.pack(a, n) for a, n in mem.ins + mem.outs)
                if len(mem.ins) + len(mem.outs) > FUSE_IOCTL_MAX_IOV:
                    raise OSError(errno.ENOMEM, "too many regions") from None
                self._reply(unique, 0, IOCTL_OUT.pack(0, FUSE_IOCTL_RETRY, len(mem.ins),
                                                      len(mem.outs)) + iov)
                return
            self._reply(unique, 0, IOCTL_OUT.pack(result, 0, 0, 0) + data)
        elif opcode == FUSE_INTERRUPT:
            return  # no reply: the interrupted request still gets its own
        else:  # FUSE_POLL among them: ENOSYS makes poll() report "ready", as for i2c-dev
            self._reply(unique, errno.ENOSYS)

    # -- read / write -----------------------------------------------------------

    def _read(self, f: OpenFile, size: int) -> bytes:
        if isinstance(self.dev, I2cAdapter):
            n = min(size, 8192)  # i2cdev_read
            done, data = self.dev.transfer([Msg(f.addr, (f.flags & I2C_M_TEN) | I2C_M_RD, n)])
            return data[0][:n] if done == 1 else b""
        if size > self.bufsiz:  # spidev_read
            raise OSError(errno.EMSGSIZE, "over bufsiz")
        return self.dev.read(size)

    def _write(self, f: OpenFile, data: bytes) -> int:
        if isinstance(self.dev, I2cAdapter):
            data = data[:8192]
            done, _ = self.dev.transfer([Msg(f.addr, f.flags & I2C_M_TEN, data=data)])
            return len(data) if done == 1 else 0
        if len(data) > self.bufsiz:
            raise OSError(errno.EMSGSIZE, "over bufsiz")
        return self.dev.write(data)

    # -- ioctl ------------------------------------------------------------------

    def _ioctl(self, f: OpenFile, cmd: int, arg: int, mem: Memory) -> tuple[int, bytes]:
        if isinstance(self.dev, I2cAdapter):
            return i2c_ioctl(self.dev, self.funcs, f, cmd, arg, mem)
        return spi_ioctl(self.dev, self.bufsiz, cmd, arg, mem)


def i2c_ioctl(dev: I2cAdapter, funcs: int, f: OpenFile, cmd: int, arg: int,
              mem: Memory) -> tuple[int, bytes]:
    """i2cdev_ioctl() (i2c-dev.c:392-497), as csrc/i2cdev.c does it."""
    if cmd in (abi.I2C_SLAVE, abi.I2C_SLAVE_FORCE):
        if arg > 0x3FF or (not f.flags & I2C_M_TEN and arg > 0x7F):
            raise OSError(errno.EINVAL, "address")
        f.addr = arg
        return 0, b""
    if cmd == abi.I2C_TENBIT:
        f.flags = f.flags | I2C_M_TEN if arg else f.flags & ~I2C_M_TEN
        return 0, b""
    if cmd == abi.I2C_PEC:
        if arg and not funcs & 0x8:
            raise OSError(errno.EOPNOTSUPP, "the adapter has no I2C_FUNC_SMBUS_PEC")
        f.flags = f.flags | I2C_CLIENT_PEC if arg else f.flags & ~I2C_CLIENT_PEC
        return 0, b""
    if cmd == abi.I2C_FUNCS:
        mem.write_to(arg, 8)
        mem.commit()
        return 0, struct.pack("=Q", funcs)
    if cmd == abi.I2C_RETRIES or cmd == abi.I2C_TIMEOUT:
        if arg > (0x7FFFFFFF if cmd == abi.I2C_RETRIES else 0x7FFFFFFF // 10):
            raise OSError(errno.EINVAL, "out of range")
        dev.set(cmd, arg)
        return 0, b""
    if cmd == abi.I2C_RDWR:
        return _rdwr(dev, arg, mem)
    if cmd == abi.I2C_SMBUS:
        return _smbus(dev, f, arg, mem)
    raise OSError(errno.ENOTTY, "not an i2c-dev ioctl")


MSG = struct.Struct("=HHHxxQ")  # struct i2c_msg (64-bit)


def _rdwr(dev: I2cAdapter, arg: int, mem: Memory) -> tuple[int, bytes]:
    (head,) = mem.read([(arg, 16)])
    msgs_ptr, n = struct.unpack("=QI4x", head)
    if not msgs_ptr or n == 0 or n > abi.I2C_RDWR_IOCTL_MAX_MSGS:
        raise OSError(errno.EINVAL, "msgs")
    (raw,) = mem.read([(msgs_ptr, n * MSG.size)])
    msgs = [MSG.unpack_from(raw, i * MSG.size) for i in range(n)]
    if any(length > abi.I2C_DEV_MAX_MSG_LEN for _, _, length, _ in msgs):
        raise OSError(errno.EINVAL, "message longer than 8192")
    for _, flags, length, buf in msgs:  # named with the buffers: one retry fewer
        if flags & I2C_M_RD and length:
            mem.write_to(buf, length)
    bufs = mem.read([(buf, length) for _, _, length, buf in msgs if length])
    it = iter(bufs)
    todo: list[Msg] = []
    for addr, flags, length, _buf in msgs:
        data = next(it) if length else b""
        if flags & I2C_M_RECV_LEN:
            if not flags & I2C_M_RD or length < 1 or data[0] < 1 or \
                    length < data[0] + abi.I2C_SMBUS_BLOCK_MAX:
                raise OSError(errno.EINVAL, "I2C_M_RECV_LEN")
            todo.append(Msg(addr, flags, data[0]))
        elif flags & I2C_M_RD:
            todo.append(Msg(addr, flags, length))
        else:
            todo.append(Msg(addr, flags, length, data))
    mem.commit()
    done, got = dev.transfer(todo)
    # Every read buffer goes back (i2c-dev.c:298-305): new data for the messages that
    # completed, the caller's own bytes for the others.
    out = bytearray()
    it = iter(bufs)
    for i, (_a, flags, length, _b) in enumerate(msgs):
        orig = next(it) if length else b""
        if flags & I2C_M_RD and length:
            new = got[i] if i < done else b""
            out += new + orig[len(new) :]
    return done, bytes(out)


SMBUS_ARGS = struct.Struct("=BBxxIQ")


def _smbus(dev: I2cAdapter, f: OpenFile, arg: int, mem: Memory) -> tuple[int, bytes]:
    (raw,) = mem.read([(arg, SMBUS_ARGS.size)])
    rw, command, size, data_ptr = SMBUS_ARGS.unpack(raw)
    if size not in (abi.I2C_SMBUS_BYTE, abi.I2C_SMBUS_QUICK, abi.I2C_SMBUS_BYTE_DATA,
                    abi.I2C_SMBUS_WORD_DATA, abi.I2C_SMBUS_PROC_CALL, abi.I2C_SMBUS_BLOCK_DATA,
                    abi.I2C_SMBUS_I2C_BLOCK_BROKEN, abi.I2C_SMBUS_I2C_BLOCK_DATA,
                    abi.I2C_SMBUS_BLOCK_PROC_CALL):
        raise OSError(errno.EINVAL, "size")
    if rw not in (abi.I2C_SMBUS_READ, abi.I2C_SMBUS_WRITE):
        raise OSError(errno.EINVAL, "read_write")
    if size == abi.I2C_SMBUS_QUICK or (size == abi.I2C_SMBUS_BYTE and rw == abi.I2C_SMBUS_WRITE):
        mem.commit()
        dev.smbus_xfer(f.addr, f.flags, rw, command, size, None)
        return 0, b""
    if not data_ptr:
        raise OSError(errno.EINVAL, "data")
    datasize = (1 if size in (abi.I2C_SMBUS_BYTE_DATA, abi.I2C_SMBUS_BYTE)
                else 2 if size in (abi.I2C_SMBUS_WORD_DATA, abi.I2C_SMBUS_PROC_CALL) else 34)
    union = bytearray(34)
    if size in (abi.I2C_SMBUS_PROC_CALL, abi.I2C_SMBUS_BLOCK_PROC_CALL,
                abi.I2C_SMBUS_I2C_BLOCK_DATA) or rw == abi.I2C_SMBUS_WRITE:
        (got,) = mem.read([(data_ptr, datasize)])
        union[:datasize] = got
    if size == abi.I2C_SMBUS_I2C_BLOCK_BROKEN:
        size = abi.I2C_SMBUS_I2C_BLOCK_DATA
        if rw == abi.I2C_SMBUS_READ:
            union[0] = abi.I2C_SMBUS_BLOCK_MAX
    copy_out = size in (abi.I2C_SMBUS_PROC_CALL, abi.I2C_SMBUS_BLOCK_PROC_CALL) or \
        rw == abi.I2C_SMBUS_READ
    if copy_out:
        mem.write_to(data_ptr, datasize)
    mem.commit()
    dev.smbus_xfer(f.addr, f.flags, rw, command, size, union)
    return 0, bytes(union[:datasize]) if copy_out else b""


def spi_ioctl(dev: SpidevNode, bufsiz: int, cmd: int, arg: int, mem: Memory) -> tuple[int, bytes]:
    """spidev_ioctl() (spidev.c:344-512), as csrc/spidev.c does it."""
    if (cmd >> 8) & 0xFF != abi.SPI_IOC_MAGIC:
        raise OSError(errno.ENOTTY, "not a spidev ioctl")
    reads = {abi.SPI_IOC_RD_MODE: 1, abi.SPI_IOC_RD_MODE32: 4, abi.SPI_IOC_RD_LSB_FIRST: 1,
             abi.SPI_IOC_RD_BITS_PER_WORD: 1, abi.SPI_IOC_RD_MAX_SPEED_HZ: 4}
    writes = {abi.SPI_IOC_WR_MODE: (1, wire.SPI_SET_MODE),
              abi.SPI_IOC_WR_MODE32: (4, wire.SPI_SET_MODE),
              abi.SPI_IOC_WR_LSB_FIRST: (1, wire.SPI_SET_LSB_FIRST),
              abi.SPI_IOC_WR_BITS_PER_WORD: (1, wire.SPI_SET_BITS),
              abi.SPI_IOC_WR_MAX_SPEED_HZ: (4, wire.SPI_SET_SPEED)}
    if cmd in reads:
        n = reads[cmd]
        mem.write_to(arg, n)
        mem.commit()
        mode, bits, speed = dev.state()
        value = {abi.SPI_IOC_RD_MODE: mode & 0xFF, abi.SPI_IOC_RD_MODE32: mode,
                 abi.SPI_IOC_RD_LSB_FIRST: 1 if mode & abi.SPI_LSB_FIRST else 0,
                 abi.SPI_IOC_RD_BITS_PER_WORD: bits, abi.SPI_IOC_RD_MAX_SPEED_HZ: speed}[cmd]
        return 0, value.to_bytes(n, sys.byteorder)
    if cmd in writes:
        n, what = writes[cmd]
        (raw,) = mem.read([(arg, n)])
        mem.commit()
        dev.set(what, int.from_bytes(raw, sys.byteorder))
        return 0, b""
    if cmd & 0xFF != 0 or (cmd >> 30) != 1:  # _IOC_NR != 0 or _IOC_DIR != _IOC_WRITE
        raise OSError(errno.ENOTTY, "not SPI_IOC_MESSAGE")
    size = (cmd >> 16) & 0x3FFF
    if size % abi.SPI_IOC_TRANSFER_SIZE:
        raise OSError(errno.EINVAL, "size")
    n = size // abi.SPI_IOC_TRANSFER_SIZE
    if n == 0:
        return 0, b""
    (raw,) = mem.read([(arg, size)])
    heads = [wire.SPI_IOC_TRANSFER.unpack_from(raw, i * 32) for i in range(n)]
    total = tx_total = rx_total = 0
    for h in heads:
        length, aligned = h[2], (h[2] + 7) & ~7
        total += length
        if total > 0x7FFFFFFF:
            raise OSError(errno.EMSGSIZE, "total")
        if h[1]:
            rx_total += aligned
            if rx_total > bufsiz:
                raise OSError(errno.EMSGSIZE, "rx over bufsiz")
        if h[0]:
            tx_total += aligned
            if tx_total > bufsiz:
                raise OSError(errno.EMSGSIZE, "tx over bufsiz")
    for h in heads:
        if h[1] and h[2]:
            mem.write_to(h[1], h[2])
    txs = iter(mem.read([(h[0], h[2]) for h in heads if h[0] and h[2]]))
    xfers = []
    for h in heads:
        tx = (next(txs) if h[2] else b"") if h[0] else None
        xfers.append(Xfer(h[2], tx, bool(h[1]), h[3], h[4], h[5], h[6], h[7], h[8], h[9]))
    mem.commit()
    total, rx = dev.message(xfers)
    return total, b"".join(rx)


def start(agent: Agent, kind: str, local: int, cs: int = 0) -> CuseDevice:
    """Create /dev/i2c-<local> or /dev/spidev<local>.<cs> and serve it on a thread."""
    if kind == "i2c":
        handle, funcs = agent.open_i2c(local)
        dev = CuseDevice(agent, f"i2c-{local}", handle, funcs=funcs)
    else:
        handle, bufsiz = agent.open_spi(local, cs)
        agent.close(handle)  # users are counted per open() of the device, below
        dev = CuseDevice(agent, f"spidev{local}.{cs}", handle, bufsiz=bufsiz)
    threading.Thread(target=dev.serve, name=f"cuse-{dev.name}", daemon=True).start()
    return dev

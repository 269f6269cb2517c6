"""An I2C bus on a Linux ``/dev/i2c-N`` (i2c-dev).

Adapters with ``I2C_FUNC_I2C`` get every FAIL_NEXT chain as ONE ``I2C_RDWR``
ioctl: the kernel runs it as one combined transaction (repeated STARTs, one
STOP).  SMBus-only adapters (PC SMBus controllers, i2c-stub) cannot do
arbitrary transactions, so a chain runs only when it has the exact wire shape
of one SMBus transaction the adapter offers; anything else is refused with
ERR / EOPNOTSUPP before it reaches the bus.  The mapping table is
:func:`smbus_plan`'s docstring and docs/board.md.

How an adapter reports a fault depends on its driver, and both forms reach
the client:

* an errno from ``I2C_RDWR`` or ``I2C_SMBUS`` (most SoC drivers: ENXIO for an
  address NACK, EREMOTEIO for a data NACK, ETIMEDOUT for a stuck bus, EAGAIN
  for lost arbitration, ...) is handed on unchanged, with words that say
  which; it does not say which message failed, so the whole chain is ERR;
* a short count from ``I2C_RDWR`` (Linux's i2c-virtio never returns an errno
  for a NACK: it returns how many messages completed, 0 when message 0 was
  NACKed) becomes EIO, "adapter completed only K of N messages": messages
  0..K-1 stay OK with their data, K and the rest are ERR.

Both behaviours were measured on a real kernel (docs/board.md, "Tested on").
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from protocol.handshake import (
    I2C_FUNC_I2C,
    I2C_FUNC_SMBUS_BLOCK_PROC_CALL,
    I2C_FUNC_SMBUS_PROC_CALL,
    I2C_FUNC_SMBUS_QUICK,
    I2C_FUNC_SMBUS_READ_BLOCK_DATA,
    I2C_FUNC_SMBUS_READ_BYTE,
    I2C_FUNC_SMBUS_READ_BYTE_DATA,
    I2C_FUNC_SMBUS_READ_I2C_BLOCK,
    I2C_FUNC_SMBUS_READ_WORD_DATA,
    I2C_FUNC_SMBUS_WRITE_BLOCK_DATA,
    I2C_FUNC_SMBUS_WRITE_BYTE,
    I2C_FUNC_SMBUS_WRITE_BYTE_DATA,
    I2C_FUNC_SMBUS_WRITE_I2C_BLOCK,
    I2C_FUNC_SMBUS_WRITE_WORD_DATA,
)
from protocol.virtio import I2CMsg

from ..base import BusError, I2CBackend
from . import abi

log = logging.getLogger("busbridge.linux")

#: Longest message an SMBus transaction carries: command, count, 32 data bytes.
SMBUS_MAX_MSG_LEN = abi.I2C_SMBUS_BLOCK_MAX + 2

_ERRNO_WORDS = {
    errno.ENXIO: "no ACK from the address",
    errno.ENODEV: "no device answered at the address",
    errno.EREMOTEIO: "NACK from the device",
    errno.ETIMEDOUT: "bus timeout (clock stretched too long or bus stuck)",
    errno.EAGAIN: "arbitration lost (another master on the bus)",
    errno.EIO: "bus error",
    errno.EPROTO: "protocol error (bad SMBus block count)",
    errno.EBADMSG: "PEC checksum mismatch",
    errno.EOPNOTSUPP: "the adapter cannot do this transaction",
    errno.EINVAL: "the kernel refused the request as invalid",
    errno.EBUSY: "the address is in use by a kernel driver",
    errno.ESHUTDOWN: "the adapter is suspended",
    errno.EMSGSIZE: "message too long for the adapter",
}


def errno_words(e: int) -> str:
    """What a kernel errno means on an I2C bus (i2c-core's fault codes)."""
    return _ERRNO_WORDS.get(e) or os.strerror(e)


# ---------------------------------------------------------------------------
# SMBus mapping
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmbusOp:
    """One ``I2C_SMBUS`` ioctl: what to send and how to read the answer back."""

    name: str
    read_write: int
    command: int
    size: int
    #: Bytes for ``union i2c_smbus_data`` before the call (up to 34).
    data: bytes = b""
    #: Read length the chain asked for (0: nothing to hand back).
    read_len: int = 0


class Unmappable(Exception):
    """The chain has no exact SMBus equivalent on this adapter."""


def _need(funcs: int, bit: int, what: str) -> None:
    if not funcs & bit:
        raise Unmappable(f"{what} needed, but the adapter does not offer it")


def smbus_plan(chain: Sequence[I2CMsg], funcs: int) -> SmbusOp:
    """Map a chain onto one SMBus transaction with the same bytes on the wire.

    ====================================  ==========================  ======================
    chain (all to one 7-bit address)      SMBus transaction           needs I2C_FUNC_SMBUS_
    ====================================  ==========================  ======================
    ``w0``                                quick write                 QUICK
    ``r0``                                quick read                  QUICK
    ``r1``                                receive byte                READ_BYTE
    ``w1 [c]``                            send byte                   WRITE_BYTE
    ``w2 [c d]``                          write byte data             WRITE_BYTE_DATA
                                          (else I2C block write, 1)   (WRITE_I2C_BLOCK)
    ``w3 [c lo hi]``                      write word data (LE)        WRITE_WORD_DATA
                                          (else I2C block write, 2)   (WRITE_I2C_BLOCK)
    ``w(2+n) [c n d1..dn]``, n = 1..32    block write                 WRITE_BLOCK_DATA
                                          (if no I2C block write)
    ``w(1+n) [c d1..dn]``, n = 1..32      I2C block write             WRITE_I2C_BLOCK
    ``w1 [c]`` + ``r1``                   read byte data              READ_BYTE_DATA
    ``w1 [c]`` + ``r2``                   read word data (LE)         READ_WORD_DATA
                                          (else I2C block read, 2)    (READ_I2C_BLOCK)
    ``w1 [c]`` + ``rN``, N = 1..32        I2C block read              READ_I2C_BLOCK
    ``w1 [c]`` + ``rN``, N = 2..33        block read; the device's    READ_BLOCK_DATA
                                          count must be N-1           (if no I2C block read)
    ``w3 [c lo hi]`` + ``r2``             process call                PROC_CALL
    ``w(2+n) [c n d..]`` + ``rM``         block process call; the     BLOCK_PROC_CALL
                                          device's count must be M-1
    ====================================  ==========================  ======================

    Everything else raises :class:`Unmappable` (the chain gets ERR /
    EOPNOTSUPP and never reaches the bus): plain reads longer than one byte
    without a command byte, writes or reads longer than an SMBus block,
    chains of three or more messages, chains that change address or
    direction in other ways, a zero-length message inside a chain, and
    10-bit addresses.  A block read whose count byte disagrees with the
    requested length did run on the bus; it is answered ERR / EPROTO.
    """
    if any(m.ten_bit for m in chain):
        raise Unmappable("10-bit addresses have no SMBus form")
    if len({m.addr for m in chain}) > 1:
        raise Unmappable("a combined transaction to several addresses has no SMBus form")
    shape = " ".join(m.describe().split("@")[0] for m in chain)
    if len(chain) == 1:
        m = chain[0]
        if m.is_read:
            if m.length == 0:
                _need(funcs, I2C_FUNC_SMBUS_QUICK, "QUICK")
                return SmbusOp("quick read", abi.I2C_SMBUS_READ, 0, abi.I2C_SMBUS_QUICK)
            if m.length == 1:
                _need(funcs, I2C_FUNC_SMBUS_READ_BYTE, "READ_BYTE")
                return SmbusOp("receive byte", abi.I2C_SMBUS_READ, 0, abi.I2C_SMBUS_BYTE,
                               read_len=1)
            raise Unmappable(f"{shape}: a read without a command byte longer than 1 byte")
        d = m.data
        if not d:
            _need(funcs, I2C_FUNC_SMBUS_QUICK, "QUICK")
            return SmbusOp("quick write", abi.I2C_SMBUS_WRITE, 0, abi.I2C_SMBUS_QUICK)
        if len(d) == 1:
            _need(funcs, I2C_FUNC_SMBUS_WRITE_BYTE, "WRITE_BYTE")
            return SmbusOp("send byte", abi.I2C_SMBUS_WRITE, d[0], abi.I2C_SMBUS_BYTE)
        if len(d) == 2 and funcs & I2C_FUNC_SMBUS_WRITE_BYTE_DATA:
            return SmbusOp("write byte data", abi.I2C_SMBUS_WRITE, d[0],
                           abi.I2C_SMBUS_BYTE_DATA, bytes([d[1]]))
        if len(d) == 3 and funcs & I2C_FUNC_SMBUS_WRITE_WORD_DATA:
            return SmbusOp("write word data", abi.I2C_SMBUS_WRITE, d[0],
                           abi.I2C_SMBUS_WORD_DATA, d[1:3])
        n = len(d) - 1
        if n <= abi.I2C_SMBUS_BLOCK_MAX and funcs & I2C_FUNC_SMBUS_WRITE_I2C_BLOCK:
            return SmbusOp("I2C block write", abi.I2C_SMBUS_WRITE, d[0],
                           abi.I2C_SMBUS_I2C_BLOCK_DATA, bytes([n]) + d[1:])
        if (len(d) >= 3 and d[1] == len(d) - 2 and d[1] <= abi.I2C_SMBUS_BLOCK_MAX
                and funcs & I2C_FUNC_SMBUS_WRITE_BLOCK_DATA):
            return SmbusOp("block write", abi.I2C_SMBUS_WRITE, d[0],
                           abi.I2C_SMBUS_BLOCK_DATA, d[1:])
        raise Unmappable(f"{shape}: no SMBus write of this length on this adapter "
                         "(needs WRITE_BYTE_DATA / WRITE_WORD_DATA / WRITE_I2C_BLOCK "
                         "for 2 / 3 / up to 33 bytes, or a block write)")
    if len(chain) != 2:
        raise Unmappable(f"{shape}: SMBus transactions have at most two messages")
    w, r = chain
    if w.is_read or not r.is_read:
        raise Unmappable(f"{shape}: the only two-message SMBus shape is a write then a read")
    d, n = w.data, r.length
    if not d or n == 0:
        raise Unmappable(f"{shape}: zero-length messages have no place in a combined "
                         "SMBus transaction")
    if len(d) == 1:
        if n == 1 and funcs & I2C_FUNC_SMBUS_READ_BYTE_DATA:
            return SmbusOp("read byte data", abi.I2C_SMBUS_READ, d[0], abi.I2C_SMBUS_BYTE_DATA,
                           read_len=1)
        if n == 2 and funcs & I2C_FUNC_SMBUS_READ_WORD_DATA:
            return SmbusOp("read word data", abi.I2C_SMBUS_READ, d[0], abi.I2C_SMBUS_WORD_DATA,
                           read_len=2)
        if n <= abi.I2C_SMBUS_BLOCK_MAX and funcs & I2C_FUNC_SMBUS_READ_I2C_BLOCK:
            return SmbusOp("I2C block read", abi.I2C_SMBUS_READ, d[0],
                           abi.I2C_SMBUS_I2C_BLOCK_DATA, bytes([n]), read_len=n)
        if 2 <= n <= abi.I2C_SMBUS_BLOCK_MAX + 1 and funcs & I2C_FUNC_SMBUS_READ_BLOCK_DATA:
            return SmbusOp("block read", abi.I2C_SMBUS_READ, d[0], abi.I2C_SMBUS_BLOCK_DATA,
                           read_len=n)
        raise Unmappable(f"{shape}: no SMBus read of {n} bytes on this adapter")
    if len(d) == 3 and n == 2 and funcs & I2C_FUNC_SMBUS_PROC_CALL:
        return SmbusOp("process call", abi.I2C_SMBUS_WRITE, d[0], abi.I2C_SMBUS_PROC_CALL,
                       d[1:3], read_len=2)
    if (len(d) >= 3 and d[1] == len(d) - 2 and d[1] <= abi.I2C_SMBUS_BLOCK_MAX
            and 2 <= n <= abi.I2C_SMBUS_BLOCK_MAX + 1
            and funcs & I2C_FUNC_SMBUS_BLOCK_PROC_CALL):
        return SmbusOp("block process call", abi.I2C_SMBUS_WRITE, d[0],
                       abi.I2C_SMBUS_BLOCK_PROC_CALL, d[1:], read_len=n)
    raise Unmappable(f"{shape}: a write of {len(d)} bytes then a read matches no SMBus "
                     "transaction this adapter offers")


# ---------------------------------------------------------------------------
# The backend
# ---------------------------------------------------------------------------


class LinuxI2CBus(I2CBackend):
    """``/dev/i2c-N``; opened at construction so a board that cannot run fails at start."""

    def __init__(
        self,
        name: str,
        device: str,
        *,
        description: str = "",
        functionality_mask: int | None = None,
        timeout_ms: int | None = None,
        retries: int | None = None,
        force: bool = False,
        kernel: abi.Kernel | None = None,
    ) -> None:
        self.name = name
        self.device = device
        self.description = description or device
        self.force = force
        self._k = kernel if kernel is not None else abi.real_kernel()
        try:
            self._fd = self._k.open(device)
        except OSError as e:
            raise ValueError(abi.open_hint(device, e, "i2c")) from None
        try:
            funcs = ctypes.c_ulong(0)
            self._k.ioctl(self._fd, abi.I2C_FUNCS, ctypes.addressof(funcs))
            self.adapter_functionality = funcs.value & 0xFFFFFFFF
            if timeout_ms is not None:
                # I2C_TIMEOUT takes 10 ms units; round up so the bus never gives up earlier.
                self._k.ioctl(self._fd, abi.I2C_TIMEOUT, -(-timeout_ms // 10))
            if retries is not None:
                self._k.ioctl(self._fd, abi.I2C_RETRIES, retries)
        except OSError as e:
            self._k.close(self._fd)
            raise ValueError(f"{device}: {e.strerror or e} (is it an i2c-dev device?)") from None
        f = self.adapter_functionality
        if functionality_mask is not None:
            f &= functionality_mask
        self.functionality = f
        self.use_rdwr = bool(f & I2C_FUNC_I2C)
        self.max_msg_len = abi.I2C_DEV_MAX_MSG_LEN if self.use_rdwr else SMBUS_MAX_MSG_LEN
        self._slave: int | None = None

    # -- I2C_RDWR ----------------------------------------------------------

    def _rdwr(self, chain: Sequence[I2CMsg]) -> list[bytes]:
        if len(chain) > abi.I2C_RDWR_IOCTL_MAX_MSGS:
            raise BusError(errno.EINVAL, f"{len(chain)} messages in one transaction; "
                                         f"i2c-dev allows {abi.I2C_RDWR_IOCTL_MAX_MSGS}")
        msgs = (abi.I2cMsg * len(chain))()
        bufs: list[ctypes.Array[ctypes.c_char]] = []
        for i, m in enumerate(chain):
            buf = ctypes.create_string_buffer(max(m.size, 1))
            if not m.is_read:
                ctypes.memmove(buf, m.data, len(m.data))
            bufs.append(buf)
            msgs[i].addr = m.addr
            msgs[i].flags = (abi.I2C_M_RD if m.is_read else 0) | (abi.I2C_M_TEN if m.ten_bit
                                                                    else 0)
            msgs[i].len = m.size
            msgs[i].buf = ctypes.addressof(buf) if m.size else None
        data = abi.I2cRdwrIoctlData(ctypes.addressof(msgs), len(chain))
        try:
            done = self._k.ioctl(self._fd, abi.I2C_RDWR, ctypes.addressof(data))
        except OSError as e:
            raise BusError(e.errno or errno.EIO, errno_words(e.errno or errno.EIO)) from None
        reads = [bufs[i].raw[: m.length] for i, m in enumerate(chain) if m.is_read]
        if done < len(chain):
            # The adapter stopped early without an errno (i2c-virtio's NACK): the
            # first ``done`` messages went out.
            got = [bufs[i].raw[: m.length] for i, m in enumerate(chain[:done]) if m.is_read]
            raise BusError(errno.EIO, f"adapter completed only {done} of {len(chain)} messages",
                           done, got)
        return reads

    # -- I2C_SMBUS ---------------------------------------------------------

    def _smbus(self, chain: Sequence[I2CMsg]) -> list[bytes]:
        try:
            op = smbus_plan(chain, self.functionality)
        except Unmappable as e:
            log.info("i2c bus %s: chain refused: %s", self.name, e)
            raise BusError(errno.EOPNOTSUPP, f"SMBus-only adapter: {e}") from None
        addr = chain[0].addr
        try:
            if self._slave != addr:
                req = abi.I2C_SLAVE_FORCE if self.force else abi.I2C_SLAVE
                self._k.ioctl(self._fd, req, addr)
                self._slave = addr
        except OSError as e:
            err = e.errno or errno.EIO
            raise BusError(err, f"cannot address {addr:#04x}: {errno_words(err)}") from None
        data = abi.I2cSmbusData()
        words = op.size in (abi.I2C_SMBUS_WORD_DATA, abi.I2C_SMBUS_PROC_CALL)
        if words:
            # The union holds the word native-endian; SMBus sends it low byte first.
            data.word = int.from_bytes(op.data, "little")
        else:
            ctypes.memmove(ctypes.addressof(data), op.data, len(op.data))
        args = abi.I2cSmbusIoctlData(op.read_write, op.command, op.size, ctypes.addressof(data))
        try:
            self._k.ioctl(self._fd, abi.I2C_SMBUS, ctypes.addressof(args))
        except OSError as e:
            err = e.errno or errno.EIO
            raise BusError(err, f"{op.name}: {errno_words(err)}") from None
        raw = bytes(data.block)
        if op.read_len == 0:
            return [b"" for m in chain if m.is_read]  # a quick read hands back no data
        if words:
            return [int(data.word).to_bytes(2, "little")]
        if op.size in (abi.I2C_SMBUS_BLOCK_DATA, abi.I2C_SMBUS_BLOCK_PROC_CALL):
            count = raw[0]
            if count != op.read_len - 1:
                raise BusError(errno.EPROTO, f"{op.name}: the device sent a count of {count}, "
                                             f"the request read {op.read_len} bytes "
                                             f"(count + {op.read_len - 1}); the transaction ran")
            return [raw[: op.read_len]]
        if op.size == abi.I2C_SMBUS_I2C_BLOCK_DATA:
            return [raw[1 : 1 + op.read_len]]
        return [bytes([data.byte])]

    def transfer(self, msgs: Sequence[I2CMsg]) -> list[bytes]:
        if self.use_rdwr:
            return self._rdwr(msgs)
        return self._smbus(msgs)

    def close(self) -> None:
        if self._fd >= 0:
            self._k.close(self._fd)
            self._fd = -1


__all__ = ["LinuxI2CBus", "SmbusOp", "Unmappable", "errno_words", "smbus_plan"]

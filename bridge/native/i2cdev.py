"""A remote I2C bus as a local Linux adapter: ``i2c_transfer`` and ``i2c_smbus_xfer``.

i2c-dev's side (argument checks, copies, the per-open address and flags) is
done by whoever holds the program's memory: the preload library
(``csrc/i2cdev.c``) or the CUSE server (``cuse.py``).  This module is what
the adapter and the I2C core do with the request, for both.

The adapter is modelled on the one a QEMU guest gets for the same remote bus,
Linux's ``i2c-virtio`` (drivers/i2c/busses/i2c-virtio.c, 6.1): busbridge's
wire *is* virtio-i2c, one status byte per message and FAIL_NEXT chains.  So:

* a transfer that fails on the bus (a NACK, or any other ERR status) is not an
  errno: ``virtio_i2c_complete_reqs()`` counts the messages that completed
  before the first failure and ``i2c_transfer`` returns that *short count*:
  I2C_RDWR returns it (0 or k < n), read()/write() return 0
  (``i2c_transfer_buffer_flags`` gives back what ``i2c_transfer`` said), and
  SMBus calls fail with EIO (i2c-core-smbus.c:472, ``status != nmsgs``).
  The board's own errno (ENXIO, EREMOTEIO ...) is logged, never returned;
* a frame the server refused never reached the bus: link.py maps its code;
* ``I2C_FUNCS`` is the remote adapter's functionality, and an adapter without
  ``I2C_FUNC_I2C`` (SMBus-only, e.g. i2c-stub) refuses plain I2C transfers with
  EOPNOTSUPP as ``__i2c_transfer`` does (i2c-core-base.c) while its SMBus
  calls still work (the server maps them back onto the adapter's SMBus ops).

What virtio-i2c cannot carry is refused rather than silently dropped (i2c-virtio
ignores such flags): ``I2C_M_NOSTART``, ``I2C_M_REV_DIR_ADDR``,
``I2C_M_IGNORE_NAK``, ``I2C_M_NO_RD_ACK`` and ``I2C_M_STOP`` give EOPNOTSUPP.
``I2C_M_RECV_LEN`` (and so SMBus block reads) is done as the Python drop-in
does it: one read of the longest block, trusting its count byte.
"""

from __future__ import annotations

import errno
import logging
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from protocol.handshake import I2C_FUNC_I2C, I2CBusInfo
from protocol.limits import MAX_TIMEOUT_MS
from protocol.virtio import I2CMsg, I2CStatus, chain, read, write

from ..buses.linux import abi
from .link import ClientPool

log = logging.getLogger("busbridge.native")

I2C_M_RD = abi.I2C_M_RD
I2C_M_TEN = abi.I2C_M_TEN
I2C_M_DMA_SAFE = 0x0200
I2C_M_RECV_LEN = abi.I2C_M_RECV_LEN
#: include/linux/i2c.h: client->flags bit for SMBus PEC.
I2C_CLIENT_PEC = 0x04
BLOCK_MAX = abi.I2C_SMBUS_BLOCK_MAX
#: The flags virtio-i2c can carry (direction, address width) or busbridge emulates.
CARRIED = I2C_M_RD | I2C_M_TEN | I2C_M_RECV_LEN | I2C_M_DMA_SAFE


@dataclass(slots=True)
class Msg:
    """One ``struct i2c_msg`` as i2c-dev hands it to the adapter.

    ``length`` is the read length, or for ``I2C_M_RECV_LEN`` the number of
    bytes before the block (the caller's first byte, >= 1).
    """

    addr: int
    flags: int
    length: int = 0
    data: bytes = b""


def pec(crc: int, data: bytes) -> int:
    """``i2c_smbus_pec``: CRC-8, polynomial x^8 + x^2 + x + 1 (i2c-core-smbus.c:28-57)."""
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _addr_byte(m: Msg) -> int:
    """``i2c_8bit_addr_from_msg`` (SMBus PEC assumes 7-bit addresses)."""
    return ((m.addr << 1) | (1 if m.flags & I2C_M_RD else 0)) & 0xFF


class I2cAdapter:
    """One remote bus.  ``retries`` and ``timeout`` are adapter-wide, as in the kernel."""

    def __init__(self, link: ClientPool, info: I2CBusInfo) -> None:
        self.link = link
        self.bus = info.name
        self.functionality = info.functionality
        #: I2C_RETRIES: kept, never used: busbridge re-sends nothing, and i2c-virtio
        #: never reports the lost arbitration (EAGAIN) the core retries on.
        self.retries = 0
        #: I2C_TIMEOUT in ms, sent as each frame's deadline; None: the server's default.
        self.timeout_ms: int | None = None
        self._lock = threading.Lock()

    def set(self, cmd: int, arg: int) -> None:
        """I2C_RETRIES / I2C_TIMEOUT (range checks are i2c-dev's, done by the caller)."""
        with self._lock:
            if cmd == abi.I2C_RETRIES:
                self.retries = arg
            elif cmd == abi.I2C_TIMEOUT:
                self.timeout_ms = min(arg * 10, MAX_TIMEOUT_MS) if arg else None
            else:
                raise OSError(errno.ENOTTY, "not an adapter setting")

    # -- i2c_transfer ------------------------------------------------------------

    def _run(self, msgs: Sequence[Msg]) -> tuple[int, list[bytes]]:
        """Messages as ONE chain; returns (messages completed, read data per message)."""
        vmsgs: list[I2CMsg] = []
        for m in msgs:
            ten = bool(m.flags & I2C_M_TEN)
            if m.flags & I2C_M_RD:
                n = m.length + BLOCK_MAX if m.flags & I2C_M_RECV_LEN else m.length
                vmsgs.append(read(m.addr, n, ten_bit=ten))
            else:
                vmsgs.append(write(m.addr, m.data, ten_bit=ten))
        result = self.link.i2c(self.bus, chain(vmsgs), self.timeout_ms)
        done = 0
        for status in result.status:
            if status != I2CStatus.OK:
                break
            done += 1
        if done < len(msgs):
            f = result.failures[0] if result.failures else None
            log.info("i2c bus %s: message %d of %d failed on the board: %s (errno %s)",
                     self.bus, done, len(msgs), f.message if f else "?", f.errno if f else "?")
        reads = iter(result.reads)
        data = [next(reads, b"") if m.flags & I2C_M_RD else b"" for m in msgs]
        for i in range(min(done, len(msgs))):
            m = msgs[i]
            if m.flags & I2C_M_RECV_LEN:
                # What a RECV_LEN-capable adapter does: the first byte is the count.
                count = data[i][0] if data[i] else 0
                if count > BLOCK_MAX:
                    raise OSError(errno.EPROTO, f"block count {count} > {BLOCK_MAX}")
                data[i] = data[i][: m.length + count]
        return done, data

    def transfer(self, msgs: Sequence[Msg]) -> tuple[int, list[bytes]]:
        """``i2c_transfer``: the count of completed messages (an errno only for refusals)."""
        if not self.functionality & I2C_FUNC_I2C:
            raise OSError(errno.EOPNOTSUPP, "an SMBus-only adapter has no plain I2C transfers")
        for m in msgs:
            if m.flags & ~CARRIED:
                raise OSError(errno.EOPNOTSUPP, f"i2c_msg flags {m.flags:#x} cannot be carried "
                              "by virtio-i2c (only I2C_M_RD, I2C_M_TEN, I2C_M_RECV_LEN)")
        return self._run(msgs)

    # -- i2c_smbus_xfer (i2c-core-smbus.c:535-630 and the emulation, 322-520) ----------

    def smbus_xfer(self, addr: int, flags: int, read_write: int, command: int, size: int,
                   data: bytearray | None) -> None:
        """One SMBus transaction; ``data`` is ``union i2c_smbus_data`` (34 bytes), updated."""
        if data is not None and (
                size in (abi.I2C_SMBUS_I2C_BLOCK_DATA, abi.I2C_SMBUS_BLOCK_PROC_CALL)
                or (size == abi.I2C_SMBUS_BLOCK_DATA and read_write == abi.I2C_SMBUS_WRITE)) \
                and not 1 <= data[0] <= BLOCK_MAX:
            raise OSError(errno.EINVAL, f"block length {data[0]}")  # __i2c_smbus_xfer, 571-578
        flags &= I2C_M_TEN | I2C_CLIENT_PEC
        msgs = _smbus_msgs(addr, flags & I2C_M_TEN, read_write, command, size,
                           data if data is not None else bytearray(34))
        if size == abi.I2C_SMBUS_PROC_CALL or size == abi.I2C_SMBUS_BLOCK_PROC_CALL:
            read_write = abi.I2C_SMBUS_READ
        wants_pec = bool(flags & I2C_CLIENT_PEC) and size not in (abi.I2C_SMBUS_QUICK,
                                                                   abi.I2C_SMBUS_I2C_BLOCK_DATA)
        partial = 0
        if wants_pec:
            first, last = msgs[0], msgs[-1]
            if not first.flags & I2C_M_RD:
                crc = pec(0, bytes([_addr_byte(first)]) + first.data)
                if len(msgs) == 1:
                    first.data += bytes([crc])
                else:
                    partial = crc
            if last.flags & I2C_M_RD:
                last.length += 1
        done, got = self._run(msgs)
        if done != len(msgs):
            raise OSError(errno.EIO, "the transaction did not complete")  # 472-475
        last = msgs[-1]
        if wants_pec and last.flags & I2C_M_RD:
            body, rpec = got[-1][:-1], got[-1][-1]
            if pec(partial, bytes([_addr_byte(last)]) + body) != rpec:
                raise OSError(errno.EBADMSG, "PEC mismatch")  # i2c_smbus_check_pec
            got[-1] = body
        if read_write != abi.I2C_SMBUS_READ or data is None:
            return
        if size == abi.I2C_SMBUS_BYTE:
            data[0] = got[0][0]
        elif size == abi.I2C_SMBUS_BYTE_DATA:
            data[0] = got[1][0]
        elif size in (abi.I2C_SMBUS_WORD_DATA, abi.I2C_SMBUS_PROC_CALL):
            word = got[1][0] | got[1][1] << 8
            data[0:2] = word.to_bytes(2, sys.byteorder)  # the union holds a native u16
        elif size == abi.I2C_SMBUS_I2C_BLOCK_DATA:
            n = data[0]
            data[1 : 1 + n] = got[1][:n]
        elif size in (abi.I2C_SMBUS_BLOCK_DATA, abi.I2C_SMBUS_BLOCK_PROC_CALL):
            block = got[1]
            if block[0] > BLOCK_MAX:
                raise OSError(errno.EPROTO, f"invalid block size {block[0]}")  # 502-508
            data[0 : block[0] + 1] = block[: block[0] + 1]


def _smbus_msgs(addr: int, ten: int, read_write: int, command: int, size: int,
                data: bytearray) -> list[Msg]:
    """The messages ``i2c_smbus_xfer_emulated`` builds (i2c-core-smbus.c:354-454)."""
    rd = I2C_M_RD | ten
    is_read = read_write == abi.I2C_SMBUS_READ
    cmd = bytes([command])
    if size == abi.I2C_SMBUS_QUICK:
        return [Msg(addr, rd if is_read else ten)]
    if size == abi.I2C_SMBUS_BYTE:
        return [Msg(addr, rd, 1)] if is_read else [Msg(addr, ten, data=cmd)]
    if size == abi.I2C_SMBUS_BYTE_DATA:
        return ([Msg(addr, ten, data=cmd), Msg(addr, rd, 1)] if is_read
                else [Msg(addr, ten, data=cmd + bytes(data[0:1]))])
    if size == abi.I2C_SMBUS_WORD_DATA:
        word = int.from_bytes(data[0:2], sys.byteorder)
        return ([Msg(addr, ten, data=cmd), Msg(addr, rd, 2)] if is_read
                else [Msg(addr, ten, data=cmd + word.to_bytes(2, "little"))])
    if size == abi.I2C_SMBUS_PROC_CALL:
        word = int.from_bytes(data[0:2], sys.byteorder)
        return [Msg(addr, ten, data=cmd + word.to_bytes(2, "little")), Msg(addr, rd, 2)]
    if size == abi.I2C_SMBUS_BLOCK_DATA:
        if is_read:
            return [Msg(addr, ten, data=cmd), Msg(addr, rd | I2C_M_RECV_LEN, 1)]
        return [Msg(addr, ten, data=cmd + bytes(data[0 : data[0] + 1]))]
    if size == abi.I2C_SMBUS_BLOCK_PROC_CALL:
        return [Msg(addr, ten, data=cmd + bytes(data[0 : data[0] + 1])),
                Msg(addr, rd | I2C_M_RECV_LEN, 1)]
    if size == abi.I2C_SMBUS_I2C_BLOCK_DATA:
        n = data[0]
        return ([Msg(addr, ten, data=cmd), Msg(addr, rd, n)] if is_read
                else [Msg(addr, ten, data=cmd + bytes(data[1 : 1 + n]))])
    raise OSError(errno.EOPNOTSUPP, f"unsupported SMBus transaction {size}")  # 451-453

"""Kernel ABI checks, run under `busbridge run` like any native program.

Python's os.open/os.read/os.write are libc's open/read/write, and ioctl is
looked up in the global symbol scope (as a C program links it), so they go
through the preload library exactly as a C program's calls do.
Prints one JSON object: check name -> result (an int, bytes as hex, or the
errno name of the failure).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl as _fcntl
import json
import os
import select
import subprocess
import sys
import threading

from bridge.buses.linux import abi

out: dict[str, object] = {}
_libc = ctypes.CDLL(None, use_errno=True)  # the global scope: the preloaded ioctl first
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_libc.ioctl.restype = ctypes.c_int


class fcntl:
    F_GETFL = _fcntl.F_GETFL
    fcntl = staticmethod(_fcntl.fcntl)

    @staticmethod
    def ioctl(fd: int, req: int, arg: int | bytes = 0) -> int | bytes:
        if isinstance(arg, bytes):
            buf = ctypes.create_string_buffer(arg, len(arg))
            fcntl.ioctl(fd, req, ctypes.addressof(buf))
            return buf.raw
        r = _libc.ioctl(fd, req, arg)
        if r < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return r


def check(name: str, fn) -> None:  # type: ignore[no-untyped-def]
    try:
        r = fn()
    except OSError as e:
        r = errno.errorcode.get(e.errno or 0, str(e.errno))
    if isinstance(r, bytes | bytearray):
        r = bytes(r).hex()
    out[name] = r


def ioc(direction: int, kind: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (kind << 8) | nr


def rdwr(fd: int, msgs: list[tuple[int, int, int, int | None]], bufs: list) -> int:  # type: ignore[type-arg]
    arr = (abi.I2cMsg * max(len(msgs), 1))()
    for i, (addr, flags, length, buf) in enumerate(msgs):
        arr[i].addr, arr[i].flags, arr[i].len = addr, flags, length
        arr[i].buf = buf
    data = abi.I2cRdwrIoctlData(ctypes.addressof(arr), len(msgs))
    return fcntl.ioctl(fd, abi.I2C_RDWR, ctypes.addressof(data))


def smbus(fd: int, rw: int, cmd: int, size: int, data: abi.I2cSmbusData | None) -> int:
    args = abi.I2cSmbusIoctlData(rw, cmd, size, ctypes.addressof(data) if data else None)
    return fcntl.ioctl(fd, abi.I2C_SMBUS, ctypes.addressof(args))


fd = os.open("/dev/i2c-1", os.O_RDWR)
funcs = ctypes.c_ulong()
check("funcs", lambda: (fcntl.ioctl(fd, abi.I2C_FUNCS, ctypes.addressof(funcs)), funcs.value)[1])
check("slave_0x80_7bit", lambda: fcntl.ioctl(fd, abi.I2C_SLAVE, 0x80))
check("tenbit_on", lambda: fcntl.ioctl(fd, abi.I2C_TENBIT, 1))
check("slave_0x80_10bit", lambda: fcntl.ioctl(fd, abi.I2C_SLAVE_FORCE, 0x80))
check("slave_0x400", lambda: fcntl.ioctl(fd, abi.I2C_SLAVE, 0x400))
check("tenbit_off", lambda: fcntl.ioctl(fd, abi.I2C_TENBIT, 0))
check("slave_0x48", lambda: fcntl.ioctl(fd, abi.I2C_SLAVE, 0x48))
check("write_pointer", lambda: os.write(fd, b"\x0f"))
check("read_id", lambda: os.read(fd, 2))
check("pread_id", lambda: os.pread(fd, 2, 1234))
check("lseek", lambda: os.lseek(fd, 0, os.SEEK_SET))
check("slave_absent", lambda: fcntl.ioctl(fd, abi.I2C_SLAVE, 0x33))
check("read_nack", lambda: len(os.read(fd, 1)))
check("write_nack", lambda: os.write(fd, b"\x00"))

reg = ctypes.create_string_buffer(b"\x0f", 1)
got = ctypes.create_string_buffer(2)
check("rdwr_id", lambda: (rdwr(fd, [(0x48, 0, 1, ctypes.addressof(reg)),
                                    (0x48, abi.I2C_M_RD, 2, ctypes.addressof(got))], []),
                          got.raw)[1])
keep = ctypes.create_string_buffer(b"\x5a")
check("rdwr_nack_count", lambda: rdwr(fd, [(0x33, 0, 1, ctypes.addressof(reg)),
                                           (0x33, abi.I2C_M_RD, 1, ctypes.addressof(keep))], []))
check("rdwr_nack_untouched", lambda: keep.raw)
check("rdwr_mid_chain_count", lambda: rdwr(fd, [
    (0x48, 0, 1, ctypes.addressof(reg)), (0x33, abi.I2C_M_RD, 1, ctypes.addressof(keep))], []))
check("rdwr_zero_msgs", lambda: rdwr(fd, [], []))
check("rdwr_null_msgs", lambda: fcntl.ioctl(fd, abi.I2C_RDWR, ctypes.addressof(
    abi.I2cRdwrIoctlData(None, 1))))
check("rdwr_43_msgs", lambda: rdwr(fd, [(0x48, abi.I2C_M_RD, 1, ctypes.addressof(got))] * 43,
                                   []))
check("rdwr_42_msgs", lambda: rdwr(fd, [(0x48, abi.I2C_M_RD, 1, ctypes.addressof(got))] * 42,
                                   []))
big = ctypes.create_string_buffer(8193)
check("rdwr_8193_bytes", lambda: rdwr(fd, [(0x50, abi.I2C_M_RD, 8193, ctypes.addressof(big))], []))
check("rdwr_8192_bytes", lambda: rdwr(fd, [(0x50, abi.I2C_M_RD, 8192, ctypes.addressof(big))], []))
check("rdwr_bad_buffer", lambda: rdwr(fd, [(0x48, abi.I2C_M_RD, 2, 8)], []))
check("rdwr_bad_arg", lambda: fcntl.ioctl(fd, abi.I2C_RDWR, 8))
check("rdwr_nostart", lambda: rdwr(fd, [(0x48, 0x4000, 1, ctypes.addressof(reg))], []))
block = ctypes.create_string_buffer(b"\x01" + bytes(40), 41)
check("rdwr_recv_len_write", lambda: rdwr(fd, [(0x48, abi.I2C_M_RECV_LEN, 33,
                                                ctypes.addressof(block))], []))
check("rdwr_recv_len_short", lambda: rdwr(fd, [(0x48, abi.I2C_M_RD | abi.I2C_M_RECV_LEN, 32,
                                                ctypes.addressof(block))], []))
check("rdwr_recv_len", lambda: (rdwr(fd, [
    (0x48, 0, 1, ctypes.addressof(reg)),
    (0x48, abi.I2C_M_RD | abi.I2C_M_RECV_LEN, 33, ctypes.addressof(block))], []),
    block.raw[:3])[1])

d = abi.I2cSmbusData()
check("smbus_bad_size", lambda: smbus(fd, 1, 0, 99, d))
check("smbus_bad_rw", lambda: smbus(fd, 2, 0, abi.I2C_SMBUS_BYTE_DATA, d))
check("smbus_null_data", lambda: smbus(fd, abi.I2C_SMBUS_READ, 0, abi.I2C_SMBUS_BYTE_DATA, None))
fcntl.ioctl(fd, abi.I2C_SLAVE, 0x48)
check("smbus_quick", lambda: smbus(fd, abi.I2C_SMBUS_WRITE, 0, abi.I2C_SMBUS_QUICK, None))
check("smbus_word", lambda: (smbus(fd, abi.I2C_SMBUS_READ, 0x0F, abi.I2C_SMBUS_WORD_DATA, d),
                             d.word)[1])
d.block[0] = 0
check("smbus_block_len_0", lambda: smbus(fd, abi.I2C_SMBUS_READ, 0x0F,
                                         abi.I2C_SMBUS_I2C_BLOCK_DATA, d))
d.block[0] = 33
check("smbus_block_len_33", lambda: smbus(fd, abi.I2C_SMBUS_READ, 0x0F,
                                          abi.I2C_SMBUS_I2C_BLOCK_DATA, d))
d.block[0] = 2
check("smbus_i2c_block", lambda: (smbus(fd, abi.I2C_SMBUS_READ, 0x0F,
                                        abi.I2C_SMBUS_I2C_BLOCK_DATA, d), bytes(d.block[:3]))[1])
check("smbus_block_broken", lambda: (smbus(fd, abi.I2C_SMBUS_READ, 0x0F,
                                           abi.I2C_SMBUS_I2C_BLOCK_BROKEN, d), d.block[0])[1])
check("pec_on", lambda: fcntl.ioctl(fd, abi.I2C_PEC, 1))
check("pec_off", lambda: fcntl.ioctl(fd, abi.I2C_PEC, 0))
fcntl.ioctl(fd, abi.I2C_SLAVE, 0x33)
check("smbus_nack", lambda: smbus(fd, abi.I2C_SMBUS_READ, 0, abi.I2C_SMBUS_BYTE_DATA, d))
check("retries_big", lambda: fcntl.ioctl(fd, abi.I2C_RETRIES, 2**31))
check("retries", lambda: fcntl.ioctl(fd, abi.I2C_RETRIES, 3))
check("timeout_big", lambda: fcntl.ioctl(fd, abi.I2C_TIMEOUT, (2**31 - 1) // 10 + 1))
check("timeout", lambda: fcntl.ioctl(fd, abi.I2C_TIMEOUT, 100))
check("unknown_ioctl", lambda: fcntl.ioctl(fd, 0x0799, 0))
check("spi_ioctl_on_i2c", lambda: fcntl.ioctl(fd, abi.SPI_IOC_RD_MODE, bytes(1)))
check("getfl_accmode", lambda: fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE)
p = select.poll()
p.register(fd, select.POLLIN | select.POLLOUT)
check("poll", lambda: p.poll(0)[0][1] & (select.POLLIN | select.POLLOUT))
ep = select.epoll()
check("epoll", lambda: ep.register(fd, select.EPOLLIN))
ep.close()

# dup() and fork() share the open file's state (the slave address) as the kernel does.
fd2 = os.dup(fd)
fcntl.ioctl(fd2, abi.I2C_SLAVE, 0x48)
check("dup_shares_address", lambda: (os.write(fd, b"\x0f"), os.read(fd, 2))[1])
pid = os.fork()
if pid == 0:
    ok = os.write(fd2, b"\x0f") == 1 and os.read(fd2, 2) == b"\x01\x17"
    os._exit(0 if ok else 1)
check("fork_child", lambda: os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
# exec(): an inherited descriptor still works in the new program.
os.set_inheritable(fd2, True)
child = ("import os, sys; fd = int(sys.argv[1]); os.write(fd, b'\\x0f'); "
         "sys.stdout.write(os.read(fd, 2).hex())")
check("exec_child", lambda: subprocess.run([sys.executable, "-c", child, str(fd2)],
                                           pass_fds=(fd2,), capture_output=True, text=True,
                                           timeout=60).stdout)
os.close(fd2)


def reader(results: list[bytes]) -> None:
    f = os.open("/dev/i2c-1", os.O_RDWR)
    fcntl.ioctl(f, abi.I2C_SLAVE, 0x48)
    for _ in range(10):
        os.write(f, b"\x0f")
        results.append(os.read(f, 2))
    os.close(f)


results: list[bytes] = []
threads = [threading.Thread(target=reader, args=(results,)) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join(120)
out["threads"] = [*sorted({r.hex() for r in results}), len(results)]
os.close(fd)
ro = os.open("/dev/i2c-1", os.O_RDONLY)
check("write_on_rdonly", lambda: os.write(ro, b"\x00"))
os.close(ro)
check("absent_bus", lambda: os.open("/dev/i2c-9", os.O_RDWR))

# spidev on the loopback chip select.
s = os.open("/dev/spidev0.1", os.O_RDWR)


def u8(req: int) -> int:
    return fcntl.ioctl(s, req, bytes(1))[0]


def u32(req: int) -> int:
    return int.from_bytes(fcntl.ioctl(s, req, bytes(4)), sys.byteorder)


def put(req: int, value: int, size: int) -> int:
    return fcntl.ioctl(s, req, value.to_bytes(size, sys.byteorder))[0] * 0


check("spi_mode", lambda: u8(abi.SPI_IOC_RD_MODE))
check("spi_bits", lambda: u8(abi.SPI_IOC_RD_BITS_PER_WORD))
check("spi_speed", lambda: u32(abi.SPI_IOC_RD_MAX_SPEED_HZ))
check("spi_set_mode3", lambda: put(abi.SPI_IOC_WR_MODE, 3, 1))
check("spi_mode32", lambda: u32(abi.SPI_IOC_RD_MODE32))
check("spi_set_3wire", lambda: put(abi.SPI_IOC_WR_MODE, 3 | abi.SPI_3WIRE, 1))
check("spi_set_unknown_bit", lambda: put(abi.SPI_IOC_WR_MODE32, 1 << 20, 4))
check("spi_set_lsb", lambda: put(abi.SPI_IOC_WR_LSB_FIRST, 1, 1))
check("spi_lsb", lambda: u8(abi.SPI_IOC_RD_LSB_FIRST))
check("spi_set_bits_12", lambda: put(abi.SPI_IOC_WR_BITS_PER_WORD, 12, 1))
check("spi_set_bits_16", lambda: put(abi.SPI_IOC_WR_BITS_PER_WORD, 16, 1))
check("spi_bits_after", lambda: u8(abi.SPI_IOC_RD_BITS_PER_WORD))
check("spi_set_speed_0", lambda: put(abi.SPI_IOC_WR_MAX_SPEED_HZ, 0, 4))
check("spi_set_speed", lambda: put(abi.SPI_IOC_WR_MAX_SPEED_HZ, 1_000_000, 4))
check("spi_speed_after", lambda: u32(abi.SPI_IOC_RD_MAX_SPEED_HZ))
put(abi.SPI_IOC_WR_MODE32, 0, 4)
put(abi.SPI_IOC_WR_BITS_PER_WORD, 8, 1)


def message(xfers: list[dict[str, int]], n: int | None = None) -> int:
    arr = (abi.SpiIocTransfer * max(len(xfers), 1))()
    for i, x in enumerate(xfers):
        for k, v in x.items():
            setattr(arr[i], k, v)
    return fcntl.ioctl(s, abi.SPI_IOC_MESSAGE(len(xfers) if n is None else n),
                       ctypes.addressof(arr))


txb = ctypes.create_string_buffer(b"\x11\x22\x33\x44", 4)
rxb = ctypes.create_string_buffer(4)
check("spi_loopback", lambda: (message([dict(tx_buf=ctypes.addressof(txb),
                                             rx_buf=ctypes.addressof(rxb), len=4)]),
                               rxb.raw)[1])
check("spi_loopback_total", lambda: message([
    dict(tx_buf=ctypes.addressof(txb), len=2),
    dict(rx_buf=ctypes.addressof(rxb), len=2, speed_hz=2_000_000)]))
c5 = ctypes.create_string_buffer(b"\xc5", 1)
c6 = ctypes.create_string_buffer(b"\xc6", 1)
check("spi_cs_change", lambda: message([
    dict(tx_buf=ctypes.addressof(c5), len=1, cs_change=1, delay_usecs=7),
    dict(tx_buf=ctypes.addressof(c6), len=1, word_delay_usecs=3, cs_change=1)]))
check("spi_message_0", lambda: fcntl.ioctl(s, abi.SPI_IOC_MESSAGE(0), 0))
check("spi_size_33", lambda: fcntl.ioctl(s, ioc(1, ord("k"), 0, 33), 0))
check("spi_nr_7", lambda: fcntl.ioctl(s, ioc(1, ord("k"), 7, 32), 0))
check("spi_dir_read", lambda: fcntl.ioctl(s, ioc(2, ord("k"), 0, 32), 0))
check("spi_type_j", lambda: fcntl.ioctl(s, ioc(1, ord("j"), 0, 32), 0))
check("spi_odd_len_16bit", lambda: message([dict(tx_buf=ctypes.addressof(txb), len=3,
                                                 bits_per_word=16)]))
check("spi_dual_without_mode", lambda: message([dict(tx_buf=ctypes.addressof(txb), len=1,
                                                     tx_nbits=2)]))
check("spi_nbits_3", lambda: message([dict(tx_buf=ctypes.addressof(txb), len=1, tx_nbits=3)]))
bigspi = ctypes.create_string_buffer(4097)
check("spi_over_bufsiz", lambda: message([dict(tx_buf=ctypes.addressof(bigspi), len=4097)]))
check("spi_bad_tx", lambda: message([dict(tx_buf=8, len=2)]))
check("spi_write", lambda: os.write(s, b"abc"))
check("spi_read", lambda: len(os.read(s, 3)))
check("spi_read_over_bufsiz", lambda: os.read(s, 5000))
check("spi_pread", lambda: os.pread(s, 1, 0))
check("spi_lseek", lambda: os.lseek(s, 0, os.SEEK_SET))
os.close(s)
check("spi_absent_cs", lambda: os.open("/dev/spidev0.7", os.O_RDWR))
print(json.dumps(out))

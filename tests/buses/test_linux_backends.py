"""Linux i2c-dev / spidev backends against a recording fake kernel.

The fake sits where ioctl(2) is: it receives the same argument address the
kernel would and records the exact bytes there (and behind every pointer),
so these tests pin down what reaches the kernel for every mapping rule.  The
expected bytes are packed here with ``struct`` from the kernel's layout
(verified against the headers in test_linux_abi.py), not with the ctypes
classes under test.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import start_server_thread, stop_server_thread

from bridge.buses.base import BusError
from bridge.buses.linux import abi
from bridge.buses.linux.i2c import LinuxI2CBus, smbus_plan
from bridge.buses.linux.spi import LinuxSpiBus, ns_to_us
from bridge.client import Client, TransferError
from bridge.config import Board, BoardConfigError, board_config_from_toml_text, board_from_toml_text
from bridge.server.execute import check_spi, run_i2c, run_spi
from protocol import handshake as hs
from protocol.virtio import (
    I2CMsg,
    SpiConfig,
    SpiMode,
    SpiResult,
    SpiTransfer,
    SpiTransferHead,
    chain,
    read,
    write,
)

pytestmark = pytest.mark.skipif(
    sys.byteorder != "little" or ctypes.sizeof(ctypes.c_void_p) != 8,
    reason="expected byte images are written for 64-bit little-endian hosts",
)

I2C_MSG = struct.Struct("=HHH2xQ")  # struct i2c_msg, 16 bytes
RDWR = struct.Struct("=QI4x")  # struct i2c_rdwr_ioctl_data
SMBUS = struct.Struct("=BB2xIQ")  # struct i2c_smbus_ioctl_data
SPI_XFER = struct.Struct("=QQIIHBBBBBx")  # struct spi_ioc_transfer, 32 bytes
SMBUS_DATA_SIZE = 34

#: What i2c-stub reports: SMBus only.
STUB_FUNCS = (hs.I2C_FUNC_SMBUS_QUICK | hs.I2C_FUNC_SMBUS_READ_BYTE
              | hs.I2C_FUNC_SMBUS_WRITE_BYTE | hs.I2C_FUNC_SMBUS_READ_BYTE_DATA
              | hs.I2C_FUNC_SMBUS_WRITE_BYTE_DATA | hs.I2C_FUNC_SMBUS_READ_WORD_DATA
              | hs.I2C_FUNC_SMBUS_WRITE_WORD_DATA | hs.I2C_FUNC_SMBUS_READ_I2C_BLOCK
              | hs.I2C_FUNC_SMBUS_WRITE_I2C_BLOCK)
ALL_SMBUS = hs.I2C_FUNC_SMBUS_EMUL | hs.I2C_FUNC_SMBUS_READ_BLOCK_DATA | (
    hs.I2C_FUNC_SMBUS_BLOCK_PROC_CALL)
FULL_I2C = hs.I2C_FUNC_I2C | hs.I2C_FUNC_10BIT_ADDR | hs.I2C_FUNC_SMBUS_EMUL


@dataclass
class Call:
    fd: int
    request: int
    value: int = 0  # integer arguments (I2C_SLAVE, I2C_TIMEOUT, ...)
    raw: bytes = b""  # the argument struct / array, exactly
    parts: list[bytes] = field(default_factory=list)  # bytes behind its pointers


class FakeKernel:
    """Records every ioctl's bytes; answers from ``reply`` (fills read buffers)."""

    def __init__(self, funcs: int = FULL_I2C, *, max_speed: int = 10_000_000) -> None:
        self.funcs = funcs
        self.max_speed = max_speed
        self.calls: list[Call] = []
        self.paths: dict[int, str] = {}
        self.closed: list[int] = []
        self.missing: set[str] = set()
        self.fail: dict[int, int] = {}  # request -> errno
        #: Called with (Call, address) for data requests; may write answers.  For
        #: I2C_RDWR it returns the count of completed messages (None: all of them).
        self.reply: Callable[[Call, int], int | None] | None = None
        self._next = 10

    def open(self, path: str) -> int:
        if path in self.missing:
            raise OSError(errno.ENOENT, "No such file or directory")
        self._next += 1
        self.paths[self._next] = path
        return self._next

    def close(self, fd: int) -> None:
        self.closed.append(fd)

    def data_calls(self) -> list[Call]:
        skip = {abi.I2C_FUNCS, abi.I2C_SLAVE, abi.I2C_SLAVE_FORCE, abi.I2C_TIMEOUT,
                abi.I2C_RETRIES, abi.SPI_IOC_RD_MODE32, abi.SPI_IOC_RD_MAX_SPEED_HZ,
                abi.SPI_IOC_WR_MODE32}
        return [c for c in self.calls if c.request not in skip]

    def ioctl(self, fd: int, request: int, arg: int) -> int:
        c = Call(fd, request)
        self.calls.append(c)
        ret: int | None = None
        if request == abi.I2C_FUNCS:
            ctypes.c_ulong.from_address(arg).value = self.funcs
        elif request in (abi.I2C_SLAVE, abi.I2C_SLAVE_FORCE, abi.I2C_TIMEOUT, abi.I2C_RETRIES):
            c.value = arg
        elif request == abi.SPI_IOC_RD_MODE32:
            ctypes.c_uint32.from_address(arg).value = 0
        elif request == abi.SPI_IOC_RD_MAX_SPEED_HZ:
            ctypes.c_uint32.from_address(arg).value = self.max_speed
        elif request == abi.SPI_IOC_WR_MODE32:
            c.value = ctypes.c_uint32.from_address(arg).value
        elif request == abi.I2C_RDWR:
            c.raw = ctypes.string_at(arg, RDWR.size)
            msgs, n = RDWR.unpack(c.raw)
            for i in range(n):
                m = ctypes.string_at(msgs + i * I2C_MSG.size, I2C_MSG.size)
                c.parts.append(m)
                _addr, flags, length, buf = I2C_MSG.unpack(m)
                if not flags & abi.I2C_M_RD:
                    c.parts.append(ctypes.string_at(buf, length) if length else b"")
        elif request == abi.I2C_SMBUS:
            c.raw = ctypes.string_at(arg, SMBUS.size)
            c.parts.append(ctypes.string_at(SMBUS.unpack(c.raw)[3], SMBUS_DATA_SIZE))
        elif request & 0xFFFF == 0x6B00:  # SPI_IOC_MESSAGE(n)
            n = ((request >> 16) & 0x3FFF) // SPI_XFER.size
            c.raw = ctypes.string_at(arg, n * SPI_XFER.size)
            for i in range(n):
                tx, _rx, length, *_ = SPI_XFER.unpack_from(c.raw, i * SPI_XFER.size)
                c.parts.append(ctypes.string_at(tx, length) if tx else b"")
        if request in self.fail:
            raise OSError(self.fail[request], "fake failure")
        if self.reply is not None:
            ret = self.reply(c, arg)
        if request == abi.I2C_RDWR and ret is None:
            ret = RDWR.unpack(c.raw)[1]
        return ret or 0


def fill_reads(data: list[bytes]) -> Callable[[Call, int], int | None]:
    """An I2C_RDWR reply writing ``data`` into the read messages' buffers, in order."""

    def reply(c: Call, arg: int) -> int | None:
        if c.request != abi.I2C_RDWR:
            return None
        msgs, n = RDWR.unpack(c.raw)
        it = iter(data)
        for i in range(n):
            _a, flags, length, buf = I2C_MSG.unpack(ctypes.string_at(msgs + 16 * i, 16))
            if flags & abi.I2C_M_RD:
                ctypes.memmove(buf, next(it), length)
        return int(n)

    return reply


def smbus_answer(union: bytes) -> Callable[[Call, int], int | None]:
    """An I2C_SMBUS reply writing ``union`` into ``i2c_smbus_data`` as the kernel would."""

    def reply(c: Call, arg: int) -> int | None:
        if c.request != abi.I2C_SMBUS:
            return None
        ctypes.memmove(SMBUS.unpack(c.raw)[3], union, len(union))
        return 0

    return reply


# ---------------------------------------------------------------------------
# I2C: opening and I2C_RDWR
# ---------------------------------------------------------------------------


def test_open_reads_funcs_and_sets_timeout_and_retries() -> None:
    k = FakeKernel(FULL_I2C)
    bus = LinuxI2CBus("1", "/dev/i2c-1", timeout_ms=25, retries=3, kernel=k)
    assert k.paths == {11: "/dev/i2c-1"}
    assert [(c.request, c.value) for c in k.calls] == [
        (abi.I2C_FUNCS, 0), (abi.I2C_TIMEOUT, 3), (abi.I2C_RETRIES, 3)]  # 25 ms -> 3 x 10 ms
    assert bus.info().functionality == FULL_I2C
    assert bus.max_msg_len == 8192
    bus.close()
    assert k.closed == [11]


def test_functionality_setting_restricts_what_is_advertised_and_used() -> None:
    k = FakeKernel(FULL_I2C)
    bus = LinuxI2CBus("1", "/dev/i2c-1", functionality_mask=STUB_FUNCS, kernel=k)
    assert bus.functionality == FULL_I2C & STUB_FUNCS
    assert not bus.use_rdwr  # without I2C_FUNC_I2C the SMBus path is taken


def test_chain_is_one_i2c_rdwr_with_exact_messages() -> None:
    k = FakeKernel()
    k.reply = fill_reads([b"\x01\x17"])
    bus = LinuxI2CBus("1", "/dev/i2c-1", kernel=k)
    msgs = chain([write(0x48, [0x0F]), read(0x48, 2)])
    status, reads, failures = run_i2c(bus, msgs)
    assert (status, reads, failures) == (b"\x00\x00", [b"\x01\x17"], [])
    (c,) = k.data_calls()
    assert c.request == abi.I2C_RDWR == 0x0707
    msgs_ptr, _n = RDWR.unpack(c.raw)
    assert c.raw == RDWR.pack(msgs_ptr, 2)
    m0, data0, m1 = c.parts
    assert m0 == I2C_MSG.pack(0x48, 0, 1, I2C_MSG.unpack(m0)[3])
    assert data0 == b"\x0f"
    assert m1 == I2C_MSG.pack(0x48, abi.I2C_M_RD, 2, I2C_MSG.unpack(m1)[3])


def test_zero_length_and_ten_bit_messages() -> None:
    k = FakeKernel()
    bus = LinuxI2CBus("1", "/dev/i2c-1", kernel=k)
    status, reads, _ = run_i2c(bus, [write(0x50), read(0x51, 0), write(0x2A5, b"\x07",
                                                                        ten_bit=True)])
    assert status == b"\x00\x00\x00"
    assert reads == [b""]
    c1, c2, c3 = k.data_calls()  # three independent chains: three ioctls
    assert c1.parts == [I2C_MSG.pack(0x50, 0, 0, 0), b""]  # no buffer: NULL pointer
    assert c2.parts == [I2C_MSG.pack(0x51, abi.I2C_M_RD, 0, 0)]
    assert c3.parts[0] == I2C_MSG.pack(0x2A5, abi.I2C_M_TEN, 1, I2C_MSG.unpack(c3.parts[0])[3])
    assert c3.parts[1] == b"\x07"


@pytest.mark.parametrize(("err", "words"), [
    (errno.ENXIO, "no ACK"),
    (errno.EREMOTEIO, "NACK from the device"),
    (errno.ETIMEDOUT, "bus timeout"),
    (errno.EAGAIN, "arbitration lost"),
    (errno.EIO, "bus error"),
])
def test_kernel_errno_reaches_the_client_with_words(err: int, words: str) -> None:
    # Adapter drivers that report a fault as an errno (most SoC drivers: ENXIO for
    # an address NACK, EREMOTEIO for a data NACK).
    k = FakeKernel()
    k.fail[abi.I2C_RDWR] = err
    bus = LinuxI2CBus("1", "/dev/i2c-1", kernel=k)
    status, reads, failures = run_i2c(bus, chain([write(0x48, [0]), read(0x48, 1)]))
    # An errno does not say which message failed: the whole chain is ERR.
    assert status == b"\x01\x01"
    assert reads == [b""]
    (f,) = failures
    assert (f.index, f.errno) == (0, err)
    assert words in f.message


def test_i2c_rdwr_count_of_0_is_eio_for_the_whole_chain() -> None:
    # What Linux's i2c-virtio (6.1, measured in tests/e2e/test_i2c_chain.py) does on a
    # NACK at message 0: no errno, I2C_RDWR returns 0 messages completed.
    k = FakeKernel()
    k.reply = lambda c, arg: 0 if c.request == abi.I2C_RDWR else None
    bus = LinuxI2CBus("1", "/dev/i2c-1", kernel=k)
    status, reads, failures = run_i2c(bus, chain([write(0x33, [0]), read(0x33, 2)]))
    assert status == b"\x01\x01"
    assert reads == [b""]
    (f,) = failures
    assert (f.index, f.errno) == (0, errno.EIO)
    assert "completed only 0 of 2 messages" in f.message


def test_short_i2c_rdwr_count_fails_from_the_first_message_not_sent() -> None:
    # i2c-virtio's mid-chain NACK: the count of messages that completed.
    k = FakeKernel()
    fill = fill_reads([b"\x12\x34", b"\xee"])  # i2c-dev copies back every read buffer

    def two_done(c: Call, arg: int) -> int | None:
        fill(c, arg)
        return 2 if c.request == abi.I2C_RDWR else None

    k.reply = two_done
    bus = LinuxI2CBus("1", "/dev/i2c-1", kernel=k)
    status, reads, failures = run_i2c(
        bus, chain([write(0x48, [0]), read(0x48, 2), write(0x33, [1]), read(0x48, 1)]))
    assert status == b"\x00\x00\x01\x01"
    assert reads == [b"\x12\x34", b""]  # the completed read keeps its data
    (f,) = failures
    assert (f.index, f.errno) == (2, errno.EIO)
    assert "completed only 2 of 4 messages" in f.message


def test_more_messages_than_i2c_dev_allows_never_reach_the_kernel() -> None:
    k = FakeKernel()
    bus = LinuxI2CBus("1", "/dev/i2c-1", kernel=k)
    with pytest.raises(BusError) as e:
        bus.transfer(chain([write(0x48, [i]) for i in range(43)]))
    assert e.value.errno == errno.EINVAL
    assert k.data_calls() == []


# ---------------------------------------------------------------------------
# I2C: the SMBus mapping table
# ---------------------------------------------------------------------------

R, W = abi.I2C_SMBUS_READ, abi.I2C_SMBUS_WRITE

SMBUS_CASES: list[tuple[str, list[I2CMsg], int, tuple[int, int, int], bytes, bytes,
                        list[bytes]]] = [
    # name, chain, funcs, (read_write, command, size), union in, kernel's union out, reads
    ("quick write", [write(0x48)], STUB_FUNCS, (W, 0, abi.I2C_SMBUS_QUICK), b"", b"", []),
    ("quick read", [read(0x48, 0)], STUB_FUNCS, (R, 0, abi.I2C_SMBUS_QUICK), b"", b"", [b""]),
    ("receive byte", [read(0x48, 1)], STUB_FUNCS, (R, 0, abi.I2C_SMBUS_BYTE), b"", b"\x5a",
     [b"\x5a"]),
    ("send byte", [write(0x48, [0x0F])], STUB_FUNCS, (W, 0x0F, abi.I2C_SMBUS_BYTE), b"", b"",
     []),
    ("write byte data", [write(0x48, [0x02, 0x60])], STUB_FUNCS,
     (W, 0x02, abi.I2C_SMBUS_BYTE_DATA), b"\x60", b"", []),
    # SMBus words are little-endian on the wire: wire bytes 34 12 are the word 0x1234.
    ("write word data", [write(0x48, [0x02, 0x34, 0x12])], STUB_FUNCS,
     (W, 0x02, abi.I2C_SMBUS_WORD_DATA), struct.pack("=H", 0x1234), b"", []),
    ("I2C block write", [write(0x50, [0x10, 1, 2, 3, 4])], STUB_FUNCS,
     (W, 0x10, abi.I2C_SMBUS_I2C_BLOCK_DATA), b"\x04\x01\x02\x03\x04", b"", []),
    ("byte data via I2C block", [write(0x50, [0x10, 9])],
     STUB_FUNCS & ~hs.I2C_FUNC_SMBUS_WRITE_BYTE_DATA,
     (W, 0x10, abi.I2C_SMBUS_I2C_BLOCK_DATA), b"\x01\x09", b"", []),
    ("block write", [write(0x50, [0x10, 3, 7, 8, 9])],
     hs.I2C_FUNC_SMBUS_WRITE_BLOCK_DATA, (W, 0x10, abi.I2C_SMBUS_BLOCK_DATA),
     b"\x03\x07\x08\x09", b"", []),
    ("read byte data", [write(0x48, [0x0F]), read(0x48, 1)], STUB_FUNCS,
     (R, 0x0F, abi.I2C_SMBUS_BYTE_DATA), b"", b"\x17", [b"\x17"]),
    ("read word data", [write(0x48, [0x0F]), read(0x48, 2)], STUB_FUNCS,
     (R, 0x0F, abi.I2C_SMBUS_WORD_DATA), b"", struct.pack("=H", 0x1701), [b"\x01\x17"]),
    ("I2C block read", [write(0x50, [0x00]), read(0x50, 5)], STUB_FUNCS,
     (R, 0x00, abi.I2C_SMBUS_I2C_BLOCK_DATA), b"\x05", b"\x05abcde", [b"abcde"]),
    ("block read", [write(0x50, [0x00]), read(0x50, 4)], hs.I2C_FUNC_SMBUS_READ_BLOCK_DATA,
     (R, 0x00, abi.I2C_SMBUS_BLOCK_DATA), b"", b"\x03xyz", [b"\x03xyz"]),
    ("process call", [write(0x48, [0x05, 0x34, 0x12]), read(0x48, 2)], ALL_SMBUS,
     (W, 0x05, abi.I2C_SMBUS_PROC_CALL), struct.pack("=H", 0x1234), struct.pack("=H", 0xBEEF),
     [b"\xef\xbe"]),
    ("block process call", [write(0x48, [0x06, 2, 0xAA, 0xBB]), read(0x48, 3)],
     hs.I2C_FUNC_SMBUS_BLOCK_PROC_CALL, (W, 0x06, abi.I2C_SMBUS_BLOCK_PROC_CALL),
     b"\x02\xaa\xbb", b"\x02\xcc\xdd", [b"\x02\xcc\xdd"]),
]


@pytest.mark.parametrize(("name", "msgs", "funcs", "args", "union_in", "union_out", "reads"),
                         SMBUS_CASES, ids=[c[0] for c in SMBUS_CASES])
def test_smbus_mapping_sends_exact_ioctl(
    name: str, msgs: list[I2CMsg], funcs: int, args: tuple[int, int, int], union_in: bytes,
    union_out: bytes, reads: list[bytes],
) -> None:
    k = FakeKernel(funcs)
    k.reply = smbus_answer(union_out)
    bus = LinuxI2CBus("stub", "/dev/i2c-0", kernel=k)
    status, got, failures = run_i2c(bus, chain(msgs))
    assert failures == []
    assert status == bytes(len(msgs))
    assert got == reads
    slave, c = k.calls[1:]
    assert (slave.request, slave.value) == (abi.I2C_SLAVE, msgs[0].addr)
    assert c.request == abi.I2C_SMBUS == 0x0720
    ptr = SMBUS.unpack(c.raw)[3]
    assert ptr != 0
    assert c.raw == SMBUS.pack(*args, ptr)
    assert c.parts[0] == union_in.ljust(SMBUS_DATA_SIZE, b"\x00")


def test_slave_address_is_set_only_when_it_changes_and_force_uses_slave_force() -> None:
    k = FakeKernel(STUB_FUNCS)
    bus = LinuxI2CBus("stub", "/dev/i2c-0", force=True, kernel=k)
    run_i2c(bus, [write(0x48), write(0x48), write(0x50)])
    assert [(c.request, c.value) for c in k.calls if c.request != abi.I2C_SMBUS][1:] == [
        (abi.I2C_SLAVE_FORCE, 0x48), (abi.I2C_SLAVE_FORCE, 0x50)]


UNMAPPABLE = [
    ("plain 2-byte read", [read(0x48, 2)], STUB_FUNCS),
    ("three messages", [write(0x48, [0]), read(0x48, 1), read(0x48, 1)], STUB_FUNCS),
    ("read then write", [read(0x48, 1), write(0x48, [0])], STUB_FUNCS),
    ("two addresses", [write(0x48, [0]), read(0x49, 1)], STUB_FUNCS),
    ("zero-length in a chain", [write(0x48), read(0x48, 1)], STUB_FUNCS),
    ("2-byte command then read", [write(0x50, [0, 0]), read(0x50, 4)], STUB_FUNCS),
    ("read longer than a block", [write(0x50, [0]), read(0x50, 33)], STUB_FUNCS),
    ("write longer than a block", [write(0x50, bytes(34))], STUB_FUNCS),
    ("quick without QUICK", [write(0x48)], STUB_FUNCS & ~hs.I2C_FUNC_SMBUS_QUICK),
    ("word without word or block", [write(0x48, [0]), read(0x48, 2)],
     hs.I2C_FUNC_SMBUS_READ_BYTE_DATA),
    ("10-bit", [write(0x2A5, [0], ten_bit=True)], STUB_FUNCS | hs.I2C_FUNC_10BIT_ADDR),
]


@pytest.mark.parametrize(("name", "msgs", "funcs"), UNMAPPABLE, ids=[u[0] for u in UNMAPPABLE])
def test_unmappable_chain_gets_err_and_never_reaches_the_bus(
    name: str, msgs: list[I2CMsg], funcs: int, caplog: pytest.LogCaptureFixture
) -> None:
    k = FakeKernel(funcs)
    bus = LinuxI2CBus("stub", "/dev/i2c-0", kernel=k)
    caplog.set_level("INFO", logger="busbridge.linux")
    status, _reads, failures = run_i2c(bus, chain(msgs))
    assert status == b"\x01" * len(msgs)
    (f,) = failures
    assert f.errno in (errno.EOPNOTSUPP, errno.EMSGSIZE)
    assert [c.request for c in k.calls] == [abi.I2C_FUNCS]  # nothing after opening
    if f.errno == errno.EOPNOTSUPP:
        assert "SMBus" in f.message
        assert "chain refused" in caplog.text


def test_block_read_with_a_different_count_is_a_protocol_error() -> None:
    k = FakeKernel(hs.I2C_FUNC_SMBUS_READ_BLOCK_DATA)
    k.reply = smbus_answer(b"\x05abcde")
    bus = LinuxI2CBus("stub", "/dev/i2c-0", kernel=k)
    status, _reads, failures = run_i2c(bus, chain([write(0x50, [0]), read(0x50, 4)]))
    assert status == b"\x01\x01"
    assert failures[0].errno == errno.EPROTO
    assert "count of 5" in failures[0].message


def test_smbus_errno_from_the_kernel_is_kept() -> None:
    k = FakeKernel(STUB_FUNCS)
    k.fail[abi.I2C_SMBUS] = errno.ENXIO
    bus = LinuxI2CBus("stub", "/dev/i2c-0", kernel=k)
    status, _reads, failures = run_i2c(bus, [write(0x48, [1, 2])])
    assert status == b"\x01"
    assert failures[0].errno == errno.ENXIO
    assert "write byte data: no ACK" in failures[0].message


def test_smbus_plan_prefers_the_exact_word_transaction() -> None:
    op = smbus_plan(chain([write(0x48, [1]), read(0x48, 2)]), ALL_SMBUS)
    assert op.name == "read word data"
    op = smbus_plan(chain([write(0x48, [1]), read(0x48, 2)]), hs.I2C_FUNC_SMBUS_READ_I2C_BLOCK)
    assert op.name == "I2C block read"


# ---------------------------------------------------------------------------
# SPI
# ---------------------------------------------------------------------------

CFG = SpiConfig(cs_max_number=2, cs_change_supported=1, tx_nbits_supported=0b011,
                rx_nbits_supported=0b011, bits_per_word_mask=0x80008080,
                mode_func_supported=0x7F, max_freq_hz=20_000_000, max_word_delay_ns=255_000,
                max_cs_hold_ns=65_535_000)


def head(**kw: int) -> SpiTransferHead:
    return SpiTransferHead(**kw)


def spi_bus(k: FakeKernel, config: SpiConfig = CFG, **kw: object) -> LinuxSpiBus:
    return LinuxSpiBus("0", {0: "/dev/spidev0.0", 1: "/dev/spidev0.1"}, config, kernel=k,
                       **kw)  # type: ignore[arg-type]


def test_spi_message_is_one_ioctl_with_byte_exact_transfers() -> None:
    k = FakeKernel()

    def reply(c: Call, arg: int) -> int | None:
        if c.request & 0xFFFF == 0x6B00:
            for i in range(len(c.raw) // 32):
                _tx, rx, length, *_ = SPI_XFER.unpack_from(c.raw, 32 * i)
                if rx:
                    ctypes.memmove(rx, bytes(range(0xA0, 0xA0 + length)), length)
        return None

    k.reply = reply
    bus = spi_bus(k)
    ts = [
        SpiTransfer(head(freq=1_000_000, cs_delay_hold_ns=1001, cs_change=1), b"\x9f"),
        SpiTransfer(head(bits_per_word=16, word_delay_ns=1, rx_nbits=2), None, 4),
        SpiTransfer(head(freq=2_000_000, tx_nbits=2, cs_change=1), b"\x01\x02", 2),
    ]
    assert check_spi(bus, 1, ts) is None
    status, reads, failures = run_spi(bus, 1, ts)
    assert (status, failures) == (b"\x00\x00\x00", [])
    assert reads == [b"\xa0\xa1\xa2\xa3", b"\xa0\xa1"]
    (c,) = k.data_calls()
    assert c.fd == 12  # chip select 1's device
    assert c.request == abi.SPI_IOC_MESSAGE(3) == 0x40606B00
    ptrs = [SPI_XFER.unpack_from(c.raw, 32 * i)[:2] for i in range(3)]
    assert ptrs[0][1] == 0
    assert ptrs[1][0] == 0
    assert c.raw == b"".join([
        # tx, rx, len, speed_hz, delay_usecs, bpw, cs_change, tx_nbits, rx_nbits, word_delay
        SPI_XFER.pack(*ptrs[0], 1, 1_000_000, 2, 8, 1, 0, 0, 0),  # 1001 ns -> 2 µs (up)
        SPI_XFER.pack(*ptrs[1], 4, 0, 0, 16, 0, 0, 2, 1),  # 1 ns word delay -> 1 µs
        SPI_XFER.pack(*ptrs[2], 2, 2_000_000, 0, 8, 0, 2, 0, 0),  # last: cs_change cleared
    ])
    assert c.parts == [b"\x9f", b"", b"\x01\x02"]
    # Lanes used by the message are enabled in the mode: TX_DUAL and RX_DUAL.
    (mode,) = [x for x in k.calls if x.request == abi.SPI_IOC_WR_MODE32]
    assert mode.value == abi.SPI_TX_DUAL | abi.SPI_RX_DUAL


def test_spi_mode_is_set_through_mode32_only_when_it_changes() -> None:
    k = FakeKernel()
    bus = spi_bus(k, mode_flags=abi.SPI_3WIRE)
    m = int(SpiMode.CPHA | SpiMode.CPOL | SpiMode.LOOP)
    t = SpiTransfer(head(mode=m), b"\x00")
    for _ in range(2):
        assert run_spi(bus, 0, [t])[0] == b"\x00"
    t2 = SpiTransfer(head(mode=int(SpiMode.CS_HIGH | SpiMode.LSB_FIRST)), b"\x00")
    run_spi(bus, 0, [t2])
    writes = [(c.fd, c.value) for c in k.calls if c.request == abi.SPI_IOC_WR_MODE32]
    # virtio LOOP (bit 4) is Linux SPI_LOOP 0x20; 0x10 is the configured 3WIRE.
    assert writes == [(11, 0x01 | 0x02 | 0x20 | 0x10), (11, 0x04 | 0x08 | 0x10)]
    assert abi.SPI_IOC_WR_MODE32 == 0x40046B05


def test_spi_limits_spidev_cannot_express_are_param_err_before_the_bus() -> None:
    k = FakeKernel()
    wide = dataclasses.replace(CFG, max_word_delay_ns=1_000_000, max_cs_hold_ns=100_000_000)
    bus = spi_bus(k, wide, bufsiz=8)
    cases = [
        ([SpiTransfer(head(word_delay_ns=255_001), b"\x00")], "word_delay_ns"),
        ([SpiTransfer(head(cs_delay_hold_ns=65_535_001), b"\x00")], "cs_delay_hold_ns"),
        ([SpiTransfer(head(), b"\x00"), SpiTransfer(head(mode=1), b"\x00")], "one mode"),
        ([SpiTransfer(head(), bytes(9))], "buffer of 8 bytes"),
    ]
    for ts, why in cases:
        out = check_spi(bus, 0, ts)
        assert out is not None, why
        status, _reads, failures = out
        assert int(SpiResult.PARAM_ERR) in status
        assert why in failures[0].message
        assert failures[0].errno == errno.EINVAL
    assert ns_to_us(255_000) == 255
    assert k.data_calls() == []


def test_spi_chip_select_without_device_is_param_err() -> None:
    k = FakeKernel()
    bus = LinuxSpiBus("0", {1: "/dev/spidev0.1"}, CFG, kernel=k)
    out = check_spi(bus, 0, [SpiTransfer(head(), b"\x00")])
    assert out is not None
    assert out[0] == bytes([SpiResult.PARAM_ERR])


@pytest.mark.parametrize("err", [
    errno.EINVAL,  # the controller refused a transfer (spi-virtio: the device's PARAM_ERR)
    errno.EIO,  # the transfer failed (spi-virtio: the device's TRANS_ERR)
    errno.EMSGSIZE,  # alignment padding pushed the message past spidev's buffer
])
def test_spi_ioctl_failure_is_trans_err_with_errno(err: int) -> None:
    # What Linux 7.2 returns (tests/e2e/test_spi_chain.py): an errno for the whole
    # message, never a count.
    k = FakeKernel()
    k.fail[abi.SPI_IOC_MESSAGE(2)] = err
    bus = spi_bus(k)
    status, reads, failures = run_spi(bus, 0, [SpiTransfer(head(), b"\x00"),
                                               SpiTransfer(head(), None, 1)])
    assert status == bytes([SpiResult.TRANS_ERR] * 2)
    assert reads == [b""]
    assert failures[0].errno == err
    assert "SPI_IOC_MESSAGE(2) failed" in failures[0].message


def test_spi_max_freq_defaults_to_the_device_tree_limit() -> None:
    k = FakeKernel(max_speed=12_500_000)
    bus = spi_bus(k, SpiConfig(cs_max_number=2, bits_per_word_mask=0x80))
    assert bus.config.max_freq_hz == 12_500_000
    assert bus.info().config.max_freq_hz == 12_500_000


# ---------------------------------------------------------------------------
# Board configuration (real files, real errors)
# ---------------------------------------------------------------------------


def test_linux_bus_config_validates_and_reports_open_errors(tmp_path: object) -> None:
    text = """
name = "pi"
[[i2c]]
name = "1"
backend = "linux"
device = 1
timeout_ms = 50
retries = 2
[[spi]]
name = "0"
backend = "linux"
devices = { 0 = "/dev/spidev0.0", 1 = "/dev/spidev0.1" }
max_freq_hz = 20_000_000
mode_flags = ["3wire"]
"""
    cfg = board_config_from_toml_text(text, "pi.toml")
    assert cfg.i2c[0].device == "/dev/i2c-1"  # type: ignore[union-attr]
    assert cfg.spi[0].chip_selects() == {0: "/dev/spidev0.0", 1: "/dev/spidev0.1"}  # type: ignore[union-attr]
    with pytest.raises(BoardConfigError) as e:
        board_from_toml_text(text.replace("device = 1", 'device = "/dev/i2c-busbridge-none"'),
                             "pi.toml")
    assert "pi.toml" in str(e.value)
    assert "i2c bus '1'" in str(e.value)
    assert "no such device" in str(e.value)
    # /dev/null opens but is no adapter: the I2C_FUNCS ioctl fails with ENOTTY.
    with pytest.raises(BoardConfigError, match="is it an i2c-dev device"):
        board_from_toml_text(text.replace("device = 1", 'device = "/dev/null"'), "pi.toml")


def test_linux_spi_config_refuses_what_spidev_cannot_do() -> None:
    base = """
name = "pi"
[[spi]]
name = "0"
backend = "linux"
device = "/dev/spidev0.0"
"""
    for extra, words in [
        ("max_cs_setup_ns = 100", "device tree"),
        ("max_word_delay_ns = 300000", "less than or equal to 255000"),
        ("max_cs_hold_ns = 70000000", "less than or equal to 65535000"),
        ("cs_max_number = 1\ndevices = { 1 = '/dev/spidev0.1' }", "cs_max_number is 1"),
        ('mode_flags = ["quad"]', "mode_flags"),
    ]:
        with pytest.raises(BoardConfigError, match=words):
            board_config_from_toml_text(base + extra, "pi.toml")


def test_open_hint_names_the_fix_for_permissions() -> None:
    msg = abi.open_hint("/dev/i2c-1", PermissionError(errno.EACCES, "Permission denied"), "i2c")
    assert "i2c group" in msg
    msg = abi.open_hint("/dev/spidev0.0", PermissionError(errno.EACCES, "denied"), "spi")
    assert "udev rule" in msg


def test_example_board_file_is_valid() -> None:
    path = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "board-linux.toml"
    cfg = board_config_from_toml_text(path.read_text(), str(path))
    assert [b.backend for b in cfg.i2c] == ["linux", "linux"]
    assert cfg.spi[0].chip_selects() == {0: "/dev/spidev0.0", 1: "/dev/spidev0.1"}  # type: ignore[union-attr]


def test_kernel_errno_reaches_a_client_over_tcp() -> None:
    k = FakeKernel(STUB_FUNCS)
    k.fail[abi.I2C_SMBUS] = errno.ETIMEDOUT
    bus = LinuxI2CBus("stub", "/dev/i2c-0", kernel=k)
    board = Board("fake", {"stub": bus}, {})
    running, t = start_server_thread(board)
    try:
        with Client(running.host, running.port, timeout=10.0) as c:
            assert c.welcome is not None
            assert c.welcome.i2c[0].functionality == STUB_FUNCS
            with pytest.raises(TransferError) as e:
                c.transfer("stub", [write(0x48, [0x0F]), read(0x48, 2)])
            assert e.value.errno == errno.ETIMEDOUT
            assert "read word data: bus timeout" in str(e.value)
            with pytest.raises(TransferError) as e:
                c.transfer("stub", [write(0x50, [0, 0]), read(0x50, 4)])
            assert e.value.errno == errno.EOPNOTSUPP
    finally:
        stop_server_thread(running, t)

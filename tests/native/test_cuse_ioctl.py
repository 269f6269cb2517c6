"""The CUSE server's ioctl handlers and the kernel's retry protocol, without a guest.

The slow suite runs `busbridge mount` on a real kernel (test_cuse_guest.py).  Here
the part of fs/fuse/ioctl.c that matters — copy in the regions the server asks
for, call again, copy out what it returns into the regions it named, at most 256
of them — is played by :func:`kernel_ioctl` on this process's own memory, so each
handler's requests and their order are checked in the default run against the
simulated board.
"""

from __future__ import annotations

import ctypes
import errno
import struct
from collections.abc import Iterator

import pytest
from conftest import Running, start_server_thread, stop_server_thread

from bridge.buses.linux import abi
from bridge.config import load_board
from bridge.native.agent import Agent
from bridge.native.cuse import FUSE_IOCTL_MAX_IOV, Memory, OpenFile, Retry, i2c_ioctl, spi_ioctl
from bridge.native.i2cdev import I2cAdapter
from bridge.native.spidev import SpidevNode


@pytest.fixture(scope="module")
def agent() -> Iterator[Agent]:
    running: Running
    running, t = start_server_thread(load_board(None))
    a = Agent.from_env({"BUSBRIDGE_URL": running.url})
    try:
        yield a
    finally:
        a.link.close()
        stop_server_thread(running, t)


def kernel_ioctl(handler, *args) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """fuse_do_ioctl() for an unrestricted ioctl: (result, number of calls made)."""
    ins: list[tuple[int, int]] = []
    outs: list[tuple[int, int]] = []
    for calls in range(1, 10):
        data = b"".join(ctypes.string_at(a, n) for a, n in ins)
        mem = Memory(data, sum(n for _, n in outs))
        try:
            result, out = handler(*args, mem)
        except Retry:
            assert len(mem.ins) + len(mem.outs) <= FUSE_IOCTL_MAX_IOV
            ins, outs = mem.ins, mem.outs
            continue
        assert len(out) <= sum(n for _, n in outs)
        at = 0
        for a, n in outs:
            ctypes.memmove(a, out[at : at + n], min(n, len(out) - at))
            at += n
        return result, calls
    raise AssertionError("the handler never finished")


def test_i2c_rdwr_asks_for_args_then_messages_then_buffers(agent: Agent) -> None:
    h, funcs = agent.open_i2c(1)
    dev = agent.device(h)
    assert isinstance(dev, I2cAdapter)
    reg = ctypes.create_string_buffer(b"\x0f", 1)
    got = ctypes.create_string_buffer(2)
    msgs = (abi.I2cMsg * 2)()
    msgs[0].addr, msgs[0].flags, msgs[0].len, msgs[0].buf = 0x48, 0, 1, ctypes.addressof(reg)
    msgs[1].addr, msgs[1].flags, msgs[1].len = 0x48, abi.I2C_M_RD, 2
    msgs[1].buf = ctypes.addressof(got)
    rdwr = abi.I2cRdwrIoctlData(ctypes.addressof(msgs), 2)
    f = OpenFile(2)
    result, calls = kernel_ioctl(i2c_ioctl, dev, funcs, f, abi.I2C_RDWR, ctypes.addressof(rdwr))
    assert (result, got.raw) == (2, b"\x01\x17")
    assert calls == 4  # the struct, the message array, the buffers, then the transfer
    msgs[0].addr = msgs[1].addr = 0x33  # NACK: a short count, the read buffer untouched
    got.raw = b"\x5a\x5a"
    result, _ = kernel_ioctl(i2c_ioctl, dev, funcs, f, abi.I2C_RDWR, ctypes.addressof(rdwr))
    assert (result, got.raw) == (0, b"\x5a\x5a")
    rdwr.nmsgs = 43
    with pytest.raises(OSError, match="msgs") as e:
        kernel_ioctl(i2c_ioctl, dev, funcs, f, abi.I2C_RDWR, ctypes.addressof(rdwr))
    assert e.value.errno == errno.EINVAL


def test_i2c_smbus_and_funcs_write_back_only_what_the_kernel_would(agent: Agent) -> None:
    h, funcs = agent.open_i2c(1)
    dev = agent.device(h)
    assert isinstance(dev, I2cAdapter)
    f = OpenFile(2)
    assert i2c_ioctl(dev, funcs, f, abi.I2C_SLAVE, 0x48, Memory(b"", 0)) == (0, b"")
    data = abi.I2cSmbusData()
    args = abi.I2cSmbusIoctlData(abi.I2C_SMBUS_READ, 0x0F, abi.I2C_SMBUS_WORD_DATA,
                                 ctypes.addressof(data))
    assert kernel_ioctl(i2c_ioctl, dev, funcs, f, abi.I2C_SMBUS, ctypes.addressof(args))[0] == 0
    assert data.word == 0x1701
    value = ctypes.c_ulong()
    kernel_ioctl(i2c_ioctl, dev, funcs, f, abi.I2C_FUNCS, ctypes.addressof(value))
    assert value.value == funcs
    quick = abi.I2cSmbusIoctlData(abi.I2C_SMBUS_WRITE, 0, abi.I2C_SMBUS_QUICK, None)
    _, calls = kernel_ioctl(i2c_ioctl, dev, funcs, f, abi.I2C_SMBUS, ctypes.addressof(quick))
    assert calls == 2  # only the argument struct: quick carries no data


def test_spi_message_and_settings(agent: Agent) -> None:
    h, bufsiz = agent.open_spi(0, 1)
    agent.close(h)
    dev = agent.device(h)
    assert isinstance(dev, SpidevNode)
    tx = ctypes.create_string_buffer(b"\xa5\x5a\x0f", 3)
    rx = ctypes.create_string_buffer(3)
    xfers = (abi.SpiIocTransfer * 1)()
    xfers[0].tx_buf, xfers[0].rx_buf, xfers[0].len = ctypes.addressof(tx), ctypes.addressof(rx), 3
    result, _ = kernel_ioctl(spi_ioctl, dev, bufsiz, abi.SPI_IOC_MESSAGE(1),
                             ctypes.addressof(xfers))
    assert (result, rx.raw) == (3, b"\xa5\x5a\x0f")  # loopback
    mode = ctypes.c_uint32(3)
    kernel_ioctl(spi_ioctl, dev, bufsiz, abi.SPI_IOC_WR_MODE32, ctypes.addressof(mode))
    back = ctypes.c_uint8()
    kernel_ioctl(spi_ioctl, dev, bufsiz, abi.SPI_IOC_RD_MODE, ctypes.addressof(back))
    assert back.value == 3
    with pytest.raises(OSError, match="size") as e:
        spi_ioctl(dev, bufsiz, struct.unpack("=I", struct.pack("=I", 0x40216B00))[0], 0,
                  Memory(b"", 0))
    assert e.value.errno == errno.EINVAL  # SPI_IOC_MESSAGE of 33 bytes

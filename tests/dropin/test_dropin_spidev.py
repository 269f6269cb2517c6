"""The spidev-compatible SpiDev over a real server, with py-spidev 3.8's traps.

Where the trap is about argument checking, the real spidev module (installed
with the ``board`` extra) is asked too, on an unopened device, and both must
raise the same exception type.
"""

from __future__ import annotations

import errno

import pytest
import spidev
from conftest import Running, spi_log

from bridge.config import Board
from bridge.dropin.spidev import SpiDev

LOOPBACK, LIS3DH = 0, 1


def outcome(fn: object) -> type[BaseException] | None:
    try:
        fn()  # type: ignore[operator]
    except Exception as e:
        return type(e)
    return None


ATTRIBUTE_CASES = [
    ("mode", 4), ("mode", "0"), ("mode", 1),
    ("bits_per_word", 7), ("bits_per_word", 33), ("bits_per_word", 8), ("bits_per_word", 8.0),
    ("max_speed_hz", "fast"), ("max_speed_hz", 1000),
    ("cshigh", 1), ("cshigh", True), ("lsbfirst", 0), ("threewire", 1), ("loop", None),
    ("no_cs", 1), ("no_cs", False),
]


@pytest.mark.parametrize(("attr", "value"), ATTRIBUTE_CASES)
def test_attribute_checks_match_the_real_spidev(attr: str, value: object) -> None:
    real = spidev
    theirs = outcome(lambda: setattr(real.SpiDev(), attr, value))
    ours = outcome(lambda: setattr(SpiDev(), attr, value))
    assert ours is theirs


@pytest.mark.parametrize("call", [
    lambda d: d.xfer2([1], speed_hz=1),
    lambda d: d.xfer([1], delay_usecs=1),
    lambda d: d.writebytes([]),
    lambda d: d.writebytes([0] * 4097),
    lambda d: d.xfer([0] * 4097),
    lambda d: d.xfer2(["a"]),
])
def test_call_checks_match_the_real_spidev(call: object) -> None:
    real = spidev
    theirs = outcome(lambda: call(real.SpiDev()))  # type: ignore[operator]
    ours = outcome(lambda: call(SpiDev()))  # type: ignore[operator]
    assert ours is theirs
    assert ours is not None


def test_unopened_defaults_match_the_real_spidev() -> None:
    real = spidev.SpiDev()
    ours = SpiDev()
    for attr in ("mode", "bits_per_word", "max_speed_hz", "cshigh", "lsbfirst", "threewire",
                 "loop", "no_cs"):
        assert getattr(ours, attr) == getattr(real, attr), attr
        assert type(getattr(ours, attr)) is type(getattr(real, attr)), attr
    assert ours.fileno() == real.fileno() == -1


def test_xfer_overwrites_a_list_and_returns_that_list(remote: Running) -> None:
    with SpiDev(0, LOOPBACK) as dev:
        tx = [0xDE, 0xAD, 0x1BE]  # values are bytes: 0x1BE goes out as 0xBE
        for fn in (dev.xfer, dev.xfer2):
            data = list(tx)
            rx = fn(data)
            assert rx is data
            assert data == [0xDE, 0xAD, 0xBE]
        t = (1, 2, 3)
        rx = dev.xfer2(t)
        assert type(rx) is tuple
        assert rx == (1, 2, 3)
        assert rx is not t


def test_xfer_args_are_positional_and_reach_the_transfer_head(remote: Running, sim: Board
                                                              ) -> None:
    dev = SpiDev(0, LOOPBACK)
    dev.mode = 3
    dev.max_speed_hz = 1_000_000
    dev.xfer2([1, 2], 2_000_000, 5, 8)
    dev.xfer([3])
    *_, first, second = spi_log(sim)
    h1, h2 = first.transfers[0].head, second.transfers[0].head  # type: ignore[attr-defined]
    assert (h1.freq, h1.cs_delay_hold_ns, h1.mode & 3) == (2_000_000, 5000, 3)
    assert (h2.freq, h2.mode & 3) == (1_000_000, 3)
    dev.max_speed_hz = 50_000_000  # above the controller's 10 MHz: clamped, as the SPI core does
    dev.xfer([4])
    assert spi_log(sim)[-1].transfers[0].head.freq == 10_000_000  # type: ignore[attr-defined]


def test_xfer3_takes_any_size_and_returns_a_tuple(remote: Running, sim: Board) -> None:
    dev = SpiDev(0, LOOPBACK)
    data = [i & 0xFF for i in range(10000)]
    before = len(spi_log(sim))
    rx = dev.xfer3(data)
    assert type(rx) is tuple
    assert list(rx) == data
    assert data == [i & 0xFF for i in range(10000)]  # not mutated
    assert len(spi_log(sim)) - before == 3  # 4096-byte chunks


def test_readbytes_clamps_silently_and_writebytes2_takes_any_buffer(remote: Running, sim: Board
                                                                    ) -> None:
    dev = SpiDev(0, LOOPBACK)
    assert len(dev.readbytes(5000)) == 4096
    assert dev.readbytes(0) == [0]
    before = len(spi_log(sim))
    dev.writebytes2(bytearray(range(256)) * 20)  # 5120 bytes
    dev.writebytes2(memoryview(b"\x01\x02"))
    dev.writebytes2([7, 8, 9])
    sent = [e.transfers[0].tx for e in spi_log(sim)[before:]]  # type: ignore[attr-defined]
    assert [len(s) for s in sent] == [4096, 1024, 2, 3]
    assert sent[-1] == b"\x07\x08\x09"


def test_booleans_and_modes_the_controller_lacks_fail_like_spi_setup(remote: Running) -> None:
    dev = SpiDev(0, LIS3DH)
    dev.cshigh = True
    assert dev.cshigh is True
    assert dev.mode == 0
    for attr in ("threewire", "no_cs"):
        with pytest.raises(OSError, match="Invalid argument") as info:
            setattr(dev, attr, True)
        assert info.value.errno == errno.EINVAL
        assert getattr(dev, attr) is False


def test_lis3dh_registers_through_raw_spidev(remote: Running) -> None:
    """The LIS3DH's own protocol: bit 7 read, bit 6 auto-increment."""
    dev = SpiDev(0, LIS3DH)
    assert dev.xfer2([0x80 | 0x0F, 0])[1] == 0x33  # WHO_AM_I
    dev.xfer2([0x23, 0x88])  # CTRL_REG4: HR, +-2 g
    z = dev.xfer2([0xC0 | 0x2C, 0, 0])
    assert int.from_bytes(bytes(z[1:]), "little", signed=True) >> 4 == 1000  # 1 mg/digit


def test_missing_bus_or_chip_select_is_enoent(remote: Running) -> None:
    with pytest.raises(FileNotFoundError):
        SpiDev(3, 0)
    with pytest.raises(FileNotFoundError):
        SpiDev(0, 5)
    dev = SpiDev()
    dev.open_path("/dev/spidev0.1")
    assert dev.fileno() > 0
    dev.close()
    assert dev.fileno() == -1

"""CircuitPython ``busio.I2C`` / ``busio.SPI`` (Blinka's surface) over busbridge.

Two rules from how Adafruit drivers use these objects:

* ``try_lock()`` is spun in busy loops (adafruit_bus_device), so it only
  flips a local lock and never touches the network; ``SPI.configure()`` runs
  on every ``SPIDevice`` entry, so it only stores the settings, which travel
  in the next transfer's ``transfer_head``.
* A chip select driven as a GPIO (``digitalio.DigitalInOut`` on a CS pin)
  frames several ``write``/``readinto`` calls as one device command.  A
  virtio-spi message cannot leave CS asserted, so the calls of one frame are
  gathered: writes wait, and each read goes out in ONE message together with
  the writes before it; writes left at deselect go out then.  (A write
  after a read in the same frame starts a new CS frame on the remote side.)
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from protocol.virtio import I2CStatus, SpiMode, SpiTransfer, read, write

from ..client import spi_xfer
from .session import DropinSession, call
from .session import session as default_session

__all__ = ["I2C", "SPI", "Pin"]


@dataclass(frozen=True)
class Pin:
    """A header pin (Raspberry Pi BCM numbering), as Blinka's ``board`` names them."""

    id: int
    name: str = ""

    def __repr__(self) -> str:
        return f"board.{self.name}" if self.name else f"Pin({self.id})"


#: (SCL, SDA) pin ids -> local I2C bus; SCK pin id -> local SPI bus (Raspberry Pi header).
I2C_PORTS: dict[tuple[int, int], int] = {(3, 2): 1, (1, 0): 0}
SPI_PORTS: dict[int, int] = {11: 0, 21: 1}


def _span(buf: Any, start: int, end: int | None) -> tuple[int, int]:
    n = len(buf)
    end = n if end is None else min(end, n)
    return start, max(end, start)


class _Lockable:
    _session: DropinSession

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deinited = False

    @property
    def session(self) -> DropinSession:
        """The connection this bus object talks through."""
        return self._session

    def try_lock(self) -> bool:
        """Take the bus without waiting; never a network round trip."""
        self._check()
        return self._lock.acquire(blocking=False)

    def unlock(self) -> None:
        if self._lock.locked():
            self._lock.release()

    @property
    def deinited(self) -> bool:
        """``deinit()`` was called: a new object is needed."""
        return self._deinited

    def _check(self) -> None:
        if self._deinited:
            raise ValueError("Object has been deinitialized and can no longer be used. "
                             "Create a new object.")


class I2C(_Lockable):
    """``busio.I2C(scl, sda, frequency=100000)`` on the remote bus behind the local port.

    ``bus`` names the local bus directly (the pins are then ignored);
    ``session`` picks a connection other than the process's default.
    """

    def __init__(self, scl: Pin | None = None, sda: Pin | None = None, *,
                 frequency: int = 100000, timeout: int = 255, bus: int | str | None = None,
                 session: DropinSession | None = None) -> None:
        super().__init__()
        if bus is None:
            key = (getattr(scl, "id", None), getattr(sda, "id", None))
            if key not in I2C_PORTS:
                raise ValueError(f"No Hardware I2C on (scl,sda)={(scl, sda)}\n"
                                 f"Valid I2C ports: {sorted(I2C_PORTS)}")
            bus = I2C_PORTS[key]
        self._session = session or default_session()
        local = str(bus).removeprefix("/dev/i2c-")
        # Connect now: the first try_lock() of a driver must not wait on the network.
        self._bus = self._session.resolve("i2c", local, f"/dev/i2c-{local}")
        self.frequency = frequency
        self._rlock = threading.RLock()

    def __enter__(self) -> I2C:
        self._rlock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._rlock.release()
        self.deinit()

    def deinit(self) -> None:
        self._deinited = True

    def _transfer(self, msgs: list[Any]) -> list[bytes]:
        self._check()
        client = self._session.client
        return call(lambda: client.transfer(self._bus, msgs))

    def scan(self) -> list[int]:
        """Addresses 0x08..0x77 that ACK a zero-length write, probed a frame at a time."""
        self._check()
        client = self._session.client
        step = client.welcome.limits.max_requests
        found: list[int] = []
        for first in range(0x08, 0x78, step):
            addrs = list(range(first, min(first + step, 0x78)))
            msgs = [write(a) for a in addrs]
            result = call(lambda: client.i2c(self._bus, msgs))  # noqa: B023 - called at once
            found += [a for a, st in zip(addrs, result.status, strict=True) if st == I2CStatus.OK]
        return found

    def writeto(self, address: int, buffer: Any, *, start: int = 0, end: int | None = None,
                stop: bool = True) -> None:
        s, e = _span(buffer, start, end)
        self._transfer([write(address, bytes(buffer[s:e]))])

    def readfrom_into(self, address: int, buffer: Any, *, start: int = 0,
                      end: int | None = None, stop: bool = True) -> None:
        s, e = _span(buffer, start, end)
        (data,) = self._transfer([read(address, e - s)])
        buffer[s:e] = data

    def writeto_then_readfrom(self, address: int, buffer_out: Any, buffer_in: Any, *,
                              out_start: int = 0, out_end: int | None = None,
                              in_start: int = 0, in_end: int | None = None,
                              stop: bool = False) -> None:
        """ONE combined transaction (repeated START) unless ``stop`` asks for two."""
        os_, oe = _span(buffer_out, out_start, out_end)
        is_, ie = _span(buffer_in, in_start, in_end)
        out = write(address, bytes(buffer_out[os_:oe]))
        if stop:
            self._transfer([out])
            (data,) = self._transfer([read(address, ie - is_)])
        else:
            (data,) = self._transfer([out, read(address, ie - is_)])
        buffer_in[is_:ie] = data


# ---------------------------------------------------------------------------
# SPI and GPIO chip selects
# ---------------------------------------------------------------------------


@dataclass
class _Frame:
    """A chip select held active by a GPIO: the remote CS and the writes not yet sent."""

    cs: int
    cs_high: bool
    pending: list[SpiTransfer] = field(default_factory=list)
    spi: SPI | None = None


_frames: dict[int, _Frame] = {}
_frames_lock = threading.Lock()


def cs_select(local_bus: int, cs: int, cs_high: bool) -> None:
    with _frames_lock:
        _frames[local_bus] = _Frame(cs, cs_high)


def cs_deselect(local_bus: int, cs: int) -> None:
    with _frames_lock:
        frame = _frames.get(local_bus)
        if frame is None or frame.cs != cs:
            return
        del _frames[local_bus]
    if frame.pending and frame.spi is not None:
        frame.spi._send(frame.cs, frame.pending)


class SPI(_Lockable):
    """``busio.SPI(clock, MOSI=None, MISO=None)`` on the remote bus behind the local port.

    Without a GPIO chip select active, transfers go to remote chip select
    ``cs`` (default 0, the bus's hardware CS0), one message per call.
    """

    def __init__(self, clock: Pin | None = None, MOSI: Pin | None = None,
                 MISO: Pin | None = None, *, bus: int | None = None, cs: int = 0,
                 session: DropinSession | None = None) -> None:
        super().__init__()
        if bus is None:
            cid = getattr(clock, "id", None)
            if cid not in SPI_PORTS:
                raise ValueError(f"No Hardware SPI on (SCLK, MOSI, MISO)={(clock, MOSI, MISO)}")
            bus = SPI_PORTS[cid]
        self._local = bus
        self._session = session or default_session()
        self._bus = self._session.resolve("spi", bus, f"/dev/spidev{bus}.{cs}")
        info = self._session.welcome.spi_bus(self._bus)
        assert info is not None
        self._max_hz = info.config.max_freq_hz
        self._cs = cs
        self._baudrate = 100000
        self._polarity = 0
        self._phase = 0
        self._bits = 8

    def deinit(self) -> None:
        self._deinited = True

    def __enter__(self) -> SPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.deinit()

    def configure(self, *, baudrate: int = 100000, polarity: int = 0, phase: int = 0,
                  bits: int = 8) -> None:
        """Store the settings (no I/O): each transfer carries them in its head."""
        self._check()
        if not self._lock.locked():
            raise RuntimeError("First call try_lock()")
        self._baudrate, self._polarity, self._phase, self._bits = baudrate, polarity, phase, bits

    @property
    def frequency(self) -> int:
        return self._baudrate

    def _head(self, tx: bytes | None, rx_len: int | None, cs_high: bool) -> SpiTransfer:
        speed = self._baudrate
        if self._max_hz and speed > self._max_hz:
            speed = self._max_hz
        mode = (self._polarity and SpiMode.CPOL) | (self._phase and SpiMode.CPHA)
        if cs_high:
            mode |= SpiMode.CS_HIGH
        return spi_xfer(tx, rx_len, speed_hz=speed, mode=int(mode), bits_per_word=self._bits)

    def _send(self, cs: int, transfers: Sequence[SpiTransfer]) -> list[bytes]:
        client = self._session.client
        return call(lambda: client.spi_transfer(self._bus, cs, list(transfers)))

    def _run(self, tx: bytes | None, rx_len: int | None) -> bytes:
        self._check()
        with _frames_lock:
            frame = _frames.get(self._local)
            if frame is not None:
                frame.spi = self
        if frame is None:
            reads = self._send(self._cs, [self._head(tx, rx_len, False)])
            return reads[0] if reads else b""
        t = self._head(tx, rx_len, frame.cs_high)
        if not t.rx_len:
            frame.pending.append(t)  # sent with the next read, or at deselect
            return b""
        transfers = [*frame.pending, t]
        frame.pending.clear()
        reads = self._send(frame.cs, transfers)
        return reads[-1]

    def write(self, buffer: Any, *, start: int = 0, end: int | None = None) -> None:
        s, e = _span(buffer, start, end)
        if e > s:
            self._run(bytes(buffer[s:e]), 0)

    def readinto(self, buffer: Any, *, start: int = 0, end: int | None = None,
                 write_value: int = 0) -> None:
        s, e = _span(buffer, start, end)
        if e > s:
            buffer[s:e] = self._run(bytes([write_value & 0xFF]) * (e - s), None)

    def write_readinto(self, buffer_out: Any, buffer_in: Any, *, out_start: int = 0,
                       out_end: int | None = None, in_start: int = 0,
                       in_end: int | None = None) -> None:
        os_, oe = _span(buffer_out, out_start, out_end)
        is_, ie = _span(buffer_in, in_start, in_end)
        if oe - os_ != ie - is_:
            raise RuntimeError("Buffer slices must be of equal length.")
        if oe > os_:
            buffer_in[is_:ie] = self._run(bytes(buffer_out[os_:oe]), None)

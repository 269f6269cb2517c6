"""A simulated SPI controller: devices on chip selects, fed the bytes on the wire.

Devices see what a logic analyser on the target's pins would: CS framing
(select/deselect, including the toggles ``cs_change`` asks for) and the MOSI
stream, to which they answer MISO byte for byte.  Words wider than 8 bits
and LSB-first transfers are turned into wire order on the way in and back on
the way out, so a device never has to know the client's word format.
"""

from __future__ import annotations

import array
import errno
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import ClassVar, TypedDict

from protocol.virtio import (
    SPI_MF_CPHA_0,
    SPI_MF_CPHA_1,
    SPI_MF_CPOL_0,
    SPI_MF_CPOL_1,
    SPI_MF_CS_HIGH,
    SPI_MF_LOOPBACK,
    SPI_MF_LSB_FIRST,
    SpiConfig,
    SpiMode,
    SpiTransfer,
    bytes_per_word,
)

from ..base import BusError, SpiBackend, spi_wire_time
from .common import DEFAULT_LOG_SIZE, SpiLogEntry, may_stall, outcome

_LOOP = int(SpiMode.LOOP)
_LSB_FIRST = int(SpiMode.LSB_FIRST)

#: 8, 16 and 32 bits per word (mask bit n = n + 1 bits).
SIM_SPI_BITS_PER_WORD_MASK = (1 << 7) | (1 << 15) | (1 << 31)
SIM_SPI_MODE_FUNC = (
    SPI_MF_CPHA_0
    | SPI_MF_CPHA_1
    | SPI_MF_CPOL_0
    | SPI_MF_CPOL_1
    | SPI_MF_CS_HIGH
    | SPI_MF_LSB_FIRST
    | SPI_MF_LOOPBACK
)
SIM_SPI_MAX_FREQ_HZ = 50_000_000
SIM_SPI_MAX_DELAY_NS = 1_000_000


def sim_spi_config(cs_max_number: int = 1, **overrides: int) -> SpiConfig:
    """The simulator's default capabilities: generous, so clients can test every head field."""
    fields: dict[str, int] = {
        "cs_max_number": cs_max_number,
        "cs_change_supported": 1,
        "tx_nbits_supported": 0,
        "rx_nbits_supported": 0,
        "bits_per_word_mask": SIM_SPI_BITS_PER_WORD_MASK,
        "mode_func_supported": SIM_SPI_MODE_FUNC,
        "max_freq_hz": SIM_SPI_MAX_FREQ_HZ,
        "max_word_delay_ns": SIM_SPI_MAX_DELAY_NS,
        "max_cs_setup_ns": SIM_SPI_MAX_DELAY_NS,
        "max_cs_hold_ns": SIM_SPI_MAX_DELAY_NS,
        "max_cs_inactive_ns": SIM_SPI_MAX_DELAY_NS,
    }
    fields.update(overrides)
    return SpiConfig(**fields)


class SpiDeviceOptions(TypedDict, total=False):
    """What every simulated SPI device takes: its name and fault knobs (see :class:`SpiDevice`).

    Devices pass them on with ``**options: Unpack[SpiDeviceOptions]``, and the
    board-file specs hand them over as one dict.
    """

    name: str
    fail: bool
    fail_index: int
    stall_s: float


class SpiDevice:
    """Base class of a simulated SPI target.

    Fault knobs, plain attributes to flip at run time:

    * ``fail``: the message fails with EIO (TRANS_ERR) when it reaches
      transfer ``fail_index``; earlier transfers ran, that one and the rest
      did not, CS is still released.
    * ``stall_s``: the message takes that much longer (``time.sleep`` before
      CS is asserted), for the server's deadline to catch.

    Subclasses override ``select``/``deselect``/``exchange``; the bus calls
    them with its lock held.
    """

    #: Whether ``exchange`` does Python work for every byte (most devices do); a
    #: device that answers in a few bulk operations sets it False, so the server
    #: may run long messages to it on its event loop (SPEC §7's inline bound).
    per_byte: ClassVar[bool] = True

    def __init__(
        self, *, name: str = "", fail: bool = False, fail_index: int = 0, stall_s: float = 0.0
    ) -> None:
        self.name = name or type(self).__name__
        self.fail = fail
        self.fail_index = fail_index
        self.stall_s = stall_s

    def select(self) -> None:
        """CS went active."""

    def deselect(self) -> None:
        """CS went inactive: the end of a command for most devices."""

    def exchange(self, mosi: bytes) -> bytes:
        """Clock ``mosi`` in (wire order, MSB first); return as many MISO bytes."""
        return b"\xff" * len(mosi)


class FloatingMiso(SpiDevice):
    """What an empty chip select reads: nobody drives MISO, the pull-up gives 0xFF."""

    per_byte = False


_BITREV = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))
_ARRAY_CODE = {2: "H", 4: "I"}


def _swap_words(data: bytes, width: int) -> bytes:
    a = array.array(_ARRAY_CODE[width])
    assert a.itemsize == width
    a.frombytes(data)
    a.byteswap()
    return a.tobytes()


def to_wire(data: bytes, bits_per_word: int, lsb_first: bool) -> bytes:
    """Memory buffer (native little-endian words) -> bytes as a device clocks them.

    MSB first, a wide word goes out high byte first.  LSB first, bit 0 of the
    word goes first, so the device sees the little-endian bytes bit-reversed.
    Widths that are not a multiple of 8 are clocked as whole bytes.
    """
    if lsb_first:
        return data.translate(_BITREV)
    width = bytes_per_word(bits_per_word)
    if width == 1:
        return data
    return _swap_words(data, width)


def from_wire(data: bytes, bits_per_word: int, lsb_first: bool) -> bytes:
    """Inverse of :func:`to_wire` (both transforms are involutions)."""
    return to_wire(data, bits_per_word, lsb_first)


class SimSpiBus(SpiBackend):
    """A simulated SPI controller with devices on chip selects ``0..cs_max_number-1``.

    Half-duplex reads clock out 0x00 on MOSI (what Linux's SPI core sends
    without a tx buffer).  An empty chip select reads 0xFF.  A transfer with
    the LOOP mode bit is looped back inside the controller: rx = tx (zeros for
    a read), and the device only sees the CS edges, not the data.  CPHA/CPOL
    and CS_HIGH are accepted and not modelled (every simulated device works in
    every mode).  ``timing`` makes a message last its wire time plus the
    requested delays; ``log`` is a bounded deque of :class:`SpiLogEntry`.
    """

    def __init__(
        self,
        name: str,
        *,
        config: SpiConfig | None = None,
        description: str = "",
        devices: dict[int, SpiDevice] | None = None,
        timing: bool = False,
        log_size: int = DEFAULT_LOG_SIZE,
    ) -> None:
        devices = dict(devices or {})
        if config is None:
            config = sim_spi_config(max(devices, default=0) + 1)
        self.name = name
        self.description = description
        self.config = config
        self.timing = timing
        self.log: deque[SpiLogEntry] = deque(maxlen=max(log_size, 0))
        self._lock = threading.Lock()
        self._seq = 0
        self._devices: dict[int, SpiDevice] = {}
        self._floating = FloatingMiso(name="no device")
        for cs, dev in devices.items():
            self.add(cs, dev)


    @property
    def lock(self) -> threading.Lock:
        """Held around every transaction; test control takes it so a change lands between two."""
        return self._lock
    def __repr__(self) -> str:
        devs = ", ".join(f"cs{cs} {d.name}" for cs, d in self.devices().items())
        return f"SimSpiBus({self.name!r}: {devs or 'no devices'})"

    def add(self, cs: int, device: SpiDevice) -> SpiDevice:
        """Put ``device`` on chip select ``cs``; refuses an occupied or nonexistent one."""
        if not 0 <= cs < self.config.cs_max_number:
            raise ValueError(
                f"bus {self.name}: chip select {cs} outside 0..{self.config.cs_max_number - 1}"
            )
        with self._lock:
            if cs in self._devices:
                raise ValueError(
                    f"bus {self.name}: chip select {cs} already used by {self._devices[cs].name}"
                )
            self._devices[cs] = device
        return device

    def remove(self, cs: int) -> SpiDevice:
        with self._lock:
            return self._devices.pop(cs)

    def device(self, cs: int) -> SpiDevice:
        """The device on ``cs``; KeyError if it is empty."""
        try:
            return self._devices[cs]
        except KeyError:
            raise KeyError(f"bus {self.name}: no device on chip select {cs}") from None

    def devices(self) -> dict[int, SpiDevice]:
        """Chip select -> device, for the occupied chip selects."""
        return dict(sorted(self._devices.items()))

    def log_snapshot(self) -> list[SpiLogEntry]:
        with self._lock:
            return list(self.log)

    @property
    def may_block(self) -> bool:
        """Only simulated wire time and stalls sleep; otherwise a transfer is pure Python."""
        return may_stall(self.timing, self._devices.values())

    def transfer(self, cs: int, transfers: Sequence[SpiTransfer]) -> list[bytes]:
        with self._lock:
            return self._transfer(cs, transfers)

    def _transfer(self, cs: int, transfers: Sequence[SpiTransfer]) -> list[bytes]:
        dev = self._devices.get(cs, self._floating)
        rx: list[bytes] = []
        failure: BusError | None = None
        if dev.stall_s > 0:
            time.sleep(dev.stall_s)
        last = len(transfers) - 1
        dev.select()
        try:
            for i, t in enumerate(transfers):
                if dev.fail and i >= dev.fail_index:
                    raise BusError(
                        errno.EIO,
                        f"{dev.name} failed (simulated)",
                        i,
                    )
                out = self._clock(dev, t)
                if t.rx_len:
                    rx.append(out)
                if t.head.cs_change and i < last:
                    dev.deselect()
                    dev.select()
        except BusError as e:
            failure = e
        finally:
            dev.deselect()
        self._seq += 1
        if self.log.maxlen:
            errno_, index, error = outcome(failure)
            self.log.append(SpiLogEntry(self._seq, cs, tuple(transfers), tuple(rx),
                                        errno=errno_, index=index, error=error))
        if self.timing:
            time.sleep(self._wire_time(transfers))
        if failure is not None:
            raise failure
        return rx

    @staticmethod
    def _clock(dev: SpiDevice, t: SpiTransfer) -> bytes:
        mosi = t.tx if t.tx is not None else bytes(t.rx_len)
        h = t.head
        if h.mode & _LOOP:
            return mosi
        lsb = bool(h.mode & _LSB_FIRST)
        miso = dev.exchange(to_wire(mosi, h.bits_per_word, lsb))
        if len(miso) != len(mosi):  # MISO floats past what the device drives
            miso = (bytes(miso) + b"\xff" * len(mosi))[: len(mosi)]
        return from_wire(bytes(miso), h.bits_per_word, lsb)

    def bulk(self, cs: int) -> bool:
        return not self._devices.get(cs, self._floating).per_byte

    def wire_time(self, transfers: Sequence[SpiTransfer]) -> float | None:
        """With ``timing``, the time a message sleeps (its wire time); else None."""
        return self._wire_time(transfers) if self.timing else None

    def _wire_time(self, transfers: Sequence[SpiTransfer]) -> float:
        return spi_wire_time(transfers, self.config.max_freq_hz or SIM_SPI_MAX_FREQ_HZ)

"""A simulated I2C adapter: devices on a bus, run at the level of START/address/bytes/STOP.

The point of the simulator is to behave like a board a client could meet, so
the bus models what a logic analyser would show: one START, each message
addressed (and ACKed or NACKed) in turn with a repeated START between them,
one STOP at the end.  Devices get those events as hooks, which is what lets an
EEPROM commit its page buffer at STOP and abort it on a repeated START.
"""

from __future__ import annotations

import errno
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, TypedDict

from protocol.handshake import I2C_FUNC_10BIT_ADDR, I2C_FUNC_I2C, I2C_FUNC_SMBUS_EMUL
from protocol.virtio import I2C_FLAGS_M_RD, I2CMsg, format_i2c_addr

from ..base import BusError, I2CBackend, i2c_wire_time
from .common import (
    DEFAULT_LOG_SIZE,
    YIELD_BYTES,
    I2CLogEntry,
    let_others_run,
    outcome,
)

#: What the simulator offers: full I2C, 10-bit addressing, SMBus emulation.
SIM_I2C_FUNCTIONALITY = I2C_FUNC_I2C | I2C_FUNC_10BIT_ADDR | I2C_FUNC_SMBUS_EMUL


class I2CDeviceOptions(TypedDict, total=False):
    """What every simulated I2C device takes besides its address: its name and fault knobs.

    The board-file specs hand these over as one dict.  The device classes
    spell them out in their signatures: mypyc (setup.py) miscompiles
    ``**kw: Unpack[...]``.
    """

    ten_bit: bool
    name: str
    nack: bool
    nack_after_bytes: int | None
    stall_s: float


class I2CDevice:
    """Base class of a simulated I2C target.

    The fault knobs are plain attributes so a test (or a REPL on a running
    server) can flip them between transactions:

    * ``nack``: the device NACKs its address (client sees ENXIO).
    * ``nack_after_bytes``: in a write message, the device ACKs that many
      data bytes and NACKs the next one (EREMOTEIO); counted per message,
      address byte excluded.  ``None`` disables it.
    * ``stall_s``: the device holds the bus for that long (``time.sleep``) each
      time it is addressed, before ACKing; the server's per-request deadline
      is what turns it into an error.

    Subclasses override the hooks ``ack``/``start``/``restart``/``write``/
    ``read``/``stop``; the bus calls them only with the bus lock held.
    """

    def __init__(
        self,
        address: int,
        *,
        ten_bit: bool = False,
        name: str = "",
        nack: bool = False,
        nack_after_bytes: int | None = None,
        stall_s: float = 0.0,
    ) -> None:
        limit = 0x3FF if ten_bit else 0x7F
        if not 0 <= address <= limit:
            raise ValueError(f"I2C address {address:#x} out of range 0..{limit:#x}")
        self.address = address
        self.ten_bit = ten_bit
        self.name = name or type(self).__name__
        self.nack = nack
        self.nack_after_bytes = nack_after_bytes
        self.stall_s = stall_s
        # The class's flags as instance fields: compiled, a ClassVar read on an instance
        # is a generic attribute lookup, a field a load (the bus reads them per message).
        cls = type(self)
        self._ack_hook = cls.custom_ack
        self._restart_hook = cls.custom_restart

    #: Whether the class overrides :meth:`ack` / :meth:`restart`: the bus skips
    #: calling the base class's no-op hooks, once per message, on the hot path.
    custom_ack: ClassVar[bool] = False
    custom_restart: ClassVar[bool] = False

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls.custom_ack = cls.ack is not I2CDevice.ack
        cls.custom_restart = cls.restart is not I2CDevice.restart

    def addresses(self) -> tuple[int, ...]:
        """Every address the device answers (24C04..24C16 answer several)."""
        return (self.address,)

    # -- hooks -------------------------------------------------------------

    def ack(self, address: int, read: bool) -> bool:
        """Device-specific address ACK, e.g. an EEPROM busy in its write cycle."""
        return True

    def start(self, address: int, read: bool) -> None:
        """A START or repeated START addressed to this device was ACKed."""

    def restart(self) -> None:
        """A repeated START happened (to any device) after this one was addressed."""

    def write(self, data: bytes) -> int:
        """Take written bytes; return how many were ACKed (fewer means a data NACK)."""
        return len(data)

    def read(self, length: int) -> bytes:
        """Return ``length`` bytes the device drives on SDA."""
        return b"\xff" * length

    def stop(self) -> None:
        """The STOP ending a transaction in which this device was addressed."""

    def describe(self) -> str:
        return f"{self.name} at {format_i2c_addr(self.address, self.ten_bit)}"


class SimI2CBus(I2CBackend):
    """A simulated I2C adapter holding devices keyed by ``(address, ten_bit)``.

    ``transfer`` runs under a lock, so even without the server's per-bus
    worker two chains can never interleave; ``log`` (a bounded deque of
    :class:`I2CLogEntry`, ``log_size`` 0 disables it) lets tests prove it.
    With ``timing`` on, a transaction also takes its wire time at
    ``frequency_hz`` (9 clocks per byte, address bytes included, plus one per
    START and one for STOP), which benchmarks want and unit tests do not.
    """

    functionality = SIM_I2C_FUNCTIONALITY

    def __init__(
        self,
        name: str,
        *,
        description: str = "",
        devices: Iterable[I2CDevice] = (),
        timing: bool = False,
        frequency_hz: int = 400_000,
        log_size: int = DEFAULT_LOG_SIZE,
        max_msg_len: int = 8192,
    ) -> None:
        if frequency_hz <= 0:
            raise ValueError("frequency_hz must be positive")
        self.name = name
        self.description = description
        self.timing = timing
        self.frequency_hz = frequency_hz
        self.max_msg_len = max_msg_len
        self.log: deque[I2CLogEntry] = deque(maxlen=max(log_size, 0))
        self._lock = threading.Lock()
        self._seq = 0
        self._devices: dict[tuple[int, bool], I2CDevice] = {}
        #: ``_devices`` keyed ``address << 1 | ten_bit``: the transaction's lookup, without
        #: a tuple to build and hash per message.  ``add`` and ``remove`` keep both.
        self._by_key: dict[int, I2CDevice] = {}
        for dev in devices:
            self.add(dev)


    @property
    def lock(self) -> threading.Lock:
        """Held around every transaction; test control takes it so a change lands between two."""
        return self._lock
    def __repr__(self) -> str:
        devs = ", ".join(d.describe() for d in self.devices())
        return f"SimI2CBus({self.name!r}: {devs or 'no devices'})"

    # -- device management -------------------------------------------------

    def add(self, device: I2CDevice) -> I2CDevice:
        """Attach ``device`` at all its addresses; refuses an address already in use."""
        keys = [(a, device.ten_bit) for a in device.addresses()]
        with self._lock:
            for key in keys:
                other = self._devices.get(key)
                if other is not None:
                    raise ValueError(
                        f"bus {self.name}: address {format_i2c_addr(*key)} already used by "
                        f"{other.describe()}"
                    )
            for key in keys:
                self._devices[key] = device
                self._by_key[key[0] << 1 | key[1]] = device
        return device

    def remove(self, address: int, *, ten_bit: bool = False) -> I2CDevice:
        """Detach the device answering ``address`` (all of its addresses)."""
        with self._lock:
            dev = self._devices[(address, ten_bit)]
            for a in dev.addresses():
                del self._devices[(a, ten_bit)]
                del self._by_key[a << 1 | ten_bit]
        return dev

    def device(self, address: int, *, ten_bit: bool = False) -> I2CDevice:
        """The device answering ``address``; KeyError if none."""
        try:
            return self._devices[(address, ten_bit)]
        except KeyError:
            raise KeyError(
                f"bus {self.name}: no device at {format_i2c_addr(address, ten_bit)}"
            ) from None

    def devices(self) -> list[I2CDevice]:
        """Each attached device once, in address order."""
        seen: dict[int, I2CDevice] = {}
        for _key, dev in sorted(self._devices.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            seen.setdefault(id(dev), dev)
        return list(seen.values())

    def log_snapshot(self) -> list[I2CLogEntry]:
        """A copy of the log, safe to iterate while other threads transact."""
        with self._lock:
            return list(self.log)

    # -- the transaction ---------------------------------------------------

    @property
    def may_block(self) -> bool:
        """Only simulated wire time and stalls sleep; otherwise a transfer is pure Python."""
        if self.timing:
            return True
        for d in self._by_key.values():  # noqa: SIM110  (may_stall(), typed: field loads)
            if d.stall_s > 0:
                return True
        return False

    def wire_time(self, msgs: Sequence[I2CMsg]) -> float | None:
        """With ``timing``, the time a transfer sleeps (its wire time); else None."""
        return i2c_wire_time(msgs, self.frequency_hz) if self.timing else None

    def transfer(self, msgs: Sequence[I2CMsg]) -> list[bytes]:
        lock = self._lock  # acquire/release: compiled, cheaper than the `with` protocol
        lock.acquire()
        try:
            return _transact(self, msgs)
        finally:
            lock.release()


def _transact(bus: SimI2CBus, msgs: Sequence[I2CMsg]) -> list[bytes]:
    """One transaction, the bus lock held.  Functions, not methods: compiled, direct calls
    (the bus class is not a native one: its base class is interpreted)."""
    reads: list[bytes] = []
    touched: list[I2CDevice] = []
    failure: BusError | None = None
    devices = bus._by_key
    # A tuple (the server's requests are): compiled, iterating it is native.
    seq: tuple[I2CMsg, ...] = msgs if isinstance(msgs, tuple) else tuple(msgs)
    try:
        for i, m in enumerate(seq):
            if touched:
                for d in touched:
                    if d._restart_hook:
                        d.restart()
            _run_msg(devices, i, m, touched, reads)
    except BusError as e:
        failure = e
    finally:
        for d in touched:
            d.stop()
    bus._seq += 1
    if bus.log.maxlen:
        errno_, index, error = outcome(failure)
        bus.log.append(I2CLogEntry(bus._seq, seq, tuple(reads),
                                   errno=errno_, index=index, error=error, t=time.time()))
    if bus.timing:
        time.sleep(i2c_wire_time(msgs, bus.frequency_hz))
    if failure is not None:
        raise failure
    return reads


def _run_msg(devices: dict[int, I2CDevice], i: int, m: I2CMsg,
             touched: list[I2CDevice], reads: list[bytes]) -> None:
    """One message of a transaction (see :func:`_transact`); ``devices`` is ``_by_key``."""
    dev = devices.get(m.addr << 1 | m.ten_bit)
    if dev is None:
        raise BusError(errno.ENXIO, "no ACK (no device)", i, reads)
    if dev.stall_s > 0:
        time.sleep(dev.stall_s)
    is_read = bool(m.flags & I2C_FLAGS_M_RD)
    if dev.nack or (dev._ack_hook and not dev.ack(m.addr, is_read)):
        why = f"no ACK ({dev.name} NACKed its address)"
        raise BusError(errno.ENXIO, why, i, reads)
    if dev not in touched:
        touched.append(dev)
    dev.start(m.addr, is_read)
    if is_read:
        n = m.length
        data = dev.read(n) if n else b""
        if len(data) != n:  # SDA floats high past what the device drives
            data = (bytes(data) + b"\xff" * n)[:n]
        reads.append(data if type(data) is bytes else bytes(data))
        if n > YIELD_BYTES:
            let_others_run()
        return
    data = m.data
    limit = dev.nack_after_bytes
    if limit is not None and len(data) > limit:
        data = data[:limit]
    acked = dev.write(data) if data else 0
    if acked < len(m.data):
        raise BusError(
            errno.EREMOTEIO,
            f"data byte {acked} not ACKed by {dev.name}",
            i,
            reads,
        )

"""Test control of any simulated device, found by bus and address: what the admin
channel's ``sim.devices`` / ``sim.set`` / ``sim.get`` / ``sim.fault`` ops call.

Chip models (``chips/``) carry the API themselves (:class:`~.model.SimModel`);
the generic devices (register maps, EEPROMs, NOR flash, loopback) get a small
wrapper here with the same methods: their fault knobs, and the timing
parameters a test may want to change.  Every call takes the lock the bus
takes for a transaction (the model's, or the bus's for generic devices), so a
set or a fault lands between two transactions, never inside one.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Literal, Protocol, runtime_checkable

from protocol.admin import chain_status, i2c_messages, spi_transfers

from ..base import I2CBackend, SpiBackend
from .chips.base import I2C_FAULTS, SPI_FAULTS, SpiRegisterFront
from .common import I2CLogEntry, SpiLogEntry
from .i2c import I2CDevice, SimI2CBus
from .i2c_devices import Eeprom24, ModelDevice, RegisterMapDevice
from .model import MAX_STALL_S, Fault, Param, Quantity, SimModel, Value
from .spi import SimSpiBus, SpiDevice
from .spi_devices import LoopbackDevice, SpiNorFlash, SpiRegisterDevice

Kind = Literal["i2c", "spi"]


@runtime_checkable
class Controllable(Protocol):
    """The test-control API every simulated device offers."""

    name: str

    def quantities(self) -> tuple[Quantity, ...]: ...
    def faults(self) -> tuple[Fault, ...]: ...
    def set(self, **values: Value) -> dict[str, Value]: ...
    def get(self) -> dict[str, Value]: ...
    def inject(self, fault: str, **params: object) -> None: ...
    def describe(self) -> dict[str, Any]: ...


class DeviceControl(SimModel):
    """Control of a generic device: its fault knobs; its ``QUANTITIES`` are plain
    attributes of the device, by the same name."""

    MODEL = "device"

    def __init__(self, device: I2CDevice | SpiDevice, lock: threading.Lock | threading.RLock,
                 model: str) -> None:
        super().__init__(name=device.name)
        self.device = device
        self.lock = lock  # type: ignore[assignment]  # the bus's: one transaction at a time
        self.model = model
        for q in self.QUANTITIES:
            self.values[q.name] = getattr(device, q.name)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": self.model}

    def current(self, name: str) -> Value:
        return getattr(self.device, name)  # type: ignore[no-any-return]

    def on_values(self, names: Any) -> None:
        for n in names:
            setattr(self.device, n, self.values[n])

    def faults(self) -> tuple[Fault, ...]:
        return SPI_FAULTS if isinstance(self.device, SpiDevice) else I2C_FAULTS[:1] + I2C_FAULTS[2:]

    def apply_fault(self, fault: str, params: Mapping[str, Value]) -> None:
        d = self.device
        if fault == "clear":
            d.stall_s = 0.0
            if isinstance(d, I2CDevice):
                d.nack, d.nack_after_bytes = False, None
            else:
                d.fail = False
        elif fault == "stall":
            d.stall_s = float(params["seconds"])
        elif fault == "nack" and isinstance(d, I2CDevice):
            d.nack = bool(params["on"])
        elif fault == "nack-after-bytes" and isinstance(d, I2CDevice):
            count = int(params["count"])
            d.nack_after_bytes = None if count < 0 else count
        elif fault == "fail" and isinstance(d, SpiDevice):
            d.fail, d.fail_index = bool(params["on"]), int(params["index"])
        else:
            self.device_fault(fault, params)

    def device_fault(self, fault: str, params: Mapping[str, Value]) -> None:
        super().apply_fault(fault, params)


class EepromControl(DeviceControl):
    """A 24Cxx EEPROM: its write cycle time, ``nack-next`` and ``busy``."""

    QUANTITIES = (Quantity("write_time_s", "s", 0.0, 1.0, 0.0,
                       doc="write cycle after a page write, NACKing its address"),)

    def faults(self) -> tuple[Fault, ...]:
        return (*I2C_FAULTS, Fault("busy", "start a write cycle now (its address NACKs for "
                                   "write_time_s, or SECONDS)",
                                   (Param("seconds", "float", 0.0, 0.0, MAX_STALL_S),)))

    def device_fault(self, fault: str, params: Mapping[str, Value]) -> None:
        d = self.device
        assert isinstance(d, Eeprom24)
        if fault == "nack-next":
            d.nack_next = int(params["count"])
        elif fault == "busy":
            saved = d.write_time_s
            d.write_time_s = float(params["seconds"]) or saved
            d.start_write_cycle()
            d.write_time_s = saved
        else:
            super().device_fault(fault, params)

    def apply_fault(self, fault: str, params: Mapping[str, Value]) -> None:
        if fault == "clear":
            assert isinstance(self.device, Eeprom24)
            self.device.nack_next = 0
        super().apply_fault(fault, params)


class FlashControl(DeviceControl):
    """A SPI NOR flash: its program and erase times."""

    QUANTITIES = (Quantity("program_time_s", "s", 0.0, 1.0, 0.0, doc="page program (WIP set)"),
              Quantity("erase_time_s", "s", 0.0, 10.0, 0.0, doc="sector/block/chip erase"))


def controller(device: I2CDevice | SpiDevice,
               lock: threading.Lock | threading.RLock | None = None) -> Controllable:
    """The test-control API of a simulated device (``lock``: its bus's, for generic devices)."""
    if isinstance(device, ModelDevice | SpiRegisterFront):
        model = device.model
        assert isinstance(model, SimModel)
        return model
    lock = lock or threading.RLock()
    if isinstance(device, Eeprom24):
        return EepromControl(device, lock, "eeprom")
    if isinstance(device, SpiNorFlash):
        return FlashControl(device, lock, "nor_flash")
    return DeviceControl(device, lock, BOARD_TYPES.get(type(device), type(device).__name__))


#: The board file's ``type`` of each generic device class: what ``model`` reports.
BOARD_TYPES: dict[type, str] = {RegisterMapDevice: "regmap", LoopbackDevice: "loopback",
                                SpiRegisterDevice: "spi_regmap"}


def _sim_bus(kind: Kind, buses: Mapping[str, Any], bus: str) -> SimI2CBus | SimSpiBus:
    b = buses.get(bus)
    if b is None:
        raise KeyError(f"no {kind} bus {bus!r}")
    if not isinstance(b, SimI2CBus | SimSpiBus):
        raise ValueError(f"bus {bus} is not simulated")
    return b


def find(i2c: Mapping[str, I2CBackend], spi: Mapping[str, SpiBackend], kind: Kind, bus: str,
         where: int, *, ten_bit: bool = False) -> Controllable:
    """The device at I2C address / SPI chip select ``where`` on a simulated bus.

    KeyError if there is no such bus or device; ValueError ("bus 1 is not
    simulated") for a real bus: the admin channel's error wording.
    """
    b = _sim_bus(kind, i2c if kind == "i2c" else spi, bus)
    if isinstance(b, SimI2CBus):
        return controller(b.device(where, ten_bit=ten_bit), b.lock)
    return controller(b.device(where), b.lock)


def devices(i2c: Mapping[str, I2CBackend], spi: Mapping[str, SpiBackend],
            bus: str | None = None) -> list[dict[str, Any]]:
    """Every device on the simulated buses (or on ``bus``): ``sim.devices``'s answer."""
    out: list[dict[str, Any]] = []
    for kind, buses in (("i2c", i2c), ("spi", spi)):
        for name, b in buses.items():
            if (bus is not None and name != bus) or not isinstance(b, SimI2CBus | SimSpiBus):
                continue
            if isinstance(b, SimI2CBus):
                for d in b.devices():
                    out.append({"kind": kind, "bus": name, "addr": d.address,
                                "ten_bit": d.ten_bit, **controller(d, b.lock).describe()})
            else:
                for cs, sd in b.devices().items():
                    out.append({"kind": kind, "bus": name, "cs": cs,
                                **controller(sd, b.lock).describe()})
    return out


def log_entries(i2c: Mapping[str, I2CBackend], spi: Mapping[str, SpiBackend], kind: Kind,
                bus: str, since: int = 0, limit: int = 100) -> tuple[list[dict[str, Any]], bool]:
    """The transaction log of a simulated bus after sequence number ``since``, oldest
    first, at most ``limit`` entries, and whether more follow: ``sim.log``'s answer.

    Each entry is ``{seq, t, errno, index, error}`` with the I2C ``msgs`` or the
    SPI ``cs`` and ``transfers`` in the maps the live trace uses (SPEC.md §4.12).
    """
    b = _sim_bus(kind, i2c if kind == "i2c" else spi, bus)
    snapshot: list[I2CLogEntry] | list[SpiLogEntry] = b.log_snapshot()
    newer = [e for e in snapshot if e.seq > since]
    out: list[dict[str, Any]] = []
    for e in newer[:limit]:
        m: dict[str, Any] = {"seq": e.seq, "t": e.t}
        if isinstance(e, I2CLogEntry):
            m["msgs"] = i2c_messages(e.msgs, e.reads, chain_status(len(e.msgs), e.index))
        else:
            m["cs"] = e.cs
            m["transfers"] = spi_transfers(e.transfers, e.rx,
                                           chain_status(len(e.transfers), e.index, 2))
        m.update(errno=e.errno, index=e.index, error=e.error)
        out.append(m)
    return out, len(newer) > limit

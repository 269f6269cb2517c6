"""What every simulated chip model shares: the test-control API, value sources and time.

A chip model (``bridge/buses/sim/chips/``) is what a test or the admin channel's
``sim.set`` / ``sim.get`` / ``sim.fault`` ops talk to.  Each model declares

* its settable **quantities** (:class:`Quantity`: name, unit, range), which
  :meth:`SimModel.set` checks and :meth:`SimModel.get` reports;
* the **faults** it supports (:class:`Fault`), which :meth:`SimModel.inject` runs.

Every public method takes the model's lock, the same lock its bus hooks hold, so
a ``set`` from the server's event loop lands between two bus operations of the
worker thread, never inside one: a burst read of a result shows the old value or
the new one, never half of each.

Time is a ``clock`` (default :func:`time.monotonic`, the server's clock) injected
into each model, so unit tests step a fake clock instead of sleeping.  Nothing
runs in the background: a model works out what happened since the last bus
access when it is next accessed.
"""

from __future__ import annotations

import math
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

Clock = Callable[[], float]
#: A quantity's value as the control API carries it (msgpack-friendly scalars).
Value = float | int | bool | str
ValueType = Literal["float", "int", "bool", "str"]

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "float": (float, int),
    "int": (int,),
    "bool": (bool,),
    "str": (str,),
}


@dataclass(frozen=True)
class Quantity:
    """Something a chip measures or holds that a test may set (``temperature``, °C)."""

    name: str
    unit: str
    min: float
    max: float
    default: Value
    type: ValueType = "float"
    doc: str = ""
    #: False for what the chip only reports (a display's contrast, an expander's outputs).
    settable: bool = True

    def check(self, value: object) -> Value:
        """``value`` converted to this quantity's type; ValueError if it does not fit."""
        if isinstance(value, bool) and self.type != "bool":
            raise ValueError(f"{self.name}: expected a {self.type}, not a boolean")
        if not isinstance(value, _PY_TYPES[self.type]):
            raise ValueError(f"{self.name}: expected a {self.type}, got {value!r}")
        if self.type == "float":
            v = float(value)  # type: ignore[arg-type]
            if not math.isfinite(v) or not self.min <= v <= self.max:
                raise ValueError(f"{self.name} = {value!r} {self.unit} is outside "
                                 f"{self.min:g}..{self.max:g} {self.unit}")
            return v
        if self.type == "int":
            assert isinstance(value, int)
            if not self.min <= value <= self.max:
                raise ValueError(f"{self.name} = {value!r} is outside "
                                 f"{int(self.min)}..{int(self.max)}")
            return value
        assert isinstance(value, bool | str)
        return value

    def describe(self) -> dict[str, Value]:
        return {"name": self.name, "unit": self.unit, "min": float(self.min),
                "max": float(self.max),
                "type": self.type, "default": self.default, "doc": self.doc,
                "settable": self.settable}


@dataclass(frozen=True)
class Param:
    """One parameter of a fault (``count`` of ``nack-next``)."""

    name: str
    type: ValueType
    default: Value | None = None
    #: The range a number must lie in: a stall of 1e9 s, or a negative count, would
    #: wedge the bus or mean nothing, so it is refused before anything changes.
    min: float = -1e18
    max: float = 1e18

    def describe(self) -> dict[str, Value | None]:
        """``{name, type, default}`` and, for a number, ``min``/``max`` (SPEC.md §4.10)."""
        d: dict[str, Value | None] = {"name": self.name, "type": self.type,
                                      "default": self.default}
        if self.type in ("int", "float"):
            d["min"], d["max"] = float(self.min), float(self.max)
        return d


#: The longest ``stall`` (or EEPROM ``busy``) a fault may ask for, in seconds.
MAX_STALL_S = 60.0
#: The largest count a fault may ask for (``nack-next`` and the like).
MAX_FAULT_COUNT = 1_000_000


@dataclass(frozen=True)
class Fault:
    """A fault a model can inject: its name, parameters and what it does."""

    name: str
    doc: str
    params: tuple[Param, ...] = ()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "doc": self.doc,
                "params": [p.describe() for p in self.params]}

    def bind(self, owner: str, params: Mapping[str, object]) -> dict[str, Value]:
        """The parameters with defaults filled in and types checked."""
        known = {p.name: p for p in self.params}
        extra = sorted(set(params) - set(known))
        if extra:
            raise ValueError(f"{owner}: fault {self.name!r} takes no parameter {extra[0]!r}"
                             f" (takes: {', '.join(known) or 'none'})")
        out: dict[str, Value] = {}
        for p in self.params:
            v = params.get(p.name, p.default)
            if v is None:
                raise ValueError(f"{owner}: fault {self.name!r} needs {p.name}")
            out[p.name] = Quantity(p.name, "", p.min, p.max, 0, p.type).check(v)
        return out


# -- value sources ----------------------------------------------------------------


class ValueSource(ABC):
    """Where a measured quantity's value comes from, conversion by conversion.

    ``value(k)`` is what conversion number ``k`` measures, so a result changes
    once per conversion and two reads of the same conversion agree.
    """

    @abstractmethod
    def value(self, k: int) -> float: ...

    @abstractmethod
    def describe(self) -> Value | dict[str, Any]: ...


@dataclass(frozen=True)
class Constant(ValueSource):
    """The same value every conversion (what ``set`` installs)."""

    v: float

    def value(self, k: int) -> float:
        return self.v

    def describe(self) -> float:
        return self.v


@dataclass(frozen=True)
class Sequence(ValueSource):
    """The values in turn, one per conversion, then again from the first."""

    values: tuple[float, ...]

    def value(self, k: int) -> float:
        return self.values[k % len(self.values)]

    def describe(self) -> dict[str, Any]:
        return {"sequence": list(self.values)}


@dataclass(frozen=True)
class Noise(ValueSource):
    """Gaussian noise of ``sigma`` around ``setpoint``, reproducible from ``seed``."""

    setpoint: float
    sigma: float
    seed: int = 0

    def value(self, k: int) -> float:
        return random.Random(self.seed * 1_000_003 + k).gauss(self.setpoint, self.sigma)

    def describe(self) -> dict[str, Any]:
        return {"setpoint": self.setpoint, "noise": self.sigma, "seed": self.seed}


def value_source(spec: object) -> ValueSource:
    """A source from its board-file form: a number, ``{sequence = [...]}`` or
    ``{setpoint = x, noise = sigma, seed = n}``."""
    if isinstance(spec, ValueSource):
        return spec
    if isinstance(spec, bool):
        raise ValueError("expected a number, {sequence = [...]} or {setpoint = .., noise = ..}")
    if isinstance(spec, int | float):
        return Constant(float(spec))
    if isinstance(spec, Mapping):
        if set(spec) == {"sequence"} and spec["sequence"]:
            return Sequence(tuple(float(v) for v in spec["sequence"]))
        if {"setpoint", "noise"} <= set(spec) <= {"setpoint", "noise", "seed"}:
            return Noise(float(spec["setpoint"]), float(spec["noise"]), int(spec.get("seed", 0)))
    raise ValueError(f"{spec!r}: expected a number, {{sequence = [...]}} or "
                     "{setpoint = .., noise = .., seed = ..}")


# -- conversions in time -------------------------------------------------------------


class Conversions:
    """When a converting chip's results complete, on the model's clock.

    :meth:`start` begins a conversion of ``duration`` seconds; with a
    ``period`` it repeats every period (continuous mode: the first result
    after ``duration``, the next ``period`` later), without one it happens
    once (one-shot / forced mode).  :meth:`poll` says how many completed since
    the last poll; ``stuck`` (a fault) stops them completing.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.active = False
        self.stuck = False
        self.t0 = 0.0
        self.duration = 0.0
        self.period: float | None = None
        self._reported = 0
        #: Completed conversions since the model was made: the index of the next result.
        self.count = 0

    def start(self, duration: float, period: float | None = None) -> None:
        self.t0 = self.clock()
        self.duration = max(duration, 0.0)
        self.period = None if period is None else max(period, self.duration, 1e-6)
        self.active = True
        self._reported = 0

    def stop(self) -> None:
        self.active = False

    def _completed(self, now: float) -> int:
        t = now - self.t0 - self.duration
        if t < 0:
            return 0
        if self.period is None:
            return 1
        return int(t // self.period) + 1

    def poll(self) -> int:
        """Conversions completed since the last poll; a one-shot one ends the run."""
        if not self.active or self.stuck:
            return 0
        done = self._completed(self.clock())
        new = done - self._reported
        self._reported = done
        if self.period is None and done:
            self.active = False
        self.count += new
        return new

    @property
    def busy(self) -> bool:
        """A conversion is under way (``measuring``, not ``OS``-idle, no data-ready yet)."""
        if not self.active:
            return False
        if self.stuck:
            return True
        t = self.clock() - self.t0
        if self.period is None:
            return t < self.duration
        return t % self.period < self.duration


# -- the model base ----------------------------------------------------------------------


class SimModel:
    """Base of every chip model: quantities, faults, value sources, the lock, the clock.

    A subclass lists ``QUANTITIES`` and, beyond the ones its bus base class
    gives, ``FAULTS``; it turns measured values into registers in
    :meth:`on_values` and answers a fault in :meth:`apply_fault`.
    """

    #: The ``type`` of the board-file entry and the ``model`` the admin channel reports.
    MODEL: ClassVar[str] = ""
    QUANTITIES: ClassVar[tuple[Quantity, ...]] = ()
    FAULTS: ClassVar[tuple[Fault, ...]] = ()

    def __init__(self, *, name: str = "", clock: Clock = time.monotonic,
                 values: Mapping[str, object] | None = None) -> None:
        self.name = name or self.MODEL or type(self).__name__
        self.clock = clock
        self.lock = threading.RLock()
        self._quantities = {q.name: q for q in self.QUANTITIES}
        self.sources: dict[str, ValueSource] = {}
        #: The values the latest conversion measured (what ``get`` reports).
        self.values: dict[str, Value] = {}
        for q in self.QUANTITIES:
            if q.type == "float":
                self.sources[q.name] = Constant(float(q.default))
            self.values[q.name] = q.default
        for key, spec in (values or {}).items():
            q = self._quantity(key)
            if q.type == "float":
                src = value_source(spec)
                for v in _sample_values(src):
                    q.check(v)
                self.sources[key] = src
                self.values[key] = src.value(0)
            else:
                self.values[key] = self.validate(key, q.check(spec))
        self.conversion_index = 0

    # -- the control API ----------------------------------------------------------

    def quantities(self) -> tuple[Quantity, ...]:
        return self.QUANTITIES

    def faults(self) -> tuple[Fault, ...]:
        return self.FAULTS

    def set(self, **values: Value) -> dict[str, Value]:
        """Make the chip measure ``values`` from now on, and now: the result registers
        read them at once, as if the last conversion had measured them (a test that
        sets 31.25 °C and reads gets 31.25 °C), and every later conversion does too.
        All names are checked before any is applied.  Returns :meth:`get`."""
        checked = {k: self.validate(k, self._quantity(k).check(v)) for k, v in values.items()}
        fixed = [k for k in checked if not self._quantities[k].settable]
        if fixed:
            raise ValueError(f"{self.name}: {fixed[0]} is reported by the chip, not set")
        with self.lock:
            self.update()
            for k, v in checked.items():
                if self._quantities[k].type == "float":
                    self.sources[k] = Constant(float(v))
                self.values[k] = v
            self.on_values(set(checked))
            return self._snapshot()

    def get(self) -> dict[str, Value]:
        """Every quantity as the chip holds it now (after the latest conversion)."""
        with self.lock:
            self.update()
            return self._snapshot()

    def _snapshot(self) -> dict[str, Value]:
        return {q.name: self.current(q.name) for q in self.QUANTITIES}

    def inject(self, fault: str, **params: object) -> None:
        """Inject ``fault`` (see :meth:`faults`); ValueError if unknown or badly parameterised."""
        known = {f.name: f for f in self.faults()}
        if fault not in known:
            raise ValueError(f"{self.name}: no fault {fault!r} "
                             f"(supported: {', '.join(known)})")
        bound = known[fault].bind(self.name, params)
        with self.lock:
            self.update()
            self.apply_fault(fault, bound)

    def describe(self) -> dict[str, Any]:
        """The model, its quantities and faults: what ``sim.devices`` reports."""
        return {"model": self.MODEL, "name": self.name,
                "quantities": [q.describe() for q in self.QUANTITIES],
                "faults": [f.describe() for f in self.faults()]}

    # -- for subclasses -------------------------------------------------------------

    def current(self, name: str) -> Value:
        """What ``get`` reports for ``name``; chips override it for what they compute."""
        return self.values[name]

    def measure(self, name: str) -> float:
        """What the conversion under way measures of ``name``; records it for ``get``."""
        v = self.sources[name].value(self.conversion_index)
        self.values[name] = v
        return v

    def validate(self, name: str, value: Value) -> Value:
        """A value beyond its type and range check (a date the chip can hold), normalised;
        ValueError if the chip cannot take it."""
        return value

    def update(self) -> None:
        """Catch up with the clock (conversions completed, modes ended); called under the lock."""

    def on_values(self, names: Iterable[str]) -> None:
        """``set`` changed these quantities: put them in the result registers."""

    def apply_fault(self, fault: str, params: Mapping[str, Value]) -> None:
        raise ValueError(f"{self.name}: fault {fault!r} is declared but not implemented")

    def _quantity(self, name: str) -> Quantity:
        q = self._quantities.get(name)
        if q is None:
            known = ", ".join(self._quantities) or "none"
            raise ValueError(f"{self.name}: no quantity {name!r} (settable: {known})")
        return q


def _sample_values(src: ValueSource) -> Iterable[float]:
    """Values of a source worth range-checking up front (a sequence's all, else the first)."""
    if isinstance(src, Sequence):
        return src.values
    if isinstance(src, Noise):
        return (src.setpoint,)
    return (src.value(0),)

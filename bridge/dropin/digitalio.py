"""CircuitPython ``digitalio`` for the pins a remote board's buses need.

The only pins with an effect are chip selects (``board.CE0``/``CE1``, or any
pin mapped with ``cs:PIN=BUS.CS``): driving one to its active level frames
SPI transfers for that remote chip select (see :mod:`bridge.dropin.busio`).
Other pins keep their value locally, so drivers that toggle a reset or
enable line still run.
"""

from __future__ import annotations

import enum

from .busio import Pin, cs_deselect, cs_select
from .session import session

__all__ = ["DigitalInOut", "Direction", "DriveMode", "Pull"]

#: Raspberry Pi hardware chip selects (BCM 8 = CE0, BCM 7 = CE1) on local SPI bus 0.
DEFAULT_CS_PINS: dict[str, tuple[int, int]] = {
    "CE0": (0, 0), "D8": (0, 0), "CE1": (0, 1), "D7": (0, 1),
}


def _cs_pins() -> dict[str, tuple[int, int]]:
    try:
        extra = session().map.cs
    except OSError:  # no server configured yet: only the default chip selects
        extra = {}
    return {**DEFAULT_CS_PINS, **extra}


class Direction(enum.Enum):
    INPUT = "input"
    OUTPUT = "output"


class Pull(enum.Enum):
    UP = "up"
    DOWN = "down"


class DriveMode(enum.Enum):
    PUSH_PULL = "push_pull"
    OPEN_DRAIN = "open_drain"


class DigitalInOut:
    """A GPIO; on a chip-select pin, the first explicit ``switch_to_output(value=...)``
    gives the inactive level (default: high, i.e. active-low CS).

    adafruit_bus_device's ``SPIDevice`` starts by driving CS inactive that way,
    so an active-high chip select (``cs_active_value=True``) is recognised and
    sent as the CS_HIGH mode bit.
    """

    def __init__(self, pin: Pin) -> None:
        self._pin = pin
        self._direction = Direction.INPUT
        self._value = False
        self._pull: Pull | None = None
        self.drive_mode = DriveMode.PUSH_PULL
        self._cs = _cs_pins().get(pin.name) if pin.name else None
        self._inactive: bool | None = None
        self._selected = False

    def deinit(self) -> None:
        self._set(self._inactive if self._inactive is not None else self._value)

    def __enter__(self) -> DigitalInOut:
        return self

    def __exit__(self, *exc: object) -> None:
        self.deinit()

    def switch_to_output(self, value: bool | None = None,
                         drive_mode: DriveMode = DriveMode.PUSH_PULL) -> None:
        """``value`` defaults to False; given explicitly first, it is the inactive CS level."""
        if value is not None and self._inactive is None:
            self._inactive = bool(value)
        self._direction = Direction.OUTPUT
        self.drive_mode = drive_mode
        self._set(bool(value))

    def switch_to_input(self, pull: Pull | None = None) -> None:
        self._direction = Direction.INPUT
        self._pull = pull

    @property
    def direction(self) -> Direction:
        return self._direction

    @direction.setter
    def direction(self, value: Direction) -> None:
        if value is Direction.OUTPUT:
            self.switch_to_output(self._value)
        else:
            self.switch_to_input()

    @property
    def pull(self) -> Pull | None:
        return self._pull

    @pull.setter
    def pull(self, value: Pull | None) -> None:
        self._pull = value

    @property
    def value(self) -> bool:
        return self._value

    @value.setter
    def value(self, v: bool) -> None:
        self._set(bool(v))

    def _set(self, v: bool) -> None:
        self._value = bool(v)
        if self._cs is None:
            return
        if self._inactive is None:
            self._inactive = True  # chip selects are active low unless told otherwise
        bus, cs = self._cs
        if self._value != self._inactive and not self._selected:
            self._selected = True
            cs_select(bus, cs, cs_high=self._value)
        elif self._value == self._inactive and self._selected:
            self._selected = False
            cs_deselect(bus, cs)

"""``type = "bme280"``: the Bosch BME280 humidity, pressure and temperature sensor."""

from __future__ import annotations

from typing import Literal

from ...buses.sim.chips.bme280 import Bme280
from .chip import RegisterChipSpec


class Bme280Spec(RegisterChipSpec):
    """:class:`~bridge.buses.sim.chips.bme280.Bme280`."""

    CHIP = Bme280
    ADDRESSES = (0x76, 0x77)
    type: Literal["bme280"]

"""``type = "sht31"``: the Sensirion SHT3x humidity and temperature sensor."""

from __future__ import annotations

from typing import Literal

from ...buses.sim.chips.sht31 import Sht31
from .chip import I2CChipSpec


class Sht31Spec(I2CChipSpec):
    """:class:`~bridge.buses.sim.chips.sht31.Sht31`."""

    CHIP = Sht31
    ADDRESSES = (0x44, 0x45)
    type: Literal["sht31"]

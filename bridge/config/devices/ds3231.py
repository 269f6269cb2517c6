"""``type = "ds3231"``: the Maxim DS3231 real-time clock."""

from __future__ import annotations

from typing import Literal

from ...buses.sim.chips.ds3231 import Ds3231
from .chip import RegisterChipSpec


class Ds3231Spec(RegisterChipSpec):
    """:class:`~bridge.buses.sim.chips.ds3231.Ds3231`."""

    CHIP = Ds3231
    ADDRESSES = (0x68,)
    type: Literal["ds3231"]

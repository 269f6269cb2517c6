"""``type = "tmp117"``: the TI TMP117 temperature sensor."""

from __future__ import annotations

from typing import Literal

from ...buses.sim.chips.tmp117 import Tmp117
from .chip import RegisterChipSpec


class Tmp117Spec(RegisterChipSpec):
    """:class:`~bridge.buses.sim.chips.tmp117.Tmp117`; ``values.temperature`` in °C."""

    CHIP = Tmp117
    ADDRESSES = (0x48, 0x49, 0x4A, 0x4B)
    type: Literal["tmp117"]

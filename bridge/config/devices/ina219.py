"""``type = "ina219"``: the TI INA219 current and power monitor."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from ...buses.sim.chips.ina219 import Ina219
from .chip import RegisterChipSpec


class Ina219Spec(RegisterChipSpec):
    """:class:`~bridge.buses.sim.chips.ina219.Ina219`."""

    CHIP = Ina219
    ADDRESSES = tuple(range(0x40, 0x50))
    type: Literal["ina219"]
    shunt_ohms: Annotated[float, Field(gt=0, le=1000)] = 0.1

    def chip_options(self) -> dict[str, Any]:
        return {**super().chip_options(), "shunt_ohms": self.shunt_ohms}

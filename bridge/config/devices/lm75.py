"""``type = "lm75"``: LM75-family temperature sensors (LM75, LM75B, PCT2075)."""

from __future__ import annotations

from typing import Any, Literal

from ...buses.sim.chips.lm75 import Lm75
from .chip import RegisterChipSpec


class Lm75Spec(RegisterChipSpec):
    """:class:`~bridge.buses.sim.chips.lm75.Lm75`."""

    CHIP = Lm75
    ADDRESSES = None
    type: Literal["lm75"]
    variant: Literal["lm75", "lm75b", "pct2075"] = "lm75"

    def chip_options(self) -> dict[str, Any]:
        return {**super().chip_options(), "variant": self.variant}

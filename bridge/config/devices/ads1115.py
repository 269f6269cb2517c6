"""``type = "ads1115"``: TI ADS1115 / ADS1015 ADCs."""

from __future__ import annotations

from typing import Any, Literal

from ...buses.sim.chips.ads1115 import Ads1115
from .chip import RegisterChipSpec


class Ads1115Spec(RegisterChipSpec):
    """:class:`~bridge.buses.sim.chips.ads1115.Ads1115`."""

    CHIP = Ads1115
    ADDRESSES = (0x48, 0x49, 0x4A, 0x4B)
    type: Literal["ads1115"]
    variant: Literal["ads1115", "ads1015"] = "ads1115"

    def chip_options(self) -> dict[str, Any]:
        return {**super().chip_options(), "variant": self.variant}

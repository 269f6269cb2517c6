"""``type = "ssd1306"``: the SSD1306 OLED controller with a 128x64 or 128x32 panel."""

from __future__ import annotations

from typing import Any, Literal

from ...buses.sim.chips.ssd1306 import Ssd1306
from .chip import I2CChipSpec


class Ssd1306Spec(I2CChipSpec):
    """:class:`~bridge.buses.sim.chips.ssd1306.Ssd1306`."""

    CHIP = Ssd1306
    ADDRESSES = (0x3C, 0x3D)
    type: Literal["ssd1306"]
    height: Literal[32, 64] = 64

    def chip_options(self) -> dict[str, Any]:
        return {**super().chip_options(), "height": self.height}

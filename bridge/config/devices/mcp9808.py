"""``type = "mcp9808"``: the Microchip MCP9808 temperature sensor."""

from __future__ import annotations

from typing import Literal

from ...buses.sim.chips.mcp9808 import Mcp9808
from .chip import RegisterChipSpec


class Mcp9808Spec(RegisterChipSpec):
    """:class:`~bridge.buses.sim.chips.mcp9808.Mcp9808`."""

    CHIP = Mcp9808
    ADDRESSES = tuple(range(0x18, 0x20))
    type: Literal["mcp9808"]

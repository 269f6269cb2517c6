"""``type = "mcp23017"``: the Microchip MCP23017 16-bit I/O expander."""

from __future__ import annotations

from typing import Literal

from ...buses.sim.chips.mcp23017 import Mcp23017
from .chip import RegisterChipSpec


class Mcp23017Spec(RegisterChipSpec):
    """:class:`~bridge.buses.sim.chips.mcp23017.Mcp23017`."""

    CHIP = Mcp23017
    ADDRESSES = tuple(range(0x20, 0x28))
    type: Literal["mcp23017"]

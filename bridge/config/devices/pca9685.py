"""``type = "pca9685"``: the NXP PCA9685 16-channel PWM controller."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from ...buses.sim.chips.pca9685 import Pca9685
from .chip import RegisterChipSpec


class Pca9685Spec(RegisterChipSpec):
    """:class:`~bridge.buses.sim.chips.pca9685.Pca9685`."""

    CHIP = Pca9685
    ADDRESSES = tuple(a for a in range(0x40, 0x78) if a != 0x70)  # 0x70: All Call
    type: Literal["pca9685"]
    oscillator_hz: Annotated[float, Field(gt=0, le=50e6)] = 25e6

    def chip_options(self) -> dict[str, Any]:
        return {**super().chip_options(), "oscillator_hz": self.oscillator_hz}

"""``type = "mpu6050"``: the InvenSense MPU-6050 accelerometer and gyroscope."""

from __future__ import annotations

from typing import Literal

from ...buses.sim.chips.mpu6050 import Mpu6050
from .chip import RegisterChipSpec


class Mpu6050Spec(RegisterChipSpec):
    """:class:`~bridge.buses.sim.chips.mpu6050.Mpu6050`."""

    CHIP = Mpu6050
    ADDRESSES = (0x68, 0x69)
    type: Literal["mpu6050"]

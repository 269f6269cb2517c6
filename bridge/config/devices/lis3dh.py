"""``type = "lis3dh"``: the ST LIS3DH accelerometer on SPI."""

from __future__ import annotations

from typing import Literal

from ...buses.sim.chips.lis3dh import Lis3dh
from ...buses.sim.spi import SpiDevice
from ..fields import U8, Int
from .base import SpiDeviceSpecBase


class Lis3dhSpec(SpiDeviceSpecBase):
    """:class:`~bridge.buses.sim.chips.lis3dh.Lis3dh`; ``acceleration_mg`` is what it feels,
    ``registers`` override its reset values."""

    type: Literal["lis3dh"]
    acceleration_mg: tuple[Int, Int, Int] = (0, 0, 1000)
    registers: dict[U8, U8] = {}

    def build(self) -> SpiDevice:
        return Lis3dh(acceleration_mg=self.acceleration_mg, registers=self.registers,
                      **self.options())

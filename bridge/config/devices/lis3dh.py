"""``type = "lis3dh"``: the ST LIS3DH accelerometer, on I2C or on SPI."""

from __future__ import annotations

from typing import Literal

from ...buses.sim.chips.lis3dh import Lis3dh
from ...buses.sim.spi import SpiDevice
from ..fields import U8, Int
from .base import SpiDeviceSpecBase
from .chip import RegisterChipSpec, ValueSpec


class Lis3dhI2CSpec(RegisterChipSpec):
    """:class:`~bridge.buses.sim.chips.lis3dh.Lis3dh` on I2C (SDO/SA0 picks 0x18 or 0x19)."""

    CHIP = Lis3dh
    ADDRESSES = (0x18, 0x19)
    type: Literal["lis3dh"]


class Lis3dhSpec(SpiDeviceSpecBase):
    """The LIS3DH on SPI; ``values`` as for every chip (``accel_x`` .. in g), or
    ``acceleration_mg`` for all three axes; ``registers`` override reset values."""

    type: Literal["lis3dh"]
    acceleration_mg: tuple[Int, Int, Int] | None = None
    values: dict[str, ValueSpec] = {}
    registers: dict[U8, U8] = {}

    def build(self) -> SpiDevice:
        values: dict[str, object] = {k: v if not hasattr(v, "model_dump") else v.model_dump()
                                     for k, v in self.values.items()}
        if self.acceleration_mg is not None:
            values.update({f"accel_{a}": mg / 1000 for a, mg in
                           zip("xyz", self.acceleration_mg, strict=True)})
        chip = Lis3dh(None, values=values, registers=self.registers, name=self.name)
        return chip.attach_spi(rw_bit=0x80, read_when_set=True, increment_bit=0x40,
                               **self.options())

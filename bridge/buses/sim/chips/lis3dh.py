"""ST LIS3DH 3-axis accelerometer on SPI (datasheet: ST DocID17530)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Unpack

from ..spi import SpiDeviceOptions
from ..spi_devices import SpiRegisterDevice

LIS3DH_WHO_AM_I = 0x0F
LIS3DH_CTRL_REG1 = 0x20
LIS3DH_CTRL_REG4 = 0x23
LIS3DH_OUT_X_L = 0x28
_LIS3DH_RESET = {LIS3DH_WHO_AM_I: 0x33, LIS3DH_CTRL_REG1: 0x07}
# mg per digit by CTRL_REG4 FS[1:0], for high-resolution, normal and low-power mode.
_LIS3DH_SENS = {"hr": (1, 2, 4, 12), "normal": (4, 8, 16, 48), "lp": (16, 32, 64, 192)}


class Lis3dh(SpiRegisterDevice):
    """ST LIS3DH accelerometer on SPI: a board at rest reads ``acceleration_mg``.

    Address byte: bit 7 read, bit 6 auto-increment.  WHO_AM_I (0x0F) is
    0x33; CTRL_REG1 resets to 0x07.  OUT_X_L..OUT_Z_H (0x28-0x2D) are
    left-justified two's complement, scaled by the full scale in
    CTRL_REG4 FS and the mode (HR bit, CTRL_REG1 LPen) as the datasheet's
    sensitivity table says, so a driver that changes the range still reads
    the same acceleration.  ``registers`` override the reset values.
    """

    def __init__(self, *, acceleration_mg: tuple[int, int, int] = (0, 0, 1000),
                 registers: Mapping[int, int] | None = None,
                 **options: Unpack[SpiDeviceOptions]) -> None:
        super().__init__(registers={**_LIS3DH_RESET, **(registers or {})},
                         read_only=[LIS3DH_WHO_AM_I, *range(0x28, 0x2E)],
                         rw_bit=0x80, read_when_set=True, increment_bit=0x40, **options)
        self.acceleration_mg = acceleration_mg

    def _raw(self, axis: int) -> int:
        ctrl4 = self.registers.get(LIS3DH_CTRL_REG4, 0)
        lp = bool(self.registers.get(LIS3DH_CTRL_REG1, 0) & 0x08)
        mode = "lp" if lp else ("hr" if ctrl4 & 0x08 else "normal")
        bits = {"hr": 12, "normal": 10, "lp": 8}[mode]
        sens = _LIS3DH_SENS[mode][(ctrl4 >> 4) & 3]
        limit = 1 << (bits - 1)
        value = max(-limit, min(limit - 1, round(self.acceleration_mg[axis] / sens)))
        return (value << (16 - bits)) & 0xFFFF

    def get(self, reg: int) -> int:
        if 0x28 <= reg <= 0x2D:
            raw = self._raw((reg - 0x28) // 2)
            return raw >> 8 if reg & 1 else raw & 0xFF
        return super().get(reg)

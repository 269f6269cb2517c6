"""ST LIS3DH 3-axis accelerometer on I2C or SPI (datasheet: ST DocID17530 rev. 2, §6 and
§7-8: I2C/SPI sub-address rules, registers, sensitivity Table 4)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..model import Quantity
from .base import RegisterChip

WHO_AM_I, CTRL_REG0, CTRL_REG1, CTRL_REG4, CTRL_REG5 = 0x0F, 0x1E, 0x20, 0x23, 0x24
STATUS_REG, OUT_X_L = 0x27, 0x28
ZYXDA, ZYXOR, BOOT = 0x08, 0x80, 0x80
#: Output data rates (Hz) by CTRL_REG1 ODR[3:0]: normal/high-resolution, low-power.
_ODR = {1: (1, 1), 2: (10, 10), 3: (25, 25), 4: (50, 50), 5: (100, 100), 6: (200, 200),
        7: (400, 400), 8: (0, 1600), 9: (1344, 5376)}
# mg per digit by CTRL_REG4 FS[1:0], for high-resolution, normal and low-power mode.
_SENS = {"hr": (1, 2, 4, 12), "normal": (4, 8, 16, 48), "lp": (16, 32, 64, 192)}
_BITS = {"hr": 12, "normal": 10, "lp": 8}
_AXES = ("x", "y", "z")


class Lis3dh(RegisterChip):
    """LIS3DH: 8-bit registers; on I2C the sub-address MSB asks for auto-increment, on SPI
    the address byte's bit 6 (:meth:`attach_spi`).

    Modelled: WHO_AM_I 0x33, CTRL_REG0/1 reset values (0x10, 0x07: power-down);
    samples at the output data rate of CTRL_REG1 ODR (none in power-down),
    each setting STATUS_REG ZYXDA (bit 3, with the per-axis XDA/YDA/ZDA) and,
    if the previous sample was not read, ZYXOR/overrun; reading an axis's
    high byte clears its flags.  OUT_X_L..OUT_Z_H are left-justified two's
    complement at the resolution and sensitivity of the mode (HR bit,
    LPen) and full scale (FS) of Table 4, applied when read, so a range
    change shows at once; BOOT (CTRL_REG5 bit 7) self-clears.  The outputs
    hold a sample from power-on.  Not modelled: FIFO, interrupts and click
    detection, the auxiliary ADC and temperature sensor, BDU, self test,
    the high-pass filter.
    """

    MODEL = "lis3dh"
    RESET = {WHO_AM_I: 0x33, CTRL_REG0: 0x10, CTRL_REG1: 0x07}
    READ_ONLY = frozenset({WHO_AM_I, STATUS_REG, *range(OUT_X_L, 0x2E)})
    QUANTITIES = tuple(Quantity(f"accel_{a}", "g", -16.0, 16.0, 1.0 if a == "z" else 0.0)
                       for a in _AXES)

    def __init__(self, address: int | None, **kw: Any) -> None:
        super().__init__(address, **kw)
        self.conv = self.timer()
        self.auto_increment = False
        self.sample = [self.measure(f"accel_{a}") for a in _AXES]

    # -- I2C sub-address: bit 7 asks for auto-increment -------------------------

    def set_pointer(self, value: int) -> None:
        self.pointer = value & 0x7F
        self.auto_increment = bool(value & 0x80)

    def next_reg(self, reg: int) -> int:
        return (reg + 1) & 0x7F if self.auto_increment else reg

    # -- sampling ------------------------------------------------------------------------

    def _mode(self) -> str:
        if self.regs[CTRL_REG1] & 0x08:
            return "lp"
        return "hr" if self.regs.get(CTRL_REG4, 0) & 0x08 else "normal"

    def _restart(self) -> None:
        odr = _ODR.get(self.regs[CTRL_REG1] >> 4)
        hz = odr[1 if self._mode() == "lp" else 0] if odr else 0
        if hz:
            self.conv.start(1.0 / hz, 1.0 / hz)
        else:
            self.conv.stop()

    def update(self) -> None:
        n = self.conv.poll()
        if n:
            self.conversion_index = self.conv.count
            self.sample = [self.measure(f"accel_{a}") for a in _AXES]
            status = self.regs.get(STATUS_REG, 0)
            overrun = (status & 7) << 4 | (ZYXOR if status & ZYXDA or n > 1 else 0)
            self.regs[STATUS_REG] = overrun | ZYXDA | 7

    def on_values(self, names: Iterable[str]) -> None:
        self.sample = [float(self.values[f"accel_{a}"]) for a in _AXES]

    def _raw(self, axis: int) -> int:
        mode = self._mode()
        bits = _BITS[mode]
        sens = _SENS[mode][(self.regs.get(CTRL_REG4, 0) >> 4) & 3]
        limit = 1 << (bits - 1)
        value = max(-limit, min(limit - 1, round(self.sample[axis] * 1000 / sens)))
        return (value << (16 - bits)) & 0xFFFF

    def read_reg(self, reg: int) -> int:
        if OUT_X_L <= reg <= OUT_X_L + 5:
            axis, high = divmod(reg - OUT_X_L, 2)
            raw = self._raw(axis)
            if high:
                status = self.regs.get(STATUS_REG, 0) & ~(1 << axis | 0x10 << axis)
                if not status & 7:
                    status &= ~(ZYXDA | ZYXOR)
                self.regs[STATUS_REG] = status
                return raw >> 8
            return raw & 0xFF
        return self.regs.get(reg, 0)

    def write_reg(self, reg: int, value: int) -> None:
        if reg == CTRL_REG5:
            value &= ~BOOT  # reboot: reloads the trimming, the bit clears itself
        super().write_reg(reg, value)
        if reg in (CTRL_REG1, CTRL_REG4):
            self._restart()

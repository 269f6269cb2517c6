"""InvenSense MPU-6050 6-axis accelerometer and gyroscope (datasheets: InvenSense
PS-MPU-6000A-00 rev. 3.4, RM-MPU-6000A-00 rev. 4.2 register map)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..model import Quantity
from .base import RegisterChip

SMPLRT_DIV, CONFIG, GYRO_CONFIG, ACCEL_CONFIG = 0x19, 0x1A, 0x1B, 0x1C
INT_ENABLE, INT_STATUS, ACCEL_OUT, TEMP_OUT, GYRO_OUT = 0x38, 0x3A, 0x3B, 0x41, 0x43
SIGNAL_PATH_RESET, USER_CTRL, PWR_MGMT_1, PWR_MGMT_2, WHO_AM_I = 0x68, 0x6A, 0x6B, 0x6C, 0x75
DEVICE_RESET, SLEEP, CYCLE = 0x80, 0x40, 0x20
DATA_RDY = 0x01
_AXES = ("x", "y", "z")


def _s16(v: float) -> int:
    return max(-0x8000, min(0x7FFF, round(v))) & 0xFFFF


class Mpu6050(RegisterChip):
    """MPU-6050 on I2C: 8-bit registers behind an auto-incrementing pointer.

    Modelled: WHO_AM_I 0x68; power-on asleep (PWR_MGMT_1 0x40) and
    DEVICE_RESET (bit 7) self-clearing while every register takes its reset
    value; samples at the sample rate (8 kHz gyro output with DLPF_CFG 0 or
    7, else 1 kHz, divided by 1 + SMPLRT_DIV), none while asleep; each sample
    writes ACCEL/TEMP/GYRO_OUT (big-endian) from the set values scaled by
    ACCEL_CONFIG AFS_SEL (16384..2048 LSB/g) and GYRO_CONFIG FS_SEL
    (131..16.4 LSB/°/s), the temperature as (T - 36.53) × 340, and sets
    INT_STATUS DATA_RDY, cleared when INT_STATUS is read; a burst read sees
    one sample.  Not modelled: FIFO, DMP, the auxiliary I2C master, self
    test, motion interrupts, cycle mode timing, the DLPF's filtering.
    """

    MODEL = "mpu6050"
    RESET = {PWR_MGMT_1: SLEEP, WHO_AM_I: 0x68}
    READ_ONLY = frozenset({INT_STATUS, WHO_AM_I, *range(ACCEL_OUT, 0x49)})
    QUANTITIES = (
        *(Quantity(f"accel_{a}", "g", -16.0, 16.0, 1.0 if a == "z" else 0.0) for a in _AXES),
        *(Quantity(f"gyro_{a}", "°/s", -2000.0, 2000.0, 0.0) for a in _AXES),
        Quantity("temperature", "°C", -40.0, 85.0, 25.0),
    )

    def __init__(self, address: int | None, **kw: Any) -> None:
        super().__init__(address, **kw)
        self.conv = self.timer()

    def _rate_hz(self) -> float:
        base = 8000.0 if self.regs.get(CONFIG, 0) & 7 in (0, 7) else 1000.0
        return base / (1 + self.regs.get(SMPLRT_DIV, 0))

    def _restart(self) -> None:
        if self.regs[PWR_MGMT_1] & SLEEP:
            self.conv.stop()
        else:
            period = 1.0 / self._rate_hz()
            self.conv.start(period, period)

    def _latch(self) -> None:
        a_lsb = 16384 >> ((self.regs.get(ACCEL_CONFIG, 0) >> 3) & 3)
        g_lsb = (131.0, 65.5, 32.8, 16.4)[(self.regs.get(GYRO_CONFIG, 0) >> 3) & 3]
        words = [_s16(self.measure(f"accel_{a}") * a_lsb) for a in _AXES]
        words.append(_s16((self.measure("temperature") - 36.53) * 340))
        words += [_s16(self.measure(f"gyro_{a}") * g_lsb) for a in _AXES]
        for i, w in enumerate(words):
            self.regs[ACCEL_OUT + 2 * i] = w >> 8
            self.regs[ACCEL_OUT + 2 * i + 1] = w & 0xFF
        self.regs[INT_STATUS] = self.regs.get(INT_STATUS, 0) | DATA_RDY

    def update(self) -> None:
        if self.conv.poll():
            self.conversion_index = self.conv.count
            self._latch()

    def on_values(self, names: Iterable[str]) -> None:
        if self.conv.count:
            flags = self.regs.get(INT_STATUS, 0)
            self._latch()
            self.regs[INT_STATUS] = flags

    def read_reg(self, reg: int) -> int:
        value = self.regs.get(reg, 0)
        if reg == INT_STATUS:
            self.regs[INT_STATUS] = 0
        return value

    def write_reg(self, reg: int, value: int) -> None:
        if reg == PWR_MGMT_1:
            if value & DEVICE_RESET:
                self.reset_registers()
            else:
                self.regs[reg] = value
            self._restart()
        elif reg == SIGNAL_PATH_RESET:
            pass  # resets the signal paths, not the registers
        elif reg not in self.READ_ONLY:
            self.regs[reg] = value
            if reg in (SMPLRT_DIV, CONFIG) and self.conv.active:
                self._restart()

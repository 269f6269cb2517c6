"""Microchip MCP9808 digital temperature sensor (datasheet: Microchip DS20005095B, §5)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from ..model import Quantity
from .base import RegisterChip

CONFIG, T_UPPER, T_LOWER, T_CRIT, T_A, MANUFACTURER, DEVICE_ID, RESOLUTION = range(1, 9)
SHDN = 1 << 8
#: Conversion time (s) by resolution 0.5, 0.25, 0.125, 0.0625 °C (Table 1-1, typical).
_CONVERSION_S = (0.030, 0.065, 0.130, 0.250)


def _to_raw(t: float, step: float) -> int:
    """°C to the 13-bit two's complement of T_A, in 1/16 °C, at ``step`` resolution."""
    raw = math.floor(t / step) * round(step * 16)  # the ADC's lower bits read 0
    return max(-0x1000, min(0xFFF, raw)) & 0x1FFF


def _limit(v: int) -> float:
    v &= 0x1FFC
    return ((v ^ 0x1000) - 0x1000) / 16


class Mcp9808(RegisterChip):
    """MCP9808: 16-bit big-endian registers, resolution register 8-bit; no auto-increment.

    Modelled: continuous conversion at the resolution register's rate (30 ms
    at 0.5 °C ... 250 ms at 0.0625 °C), the result truncated to that
    resolution; shutdown (CONFIG bit 8) stops conversions and keeps the last
    result; T_A's flag bits 15/14/13 (>= T_CRIT, > T_UPPER, < T_LOWER)
    computed at each conversion; limits keep their 0.25 °C bits only;
    manufacturer 0x0054, device ID 0x0400.  Not modelled: the ALERT output
    and its lock bits (CONFIG is a plain register besides SHDN), hysteresis.
    """

    MODEL = "mcp9808"
    WIDTH = 2
    WIDTHS = {RESOLUTION: 1}
    RESET = {CONFIG: 0, T_UPPER: 0, T_LOWER: 0, T_CRIT: 0, T_A: 0, MANUFACTURER: 0x0054,
             DEVICE_ID: 0x0400, RESOLUTION: 0x03}
    READ_ONLY = frozenset({T_A, MANUFACTURER, DEVICE_ID})
    QUANTITIES = (Quantity("temperature", "°C", -40.0, 125.0, 25.0, doc="ambient temperature"),)

    def __init__(self, address: int | None, **kw: Any) -> None:
        super().__init__(address, **kw)
        self.conv = self.timer()
        self._latch()
        self._restart()

    def next_reg(self, reg: int) -> int:
        return reg

    def _restart(self) -> None:
        if self.regs[CONFIG] & SHDN:
            self.conv.stop()
        else:
            t = _CONVERSION_S[self.regs[RESOLUTION] & 3]
            self.conv.start(t, t)

    def _latch(self) -> None:
        t = self.measure("temperature")
        step = 0.5 / (1 << (self.regs[RESOLUTION] & 3))
        raw = _to_raw(t, step)
        temp = ((raw ^ 0x1000) - 0x1000) / 16
        flags = ((temp >= _limit(self.regs[T_CRIT])) << 15
                 | (temp > _limit(self.regs[T_UPPER])) << 14
                 | (temp < _limit(self.regs[T_LOWER])) << 13)
        self.regs[T_A] = flags | raw

    def update(self) -> None:
        if self.conv.poll():
            self.conversion_index = self.conv.count
            self._latch()

    def on_values(self, names: Iterable[str]) -> None:
        self._latch()

    def write_reg(self, reg: int, value: int) -> None:
        if reg in (T_UPPER, T_LOWER, T_CRIT):
            self.regs[reg] = value & 0x1FFC
        elif reg == RESOLUTION:
            self.regs[reg] = value & 3
            self._restart()
        elif reg == CONFIG:
            self.regs[reg] = value & 0x07FF
            self._restart()

"""LM75-family temperature sensors: the LM75 (TI SNOS808), LM75B (NXP LM75B) and PCT2075
(NXP PCT2075, the part of Adafruit's LM75-compatible board)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

from ..model import Quantity
from .base import RegisterChip

TEMP, CONF, THYST, TOS, TIDLE = range(5)
SHUTDOWN, OS_MODE_INT = 1, 2
Variant = Literal["lm75", "lm75b", "pct2075"]
#: Temperature bits (left-aligned in 16) and conversion time (s) per variant.
_BITS = {"lm75": 9, "lm75b": 11, "pct2075": 11}
_CONVERSION_S = {"lm75": 0.1, "lm75b": 0.1, "pct2075": 0.1}


class Lm75(RegisterChip):
    """LM75: temperature, configuration (8-bit), T_HYST and T_OS behind an 8-bit pointer.

    Modelled: a conversion every 100 ms (PCT2075: plus the idle time of its
    Tidle register, 100 ms steps), the temperature left-aligned in 16 bits
    at 9 bits (LM75, 0.5 °C) or 11 bits (LM75B, PCT2075, 0.125 °C); shutdown
    (CONF bit 0) stops conversions and keeps the last result; T_OS/T_HYST
    keep their 9 significant bits; reads do not auto-increment.  Not
    modelled: the OS output, its fault queue and polarity (plain bits).
    """

    MODEL = "lm75"
    WIDTH = 2
    WIDTHS = {CONF: 1, TIDLE: 1}
    RESET = {TEMP: 0, CONF: 0, THYST: 0x4B00, TOS: 0x5000}
    READ_ONLY = frozenset({TEMP})
    QUANTITIES = (Quantity("temperature", "°C", -55.0, 125.0, 25.0),)

    def __init__(self, address: int | None, *, variant: Variant = "lm75", **kw: Any) -> None:
        self.variant: Variant = variant
        super().__init__(address, **kw)
        if variant == "pct2075":
            self.regs.setdefault(TIDLE, 0)
        self.conv = self.timer()
        self._latch()
        self._restart()

    def reset_registers(self) -> None:
        super().reset_registers()
        if self.variant == "pct2075":
            self.regs.setdefault(TIDLE, 0)

    def next_reg(self, reg: int) -> int:
        return reg

    def _restart(self) -> None:
        if self.regs[CONF] & SHUTDOWN:
            self.conv.stop()
            return
        t = _CONVERSION_S[self.variant]
        idle = 0.1 * (self.regs.get(TIDLE, 0) & 0x1F) if self.variant == "pct2075" else 0.0
        self.conv.start(t, t + idle)

    def _latch(self) -> None:
        bits = _BITS[self.variant]
        step = 256.0 / (1 << bits)  # 0.5 °C at 9 bits, 0.125 °C at 11
        raw = max(-(1 << (bits - 1)), min((1 << (bits - 1)) - 1,
                                          math.floor(self.measure("temperature") / step)))
        self.regs[TEMP] = (raw << (16 - bits)) & 0xFFFF

    def update(self) -> None:
        if self.conv.poll():
            self.conversion_index = self.conv.count
            self._latch()

    def on_values(self, names: Iterable[str]) -> None:
        self._latch()

    def write_reg(self, reg: int, value: int) -> None:
        if reg in (THYST, TOS):
            self.regs[reg] = value & 0xFF80
        elif reg == CONF or (reg == TIDLE and self.variant == "pct2075"):
            self.regs[reg] = value & 0x1F
            self._restart()

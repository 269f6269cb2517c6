"""TI ADS1115 / ADS1015 16-bit / 12-bit ADCs (datasheets: TI SBAS444D §9.5-9.6, SBAS473E)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from ..model import Quantity
from .base import RegisterChip

CONVERSION, CONFIG, LO_THRESH, HI_THRESH = range(4)
OS, MODE_SINGLE = 1 << 15, 1 << 8
#: Full-scale range (V) by PGA[2:0] (Table 8-3).
FULL_SCALE = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256, 0.256, 0.256)
#: Data rates (samples/s) by DR[2:0].
DATA_RATES = {"ads1115": (8, 16, 32, 64, 128, 250, 475, 860),
              "ads1015": (128, 250, 490, 920, 1600, 2400, 3300, 3300)}
#: Inputs (positive, negative or None for GND) by MUX[2:0].
_MUX = ((0, 1), (0, 3), (1, 3), (2, 3), (0, None), (1, None), (2, None), (3, None))
Variant = Literal["ads1115", "ads1015"]


class Ads1115(RegisterChip):
    """ADS1115/ADS1015: a 2-bit pointer, 16-bit big-endian registers.

    Modelled: single-shot conversions started by writing OS = 1 (OS reads 0
    while converting, 1 when done, as drivers poll it), continuous mode,
    the conversion time of the data rate (1/DR), the input multiplexer
    (4 single-ended inputs, 4 differential pairs) and the PGA's full-scale
    ranges, results clamped at full scale (the ADS1015's 12 bits
    left-aligned); the threshold registers.  Not modelled: the comparator
    and the ALERT/RDY pin, input limits beyond the full-scale range.
    """

    MODEL = "ads1115"
    WIDTH = 2
    RESET = {CONVERSION: 0, CONFIG: 0x8583, LO_THRESH: 0x8000, HI_THRESH: 0x7FFF}
    READ_ONLY = frozenset({CONVERSION})
    QUANTITIES = tuple(Quantity(f"ain{i}", "V", -6.144, 6.144, 0.0,
                                doc=f"voltage at AIN{i} against GND") for i in range(4))

    def __init__(self, address: int | None, *, variant: Variant = "ads1115", **kw: Any) -> None:
        super().__init__(address, **kw)
        self.variant: Variant = variant
        self.conv = self.timer()

    def set_pointer(self, value: int) -> None:
        self.pointer = value & 3

    def next_reg(self, reg: int) -> int:
        return reg

    def _rate(self) -> int:
        return DATA_RATES[self.variant][(self.regs[CONFIG] >> 5) & 7]

    def _latch(self) -> None:
        cfg = self.regs[CONFIG]
        pos, neg = _MUX[(cfg >> 12) & 7]
        v = self.measure(f"ain{pos}") - (0.0 if neg is None else self.measure(f"ain{neg}"))
        code = max(-0x8000, min(0x7FFF, round(v / FULL_SCALE[(cfg >> 9) & 7] * 0x8000)))
        if self.variant == "ads1015":
            code = (code >> 4) << 4
        self.regs[CONVERSION] = code & 0xFFFF

    def update(self) -> None:
        if self.conv.poll():
            self.conversion_index = self.conv.count
            self._latch()

    def on_values(self, names: Iterable[str]) -> None:
        if self.conv.count:
            self._latch()

    def read_reg(self, reg: int) -> int:
        if reg == CONFIG:
            single = self.regs[CONFIG] & MODE_SINGLE
            idle = single and not self.conv.busy
            return (self.regs[CONFIG] & ~OS) | (OS if idle else 0)
        return self.regs.get(reg, 0)

    def write_reg(self, reg: int, value: int) -> None:
        if reg != CONFIG:
            super().write_reg(reg, value)
            return
        self.regs[CONFIG] = value & ~OS
        period = 1.0 / self._rate()
        if not value & MODE_SINGLE:
            self.conv.start(period, period)
        elif value & OS:
            self.conv.start(period)
        else:
            self.conv.stop()

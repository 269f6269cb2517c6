"""TI INA219 current/power monitor (datasheet: TI SBOS448G, §8.5-8.6)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..model import Quantity
from .base import RegisterChip

CONFIG, SHUNT, BUS, POWER, CURRENT, CALIBRATION = range(6)
RST, BRNG = 1 << 15, 1 << 13
CNVR, OVF = 0x02, 0x01


def _adc_time(setting: int) -> float:
    """Conversion time (s) of a BADC/SADC setting (Table 8-5)."""
    if setting & 0x8:
        return 532e-6 * (1 << (setting & 7))
    return (84e-6, 148e-6, 276e-6, 532e-6)[setting & 3]


def _clamp16(v: int) -> int:
    return max(-0x8000, min(0x7FFF, v))


class Ina219(RegisterChip):
    """INA219: an 8-bit pointer, 16-bit big-endian registers, no auto-increment.

    Modelled: the shunt voltage (10 µV LSB, limited by the PGA range) of
    ``current`` through ``shunt_ohms``, the bus voltage (4 mV LSB, 16/32 V
    range) with CNVR (set when a conversion completes, cleared by reading
    the power register or writing the configuration) and OVF; current and
    power computed from the calibration register at each conversion, as
    §8.5.1 says; triggered and continuous modes, power-down, the conversion
    times of the ADC settings; RST reloading every reset value.  Not
    modelled: ADC noise and resolution below 12 bits.
    """

    MODEL = "ina219"
    WIDTH = 2
    RESET = {CONFIG: 0x399F, SHUNT: 0, BUS: 0, POWER: 0, CURRENT: 0, CALIBRATION: 0}
    READ_ONLY = frozenset({SHUNT, BUS, POWER, CURRENT})
    QUANTITIES = (
        Quantity("bus_voltage", "V", 0.0, 32.0, 5.0, doc="IN- to GND"),
        Quantity("current", "A", -32.0, 32.0, 0.1, doc="through the shunt (IN+ to IN-)"),
    )

    def __init__(self, address: int | None, *, shunt_ohms: float = 0.1, **kw: Any) -> None:
        super().__init__(address, **kw)
        self.shunt_ohms = shunt_ohms
        self.conv = self.timer()
        self._latch(ready=False)
        self._start()

    def next_reg(self, reg: int) -> int:
        return reg

    def _start(self) -> None:
        cfg = self.regs[CONFIG]
        mode = cfg & 7
        t = (_adc_time((cfg >> 3) & 0xF) if mode & 1 else 0.0) + (
            _adc_time((cfg >> 7) & 0xF) if mode & 2 else 0.0)
        if mode in (0, 4):
            self.conv.stop()
        elif mode & 4:
            self.conv.start(t, t)
        else:
            self.conv.start(t)

    def _latch(self, ready: bool = True) -> None:
        cfg = self.regs[CONFIG]
        shunt_limit = 4000 << ((cfg >> 11) & 3)  # ±40 mV × gain, in 10 µV
        shunt = round(self.measure("current") * self.shunt_ohms / 10e-6)
        over = abs(shunt) > shunt_limit
        shunt = max(-shunt_limit, min(shunt_limit, shunt))
        bus_v = min(self.measure("bus_voltage"), 32.0 if cfg & BRNG else 16.0)
        bus = min(0x1FFF, round(bus_v / 0.004))
        cal = self.regs[CALIBRATION] & 0xFFFE
        current = _clamp16(shunt * cal // 4096)
        power = min(0xFFFF, abs(current) * bus // 5000)
        over = over or current in (-0x8000, 0x7FFF)
        self.regs[SHUNT] = shunt & 0xFFFF
        self.regs[CURRENT] = current & 0xFFFF
        self.regs[POWER] = power
        self.regs[BUS] = bus << 3 | (CNVR if ready else 0) | (OVF if over else 0)

    def update(self) -> None:
        if self.conv.poll():
            self.conversion_index = self.conv.count
            self._latch()

    def on_values(self, names: Iterable[str]) -> None:
        self._latch(ready=bool(self.regs[BUS] & CNVR))

    def read_reg(self, reg: int) -> int:
        value = self.regs.get(reg, 0)
        if reg == POWER:
            self.regs[BUS] &= ~CNVR
        return value

    def write_reg(self, reg: int, value: int) -> None:
        if reg == CONFIG:
            if value & RST:
                self.reset_registers()
            else:
                self.regs[CONFIG] = value & 0x3FFF
            self.regs[BUS] &= ~CNVR
            self._start()
        elif reg == CALIBRATION:
            self.regs[reg] = value & 0xFFFE

"""TI TMP117 digital temperature sensor (datasheet: TI SNOSD82, rev. C, §7.5-7.6)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..model import Quantity
from .base import RegisterChip

TEMP_RESULT, CONFIG, T_HIGH, T_LOW, EEPROM_UL, TEMP_OFFSET, DEVICE_ID = 0, 1, 2, 3, 4, 7, 0x0F
HIGH_ALERT, LOW_ALERT, DATA_READY, SOFT_RESET = 1 << 15, 1 << 14, 1 << 13, 1 << 1
MOD_CC, MOD_SD, MOD_OS = 0, 1, 3
LSB_C = 0.0078125
SINGLE_CONVERSION_S = 0.0155
#: Conversion cycle time (s) by CONV[2:0] for each AVG[1:0] (datasheet Table 7-7).
_CYCLE = {
    0: (0.0155, 0.125, 0.25, 0.5, 1.0, 4.0, 8.0, 16.0),
    1: (0.125, 0.125, 0.25, 0.5, 1.0, 4.0, 8.0, 16.0),
    2: (0.5, 0.5, 0.5, 0.5, 1.0, 4.0, 8.0, 16.0),
    3: (1.0, 1.0, 1.0, 1.0, 1.0, 4.0, 8.0, 16.0),
}
_AVERAGES = (1, 8, 32, 64)


def _s16(v: int) -> int:
    return v - 0x10000 if v & 0x8000 else v


class Tmp117(RegisterChip):
    """TMP117: 16-bit big-endian registers behind an 8-bit pointer, no auto-increment.

    Modelled: the conversion cycle of CONV/AVG (Table 7-7; active time 15.5 ms
    per averaged sample) in continuous mode, one-shot returning to shutdown,
    shutdown; Data_Ready (config bit 13) set when a conversion completes and
    cleared by a read of the configuration or the temperature result register;
    HIGH/LOW_Alert in alert mode (set by a conversion beyond the limits,
    cleared by reading the configuration) and therm mode (hysteresis between
    the limits); Soft_Reset (bit 1) reads 0 and reloads every register's reset
    value, the result reading -256 °C until the first conversion; the
    temperature offset (0x07) added to each result; device ID 0x0117.
    Not modelled: EEPROM programming (0x04-0x08 are plain registers,
    EEPROM_Busy stays 0), the ALERT pin, SMBus alert response, general-call reset.
    """

    MODEL = "tmp117"
    WIDTH = 2
    RESET = {TEMP_RESULT: 0x8000, CONFIG: 0x0220, T_HIGH: 0x6000, T_LOW: 0x8000,
             EEPROM_UL: 0, 5: 0, 6: 0, TEMP_OFFSET: 0, 8: 0, DEVICE_ID: 0x0117}
    READ_ONLY = frozenset({TEMP_RESULT, DEVICE_ID})
    QUANTITIES = (Quantity("temperature", "°C", -256.0, 255.99, 25.0,
                           doc="die temperature, before the offset register"),)

    def __init__(self, address: int | None, **kw: Any) -> None:
        super().__init__(address, **kw)
        self.conv = self.timer()
        self._power_on()

    def _power_on(self) -> None:
        """A part powered long enough to have a result and Data_Ready set, converting."""
        self._latch()
        self._mode_changed()

    def next_reg(self, reg: int) -> int:
        return reg

    def _config(self) -> tuple[int, int, int]:
        c = self.regs[CONFIG]
        mod = (c >> 10) & 3
        return (MOD_CC if mod == 2 else mod), (c >> 7) & 7, (c >> 5) & 3

    def _mode_changed(self) -> None:
        mod, conv, avg = self._config()
        active = SINGLE_CONVERSION_S * _AVERAGES[avg]
        if mod == MOD_CC:
            self.conv.start(active, _CYCLE[avg][conv])
        elif mod == MOD_OS:
            self.conv.start(active)
        else:
            self.conv.stop()

    def _latch(self) -> None:
        """A conversion completed: the result, the alert flags, Data_Ready."""
        t = self.measure("temperature")
        raw = round(t / LSB_C) + _s16(self.regs[TEMP_OFFSET])
        raw = max(-0x8000, min(0x7FFF, raw))
        self.regs[TEMP_RESULT] = raw & 0xFFFF
        c = self.regs[CONFIG] | DATA_READY
        high, low = _s16(self.regs[T_HIGH]), _s16(self.regs[T_LOW])
        if c & (1 << 4):  # therm mode: HIGH_Alert with hysteresis, LOW_Alert unused
            if raw > high:
                c |= HIGH_ALERT
            elif raw < low:
                c &= ~HIGH_ALERT
        else:
            c |= (HIGH_ALERT if raw >= high else 0) | (LOW_ALERT if raw <= low else 0)
        self.regs[CONFIG] = c

    def update(self) -> None:
        if self.conv.poll():
            self.conversion_index = self.conv.count
            self._latch()
            if self._config()[0] == MOD_OS:  # one-shot ends in shutdown
                self.regs[CONFIG] = (self.regs[CONFIG] & ~(3 << 10)) | (MOD_SD << 10)

    def on_values(self, names: Iterable[str]) -> None:
        flags = self.regs[CONFIG] & (DATA_READY | HIGH_ALERT | LOW_ALERT)
        self._latch()  # the result as if measured now; the flags as they were
        self.regs[CONFIG] = (self.regs[CONFIG] & ~(DATA_READY | HIGH_ALERT | LOW_ALERT)) | flags

    def read_reg(self, reg: int) -> int:
        value = self.regs.get(reg, 0)
        if reg == CONFIG:
            clear = DATA_READY if self.regs[CONFIG] & (1 << 4) else (
                DATA_READY | HIGH_ALERT | LOW_ALERT)
            self.regs[CONFIG] &= ~clear
        elif reg == TEMP_RESULT:
            self.regs[CONFIG] &= ~DATA_READY
        return value

    def write_reg(self, reg: int, value: int) -> None:
        if reg == CONFIG:
            if value & SOFT_RESET:
                self.reset_registers()
                self._mode_changed()
                return
            self.regs[CONFIG] = (self.regs[CONFIG] & 0xF000) | (value & 0x0FFC)
            self._mode_changed()
        elif reg in self.RESET and reg not in self.READ_ONLY:
            self.regs[reg] = value

    def settings(self) -> Mapping[str, int]:
        """The configuration fields, decoded (for tests and docs)."""
        mod, conv, avg = self._config()
        return {"mode": mod, "conv": conv, "avg": avg}

"""Maxim DS3231 real-time clock with TCXO (datasheet: Maxim DS3231 rev. 10, Figure 1 and
pages 11-16: timekeeping, control, status, aging and temperature registers)."""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Iterable
from typing import Any

from ..model import Quantity, Value
from .base import RegisterChip

SECONDS, DAY, MONTH, YEAR, CONTROL, STATUS, AGING, TEMP_MSB, TEMP_LSB = (
    0x00, 0x03, 0x05, 0x06, 0x0E, 0x0F, 0x10, 0x11, 0x12)
EOSC, CONV, OSF, BSY = 0x80, 0x20, 0x80, 0x04
CONVERSION_S = 0.2  # tCONV, maximum
EPOCH = "2000-01-01T00:00:00"


def parse_time(text: str) -> dt.datetime:
    """ISO 8601 (offsets dropped: the chip keeps local time), or "now": the host's UTC time."""
    if text == "now":
        return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    when = dt.datetime.fromisoformat(text).replace(tzinfo=None, microsecond=0)
    if not 2000 <= when.year <= 2199:
        raise ValueError(f"a DS3231 counts years 2000..2199, not {when.year}")
    return when


def _bcd(v: int) -> int:
    return (v // 10) << 4 | v % 10


def _bin(v: int) -> int:
    return (v >> 4) * 10 + (v & 0xF)


class Ds3231(RegisterChip):
    """DS3231: a running clock in BCD registers 0x00-0x06, behind an auto-incrementing pointer.

    Modelled: the clock running on the model's clock from the time written
    (or set), with 12/24-hour formats, the day-of-week counter (1-7, as
    written, advancing at midnight), the century bit, writes to single time
    registers; the oscillator stopping while EOSC is set; OSF set at power-on
    and cleared by writing 0; temperature registers (0.25 °C) refreshed every
    64 s and by a CONV-started conversion, during which BSY is set and
    after which CONV clears; the pointer wrapping from 0x12 to 0x00.  The
    power-on time is 2000-01-01 00:00:00, as after a battery change.  Not
    modelled: alarm matching (alarm registers and A1F/A2F are stored only),
    the square-wave and 32 kHz outputs, aging's effect on the rate.
    """

    MODEL = "ds3231"
    RESET = {**dict.fromkeys(range(0x13), 0), DAY: 1, 0x04: 1, MONTH: 1, CONTROL: 0x1C,
             STATUS: 0x88}
    READ_ONLY = frozenset({TEMP_MSB, TEMP_LSB})
    QUANTITIES = (
        Quantity("time", "", 0, 0, EPOCH, "str",
                 'date and time, ISO 8601 or "now"; it keeps running'),
        Quantity("temperature", "°C", -40.0, 85.0, 25.0),
    )

    def __init__(self, address: int | None, **kw: Any) -> None:
        super().__init__(address, **kw)
        self.base = parse_time(str(self.values["time"]))
        self.weekday = self.base.isoweekday()  # the day register, 1-7
        self.h12 = False
        self.t0 = self.clock()
        self.stopped_at: float | None = None
        self._pending: tuple[dict[str, int], int] | None = None
        self.temp_timer = self.timer()
        self.temp_timer.start(0.0, 64.0)
        self.conv = self.timer()
        self._latch_temperature()

    def next_reg(self, reg: int) -> int:
        return (reg + 1) % 0x13

    def validate(self, name: str, value: Value) -> Value:
        if name == "time":
            return parse_time(str(value)).isoformat()  # "now" is now, at the set
        return value

    def now(self) -> dt.datetime:
        t = self.stopped_at if self.stopped_at is not None else self.clock()
        return self.base + dt.timedelta(seconds=int(t - self.t0))

    def _rebase(self, when: dt.datetime, weekday: int) -> None:
        self.base = when
        self.weekday = weekday
        self.t0 = self.clock() if self.stopped_at is None else self.stopped_at

    def _weekday_now(self) -> int:
        days = (self.now().date() - self.base.date()).days
        return (self.weekday - 1 + days) % 7 + 1

    def _latch_temperature(self) -> None:
        q = round(self.measure("temperature") * 4)
        self.regs[TEMP_MSB] = (q >> 2) & 0xFF
        self.regs[TEMP_LSB] = (q & 3) << 6

    def update(self) -> None:
        if self.temp_timer.poll():
            self._latch_temperature()
        if self.conv.poll():
            self._latch_temperature()
            self.regs[CONTROL] &= ~CONV

    def current(self, name: str) -> Value:
        if name == "time":
            return self.now().isoformat()
        return self.values[name]

    def on_values(self, names: Iterable[str]) -> None:
        if "time" in names:
            when = dt.datetime.fromisoformat(str(self.values["time"]))
            self._rebase(when, when.isoweekday())
        if "temperature" in names:
            self._latch_temperature()

    def read_reg(self, reg: int) -> int:
        if reg > YEAR:
            value = self.regs.get(reg, 0)
            if reg == STATUS:
                value = value & ~BSY | (BSY if self.conv.busy else 0)
            return value
        n = self.now()
        if reg == 2:
            if not self.h12:
                return _bcd(n.hour)
            h = n.hour % 12 or 12
            return 0x40 | (0x20 if n.hour >= 12 else 0) | _bcd(h)
        if reg == DAY:
            return self._weekday_now()
        if reg == MONTH:
            return (0x80 if n.year >= 2100 else 0) | _bcd(n.month)
        return _bcd((n.second, n.minute, 0, 0, n.day, 0, n.year % 100)[reg])

    def write_reg(self, reg: int, value: int) -> None:
        if reg > YEAR:
            if reg == STATUS:  # OSF and the alarm flags can only be cleared
                value = value & 0x7B & self.regs[STATUS] | value & 0x08
            elif reg == CONTROL:
                self._control(value)
            super().write_reg(reg, value)
            return
        n = self.now()
        if self._pending is None:  # the counters as they stand; committed at STOP
            self._pending = ({"second": n.second, "minute": n.minute, "hour": n.hour,
                              "day": n.day, "month": n.month, "year": n.year},
                             self._weekday_now())
        fields = self._pending[0]
        if reg == 2:
            self.h12 = bool(value & 0x40)
            if self.h12:
                fields["hour"] = _bin(value & 0x1F) % 12 + (12 if value & 0x20 else 0)
            else:
                fields["hour"] = _bin(value & 0x3F)
        elif reg == DAY:
            self._pending = (fields, (value & 7) or 1)
        elif reg == MONTH:
            fields["month"] = max(1, min(12, _bin(value & 0x1F)))
            fields["year"] = 2000 + fields["year"] % 100 + (100 if value & 0x80 else 0)
        elif reg == YEAR:
            fields["year"] = fields["year"] - fields["year"] % 100 + _bin(value)
        else:
            fields[("second", "minute", "", "", "day")[reg]] = _bin(value & 0x7F)

    def stop(self) -> None:
        """Time registers written in a transaction take effect together, at its STOP."""
        super().stop()
        with self.lock:
            if self._pending is None:
                return
            f, weekday = self._pending
            self._pending = None
            last = calendar.monthrange(f["year"], f["month"])[1]
            day = max(1, min(last, f["day"]))  # a date the month lacks: its last day
            self._rebase(dt.datetime(f["year"], f["month"], day, min(f["hour"], 23),
                                     min(f["minute"], 59), min(f["second"], 59)), weekday)

    def _control(self, value: int) -> None:
        if value & EOSC and self.stopped_at is None:
            self.stopped_at = self.clock()
        elif not value & EOSC and self.stopped_at is not None:
            self.t0 += self.clock() - self.stopped_at
            self.stopped_at = None
        if value & CONV and not self.conv.busy:
            self.conv.start(CONVERSION_S)

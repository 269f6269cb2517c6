"""NXP PCA9685 16-channel 12-bit PWM controller (datasheet: NXP PCA9685 rev. 4, §7.3)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..model import Quantity, Value
from .base import RegisterChip

MODE1, MODE2, LED0, ALL_LED, PRE_SCALE = 0x00, 0x01, 0x06, 0xFA, 0xFE
RESTART, AI, SLEEP = 0x80, 0x20, 0x10
FULL = 0x1000
CHANNELS = 16


class Pca9685(RegisterChip):
    """PCA9685: 8-bit registers; the pointer auto-increments only with MODE1 AI set.

    Modelled: MODE1/MODE2 reset values (MODE1 0x11: asleep), the 16 LEDn
    ON/OFF register quartets (reset: full off) and ALL_LED (writes set every
    channel, reads 0), PRE_SCALE writable only while asleep (reset 0x1E,
    200 Hz), the RESTART bit (set when PWM outputs were running as the chip
    went to sleep, cleared by writing it 1), and the outputs' frequency and
    duty cycles, which :meth:`get` reports and :meth:`set` can preset.
    Not modelled: sub-addresses and All Call as extra I2C addresses, the
    software reset general call, output drive/inversion (MODE2 is stored),
    the 500 µs oscillator start-up, EXTCLK (``oscillator_hz`` sets the clock).
    """

    MODEL = "pca9685"
    RESET = {MODE1: 0x11, MODE2: 0x04, 0x02: 0xE2, 0x03: 0xE4, 0x04: 0xE8, 0x05: 0xE0,
             **dict.fromkeys(range(LED0, LED0 + 4 * CHANNELS), 0),
             **{LED0 + 4 * i + 3: FULL >> 8 for i in range(CHANNELS)}, PRE_SCALE: 0x1E}
    QUANTITIES = (
        Quantity("frequency", "Hz", 24.0, 1526.0, 200.0, doc="PWM frequency (from PRE_SCALE)"),
        *(Quantity(f"duty{i}", "", 0.0, 1.0, 0.0, doc=f"LED{i} duty cycle")
          for i in range(CHANNELS)),
    )

    def __init__(self, address: int | None, *, oscillator_hz: float = 25e6, **kw: Any) -> None:
        super().__init__(address, **kw)
        self.oscillator_hz = oscillator_hz

    def next_reg(self, reg: int) -> int:
        return (reg + 1) & 0xFF if self.regs[MODE1] & AI else reg

    def read_reg(self, reg: int) -> int:
        return 0 if ALL_LED <= reg < PRE_SCALE else self.regs.get(reg, 0)

    def _running(self) -> bool:
        return any(self._duty(i) > 0 for i in range(CHANNELS))

    def write_reg(self, reg: int, value: int) -> None:
        if reg == MODE1:
            old = self.regs[MODE1]
            new = value & 0x7F | (old & RESTART)
            if value & SLEEP and not old & SLEEP and self._running():
                new |= RESTART
            if value & RESTART and not value & SLEEP:
                new &= ~RESTART
            self.regs[MODE1] = new
        elif reg == PRE_SCALE:
            if self.regs[MODE1] & SLEEP:
                self.regs[reg] = max(3, value)
        elif ALL_LED <= reg < PRE_SCALE:
            for i in range(CHANNELS):
                self.regs[LED0 + 4 * i + reg - ALL_LED] = value
        elif reg < 0x46 or reg == 0xFF:
            self.regs[reg] = value

    def _duty(self, ch: int) -> float:
        base = LED0 + 4 * ch
        on = self.regs[base] | self.regs[base + 1] << 8
        off = self.regs[base + 2] | self.regs[base + 3] << 8
        if off & FULL:
            return 0.0
        if on & FULL:
            return 1.0
        return ((off - on) % 4096) / 4096

    def current(self, name: str) -> Value:
        if name == "frequency":
            return self.oscillator_hz / 4096 / (self.regs[PRE_SCALE] + 1)
        return self._duty(int(name.removeprefix("duty")))

    def on_values(self, names: Iterable[str]) -> None:
        for name in names:
            v = float(self.values[name])
            if name == "frequency":
                self.regs[PRE_SCALE] = max(3, min(255, round(self.oscillator_hz / 4096 / v) - 1))
                continue
            base = LED0 + 4 * int(name.removeprefix("duty"))
            on, off = (FULL, 0) if v >= 1.0 else (0, FULL if v <= 0 else round(v * 4096))
            for k, b in enumerate((on & 0xFF, on >> 8, off & 0xFF, off >> 8)):
                self.regs[base + k] = b

"""Bosch BME280 humidity, pressure and temperature sensor (datasheet: Bosch BST-BME280-DS002,
rev. 1.23: §3.3-3.5 modes and timing, §4.2 trimming and compensation, §5.3-5.4 registers,
§6.2 I2C)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from ..model import Quantity
from .base import RegisterChip

CHIP_ID, RESET, CTRL_HUM, STATUS, CTRL_MEAS, CONFIG = 0xD0, 0xE0, 0xF2, 0xF3, 0xF4, 0xF5
PRESS, TEMP, HUM = 0xF7, 0xFA, 0xFD
MEASURING, IM_UPDATE = 0x08, 0x01
NVM_COPY_S = 0.002
#: Standby time (s) between normal-mode measurements by config t_sb (Table 27).
_T_SB = (0.0005, 0.0625, 0.125, 0.25, 0.5, 1.0, 0.010, 0.020)
_OVERSAMPLING = (0, 1, 2, 4, 8, 16, 16, 16)

#: Trimming of a typical part: T and P are the worked example of the BMP280 datasheet
#: (§3.12: dig_T1 = 27504 ... dig_P9 = 6000), H a typical BME280's.
TRIMMING = bytes.fromhex("706b4367 18fc7d8e 43d6d00b 270b8c00 f9ff8c3c f8c67017")  # 0x88..
TRIMMING_H = bytes.fromhex("4b") + bytes.fromhex("6a01 0013 2903 1e")  # 0xA1, 0xE1..0xE7


class Trim(NamedTuple):
    """The trimming words of §4.2.2, as the compensation formulas take them."""

    t: tuple[int, int, int]
    p: tuple[int, ...]
    h: tuple[int, int, int, int, int, int]


def _s16(lo: int, hi: int) -> int:
    v = lo | hi << 8
    return v - 0x10000 if v & 0x8000 else v


def _s12(v: int) -> int:
    return v - 0x1000 if v & 0x800 else v


def trimming(regs: Mapping[int, int]) -> Trim:
    """Decode the trimming registers 0x88..0xA1 and 0xE1..0xE7 (Table 16)."""
    r = regs.get
    t1 = r(0x88, 0) | r(0x89, 0) << 8
    t = (t1, _s16(r(0x8A, 0), r(0x8B, 0)), _s16(r(0x8C, 0), r(0x8D, 0)))
    p1 = r(0x8E, 0) | r(0x8F, 0) << 8
    p = (p1, *(_s16(r(a, 0), r(a + 1, 0)) for a in range(0x90, 0xA0, 2)))
    e5 = r(0xE5, 0)
    h6 = r(0xE7, 0)
    h = (r(0xA1, 0), _s16(r(0xE1, 0), r(0xE2, 0)), r(0xE3, 0),
         _s12(r(0xE4, 0) << 4 | (e5 & 0xF)), _s12(r(0xE6, 0) << 4 | e5 >> 4),
         h6 - 0x100 if h6 & 0x80 else h6)
    return Trim(t, p, h)


def t_fine(tr: Trim, adc_t: int) -> float:
    """§8.1 (floating point), as the Bosch API and Python drivers compute it."""
    t1, t2, t3 = tr.t
    var1 = (adc_t / 16384.0 - t1 / 1024.0) * t2
    var2 = (adc_t / 131072.0 - t1 / 8192.0) ** 2 * t3
    return var1 + var2


def pressure_pa(tr: Trim, tf: float, adc_p: int) -> float:
    p1, p2, p3, p4, p5, p6, p7, p8, p9 = tr.p
    var1 = tf / 2.0 - 64000.0
    var2 = var1 * var1 * p6 / 32768.0 + var1 * p5 * 2.0
    var2 = var2 / 4.0 + p4 * 65536.0
    var1 = (p3 * var1 * var1 / 524288.0 + p2 * var1) / 524288.0
    var1 = (1.0 + var1 / 32768.0) * p1
    if var1 == 0:
        return 0.0
    p = 1048576.0 - adc_p
    p = (p - var2 / 4096.0) * 6250.0 / var1
    return p + (p9 * p * p / 2147483648.0 + p * p8 / 32768.0 + p7) / 16.0


def humidity_rh(tr: Trim, tf: float, adc_h: int) -> float:
    h1, h2, h3, h4, h5, h6 = tr.h
    v = tf - 76800.0
    v = (adc_h - (h4 * 64.0 + h5 / 16384.0 * v)) * (
        h2 / 65536.0 * (1.0 + h6 / 67108864.0 * v * (1.0 + h3 / 67108864.0 * v)))
    v *= 1.0 - h1 * v / 524288.0
    return min(100.0, max(0.0, v))


def _invert(f: Callable[[int], float], target: float, top: int, rising: bool) -> int:
    """The ADC code whose compensated value is nearest ``target`` (f is monotonic)."""
    lo, hi = 0, top
    while lo < hi:
        mid = (lo + hi) // 2
        below = f(mid) < target if rising else f(mid) > target
        if below:
            lo = mid + 1
        else:
            hi = mid
    if lo > 0 and abs(f(lo - 1) - target) < abs(f(lo) - target):
        lo -= 1
    return lo


class Bme280(RegisterChip):
    """BME280 on I2C: 8-bit registers, auto-incrementing reads, (register, value) pair writes.

    Modelled: sleep, forced (one measurement, then back to sleep: ctrl_meas
    mode reads 00) and normal mode (measurement + t_sb standby, repeated);
    the measurement time of §9.1 (typical: 1 ms + 2 ms per oversampling step
    of T, P and H, + 0.5 ms each for P and H); status 0xF3 ``measuring``
    (bit 3) while it runs and ``im_update`` (bit 0) for 2 ms after a reset;
    the reset register 0xE0 (reads 0; 0xB6 restores every reset value);
    ctrl_hum taking effect at the next ctrl_meas write; the data registers
    0xF7..0xFE written at the end of a measurement from temperature,
    pressure and humidity through the inverse of §4.2.3's compensation with
    the part's trimming, so drivers compute the values set (to the ADC's
    resolution); a skipped measurement reads 0x80000 (0x8000 humidity); one
    burst read sees one measurement.  Not modelled: the IIR filter
    (config is stored only), SPI, the 16..20-bit resolution steps.
    """

    MODEL = "bme280"
    WRITE_PAIRS = True  # §6.2.1: a write is (register, value) pairs
    READ_ONLY = frozenset({CHIP_ID, STATUS, *range(0x88, 0xA2), *range(0xE1, 0xF1),
                          *range(PRESS, 0xFF)})
    QUANTITIES = (
        Quantity("temperature", "°C", -40.0, 85.0, 25.0),
        Quantity("pressure", "hPa", 300.0, 1100.0, 1013.25),
        Quantity("humidity", "%RH", 0.0, 100.0, 45.0),
    )

    def __init__(self, address: int | None, **kw: Any) -> None:
        super().__init__(address, **kw)
        self.conv = self.timer()
        self._nvm_until = 0.0
        self._latch()  # power-on: the data registers hold one measurement

    def reset_registers(self) -> None:
        trim = dict(zip(range(0x88, 0xA0), TRIMMING, strict=True))
        trim.update(zip((0xA1, *range(0xE1, 0xE8)), TRIMMING_H, strict=True))
        self.regs = {**trim, CHIP_ID: 0x60, RESET: 0, CTRL_HUM: 0, STATUS: 0, CTRL_MEAS: 0,
                     CONFIG: 0, PRESS: 0x80, PRESS + 1: 0, PRESS + 2: 0, TEMP: 0x80,
                     TEMP + 1: 0, TEMP + 2: 0, HUM: 0x80, HUM + 1: 0, **self.overrides}
        self._hum_osrs = self.regs[CTRL_HUM] & 7

    def _oversampling(self) -> tuple[int, int, int]:
        meas = self.regs[CTRL_MEAS]
        return (_OVERSAMPLING[meas >> 5], _OVERSAMPLING[(meas >> 2) & 7],
                _OVERSAMPLING[self._hum_osrs])

    def measurement_s(self) -> float:
        """§9.1's typical measurement time for the oversampling set."""
        t, p, h = self._oversampling()
        ms = 1.0 + 2.0 * t + (2.0 * p + 0.5 if p else 0.0) + (2.0 * h + 0.5 if h else 0.0)
        return ms / 1000.0

    def _start(self) -> None:
        mode = self.regs[CTRL_MEAS] & 3
        if mode == 0:
            self.conv.stop()
        elif mode == 3:
            t = self.measurement_s()
            self.conv.start(t, t + _T_SB[self.regs[CONFIG] >> 5])
        else:
            self.conv.start(self.measurement_s())

    def _latch(self) -> None:
        tr = trimming(self.regs)
        os_t, os_p, os_h = self._oversampling() if self.conv.count else (1, 1, 1)
        temp, press, hum = (self.measure(n) for n in ("temperature", "pressure", "humidity"))
        adc_t = _invert(lambda a: t_fine(tr, a) / 5120.0, temp, 0xFFFFF, True)
        tf = t_fine(tr, adc_t)
        adc_p = _invert(lambda a: pressure_pa(tr, tf, a), press * 100.0, 0xFFFFF, False)
        adc_h = _invert(lambda a: humidity_rh(tr, tf, a), hum, 0xFFFF, True)
        for reg, adc, on in ((TEMP, adc_t, os_t), (PRESS, adc_p, os_p)):
            v = adc if on else 0x80000
            self.regs[reg], self.regs[reg + 1], self.regs[reg + 2] = (
                v >> 12, (v >> 4) & 0xFF, (v & 0xF) << 4)
        h = adc_h if os_h else 0x8000
        self.regs[HUM], self.regs[HUM + 1] = h >> 8, h & 0xFF

    def update(self) -> None:
        if self.conv.poll():
            self.conversion_index = self.conv.count
            self._latch()
            if self.regs[CTRL_MEAS] & 3 in (1, 2):  # forced: back to sleep
                self.regs[CTRL_MEAS] &= ~3

    def on_values(self, names: Iterable[str]) -> None:
        self._latch()

    def read_reg(self, reg: int) -> int:
        if reg == STATUS:
            return (MEASURING if self.conv.busy else 0) | (
                IM_UPDATE if self.clock() < self._nvm_until else 0)
        return self.regs.get(reg, 0)

    def write_reg(self, reg: int, value: int) -> None:
        if reg == RESET:
            if value == 0xB6:
                self.reset_registers()
                self.conv.stop()
                self._nvm_until = self.clock() + NVM_COPY_S
            return
        if reg in self.READ_ONLY or reg not in self.regs:
            return
        self.regs[reg] = value
        if reg == CTRL_MEAS:
            self._hum_osrs = self.regs[CTRL_HUM] & 7
            self._start()
        elif reg == CONFIG and self.regs[CTRL_MEAS] & 3 == 3:
            self._start()

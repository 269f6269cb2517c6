"""Sensirion SHT3x-DIS (SHT30/31/35) humidity and temperature sensor (datasheet: Sensirion
SHT3x-DIS, version 7, 2022: §4 commands, §4.12 CRC-8, §4.13 conversion, Table 4 timing)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..model import MAX_FAULT_COUNT, Fault, Param, Quantity, Value
from .base import I2CChip

FETCH, ART, BREAK, SOFT_RESET = 0xE000, 0x2B32, 0x3093, 0x30A2
HEATER_ON, HEATER_OFF, READ_STATUS, CLEAR_STATUS, READ_SERIAL = (
    0x306D, 0x3066, 0xF32D, 0x3041, 0x3780)
STATUS_RESET = 0x8010  # alert pending, system reset detected
HEATER_BIT, RESET_BIT, COMMAND_BIT = 1 << 13, 1 << 4, 1 << 1
#: Single shot commands: (clock stretching, repeatability).
_SINGLE = {0x2C06: (True, "high"), 0x2C0D: (True, "medium"), 0x2C10: (True, "low"),
           0x2400: (False, "high"), 0x240B: (False, "medium"), 0x2416: (False, "low")}
#: Periodic commands: (measurements per second, repeatability).
_PERIODIC = {
    0x2032: (0.5, "high"), 0x2024: (0.5, "medium"), 0x202F: (0.5, "low"),
    0x2130: (1, "high"), 0x2126: (1, "medium"), 0x212D: (1, "low"),
    0x2236: (2, "high"), 0x2220: (2, "medium"), 0x222B: (2, "low"),
    0x2334: (4, "high"), 0x2322: (4, "medium"), 0x2329: (4, "low"),
    0x2737: (10, "high"), 0x2721: (10, "medium"), 0x272A: (10, "low"),
    ART: (4, "high"),
}
#: Measurement duration (s), the datasheet's maximum (Table 4).
_DURATION = {"high": 0.015, "medium": 0.006, "low": 0.004}


def crc8(data: bytes) -> int:
    """Sensirion's CRC-8: polynomial 0x31, init 0xFF, no reflection (CRC(0xBEEF) = 0x92)."""
    crc = 0xFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


class Sht31(I2CChip):
    """SHT3x: 16-bit commands, results as words each followed by its CRC-8.

    Modelled: single-shot measurements (with and without clock stretching;
    without it the read header is NACKed until the measurement is done, as
    the datasheet says, and a result is read once), periodic mode at 0.5-10
    mps and ART with Fetch Data (NACKed when no new result), Break, soft
    reset (stops periodic mode, sets the reset flag), heater on/off, the
    status register (heater, reset-detected and command-status bits; Clear
    Status), a serial number, and the conversions of §4.13.  A clock-stretched
    read completes at once.  Not modelled: alert mode and its limit commands,
    general call reset, the heater's effect on the reading.  Fault
    ``crc-error`` corrupts the CRC of the next COUNT words read.
    """

    MODEL = "sht31"
    QUANTITIES = (
        Quantity("temperature", "°C", -45.0, 130.0, 25.0),
        Quantity("humidity", "%RH", 0.0, 100.0, 45.0),
    )
    FAULTS = (Fault("crc-error", "send a wrong CRC with the next COUNT words read",
                    (Param("count", "int", 1, 0, MAX_FAULT_COUNT),)),)

    def __init__(self, address: int | None, *, serial: int = 0x1A2B3C4D, **kw: Any) -> None:
        super().__init__(address, **kw)
        self.conv = self.timer()
        self.serial = serial & 0xFFFFFFFF
        self.status = STATUS_RESET
        self.periodic = False
        self.result = b""  # the latest measurement, words and CRCs
        self.fresh = False  # a result not fetched yet
        self.out = b""  # what the next read returns
        self.bad_crcs = 0
        self.stretch = False  # the pending single shot stretches the clock
        self._cmd = bytearray()

    def chip_fault(self, fault: str, params: Mapping[str, Value]) -> None:
        if fault == "crc-error":
            self.bad_crcs = int(params["count"])
        elif fault == "clear":
            self.bad_crcs = 0

    def _words(self, *words: int) -> bytes:
        out = bytearray()
        for w in words:
            pair = w.to_bytes(2, "big")
            crc = crc8(pair)
            if self.bad_crcs > 0:
                self.bad_crcs -= 1
                crc ^= 0xFF
            out += pair + bytes([crc])
        return bytes(out)

    def _measure(self) -> bytes:
        t = self.measure("temperature")
        rh = self.measure("humidity")
        st = round((t + 45.0) * 65535 / 175.0)
        srh = round(rh * 65535 / 100.0)
        return self._words(max(0, min(0xFFFF, st)), max(0, min(0xFFFF, srh)))

    def update(self) -> None:
        if self.conv.poll():
            self.conversion_index = self.conv.count
            self.result = self._measure()
            self.fresh = True
            if not self.periodic:
                self.out = self.result

    def on_values(self, names: object) -> None:
        if self.result:
            self.result = self._measure()
            if self.out and not self.periodic:
                self.out = self.result

    def _command(self, cmd: int) -> None:
        known = True
        if cmd == BREAK:
            self.periodic = False
            self.conv.stop()
        elif cmd == SOFT_RESET:
            self.periodic = False
            self.conv.stop()
            self.status = STATUS_RESET
            self.out = b""
        elif self.periodic and cmd not in (FETCH, READ_STATUS, CLEAR_STATUS, HEATER_ON,
                                           HEATER_OFF):
            known = False  # a measurement command while measuring periodically
        elif cmd in _SINGLE:
            self.out = b""
            self.stretch, rep = _SINGLE[cmd]
            self.conv.start(_DURATION[rep])
        elif cmd in _PERIODIC:
            mps, rep = _PERIODIC[cmd]
            self.periodic = True
            self.fresh = False
            self.conv.start(_DURATION[rep], 1.0 / mps)
        elif cmd == FETCH:
            self.out = self.result if self.fresh else b""
            self.fresh = False
        elif cmd == READ_STATUS:
            self.out = self._words(self.status)
        elif cmd == CLEAR_STATUS:
            self.status &= ~(RESET_BIT | (1 << 15) | (1 << 11) | (1 << 10))
        elif cmd in (HEATER_ON, HEATER_OFF):
            self.status = (self.status | HEATER_BIT) if cmd == HEATER_ON else (
                self.status & ~HEATER_BIT)
        elif cmd == READ_SERIAL:
            self.out = self._words(self.serial >> 16, self.serial & 0xFFFF)
        else:
            known = False
        self.status = (self.status & ~COMMAND_BIT) | (0 if known else COMMAND_BIT)

    # -- bus hooks ----------------------------------------------------------------

    def chip_ack(self, read: bool) -> bool:
        self.update()
        if read and self.stretch and self.conv.active and not self.periodic:
            self.conv.stop()  # clock stretching: the read waits for the result
            self.result = self.out = self._measure()
        return not read or bool(self.out)  # nothing to send: the read header is NACKed

    def start(self, address: int, read: bool) -> None:
        with self.lock:
            self._cmd.clear()

    def write(self, data: bytes) -> int:
        with self.lock:
            for b in data:
                self._cmd.append(b)
                if len(self._cmd) == 2:
                    self._command(int.from_bytes(self._cmd, "big"))
                    self._cmd.clear()
            return len(data)

    def read(self, length: int) -> bytes:
        with self.lock:
            out, self.out = self.out, b""  # a result is read once
            return out[:length]

"""Microchip MCP23017 16-bit I/O expander (datasheet: Microchip DS20001952C, §3.5)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..model import Quantity, Value
from .base import RegisterChip

IODIR, IPOL, GPINTEN, DEFVAL, INTCON, IOCON, GPPU, INTF, INTCAP, GPIO, OLAT = (
    0x00, 0x02, 0x04, 0x06, 0x08, 0x0A, 0x0C, 0x0E, 0x10, 0x12, 0x14)
SEQOP = 0x20


class Mcp23017(RegisterChip):
    """MCP23017 in IOCON.BANK = 0 (A/B registers interleaved, the reset layout).

    Modelled: IODIR (reset all inputs), IPOL, GPPU, GPIO reading the pins
    (inputs: what :meth:`set` says is driven on them, an undriven pin with
    its pull-up reads 1; outputs: OLAT) and writing OLAT, interrupt-on-change
    (GPINTEN, DEFVAL, INTCON) setting INTF and capturing INTCAP when inputs
    change, both cleared by reading GPIO or INTCAP of that port; IOCON
    mirrored at 0x0A/0x0B; sequential reads and writes wrapping after 0x15,
    or toggling between a port pair with SEQOP set.  Not modelled: BANK = 1,
    the INT pins and MIRROR, ODR/INTPOL (stored only).
    ``inputs``/``driven``: the pins external circuitry drives, and to what.
    """

    MODEL = "mcp23017"
    RESET = {**dict.fromkeys(range(0x16), 0), IODIR: 0xFF, IODIR + 1: 0xFF}
    READ_ONLY = frozenset({INTF, INTF + 1, INTCAP, INTCAP + 1})
    QUANTITIES = (
        Quantity("inputs", "", 0, 0xFFFF, 0, "int", "levels driven on the pins (bit 8+n: GPB n)"),
        Quantity("driven", "", 0, 0xFFFF, 0xFFFF, "int", "which pins are driven (others float)"),
        Quantity("outputs", "", 0, 0xFFFF, 0, "int", "levels the output pins drive",
                 settable=False),
    )

    def next_reg(self, reg: int) -> int:
        if self.regs[IOCON] & SEQOP:
            return reg ^ 1
        return (reg + 1) % 0x16

    def _port(self, port: int) -> int:
        """Pin levels of port A (0) or B (1)."""
        shift = 8 * port
        inputs = int(self.values["inputs"]) >> shift & 0xFF
        driven = int(self.values["driven"]) >> shift & 0xFF
        iodir = self.regs[IODIR + port]
        level = (inputs & driven) | (~driven & self.regs[GPPU + port])
        return ((level & iodir) | (self.regs[OLAT + port] & ~iodir)) & 0xFF

    def _gpio(self, port: int) -> int:
        return (self._port(port) ^ (self.regs[IPOL + port] & self.regs[IODIR + port])) & 0xFF

    def current(self, name: str) -> Value:
        if name == "outputs":
            return sum((self.regs[OLAT + p] & ~self.regs[IODIR + p] & 0xFF) << 8 * p
                       for p in (0, 1))
        return self.values[name]

    def on_values(self, names: Iterable[str]) -> None:
        for p in (0, 1):
            new = self._port(p)
            ref = (self.regs[DEFVAL + p] & self.regs[INTCON + p]) | (
                self._seen[p] & ~self.regs[INTCON + p])
            hit = (new ^ ref) & self.regs[GPINTEN + p] & self.regs[IODIR + p]
            if hit and not self.regs[INTF + p]:
                self.regs[INTF + p] = hit & 0xFF
                self.regs[INTCAP + p] = self._gpio(p)
            self._seen[p] = new

    def __init__(self, address: int | None, **kw: Any) -> None:
        super().__init__(address, **kw)
        self._seen = [self._port(0), self._port(1)]

    def read_reg(self, reg: int) -> int:
        port = reg & 1
        if reg in (GPIO, GPIO + 1, INTCAP, INTCAP + 1):
            value = self._gpio(port) if reg & ~1 == GPIO else self.regs[reg]
            self.regs[INTF + port] = 0
            return value
        return self.regs.get(reg, 0)

    def write_reg(self, reg: int, value: int) -> None:
        if reg in (GPIO, GPIO + 1):
            reg += OLAT - GPIO
        elif reg in (IOCON, IOCON + 1):
            self.regs[IOCON] = self.regs[IOCON + 1] = value & 0x7F  # BANK stays 0
            return
        super().write_reg(reg, value)
        self._seen[reg & 1] = self._port(reg & 1)

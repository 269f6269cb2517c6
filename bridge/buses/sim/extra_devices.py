"""Simulated SPI register chips: a generic address-byte register map and the LIS3DH.

Most SPI sensors speak one protocol: the first byte of a CS frame is a
register address with a read/write bit (and on ST parts an auto-increment
bit); the bytes after it are register values, read or written.  The board
file types ``spi_regmap`` and ``lis3dh`` build these.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from .spi import SpiDevice


class SpiRegisterDevice(SpiDevice):
    """An 8-bit register file behind an address byte.

    ``rw_bit`` in the address byte selects reading when set (ST, Bosch) or
    writing when set (``read_when_set=False``: Maxim, e.g. MAX31856).  With
    ``increment_bit`` (ST's MS bit) the address advances after each value
    only if that bit is set; without it the address always advances.
    ``read_only`` registers ignore writes.  MISO is 0xFF while the address
    byte is clocked in.
    """

    def __init__(
        self,
        *,
        name: str = "",
        registers: Mapping[int, int] | None = None,
        read_only: Iterable[int] = (),
        rw_bit: int = 0x80,
        read_when_set: bool = True,
        increment_bit: int | None = None,
        fail: bool = False,
        fail_index: int = 0,
        stall_s: float = 0.0,
    ) -> None:
        super().__init__(name=name, fail=fail, fail_index=fail_index, stall_s=stall_s)
        self.registers: dict[int, int] = {r & 0xFF: v & 0xFF for r, v in (registers or {}).items()}
        self.read_only = set(read_only)
        self.rw_bit = rw_bit
        self.read_when_set = read_when_set
        self.increment_bit = increment_bit
        self.addr_mask = 0xFF & ~rw_bit & ~(increment_bit or 0)
        self._addr: int | None = None
        self._reading = False
        self._increment = True

    def get(self, reg: int) -> int:
        """A register as a bus read would return it (no side effects)."""
        return self.registers.get(reg, 0)

    def put(self, reg: int, value: int) -> None:
        """A bus write of one register (read-only ones ignore it)."""
        if reg not in self.read_only:
            self.registers[reg] = value & 0xFF

    def select(self) -> None:
        self._addr = None

    def deselect(self) -> None:
        self._addr = None

    def exchange(self, mosi: bytes) -> bytes:
        out = bytearray()
        for b in mosi:
            if self._addr is None:
                self._reading = bool(b & self.rw_bit) == self.read_when_set
                self._increment = self.increment_bit is None or bool(b & self.increment_bit)
                self._addr = b & self.addr_mask
                out.append(0xFF)
                continue
            if self._reading:
                out.append(self.get(self._addr))
            else:
                self.put(self._addr, b)
                out.append(0xFF)
            if self._increment:
                self._addr = (self._addr + 1) & self.addr_mask
        return bytes(out)


# LIS3DH registers (ST DocID17530).
LIS3DH_WHO_AM_I = 0x0F
LIS3DH_CTRL_REG1 = 0x20
LIS3DH_CTRL_REG4 = 0x23
LIS3DH_OUT_X_L = 0x28
_LIS3DH_RESET = {LIS3DH_WHO_AM_I: 0x33, LIS3DH_CTRL_REG1: 0x07}
# mg per digit by CTRL_REG4 FS[1:0], for high-resolution, normal and low-power mode.
_LIS3DH_SENS = {"hr": (1, 2, 4, 12), "normal": (4, 8, 16, 48), "lp": (16, 32, 64, 192)}


class Lis3dh(SpiRegisterDevice):
    """ST LIS3DH accelerometer on SPI: a board at rest reads ``acceleration_mg``.

    Address byte: bit 7 read, bit 6 auto-increment.  WHO_AM_I (0x0F) is
    0x33; CTRL_REG1 resets to 0x07.  OUT_X_L..OUT_Z_H (0x28-0x2D) are
    left-justified two's complement, scaled by the full scale in
    CTRL_REG4 FS and the mode (HR bit, CTRL_REG1 LPen) as the datasheet's
    sensitivity table says, so a driver that changes the range still reads
    the same acceleration.
    """

    def __init__(self, *, acceleration_mg: tuple[int, int, int] = (0, 0, 1000),
                 **kw: Any) -> None:
        regs = {**_LIS3DH_RESET, **dict(kw.pop("registers", None) or {})}
        super().__init__(registers=regs, read_only=[LIS3DH_WHO_AM_I, *range(0x28, 0x2E)],
                         rw_bit=0x80, read_when_set=True, increment_bit=0x40, **kw)
        self.acceleration_mg = acceleration_mg

    def _raw(self, axis: int) -> int:
        ctrl4 = self.registers.get(LIS3DH_CTRL_REG4, 0)
        lp = bool(self.registers.get(LIS3DH_CTRL_REG1, 0) & 0x08)
        mode = "lp" if lp else ("hr" if ctrl4 & 0x08 else "normal")
        bits = {"hr": 12, "normal": 10, "lp": 8}[mode]
        sens = _LIS3DH_SENS[mode][(ctrl4 >> 4) & 3]
        limit = 1 << (bits - 1)
        value = max(-limit, min(limit - 1, round(self.acceleration_mg[axis] / sens)))
        return (value << (16 - bits)) & 0xFFFF

    def get(self, reg: int) -> int:
        if 0x28 <= reg <= 0x2D:
            raw = self._raw((reg - 0x28) // 2)
            return raw >> 8 if reg & 1 else raw & 0xFF
        return super().get(reg)


# ---------------------------------------------------------------------------
# Board-file specs (registered in bridge.config's SPI device union)
# ---------------------------------------------------------------------------


def _int(v: Any) -> Any:
    return int(v, 0) if isinstance(v, str) else v


_Int = Annotated[int, BeforeValidator(_int)]
_U8 = Annotated[int, BeforeValidator(_int), Field(ge=0, le=0xFF)]


class _SpiRegSpecBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cs: _U8
    name: str = ""
    fail: bool = False
    fail_index: Annotated[int, Field(ge=0)] = 0
    stall_s: Annotated[float, Field(ge=0, le=3600)] = 0.0
    registers: dict[_U8, _U8] = {}

    def _common(self) -> dict[str, Any]:
        return {"name": self.name, "fail": self.fail, "fail_index": self.fail_index,
                "stall_s": self.stall_s, "registers": dict(self.registers)}


class SpiRegMapSpec(_SpiRegSpecBase):
    """``type = "spi_regmap"``: :class:`SpiRegisterDevice`."""

    type: Literal["spi_regmap"]
    read_only: list[_U8] = []
    rw_bit: _U8 = 0x80
    read_when_set: bool = True
    increment_bit: _U8 | None = None

    def build(self) -> SpiDevice:
        return SpiRegisterDevice(read_only=self.read_only, rw_bit=self.rw_bit,
                                 read_when_set=self.read_when_set,
                                 increment_bit=self.increment_bit, **self._common())


class Lis3dhSpec(_SpiRegSpecBase):
    """``type = "lis3dh"``: :class:`Lis3dh`; ``acceleration_mg`` is what it feels."""

    type: Literal["lis3dh"]
    acceleration_mg: tuple[_Int, _Int, _Int] = (0, 0, 1000)

    def build(self) -> SpiDevice:
        return Lis3dh(acceleration_mg=self.acceleration_mg, **self._common())

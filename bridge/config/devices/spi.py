"""Board-file types of the generic simulated SPI devices: ``loopback``, ``nor_flash``,
``spi_regmap``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from ...buses.sim.spi import SpiDevice
from ...buses.sim.spi_devices import LoopbackDevice, SpiNorFlash, SpiRegisterDevice
from ..fields import U8, HexBytes, Int, Seconds
from .base import SpiDeviceSpecBase


class LoopbackSpec(SpiDeviceSpecBase):
    """MISO wired to MOSI."""

    type: Literal["loopback"]

    def build(self) -> SpiDevice:
        return LoopbackDevice(**self.options())


class NorFlashSpec(SpiDeviceSpecBase):
    """A JEDEC SPI NOR flash; ``jedec_id`` as a list of ints or a hex string."""

    type: Literal["nor_flash"]
    size: Int = 4 * 1024 * 1024
    jedec_id: Annotated[HexBytes, Field(min_length=1, max_length=8)] = [0xEF, 0x40, 0x16]
    device_id: U8 = 0x15
    page_size: Int = 256
    program_time_s: Seconds = 0.0
    erase_time_s: Seconds = 0.0

    @model_validator(mode="after")
    def _check_size(self) -> NorFlashSpec:
        if self.size <= 0 or self.size % 4096 or self.size > 1 << 24:
            raise ValueError(
                f"size {self.size} must be a multiple of 4 KiB up to 16 MiB (3-byte addressing)"
            )
        p = self.page_size
        if p <= 0 or p & (p - 1) or self.size % p:
            raise ValueError(f"page_size {p} must be a power of two dividing the size")
        return self

    def build(self) -> SpiDevice:
        return SpiNorFlash(
            size=self.size,
            jedec_id=bytes(self.jedec_id),
            device_id=self.device_id,
            page_size=self.page_size,
            program_time_s=self.program_time_s,
            erase_time_s=self.erase_time_s,
            **self.options(),
        )


class SpiRegMapSpec(SpiDeviceSpecBase):
    """``type = "spi_regmap"``: :class:`~bridge.buses.sim.spi_devices.SpiRegisterDevice`."""

    type: Literal["spi_regmap"]
    registers: dict[U8, U8] = {}
    read_only: list[U8] = []
    rw_bit: U8 = 0x80
    read_when_set: bool = True
    increment_bit: U8 | None = None

    def build(self) -> SpiDevice:
        return SpiRegisterDevice(registers=self.registers, read_only=self.read_only,
                                 rw_bit=self.rw_bit, read_when_set=self.read_when_set,
                                 increment_bit=self.increment_bit, **self.options())

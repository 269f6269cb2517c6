"""What every simulated device spec shares: where it sits on its bus, its name, its fault knobs."""

from __future__ import annotations

from abc import abstractmethod

from pydantic import BaseModel, model_validator

from ...buses.sim.i2c import I2CDevice, I2CDeviceOptions
from ...buses.sim.spi import SpiDevice, SpiDeviceOptions
from ..fields import STRICT, U8, Int, NonNegInt, Seconds


class I2CDeviceSpecBase(BaseModel):
    """An I2C device at ``address``; subclasses add ``type`` and build the device."""

    model_config = STRICT

    address: Int
    ten_bit: bool = False
    name: str = ""
    nack: bool = False
    nack_after_bytes: NonNegInt | None = None
    stall_s: Seconds = 0.0

    def addresses(self) -> list[int]:
        """Every address the device answers, for the bus's duplicate check."""
        return [self.address]

    @model_validator(mode="after")
    def _check_address(self) -> I2CDeviceSpecBase:
        a = self.address
        if self.ten_bit:
            if not 0 <= a <= 0x3FF:
                raise ValueError(f"10-bit address {a:#x} out of range 0x000..0x3ff")
        elif not 0x08 <= a <= 0x77:
            raise ValueError(
                f"7-bit address {a:#x} out of range 0x08..0x77 "
                "(0x00-0x07 and 0x78-0x7f are reserved; set ten_bit = true for 10-bit)"
            )
        return self

    def options(self) -> I2CDeviceOptions:
        """The keywords every simulated I2C device takes, as this spec sets them."""
        return {
            "ten_bit": self.ten_bit,
            "name": self.name,
            "nack": self.nack,
            "nack_after_bytes": self.nack_after_bytes,
            "stall_s": self.stall_s,
        }

    @abstractmethod
    def build(self) -> I2CDevice:
        """The simulated device this spec describes."""


class SpiDeviceSpecBase(BaseModel):
    """An SPI device on chip select ``cs``; subclasses add ``type`` and build the device."""

    model_config = STRICT

    cs: U8
    name: str = ""
    fail: bool = False
    fail_index: NonNegInt = 0
    stall_s: Seconds = 0.0

    def options(self) -> SpiDeviceOptions:
        """The keywords every simulated SPI device takes, as this spec sets them."""
        return {
            "name": self.name,
            "fail": self.fail,
            "fail_index": self.fail_index,
            "stall_s": self.stall_s,
        }

    @abstractmethod
    def build(self) -> SpiDevice:
        """The simulated device this spec describes."""

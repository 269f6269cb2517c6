"""What the board-file specs of chip models share: ``values`` sources and register overrides.

A chip model (``bridge/buses/sim/chips/``) declares what it measures; its board
entry may say where each value comes from::

    [[i2c.devices]]
    type = "tmp117"
    address = 0x48
    values = { temperature = { setpoint = 25.0, noise = 0.05 } }

A value is a number (constant), ``{ sequence = [...] }`` (one per conversion,
in turn) or ``{ setpoint = x, noise = sigma, seed = n }`` (Gaussian, the same
every run for a seed); quantities that are not numbers (a pin mask, a date)
take a plain value.  Names and ranges are the model's, checked when the board
is built.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, Field, model_validator

from ...buses.sim.chips.base import I2CChip
from ...buses.sim.i2c import I2CDevice
from ..fields import STRICT, Int
from .base import I2CDeviceSpecBase


class SequenceValues(BaseModel):
    """``{ sequence = [...] }``: the values in turn, one per conversion."""

    model_config = STRICT
    sequence: Annotated[list[float], Field(min_length=1, max_length=4096)]


class NoisyValue(BaseModel):
    """``{ setpoint = x, noise = sigma, seed = n }``: Gaussian noise around a setpoint."""

    model_config = STRICT
    setpoint: float
    noise: Annotated[float, Field(ge=0)]
    seed: int = 0


ValueSpec = bool | int | float | str | SequenceValues | NoisyValue


class I2CChipSpec(I2CDeviceSpecBase):
    """Base of a chip model's spec: where its ``values`` come from.

    A subclass adds ``type: Literal["<model>"]`` and names its model class in
    ``CHIP``; chip-specific keys go in the subclass and into :meth:`chip_options`.
    """

    CHIP: ClassVar[type[I2CChip]]
    #: Addresses the part can be strapped to (None: any).
    ADDRESSES: ClassVar[tuple[int, ...] | None] = None

    values: dict[str, ValueSpec] = {}

    @model_validator(mode="after")
    def _check_strapping(self) -> I2CChipSpec:
        if self.ADDRESSES is not None and self.address not in self.ADDRESSES:
            allowed = ", ".join(f"{a:#04x}" for a in self.ADDRESSES)
            raise ValueError(f"a {self.CHIP.MODEL} answers at {allowed}, not {self.address:#04x}")
        return self

    def model_values(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for k, v in self.values.items():
            out[k] = v.model_dump() if isinstance(v, BaseModel) else v
        return out

    def chip_options(self) -> dict[str, Any]:
        """Keywords of the model beyond the common ones."""
        return {}

    def make(self) -> I2CChip:
        o = self.options()
        return self.CHIP(self.address, values=self.model_values(), ten_bit=o["ten_bit"],
                         name=o["name"], nack=o["nack"],
                         nack_after_bytes=o["nack_after_bytes"], stall_s=o["stall_s"],
                         **self.chip_options())

    def build(self) -> I2CDevice:
        return self.make().i2c_device()


class RegisterChipSpec(I2CChipSpec):
    """A register chip's spec: ``registers`` override reset values (hex keys welcome)."""

    registers: dict[Int, Int] = {}

    def chip_options(self) -> dict[str, Any]:
        return {"registers": self.registers}

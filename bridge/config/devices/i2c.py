"""Board-file types of the generic simulated I2C devices: ``regmap`` and ``eeprom``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from ...buses.sim.i2c import I2CDevice
from ...buses.sim.i2c_devices import (
    EEPROM_MODELS,
    Eeprom24,
    RegisterMapDevice,
    eeprom_geometry_problem,
)
from ..fields import U8, Int, Seconds
from .base import I2CDeviceSpecBase


class RegMapSpec(I2CDeviceSpecBase):
    """A :class:`~bridge.buses.sim.i2c_devices.RegisterMapDevice`; register keys may be hex."""

    type: Literal["regmap"]
    pointer_bits: Literal[8, 16] = 8
    value_bits: Literal[8, 16] = 8
    endian: Literal["big", "little"] = "big"
    auto_increment: bool = True
    registers: dict[Int, Int] = {}
    widths: dict[Int, Literal[8, 16]] = {}
    read_only: list[Int] = []
    read_only_writes: Literal["ignore", "nack"] = "ignore"
    sequences: dict[Int, Annotated[list[Int], Field(min_length=1)]] = {}
    counters: dict[Int, Int] = {}
    default: Int = 0

    @model_validator(mode="after")
    def _check_registers(self) -> RegMapSpec:
        n = 1 << self.pointer_bits
        for what, regs in (
            ("registers", self.registers),
            ("widths", self.widths),
            ("read_only", self.read_only),
            ("sequences", self.sequences),
            ("counters", self.counters),
        ):
            for r in regs:
                if not 0 <= r < n:
                    raise ValueError(
                        f"{what}: register {r:#x} does not fit the {self.pointer_bits}-bit pointer"
                    )

        def fits(reg: int, v: int, what: str) -> None:
            bits = self.widths.get(reg, self.value_bits)
            if not 0 <= v < 1 << bits:
                raise ValueError(f"{what}: value {v:#x} of register {reg:#x} exceeds {bits} bits")

        for r, v in self.registers.items():
            fits(r, v, "registers")
        for r, seq in self.sequences.items():
            for v in seq:
                fits(r, v, "sequences")
        both = sorted(set(self.sequences) & set(self.counters))
        if both:
            raise ValueError(f"register {both[0]:#x} is both a sequence and a counter")
        if not 0 <= self.default < 1 << self.value_bits:
            raise ValueError(f"default {self.default:#x} exceeds {self.value_bits} bits")
        return self

    def build(self) -> I2CDevice:
        return RegisterMapDevice(
            self.address,
            pointer_bits=self.pointer_bits,
            value_bits=self.value_bits,
            endian=self.endian,
            auto_increment=self.auto_increment,
            registers=self.registers,
            widths=self.widths,
            read_only=self.read_only,
            read_only_writes=self.read_only_writes,
            sequences=self.sequences,
            counters=self.counters,
            default=self.default,
            **self.options(),
        )


class EepromSpec(I2CDeviceSpecBase):
    """A 24Cxx EEPROM: ``model`` ("24c32") presets size and page size; explicit fields win."""

    type: Literal["eeprom"]
    model: str | None = None
    size: Int | None = None
    page_size: Int | None = None
    address_bytes: Literal[1, 2] | None = None
    fill: U8 = 0xFF
    write_time_s: Seconds = 0.0

    def geometry(self) -> tuple[int, int, int]:
        """(size, page_size, address_bytes) after applying the model preset."""
        size, page = EEPROM_MODELS.get((self.model or "").lower(), (0, 0))
        size = self.size if self.size is not None else size
        page = self.page_size if self.page_size is not None else page
        abytes = self.address_bytes or (1 if size <= 2048 else 2)
        return size, page, abytes

    def addresses(self) -> list[int]:
        size, _page, abytes = self.geometry()
        blocks = max(1, size // 256) if abytes == 1 else 1
        return [self.address + b for b in range(blocks)]

    @model_validator(mode="after")
    def _check_geometry(self) -> EepromSpec:
        if self.model is not None and self.model.lower() not in EEPROM_MODELS:
            known = ", ".join(EEPROM_MODELS)
            raise ValueError(f"unknown EEPROM model {self.model!r} (known: {known})")
        if self.model is None and (self.size is None or self.page_size is None):
            raise ValueError("give either model (e.g. '24c32') or both size and page_size")
        size, page, abytes = self.geometry()
        problem = eeprom_geometry_problem(self.address, size, page, abytes, self.ten_bit)
        if problem:
            raise ValueError(problem)
        return self

    def build(self) -> I2CDevice:
        size, page, abytes = self.geometry()
        return Eeprom24(
            self.address,
            size=size,
            page_size=page,
            address_bytes=1 if abytes == 1 else 2,
            fill=self.fill,
            write_time_s=self.write_time_s,
            **self.options(),
        )

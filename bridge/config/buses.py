"""Board-file types of the buses: ``[[i2c]]`` and ``[[spi]]``: simulated, Linux or replay.

``backend`` selects the spec from the two unions at the end.  A simulated bus
checks its devices against each other (one device per address or chip
select); a Linux bus only names device files, opened when the board is built.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from protocol.virtio import SpiConfig

from ..buses.base import I2CBackend, SpiBackend
from ..buses.replay import ReplayI2CBus, ReplaySpiBus
from ..buses.sim.i2c import SimI2CBus
from ..buses.sim.spi import (
    SIM_SPI_BITS_PER_WORD_MASK,
    SIM_SPI_MAX_DELAY_NS,
    SIM_SPI_MAX_FREQ_HZ,
    SIM_SPI_MODE_FUNC,
    SimSpiBus,
)
from ..recording import Recording, RecordingError, read_recording
from .devices import I2CDeviceSpec, SpiDeviceSpec
from .fields import STRICT, U32, BusName, NonNegInt, parse_int


class SimI2CBusSpec(BaseModel):
    model_config = STRICT

    backend: Literal["sim"]
    name: BusName
    description: str = ""
    timing: bool = False
    frequency_hz: Annotated[int, BeforeValidator(parse_int), Field(gt=0, le=10_000_000)] = 400_000
    log_size: NonNegInt = 1024
    max_msg_len: Annotated[int, BeforeValidator(parse_int), Field(gt=0, le=65535)] = 8192
    devices: list[I2CDeviceSpec] = []

    @model_validator(mode="after")
    def _check_addresses(self) -> SimI2CBusSpec:
        used: dict[tuple[int, bool], int] = {}
        for i, d in enumerate(self.devices):
            for a in d.addresses():
                j = used.setdefault((a, d.ten_bit), i)
                if j != i:
                    kind = "10-bit address" if d.ten_bit else "address"
                    raise ValueError(
                        f"duplicate {kind} {a:#x}: device #{j} ({self.devices[j].type}) "
                        f"and device #{i} ({d.type})"
                    )
        return self

    def build(self) -> I2CBackend:
        return SimI2CBus(
            self.name,
            description=self.description,
            devices=[d.build() for d in self.devices],
            timing=self.timing,
            frequency_hz=self.frequency_hz,
            log_size=self.log_size,
            max_msg_len=self.max_msg_len,
        )


def _device_path(prefix: str) -> Callable[[Any], Any]:
    """A bus number is shorthand for its device file: ``1`` -> ``/dev/i2c-1``."""

    def parse(v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{prefix}{v}"
        return v

    return parse


DevicePath = Annotated[str, BeforeValidator(_device_path("/dev/i2c-")), Field(min_length=1)]


class LinuxI2CBusSpec(BaseModel):
    """A real adapter through i2c-dev; its ``I2C_FUNCS`` become the advertised functionality."""

    model_config = STRICT

    backend: Literal["linux"]
    name: BusName
    description: str = ""
    device: DevicePath
    #: Advertise (and use) only these I2C_FUNC_* bits of what the adapter reports.
    functionality: U32 | None = None
    #: I2C_TIMEOUT, rounded up to the kernel's 10 ms unit; unset: the adapter's default.
    timeout_ms: Annotated[int, BeforeValidator(parse_int), Field(gt=0, le=600_000)] | None = None
    #: I2C_RETRIES (on arbitration loss); unset: the adapter's default.
    retries: Annotated[int, BeforeValidator(parse_int), Field(ge=0, le=100)] | None = None
    #: SMBus path only: I2C_SLAVE_FORCE, to talk to an address a kernel driver has claimed.
    force: bool = False

    def build(self) -> I2CBackend:
        from ..buses.linux.i2c import LinuxI2CBus

        return LinuxI2CBus(
            self.name,
            self.device,
            description=self.description,
            functionality_mask=self.functionality,
            timeout_ms=self.timeout_ms,
            retries=self.retries,
            force=self.force,
        )


class _ReplaySpec(BaseModel):
    """A bus answered from a recording (``busbridge serve --record``, docs/record.md).

    ``file`` is relative to the board file's directory; ``bus`` names the
    recorded bus (default: this bus's own name); ``mode`` is ``strict`` (the
    same requests in the same order) or ``lenient`` (answers by lookup).
    """

    model_config = STRICT

    backend: Literal["replay"]
    name: BusName
    description: str = ""
    file: str = Field(min_length=1)
    bus: BusName | None = None
    mode: Literal["strict", "lenient"] = "strict"

    @field_validator("file")
    @classmethod
    def _relative_to_board(cls, v: str, info: ValidationInfo) -> str:
        base = (info.context or {}).get("base_dir")
        return os.path.join(base, v) if base and not os.path.isabs(v) else v

    def recording(self) -> Recording:
        try:
            return read_recording(self.file)
        except OSError as e:
            raise ValueError(f"cannot read recording {self.file}: {e.strerror or e}") from None
        except RecordingError as e:
            raise ValueError(f"recording {self.file}: {e}") from None


class ReplayI2CBusSpec(_ReplaySpec):
    def build(self) -> I2CBackend:
        return ReplayI2CBus(self.name, self.recording(), self.bus or self.name, self.mode,
                            self.description)


I2CBusSpec = Annotated[SimI2CBusSpec | LinuxI2CBusSpec | ReplayI2CBusSpec,
                       Field(discriminator="backend")]


#: The ``virtio_spi_config`` fields an SPI bus spec carries under the same names.
_SPI_CONFIG_FIELDS = tuple(
    f.name for f in dataclasses.fields(SpiConfig) if f.name != "cs_max_number"
)


def spi_config_of(spec: BaseModel, cs_max_number: int) -> SpiConfig:
    """The advertised ``virtio_spi_config`` of a bus spec (sim or linux)."""
    return SpiConfig(cs_max_number=cs_max_number,
                     **{name: getattr(spec, name) for name in _SPI_CONFIG_FIELDS})


class SimSpiBusSpec(BaseModel):
    """A simulated controller; the capability fields become its ``virtio_spi_config``."""

    model_config = STRICT

    backend: Literal["sim"]
    name: BusName
    description: str = ""
    cs_max_number: Annotated[int, BeforeValidator(parse_int), Field(ge=1, le=255)] | None = None
    cs_change_supported: Literal[0, 1] = 1
    tx_nbits_supported: Annotated[int, BeforeValidator(parse_int), Field(ge=0, le=7)] = 0
    rx_nbits_supported: Annotated[int, BeforeValidator(parse_int), Field(ge=0, le=7)] = 0
    bits_per_word_mask: U32 = SIM_SPI_BITS_PER_WORD_MASK
    mode_func_supported: Annotated[int, BeforeValidator(parse_int), Field(ge=0, le=0x7F)] = (
        SIM_SPI_MODE_FUNC
    )
    max_freq_hz: U32 = SIM_SPI_MAX_FREQ_HZ
    max_word_delay_ns: U32 = SIM_SPI_MAX_DELAY_NS
    max_cs_setup_ns: U32 = SIM_SPI_MAX_DELAY_NS
    max_cs_hold_ns: U32 = SIM_SPI_MAX_DELAY_NS
    max_cs_inactive_ns: U32 = SIM_SPI_MAX_DELAY_NS
    timing: bool = False
    log_size: NonNegInt = 1024
    devices: list[SpiDeviceSpec] = []

    @model_validator(mode="after")
    def _check_chip_selects(self) -> SimSpiBusSpec:
        mf = self.mode_func_supported
        if not mf & 0x3 or not mf & 0xC:
            raise ValueError(
                f"mode_func_supported {mf:#x} must allow at least one CPHA (bits 0-1) "
                "and one CPOL (bits 2-3) setting"
            )
        n = self.cs_max_number
        used: dict[int, int] = {}
        for i, d in enumerate(self.devices):
            j = used.setdefault(d.cs, i)
            if j != i:
                raise ValueError(
                    f"duplicate chip select {d.cs}: device #{j} ({self.devices[j].type}) "
                    f"and device #{i} ({d.type})"
                )
            if n is not None and d.cs >= n:
                raise ValueError(
                    f"device #{i} ({d.type}) on chip select {d.cs}, but cs_max_number is {n} "
                    f"(chip selects 0..{n - 1})"
                )
        return self

    def build(self) -> SpiBackend:
        n = self.cs_max_number or max((d.cs for d in self.devices), default=0) + 1
        config = spi_config_of(self, n)
        return SimSpiBus(
            self.name,
            config=config,
            description=self.description,
            devices={d.cs: d.build() for d in self.devices},
            timing=self.timing,
            log_size=self.log_size,
        )


def _spi_devices(v: Any) -> Any:
    """``{ 0 = "/dev/spidev0.0" }``: TOML keys are strings, chip selects are ints."""
    if isinstance(v, dict):
        return {parse_int(k): p for k, p in v.items()}
    return v


SpiDelayNs = Annotated[int, BeforeValidator(parse_int), Field(ge=0)]


class LinuxSpiBusSpec(BaseModel):
    """A real controller through spidev, one device file per chip select.

    The capability fields become the advertised ``virtio_spi_config``; they
    are limits the server enforces (PARAM_ERR) before anything reaches the
    kernel.  Defaults are what every spidev controller can do: SPI modes 0-3,
    8-bit words, ``cs_change``, hold delays; ``max_freq_hz`` = 0 takes the
    device tree's ``spi-max-frequency`` (SPI_IOC_RD_MAX_SPEED_HZ).
    """

    model_config = STRICT

    backend: Literal["linux"]
    name: BusName
    description: str = ""
    device: str | None = None
    devices: Annotated[dict[int, str], BeforeValidator(_spi_devices)] = {}
    cs_max_number: Annotated[int, BeforeValidator(parse_int), Field(ge=1, le=255)] | None = None
    cs_change_supported: Literal[0, 1] = 1
    tx_nbits_supported: Annotated[int, BeforeValidator(parse_int), Field(ge=0, le=7)] = 0
    rx_nbits_supported: Annotated[int, BeforeValidator(parse_int), Field(ge=0, le=7)] = 0
    bits_per_word_mask: U32 = 1 << 7
    mode_func_supported: Annotated[int, BeforeValidator(parse_int), Field(ge=0, le=0x7F)] = 0x0F
    max_freq_hz: U32 = 0
    max_word_delay_ns: Annotated[SpiDelayNs, Field(le=255_000)] = 0
    max_cs_setup_ns: Annotated[SpiDelayNs, Field(le=0)] = 0
    max_cs_hold_ns: Annotated[SpiDelayNs, Field(le=65_535_000)] = 65_535_000
    max_cs_inactive_ns: Annotated[SpiDelayNs, Field(le=0)] = 0
    #: Linux-only mode flags set on every message: 3wire, no_cs, ready, cs_word, 3wire_hiz.
    mode_flags: list[Literal["3wire", "no_cs", "ready", "cs_word", "3wire_hiz"]] = []
    #: spidev's per-message buffer; unset: read from /sys/module/spidev/parameters/bufsiz.
    bufsiz: Annotated[int, BeforeValidator(parse_int), Field(gt=0)] | None = None

    @field_validator("max_cs_setup_ns", "max_cs_inactive_ns", mode="before")
    @classmethod
    def _no_cs_timing(cls, v: Any) -> Any:
        if parse_int(v) != 0:
            raise ValueError("spidev cannot set CS setup / inactive times per transfer (they "
                             "come from the device tree); leave this 0")
        return v

    def chip_selects(self) -> dict[int, str]:
        out = dict(self.devices)
        if self.device is not None:
            out.setdefault(0, self.device)
        return out

    @model_validator(mode="after")
    def _check_devices(self) -> LinuxSpiBusSpec:
        if self.device is not None and 0 in self.devices:
            raise ValueError("give chip select 0 either as device or in devices, not both")
        cs = self.chip_selects()
        if not cs:
            raise ValueError('no device: give device = "/dev/spidevB.C" or '
                             'devices = { 0 = "/dev/spidevB.0", 1 = "/dev/spidevB.1" }')
        bad = [c for c in cs if not 0 <= c <= 254]
        if bad:
            raise ValueError(f"chip select {bad[0]} out of range 0..254")
        n = self.cs_max_number
        if n is not None and max(cs) >= n:
            raise ValueError(f"chip select {max(cs)} configured, but cs_max_number is {n}")
        mf = self.mode_func_supported
        if not mf & 0x3 or not mf & 0xC:
            raise ValueError(
                f"mode_func_supported {mf:#x} must allow at least one CPHA (bits 0-1) "
                "and one CPOL (bits 2-3) setting"
            )
        return self

    def build(self) -> SpiBackend:
        from ..buses.linux.spi import LINUX_MODE_FLAGS, LinuxSpiBus

        cs = self.chip_selects()
        config = spi_config_of(self, self.cs_max_number or max(cs) + 1)
        flags = 0
        for f in self.mode_flags:
            flags |= LINUX_MODE_FLAGS[f]
        return LinuxSpiBus(self.name, cs, config, description=self.description,
                           mode_flags=flags, bufsiz=self.bufsiz)


class ReplaySpiBusSpec(_ReplaySpec):
    def build(self) -> SpiBackend:
        return ReplaySpiBus(self.name, self.recording(), self.bus or self.name, self.mode,
                            self.description)


SpiBusSpec = Annotated[SimSpiBusSpec | LinuxSpiBusSpec | ReplaySpiBusSpec,
                       Field(discriminator="backend")]

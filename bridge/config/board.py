"""Board configuration: one TOML file describes a board's buses, devices and server settings.

Layout::

    name = "my-board"
    [server]                      # optional
    listen = "127.0.0.1:7707"
    request_timeout_ms = 1000
    [[i2c]]
    name = "1"
    backend = "sim"
    [[i2c.devices]]
    type = "eeprom"
    address = 0x50
    model = "24c32"
    [[spi]]
    name = "0"
    backend = "sim"
    [[spi.devices]]
    type = "nor_flash"
    cs = 0

``backend`` and ``type`` are discriminators: a new backend (``"linux"``) or
device type is one more model in the matching union.  Validation happens
before anything is built, and every problem is reported with the file and
the bus/device it is about, because a board config is hand-written and the
error is the only documentation its author reads.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from protocol.limits import DEFAULT_PORT, MAX_BUS_NAME, MAX_TIMEOUT_MS
from protocol.virtio import SpiConfig

from ..addresses import parse_host_port
from ..buses.base import I2CBackend, SpiBackend
from ..buses.sim.i2c import I2CDevice, SimI2CBus
from ..buses.sim.i2c_devices import (
    EEPROM_MODELS,
    Eeprom24,
    RegisterMapDevice,
    eeprom_geometry_problem,
)
from ..buses.sim.spi import (
    SIM_SPI_BITS_PER_WORD_MASK,
    SIM_SPI_MAX_DELAY_NS,
    SIM_SPI_MAX_FREQ_HZ,
    SIM_SPI_MODE_FUNC,
    SimSpiBus,
    SpiDevice,
)
from ..buses.sim.spi_devices import LoopbackDevice, SpiNorFlash
from ..server.acl import AccessRule
from ..server.auth import TlsSettings, TokenSpec
from ..server.guard import LimitSettings

DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
DEFAULT_REQUEST_TIMEOUT_MS = 1000


class BoardConfigError(ValueError):
    """A board file that cannot be used; ``problems`` has one line per issue."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"invalid board config {source}:\n{lines}")


# ---------------------------------------------------------------------------
# Field types
# ---------------------------------------------------------------------------


def _parse_int(v: Any) -> Any:
    """Ints as TOML gives them, plus "0x50"-style strings (TOML keys are always strings)."""
    if isinstance(v, bool):
        raise ValueError("expected an integer, not a boolean")
    if isinstance(v, str):
        text = v.strip().replace("_", "")
        try:
            return int(text, 0)
        except ValueError:
            try:
                return int(text, 10)  # "08": int(.., 0) refuses leading zeros
            except ValueError:
                raise ValueError(f"{v!r} is not an integer") from None
    return v


def _name_str(v: Any) -> Any:
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


Int = Annotated[int, BeforeValidator(_parse_int)]
U8 = Annotated[int, BeforeValidator(_parse_int), Field(ge=0, le=0xFF)]
U32 = Annotated[int, BeforeValidator(_parse_int), Field(ge=0, le=0xFFFF_FFFF)]
NonNegInt = Annotated[int, BeforeValidator(_parse_int), Field(ge=0)]
Seconds = Annotated[float, Field(ge=0, le=3600)]
BusName = Annotated[str, BeforeValidator(_name_str), Field(min_length=1, max_length=MAX_BUS_NAME)]

_STRICT = ConfigDict(extra="forbid", frozen=True)


def _hex(v: int) -> str:
    return f"{v:#04x}"


# ---------------------------------------------------------------------------
# I2C devices
# ---------------------------------------------------------------------------


class _I2CDeviceSpec(BaseModel):
    model_config = _STRICT

    address: Int
    ten_bit: bool = False
    name: str = ""
    nack: bool = False
    nack_after_bytes: NonNegInt | None = None
    stall_s: Seconds = 0.0

    def addresses(self) -> list[int]:
        return [self.address]

    @model_validator(mode="after")
    def _check_address(self) -> _I2CDeviceSpec:
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

    def _faults(self) -> dict[str, Any]:
        return {
            "ten_bit": self.ten_bit,
            "name": self.name,
            "nack": self.nack,
            "nack_after_bytes": self.nack_after_bytes,
            "stall_s": self.stall_s,
        }


class RegMapSpec(_I2CDeviceSpec):
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
            **self._faults(),
        )


class EepromSpec(_I2CDeviceSpec):
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
            **self._faults(),
        )


I2CDeviceSpec = Annotated[RegMapSpec | EepromSpec, Field(discriminator="type")]


# ---------------------------------------------------------------------------
# SPI devices
# ---------------------------------------------------------------------------


def _parse_bytes(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return list(bytes.fromhex(v.replace(":", " ")))
        except ValueError:
            raise ValueError(f"{v!r} is not hex bytes (e.g. 'ef 40 16')") from None
    return v


JedecId = Annotated[list[U8], BeforeValidator(_parse_bytes), Field(min_length=1, max_length=8)]


class _SpiDeviceSpec(BaseModel):
    model_config = _STRICT

    cs: U8
    name: str = ""
    fail: bool = False
    fail_index: NonNegInt = 0
    stall_s: Seconds = 0.0

    def _faults(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "fail": self.fail,
            "fail_index": self.fail_index,
            "stall_s": self.stall_s,
        }


class LoopbackSpec(_SpiDeviceSpec):
    type: Literal["loopback"]

    def build(self) -> SpiDevice:
        return LoopbackDevice(**self._faults())


class NorFlashSpec(_SpiDeviceSpec):
    """A JEDEC SPI NOR flash; ``jedec_id`` as a list of ints or a hex string."""

    type: Literal["nor_flash"]
    size: Int = 4 * 1024 * 1024
    jedec_id: JedecId = [0xEF, 0x40, 0x16]
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
            **self._faults(),
        )


from ..buses.sim.extra_devices import Lis3dhSpec, SpiRegMapSpec  # noqa: E402

SpiDeviceSpec = Annotated[
    LoopbackSpec | NorFlashSpec | SpiRegMapSpec | Lis3dhSpec, Field(discriminator="type")
]


# ---------------------------------------------------------------------------
# Buses
# ---------------------------------------------------------------------------


class SimI2CBusSpec(BaseModel):
    model_config = _STRICT

    backend: Literal["sim"]
    name: BusName
    description: str = ""
    timing: bool = False
    frequency_hz: Annotated[int, BeforeValidator(_parse_int), Field(gt=0, le=10_000_000)] = 400_000
    log_size: NonNegInt = 1024
    max_msg_len: Annotated[int, BeforeValidator(_parse_int), Field(gt=0, le=65535)] = 8192
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

    model_config = _STRICT

    backend: Literal["linux"]
    name: BusName
    description: str = ""
    device: DevicePath
    #: Advertise (and use) only these I2C_FUNC_* bits of what the adapter reports.
    functionality: U32 | None = None
    #: I2C_TIMEOUT, rounded up to the kernel's 10 ms unit; unset: the adapter's default.
    timeout_ms: Annotated[int, BeforeValidator(_parse_int), Field(gt=0, le=600_000)] | None = None
    #: I2C_RETRIES (on arbitration loss); unset: the adapter's default.
    retries: Annotated[int, BeforeValidator(_parse_int), Field(ge=0, le=100)] | None = None
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


I2CBusSpec = Annotated[SimI2CBusSpec | LinuxI2CBusSpec, Field(discriminator="backend")]


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

    model_config = _STRICT

    backend: Literal["sim"]
    name: BusName
    description: str = ""
    cs_max_number: Annotated[int, BeforeValidator(_parse_int), Field(ge=1, le=255)] | None = None
    cs_change_supported: Literal[0, 1] = 1
    tx_nbits_supported: Annotated[int, BeforeValidator(_parse_int), Field(ge=0, le=7)] = 0
    rx_nbits_supported: Annotated[int, BeforeValidator(_parse_int), Field(ge=0, le=7)] = 0
    bits_per_word_mask: U32 = SIM_SPI_BITS_PER_WORD_MASK
    mode_func_supported: Annotated[int, BeforeValidator(_parse_int), Field(ge=0, le=0x7F)] = (
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
        return {_parse_int(k): p for k, p in v.items()}
    return v


SpiDelayNs = Annotated[int, BeforeValidator(_parse_int), Field(ge=0)]


class LinuxSpiBusSpec(BaseModel):
    """A real controller through spidev, one device file per chip select.

    The capability fields become the advertised ``virtio_spi_config``; they
    are limits the server enforces (PARAM_ERR) before anything reaches the
    kernel.  Defaults are what every spidev controller can do: SPI modes 0-3,
    8-bit words, ``cs_change``, hold delays; ``max_freq_hz`` = 0 takes the
    device tree's ``spi-max-frequency`` (SPI_IOC_RD_MAX_SPEED_HZ).
    """

    model_config = _STRICT

    backend: Literal["linux"]
    name: BusName
    description: str = ""
    device: str | None = None
    devices: Annotated[dict[int, str], BeforeValidator(_spi_devices)] = {}
    cs_max_number: Annotated[int, BeforeValidator(_parse_int), Field(ge=1, le=255)] | None = None
    cs_change_supported: Literal[0, 1] = 1
    tx_nbits_supported: Annotated[int, BeforeValidator(_parse_int), Field(ge=0, le=7)] = 0
    rx_nbits_supported: Annotated[int, BeforeValidator(_parse_int), Field(ge=0, le=7)] = 0
    bits_per_word_mask: U32 = 1 << 7
    mode_func_supported: Annotated[int, BeforeValidator(_parse_int), Field(ge=0, le=0x7F)] = 0x0F
    max_freq_hz: U32 = 0
    max_word_delay_ns: Annotated[SpiDelayNs, Field(le=255_000)] = 0
    max_cs_setup_ns: Annotated[SpiDelayNs, Field(le=0)] = 0
    max_cs_hold_ns: Annotated[SpiDelayNs, Field(le=65_535_000)] = 65_535_000
    max_cs_inactive_ns: Annotated[SpiDelayNs, Field(le=0)] = 0
    #: Linux-only mode flags set on every message: 3wire, no_cs, ready, cs_word, 3wire_hiz.
    mode_flags: list[Literal["3wire", "no_cs", "ready", "cs_word", "3wire_hiz"]] = []
    #: spidev's per-message buffer; unset: read from /sys/module/spidev/parameters/bufsiz.
    bufsiz: Annotated[int, BeforeValidator(_parse_int), Field(gt=0)] | None = None

    @field_validator("max_cs_setup_ns", "max_cs_inactive_ns", mode="before")
    @classmethod
    def _no_cs_timing(cls, v: Any) -> Any:
        if _parse_int(v) != 0:
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


SpiBusSpec = Annotated[SimSpiBusSpec | LinuxSpiBusSpec, Field(discriminator="backend")]


# ---------------------------------------------------------------------------
# Board
# ---------------------------------------------------------------------------


class ServerSettings(BaseModel):
    """Server defaults a board file may carry; command-line options override them."""

    model_config = _STRICT

    listen: str = DEFAULT_LISTEN
    request_timeout_ms: Annotated[int, Field(gt=0, le=MAX_TIMEOUT_MS)] = DEFAULT_REQUEST_TIMEOUT_MS
    #: Longest lease TTL the server grants (seconds); longer takes are refused.
    lease_max_ttl_s: Annotated[int, Field(gt=0, le=86_400)] = 3600
    # Security and limits (docs/security.md); the models live with their logic.
    insecure: bool = False
    tls: TlsSettings | None = None
    tokens: list[TokenSpec] = []
    limits: LimitSettings = LimitSettings()
    access: list[AccessRule] = []

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, v: str) -> str:
        parse_host_port(v)
        return v

    @property
    def host(self) -> str:
        return parse_host_port(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_host_port(self.listen)[1]

    @property
    def request_timeout(self) -> float:
        return self.request_timeout_ms / 1000

    @model_validator(mode="after")
    def _check_tokens(self) -> ServerSettings:
        names = [t.name for t in self.tokens]
        if len(names) != len(set(names)):
            raise ValueError("two [[server.tokens]] share a name")
        return self


class MqttSettings(BaseModel):
    """``[mqtt]``: where the board announces itself (see docs/mqtt.md); absent: no broker."""

    model_config = _STRICT

    #: ``[mqtt[s]://][user[:password]@]host[:port]``; mqtts means TLS (default port 8883).
    broker: str = Field(min_length=1)
    prefix: str = Field(default="busbridge", min_length=1, pattern=r"^[^#+]+$")
    #: Default ``busbridge-<board name>``.
    client_id: str = ""
    #: HOST:PORT clients should dial; default: the listen address, or this host's
    #: name when listening on every interface (0.0.0.0 / ::).
    advertise: str = ""
    health_interval_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    keepalive_s: Annotated[int, Field(ge=1, le=65535)] = 30
    username: str = ""
    password: str = ""
    #: CA bundle for an mqtts:// broker; default: the system's.
    ca_file: str = ""
    reconnect_min_s: Annotated[float, Field(gt=0, le=3600)] = 0.5
    reconnect_max_s: Annotated[float, Field(gt=0, le=3600)] = 30.0

    @field_validator("advertise")
    @classmethod
    def _check_advertise(cls, v: str) -> str:
        if v:
            parse_host_port(v)
        return v


class BoardConfig(BaseModel):
    """A whole board file, validated but not built."""

    model_config = _STRICT

    name: str = Field(min_length=1)
    description: str = ""
    server: ServerSettings = ServerSettings()
    mqtt: MqttSettings | None = None
    i2c: list[I2CBusSpec] = []
    spi: list[SpiBusSpec] = []

    @model_validator(mode="after")
    def _check_names(self) -> BoardConfig:
        for kind, buses in (("i2c", self.i2c), ("spi", self.spi)):
            seen: set[str] = set()
            for b in buses:
                if b.name in seen:
                    raise ValueError(f"two {kind} buses are named {b.name!r}")
                seen.add(b.name)
        return self


@dataclass
class Board:
    """A built board: live backends keyed by bus name, as the server serves them."""

    name: str
    i2c: dict[str, I2CBackend]
    spi: dict[str, SpiBackend]
    description: str = ""
    server: ServerSettings = field(default_factory=ServerSettings)
    source: str = ""
    mqtt: MqttSettings | None = None

    def close(self) -> None:
        for i2c_bus in self.i2c.values():
            i2c_bus.close()
        for spi_bus in self.spi.values():
            spi_bus.close()


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------

DEFAULT_BOARD = "default.toml"
_T = TypeVar("_T")


def _lookup(node: Any, key: Any) -> Any:
    if isinstance(node, dict):
        return node.get(key)
    if isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
        return node[key]
    return None


def _describe_device(i: int, dev: Any) -> str:
    if not isinstance(dev, dict):
        return f"device #{i}"
    kind = dev.get("type", "no type")
    if "cs" in dev:
        return f"device #{i} ({kind} on cs {dev['cs']})"
    addr = dev.get("address")
    if isinstance(addr, int) and not isinstance(addr, bool):
        where = f"{addr:#x}" + (" 10-bit" if dev.get("ten_bit") else "")
        return f"device #{i} ({kind} at {where})"
    return f"device #{i} ({kind})"


def _where(data: Any, loc: tuple[int | str, ...]) -> str:
    """Turn a pydantic location into words: ``i2c bus '1' > device #2 (eeprom at 0x50) > size``."""
    parts: list[str] = []
    node = data
    k = 0
    while k < len(loc):
        key = loc[k]
        nxt = loc[k + 1] if k + 1 < len(loc) else None
        child = _lookup(_lookup(node, key), nxt) if isinstance(nxt, int) else None
        if key in ("i2c", "spi") and isinstance(nxt, int) and node is data:
            name = child.get("name") if isinstance(child, dict) else None
            parts.append(f"{key} bus '{name}'" if name is not None else f"{key} bus #{nxt}")
            tag = child.get("backend") if isinstance(child, dict) else None
        elif key == "devices" and isinstance(nxt, int):
            parts.append(_describe_device(nxt, child))
            tag = child.get("type") if isinstance(child, dict) else None
        else:
            parts.append(str(key))
            node = _lookup(node, key)
            k += 1
            continue
        node = child
        k += 2
        if k < len(loc) and tag is not None and loc[k] == tag:
            k += 1  # pydantic puts the discriminator's value in the path
    return " > ".join(parts) or "board"


def _problem(data: Any, err: Any) -> str:
    loc = tuple(err["loc"])
    where = _where(data, loc)
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "union_tag_invalid":
        disc = str(ctx.get("discriminator", "")).strip("'")
        what = "backend" if disc == "backend" else "device type"
        msg = f"unknown {what} {ctx.get('tag')!r} (known: {ctx.get('expected_tags')})"
    elif kind == "union_tag_not_found":
        disc = str(ctx.get("discriminator", "")).strip("'")
        msg = f"missing {disc!r}" + (' (e.g. backend = "sim")' if disc == "backend" else "")
    elif kind == "extra_forbidden":
        msg = "unknown setting (typo?)"
    else:
        msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {msg}"


def board_config_from_toml_text(text: str, source: str = "<text>") -> BoardConfig:
    """Parse and validate; raises :class:`BoardConfigError` naming ``source``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise BoardConfigError(source, [f"not valid TOML: {e}"]) from None
    try:
        return BoardConfig.model_validate(data)
    except ValidationError as e:
        raise BoardConfigError(source, [_problem(data, err) for err in e.errors()]) from None


def build_board(config: BoardConfig, source: str = "") -> Board:
    """Instantiate every bus; a bus that fails to build closes the ones already built."""
    i2c: dict[str, I2CBackend] = {}
    spi: dict[str, SpiBackend] = {}
    board = Board(config.name, i2c, spi, config.description, config.server, source, config.mqtt)
    try:
        for ib in config.i2c:
            i2c[ib.name] = _build(ib.build, source, f"i2c bus {ib.name!r}")
        for sb in config.spi:
            spi[sb.name] = _build(sb.build, source, f"spi bus {sb.name!r}")
    except BaseException:
        board.close()
        raise
    return board


def _build(fn: Callable[[], _T], source: str, where: str) -> _T:
    try:
        return fn()
    except ValueError as e:
        raise BoardConfigError(source or "<config>", [f"{where}: {e}"]) from e


def board_from_toml_text(text: str, source: str = "<text>") -> Board:
    """Build a board from TOML text (tests, embedded configs)."""
    return build_board(board_config_from_toml_text(text, source), source)


def default_board_text() -> str:
    return resources.files("bridge").joinpath("boards", DEFAULT_BOARD).read_text("utf-8")


def load_board_config(path: str | os.PathLike[str] | None) -> BoardConfig:
    """Validate a board file without building it; ``None`` is the embedded default board."""
    if path is None:
        return board_config_from_toml_text(default_board_text(), f"<embedded {DEFAULT_BOARD}>")
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise BoardConfigError(source, [f"cannot read: {e.strerror or e}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BoardConfigError(source, [f"not UTF-8: {e}"]) from None
    return board_config_from_toml_text(text, source)


def load_board(path: str | os.PathLike[str] | None) -> Board:
    """Load and build a board; ``None`` loads the packaged simulated board."""
    source = f"<embedded {DEFAULT_BOARD}>" if path is None else os.fspath(path)
    return build_board(load_board_config(path), source)


__all__ = [
    "Board",
    "BoardConfig",
    "BoardConfigError",
    "EepromSpec",
    "LinuxI2CBusSpec",
    "LinuxSpiBusSpec",
    "LoopbackSpec",
    "MqttSettings",
    "NorFlashSpec",
    "RegMapSpec",
    "ServerSettings",
    "SimI2CBusSpec",
    "SimSpiBusSpec",
    "board_config_from_toml_text",
    "board_from_toml_text",
    "build_board",
    "default_board_text",
    "load_board",
    "load_board_config",
]

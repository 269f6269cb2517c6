"""HELLO / WELCOME payloads: validated with pydantic, off the hot path.

The handshake happens once per connection, so it gets full validation and
clear messages; request frames use hand checks (see ``codec``).  Types are
strict, as in every other frame (SPEC.md §3): an integer field takes an
integer and nothing else (not ``1.0``, ``true`` or ``"1"``), a text field a
str (not a bin), and a key that is present is never nil.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_serializer,
)

from .leases import MAX_HELLO_LEASES, check_token
from .limits import MAX_ACCESS_TOKEN, MAX_BUS_NAME, PROTOCOL_VERSION, Limits
from .virtio import SPI_CONFIG_SIZE, SpiConfig

# Linux <uapi/linux/i2c.h> functionality bits, advertised per I2C bus.
I2C_FUNC_I2C = 0x00000001
I2C_FUNC_10BIT_ADDR = 0x00000002
I2C_FUNC_PROTOCOL_MANGLING = 0x00000004
I2C_FUNC_SMBUS_PEC = 0x00000008
I2C_FUNC_NOSTART = 0x00000010
I2C_FUNC_SMBUS_BLOCK_PROC_CALL = 0x00008000
I2C_FUNC_SMBUS_QUICK = 0x00010000
I2C_FUNC_SMBUS_READ_BYTE = 0x00020000
I2C_FUNC_SMBUS_WRITE_BYTE = 0x00040000
I2C_FUNC_SMBUS_READ_BYTE_DATA = 0x00080000
I2C_FUNC_SMBUS_WRITE_BYTE_DATA = 0x00100000
I2C_FUNC_SMBUS_READ_WORD_DATA = 0x00200000
I2C_FUNC_SMBUS_WRITE_WORD_DATA = 0x00400000
I2C_FUNC_SMBUS_PROC_CALL = 0x00800000
I2C_FUNC_SMBUS_READ_BLOCK_DATA = 0x01000000
I2C_FUNC_SMBUS_WRITE_BLOCK_DATA = 0x02000000
I2C_FUNC_SMBUS_READ_I2C_BLOCK = 0x04000000
I2C_FUNC_SMBUS_WRITE_I2C_BLOCK = 0x08000000
#: What a full I2C adapter emulates in software (``I2C_FUNC_SMBUS_EMUL``).
I2C_FUNC_SMBUS_EMUL = 0x0EFF0008

_FORBID = ConfigDict(extra="forbid", frozen=True)
_IGNORE = ConfigDict(extra="ignore", frozen=True)  # newer peers may add keys

BusName = Annotated[StrictStr, Field(min_length=1, max_length=MAX_BUS_NAME)]
#: Unsigned 32-bit fields of the handshake maps.
U32 = Annotated[StrictInt, Field(ge=0, le=0xFFFFFFFF)]

#: ``model_validate(..., context=WIRE)`` marks a map that came off the wire, where a
#: nil value is a wrong type (SPEC.md §4.1); Python callers may pass ``token=None``.
WIRE = {"wire": True}


class HelloInfo(BaseModel):
    """First frame of every connection, client to server."""

    # Errors never echo the input: it may hold lease tokens.
    model_config = ConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)

    version: StrictInt = PROTOCOL_VERSION
    client: StrictStr = Field(default="", max_length=256)
    #: Bearer token for servers that require one; never in repr, logs or dumps of None.
    token: StrictStr | None = Field(default=None, min_length=1, max_length=MAX_ACCESS_TOKEN,
                                    repr=False)
    #: Lease tokens this connection holds (SPEC.md §4.1): secrets, never logged.
    leases: list[StrictStr] = Field(default=[], max_length=MAX_HELLO_LEASES, repr=False)

    @field_validator("token", mode="before")
    @classmethod
    def _no_nil_token(cls, v: Any, info: ValidationInfo) -> Any:
        if v is None and info.context and info.context.get("wire"):
            raise ValueError("token must be a string; leave the key out when there is none")
        return v

    @field_validator("leases")
    @classmethod
    def _check_leases(cls, v: list[str]) -> list[str]:
        for t in v:
            why = check_token(t)
            if why is not None:
                raise ValueError(why)
        return v

    @model_serializer(mode="wrap")
    def _omit_no_leases(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        d: dict[str, Any] = handler(self)
        if not d.get("leases"):
            d.pop("leases", None)  # older servers and the vectors see the same HELLO
        if d.get("token") is None:
            d.pop("token", None)  # likewise without a token
        return d


class I2CBusInfo(BaseModel):
    model_config = _IGNORE

    name: BusName
    functionality: U32
    max_msg_len: StrictInt = Field(ge=0)
    description: StrictStr = ""


class SpiBusInfo(BaseModel):
    """An SPI bus; ``config`` travels as the raw 32-byte ``virtio_spi_config``."""

    model_config = _IGNORE

    name: BusName
    config: SpiConfig
    description: StrictStr = ""

    @field_validator("config", mode="before")
    @classmethod
    def _parse_config(cls, v: Any) -> Any:
        if isinstance(v, bytes | bytearray):
            if len(v) != SPI_CONFIG_SIZE:
                raise ValueError(f"virtio_spi_config must be {SPI_CONFIG_SIZE} bytes")
            return SpiConfig.unpack(bytes(v))
        return v

    @field_serializer("config")
    def _dump_config(self, v: SpiConfig) -> bytes:
        return v.pack()


class LimitsInfo(BaseModel):
    model_config = _IGNORE

    max_frame: StrictInt = Field(gt=0)
    max_requests: StrictInt = Field(gt=0)
    max_i2c_len: StrictInt = Field(ge=0)
    max_spi_len: StrictInt = Field(ge=0)
    max_in_flight: StrictInt = Field(gt=0)

    def to_limits(self) -> Limits:
        return Limits(**self.model_dump())


class WelcomeInfo(BaseModel):
    """Server's answer to HELLO: who it is, its buses and their capabilities."""

    model_config = _IGNORE

    version: StrictInt = PROTOCOL_VERSION
    server: StrictStr = ""
    board: StrictStr = ""
    i2c: list[I2CBusInfo] = []
    spi: list[SpiBusInfo] = []
    limits: LimitsInfo
    #: Optional features beyond the base protocol (SPEC.md §4.2), e.g. ``"admin"``.
    capabilities: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default=[], max_length=64)

    @model_serializer(mode="wrap")
    def _omit_no_capabilities(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        d: dict[str, Any] = handler(self)
        if not d.get("capabilities"):
            d.pop("capabilities", None)  # a server without any sends the WELCOME of old
        return d

    def i2c_bus(self, name: str) -> I2CBusInfo | None:
        return next((b for b in self.i2c if b.name == name), None)

    def spi_bus(self, name: str) -> SpiBusInfo | None:
        return next((b for b in self.spi if b.name == name), None)

"""busbridge wire protocol: virtio-i2c/virtio-spi requests in msgpack frames.

Sans-I/O: no sockets, no asyncio, no files.  See ``SPEC.md`` for the wire
format byte by byte.
"""

from .codec import encode_body, frame
from .connection import NEED_DATA, Connection, Role, State
from .errors import ErrorCode, LocalProtocolError, ProtocolError, ProtocolViolation
from .events import (
    ChainedI2CRequest,
    Error,
    Event,
    Failure,
    FrameType,
    Hello,
    I2CRequest,
    Ping,
    Pong,
    Result,
    SpiRequest,
    Welcome,
)
from .handshake import HelloInfo, I2CBusInfo, LimitsInfo, SpiBusInfo, WelcomeInfo
from .leases import LeaseInfo, LeaseOp, LeaseRequest, LeaseResult
from .limits import DEFAULT_LIMITS, DEFAULT_PORT, PROTOCOL_VERSION, Limits
from .virtio import (
    I2C_FLAGS_FAIL_NEXT,
    I2C_FLAGS_M_RD,
    I2CMsg,
    I2CStatus,
    SpiConfig,
    SpiMode,
    SpiResult,
    SpiTransfer,
    SpiTransferHead,
    chain,
    check_spi_transfer,
    read,
    split_chains,
    write,
)

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_PORT",
    "I2C_FLAGS_FAIL_NEXT",
    "I2C_FLAGS_M_RD",
    "NEED_DATA",
    "PROTOCOL_VERSION",
    "ChainedI2CRequest",
    "Connection",
    "Error",
    "ErrorCode",
    "Event",
    "Failure",
    "FrameType",
    "Hello",
    "HelloInfo",
    "I2CBusInfo",
    "I2CMsg",
    "I2CRequest",
    "I2CStatus",
    "LeaseInfo",
    "LeaseOp",
    "LeaseRequest",
    "LeaseResult",
    "Limits",
    "LimitsInfo",
    "LocalProtocolError",
    "Ping",
    "Pong",
    "ProtocolError",
    "ProtocolViolation",
    "Result",
    "Role",
    "SpiBusInfo",
    "SpiConfig",
    "SpiMode",
    "SpiRequest",
    "SpiResult",
    "SpiTransfer",
    "SpiTransferHead",
    "State",
    "Welcome",
    "WelcomeInfo",
    "chain",
    "check_spi_transfer",
    "encode_body",
    "frame",
    "read",
    "split_chains",
    "write",
]

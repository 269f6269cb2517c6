"""The events a :class:`~protocol.connection.Connection` emits and accepts.

Each is a slotted dataclass, one per frame type.  The hot-path ones are not
``frozen`` (a frozen dataclass costs ~1.2 µs to build, a plain one ~0.3 µs):
treat them as immutable all the same.  Their wire layout is
in ``SPEC.md``; the numeric type codes are in :class:`FrameType`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from .errors import ErrorCode
from .handshake import HelloInfo, WelcomeInfo
from .leases import LeaseRequest, LeaseResult
from .virtio import I2CMsg, SpiTransfer


class FrameType(IntEnum):
    HELLO = 0
    WELCOME = 1
    I2C = 2
    SPI = 3
    RESULT = 4
    ERROR = 5
    PING = 6
    PONG = 7
    LEASE = 8
    LEASE_RESULT = 9


@dataclass(frozen=True, slots=True)
class Hello:
    info: HelloInfo


@dataclass(frozen=True, slots=True)
class Welcome:
    info: WelcomeInfo


@dataclass(slots=True)
class I2CRequest:
    """An ordered list of virtio-i2c requests for one bus.

    FAIL_NEXT groups inside it are separate combined transactions; the frame as
    a whole keeps its order on the bus.
    """

    id: int
    bus: str
    msgs: tuple[I2CMsg, ...]
    timeout_ms: int | None = None


@dataclass(slots=True)
class ChainedI2CRequest(I2CRequest):
    """An I2C request whose messages are ONE combined transaction, whatever their flags.

    It goes out with FAIL_NEXT set on all messages but the last, as
    :func:`~protocol.virtio.chain` would mark them, without building new
    messages (the clients' ``transfer()``, a hot path).  Only a client sends
    it; the server receives a plain :class:`I2CRequest` with those flags.
    """


@dataclass(slots=True)
class SpiRequest:
    """One SPI message: ordered transfers on one chip select, CS per ``cs_change``."""

    id: int
    bus: str
    cs: int
    transfers: tuple[SpiTransfer, ...]
    timeout_ms: int | None = None


@dataclass(slots=True)
class Failure:
    """Why request ``index`` of a frame failed; ``errno`` is the board's errno (0 if none)."""

    index: int
    errno: int
    message: str


@dataclass(slots=True)
class Result:
    """One status byte per request, and one entry in ``reads`` per read request.

    ``reads`` follows request order; an entry is empty when its request did
    not succeed.  ``failures`` explains each failed chain or message.
    """

    id: int
    status: bytes
    reads: list[bytes] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


@dataclass(slots=True)
class Error:
    """A refused frame (``id`` > 0) or a connection-level problem (``id`` 0)."""

    id: int
    code: ErrorCode
    message: str


@dataclass(slots=True)
class Ping:
    id: int


@dataclass(slots=True)
class Pong:
    id: int


Event = (Hello | Welcome | I2CRequest | SpiRequest | Result | Error | Ping | Pong
         | LeaseRequest | LeaseResult)

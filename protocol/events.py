"""The events a :class:`~protocol.connection.Connection` emits and accepts.

One class per frame type; their wire layout is in ``SPEC.md``, the numeric
type codes are in :class:`FrameType`.  The handshake events are frozen
dataclasses (built once per connection).  The others are built for every
request and answer, so they are plain slotted classes (:class:`_Record`):
compared and shown field by field like a dataclass, but with an ``__init__``
of their own, which mypyc compiles.  A dataclass's generated ``__init__``
stays interpreted even in the compiled build (about 3k instructions per
event there).  They are not frozen either (a frozen one costs ~1.2 µs to
build): treat them as immutable all the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

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


class _Record:
    """Equality and ``repr`` over the fields named in ``_FIELDS``, as a dataclass has."""

    __slots__ = ()
    _FIELDS: ClassVar[tuple[str, ...]] = ()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._FIELDS)

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._FIELDS)
        return f"{type(self).__name__}({fields})"


@dataclass(frozen=True, slots=True)
class Hello:
    info: HelloInfo


@dataclass(frozen=True, slots=True)
class Welcome:
    info: WelcomeInfo


class I2CRequest(_Record):
    """An ordered list of virtio-i2c requests for one bus.

    FAIL_NEXT groups inside it are separate combined transactions; the frame as
    a whole keeps its order on the bus.
    """

    _FIELDS = ("id", "bus", "msgs", "timeout_ms")
    __slots__ = _FIELDS

    def __init__(self, id: int, bus: str, msgs: tuple[I2CMsg, ...],
                 timeout_ms: int | None = None) -> None:
        self.id = id
        self.bus = bus
        self.msgs = msgs
        self.timeout_ms = timeout_ms


class ChainedI2CRequest(I2CRequest):
    """An I2C request whose messages are ONE combined transaction, whatever their flags.

    It goes out with FAIL_NEXT set on all messages but the last, as
    :func:`~protocol.virtio.chain` would mark them, without building new
    messages (the clients' ``transfer()``, a hot path).  Only a client sends
    it; the server receives a plain :class:`I2CRequest` with those flags.
    """

    __slots__ = ()


class SpiRequest(_Record):
    """One SPI message: ordered transfers on one chip select, CS per ``cs_change``."""

    _FIELDS = ("id", "bus", "cs", "transfers", "timeout_ms")
    __slots__ = _FIELDS

    def __init__(self, id: int, bus: str, cs: int, transfers: tuple[SpiTransfer, ...],
                 timeout_ms: int | None = None) -> None:
        self.id = id
        self.bus = bus
        self.cs = cs
        self.transfers = transfers
        self.timeout_ms = timeout_ms


class Failure(_Record):
    """Why request ``index`` of a frame failed; ``errno`` is the board's errno (0 if none)."""

    _FIELDS = ("index", "errno", "message")
    __slots__ = _FIELDS

    def __init__(self, index: int, errno: int, message: str) -> None:
        self.index = index
        self.errno = errno
        self.message = message


class Result(_Record):
    """One status byte per request, and one entry in ``reads`` per read request.

    ``reads`` follows request order; an entry is empty when its request did
    not succeed.  ``failures`` explains each failed chain or message.
    """

    _FIELDS = ("id", "status", "reads", "failures")
    __slots__ = _FIELDS

    def __init__(self, id: int, status: bytes, reads: list[bytes] | None = None,
                 failures: list[Failure] | None = None) -> None:
        self.id = id
        self.status = status
        self.reads: list[bytes] = [] if reads is None else reads
        self.failures: list[Failure] = [] if failures is None else failures


class Error(_Record):
    """A refused frame (``id`` > 0) or a connection-level problem (``id`` 0)."""

    _FIELDS = ("id", "code", "message")
    __slots__ = _FIELDS

    def __init__(self, id: int, code: ErrorCode, message: str) -> None:
        self.id = id
        self.code = code
        self.message = message


class Ping(_Record):
    _FIELDS = ("id",)
    __slots__ = _FIELDS

    def __init__(self, id: int) -> None:
        self.id = id


class Pong(_Record):
    _FIELDS = ("id",)
    __slots__ = _FIELDS

    def __init__(self, id: int) -> None:
        self.id = id


Event = (Hello | Welcome | I2CRequest | SpiRequest | Result | Error | Ping | Pong
         | LeaseRequest | LeaseResult)

"""Machine-readable error codes carried in ERROR frames, and the protocol's exceptions.

Both exceptions derive from :class:`ProtocolViolation`, so one ``except`` covers
"something broke the protocol" whichever side did it; the two subclasses keep
apart what callers must handle differently: :class:`ProtocolError` (the peer
sent something unacceptable; answer with an ERROR frame) and
:class:`LocalProtocolError` (this side was about to send something the protocol
or the peer's limits forbid; nothing was sent).
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Codes a peer can switch on; the message beside them is for humans."""

    MALFORMED = "malformed"  # not msgpack, wrong shape or types
    FRAME_TOO_LARGE = "frame-too-large"  # length prefix above the limit (connection closes)
    LIMIT_EXCEEDED = "limit-exceeded"  # too many requests, buffer too long, too many in flight
    BAD_REQUEST = "bad-request"  # well-formed but invalid: reserved bits, bad address, open chain
    UNSUPPORTED_VERSION = "unsupported-version"
    HANDSHAKE_REQUIRED = "handshake-required"
    UNKNOWN_BUS = "unknown-bus"
    DUPLICATE_ID = "duplicate-id"
    TIMEOUT = "timeout"
    SHUTTING_DOWN = "shutting-down"
    INTERNAL = "internal"
    BUSY = "busy"  # the bus, address or chip select is leased to someone else
    NO_LEASE = "no-lease"  # renew of a lease that expired, was released or never existed
    UNAUTHORIZED = "unauthorized"  # missing or wrong token in HELLO (connection closes)
    DENIED = "denied"  # an access rule forbids this request; it touched no bus
    RATE_LIMITED = "rate-limited"  # over the per-client request rate; not run, not queued
    TOO_MANY_CLIENTS = "too-many-clients"  # max_clients connected (connection closes)
    HANDSHAKE_TIMEOUT = "handshake-timeout"  # no HELLO in time (connection closes)
    IDLE_TIMEOUT = "idle-timeout"  # no frame for idle_timeout_s (connection closes)

    def __str__(self) -> str:
        return self.value


class ProtocolViolation(Exception):
    """Base of both protocol exceptions: a frame that breaks SPEC.md, on either side."""


class ProtocolError(ProtocolViolation):
    """A frame the peer sent cannot be accepted.

    ``fatal`` means the byte stream can no longer be trusted (framing lost or
    handshake failed): the connection must be closed after the ERROR frame.
    A fatal error is about the connection, so its ``request_id`` is always 0
    (SPEC.md §9), whatever the caller passed.  Otherwise only the request
    ``request_id`` is refused (0 when its id could not be read) and decoding
    goes on.
    """

    def __init__(
        self, code: ErrorCode, message: str, *, request_id: int = 0, fatal: bool = False
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = 0 if fatal else request_id
        self.fatal = fatal

    def as_fatal(self) -> ProtocolError:
        """The same refusal, fatal (and so with id 0): before HELLO, and on a client."""
        return ProtocolError(self.code, self.message, fatal=True)


class LocalProtocolError(ProtocolViolation):
    """The caller asked to send something the protocol or the peer's limits forbid.

    Raised before anything is written and before any state changed: the
    request is not in flight, and the connection is as it was.
    """

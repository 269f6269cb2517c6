"""What the client raises.

Every error is a :class:`BusBridgeError`; those that have a standard meaning are
also the built-in exception code written for the kernel's buses already catches
(``OSError`` for a bus failure, ``ConnectionError`` for a lost connection).
"""

from __future__ import annotations

from protocol.errors import ErrorCode
from protocol.events import Result

__all__ = ["BusBridgeError", "ConnectionLost", "RemoteError", "TransferError"]


class BusBridgeError(Exception):
    """Base of every error this client raises (bus errors are also ``OSError``)."""


class ConnectionLost(BusBridgeError, ConnectionError):
    """The connection dropped; requests in flight have an unknown effect and are not re-sent."""


class RemoteError(BusBridgeError):
    """The server refused a frame (ERROR frame): ``code`` is machine-readable."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        # A message that already starts with its code ("busy: ...") is not prefixed twice.
        super().__init__(message if message.startswith(f"{code}:") else f"{code}: {message}")
        self.code = code
        self.message = message


class TransferError(BusBridgeError, OSError):
    """The bus refused or failed a transaction; ``errno`` is the board's errno.

    It is an ``OSError`` so code written for smbus2/spidev, which sees kernel
    errors as ``OSError``, keeps working.
    """

    def __init__(self, err: int, message: str, result: Result, index: int) -> None:
        OSError.__init__(self, err, message)
        self.result = result
        self.index = index

"""What the client raises.

Everything the client itself decides to raise is a :class:`BusBridgeError`, and
each is also the built-in exception that code written for the kernel's buses or
for sockets already catches:

==========================  =====================  ==========================================
error                       also a                 when
==========================  =====================  ==========================================
:class:`TransferError`      ``OSError``            the bus failed a transaction (board's errno)
:class:`RemoteError`        —                      the server refused a frame (``code``)
:class:`ConnectionLost`     ``ConnectionError``    the connection dropped, or was never up
:class:`RequestTimeout`     ``TimeoutError``       no answer in time (effect unknown)
:class:`ConnectTimeout`     ``TimeoutError``       no connection or WELCOME in time
:class:`InvalidRequest`     ``ValueError``         refused here, before anything was sent
==========================  =====================  ==========================================

What the operating system raises while connecting (``ConnectionRefusedError``,
an unreachable host, ``ssl.SSLError`` for a refused certificate) and while
reading a token file passes through unchanged: it is about the network or the
file, not about busbridge, and callers already know those types.
"""

from __future__ import annotations

from protocol.errors import ErrorCode
from protocol.events import Result

__all__ = ["BusBridgeError", "ConnectTimeout", "ConnectionLost", "InvalidRequest",
           "RemoteError", "RequestTimeout", "TransferError"]


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


class RequestTimeout(BusBridgeError, TimeoutError):
    """No answer in time (``errno`` ETIMEDOUT).

    The request may or may not have run on the bus; it is not re-sent, and its
    late answer is dropped.  A ``TimeoutError``, so ``except TimeoutError`` works.
    """


class ConnectTimeout(BusBridgeError, TimeoutError):
    """The connection or its handshake did not complete in time (``errno`` ETIMEDOUT);
    nothing was sent to the bus."""


class InvalidRequest(BusBridgeError, ValueError):
    """Refused by the client before anything was sent: a request over a protocol limit
    (too many messages, too long, reads that would not fit the answer) or malformed,
    or a setting that cannot work (a bad address, a token of the wrong length).

    A ``ValueError``, like the argument errors of the libraries the drop-in layers
    stand in for.
    """

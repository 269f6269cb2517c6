"""TLS handshakes the server can see: a refused client is logged, with its address and why.

``loop.create_server(ssl=...)`` drops a failed handshake without a word (asyncio
logs an ``OSError`` there only in debug mode), so a lab admin never learned that
a client came without TLS, or without the client certificate the board requires.
The server accepts connections itself and runs each TLS handshake in a task
(``Server._start_session``, so that a connection counts from its accept); when
one fails, :func:`describe` says why in an admin's words and :class:`RefusalLog`
logs it at WARNING, at most one line per :data:`LOG_PERIOD` seconds (a port
scanner or a client retrying in a loop cannot flood the log), with a count of
those held back.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable

from ..logs import event
from .stats import ServerStats

log = logging.getLogger("busbridge.server")

#: Shortest gap between two "TLS handshake refused" lines (s).
LOG_PERIOD = 10.0

#: OpenSSL reasons that mean "the bytes were not TLS at all": a plain-TCP client.
_NOT_TLS = ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNSUPPORTED_PROTOCOL",
            "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
            "WRONG_SSL_VERSION")


def describe(exc: BaseException) -> str:
    """Why a handshake failed, in the words an admin acts on."""
    if isinstance(exc, TimeoutError):
        return "no TLS handshake in time (a client that sent nothing, or too slowly)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"client certificate not accepted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        if reason in _NOT_TLS:
            return (f"not TLS ({reason}): a plain-TCP client; it must connect with TLS "
                    "(--tls-ca CA.pem)")
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return "no client certificate (this server requires one: --tls-cert/--tls-key)"
        if "ALERT" in reason:
            return f"the client gave up: {reason} (does it trust this server's certificate?)"
        return reason
    if isinstance(exc, ConnectionError):
        return "the client closed the connection during the TLS handshake"
    return str(exc) or type(exc).__name__


class RefusalLog:
    """Log refused handshakes, one line per ``period`` at most; count what is held back."""

    def __init__(self, period: float = LOG_PERIOD,
                 clock: Callable[[], float] = time.monotonic,
                 stats: ServerStats | None = None) -> None:
        self.period = period
        #: Where refusals are counted for health and metrics (``tls_refused``).
        self.stats = stats
        self.clock = clock
        self.total = 0
        self._held = 0
        self._next = 0.0

    def refused(self, peer: str, reason: str) -> None:
        self.total += 1
        if self.stats is not None:
            self.stats.tls_refused += 1
        now = self.clock()
        if now < self._next:
            self._held += 1
            return
        fields: dict[str, object] = {"peer": peer, "reason": reason}
        if self._held:
            fields["not_logged_before"] = self._held
        event(log, logging.WARNING, "TLS handshake refused", **fields)
        self._held = 0
        self._next = now + self.period

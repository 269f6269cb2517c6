"""TLS handshakes the server can see: a refused client is logged, with its address and why.

``loop.create_server(ssl=...)`` drops a failed handshake without a word (asyncio
logs an ``OSError`` there only in debug mode), so a lab admin never learned that
a client came without TLS, or without the client certificate the board requires.
:class:`TlsGate` therefore accepts plain TCP and starts TLS itself with
``loop.start_tls``; the session protocol sees the connection only once the
handshake has succeeded, exactly as before.  Refusals are logged at WARNING,
at most one line per :data:`LOG_PERIOD` seconds (a port scanner or a client
retrying in a loop cannot flood the log), with a count of those held back.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import cast

from ..logs import event

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
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.period = period
        self.clock = clock
        self.total = 0
        self._held = 0
        self._next = 0.0

    def refused(self, peer: str, reason: str) -> None:
        self.total += 1
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


class TlsGate:
    """A protocol factory for ``create_server`` that runs the TLS handshake itself.

    ``app_factory`` makes the session protocol; it gets ``connection_made`` with the
    TLS transport once the handshake succeeded, and nothing if it failed.
    """

    def __init__(self, app_factory: Callable[[], asyncio.BaseProtocol], context: ssl.SSLContext,
                 handshake_timeout: float, refusals: RefusalLog | None = None) -> None:
        self.app_factory = app_factory
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.refusals = refusals or RefusalLog()
        self.pending: set[asyncio.Task[None]] = set()

    def __call__(self) -> asyncio.Protocol:
        return _Handshake(self)

    def close(self) -> None:
        """Abandon handshakes still running (the server is stopping)."""
        for task in list(self.pending):
            task.cancel()


class _Handshake(asyncio.Protocol):
    """The plain-TCP protocol of one connection until ``start_tls`` takes it over.

    Whatever arrives before that (uvloop starts reading right after
    ``connection_made``, so a client's first TLS record usually does) is kept and
    handed to the TLS protocol once it is in place: ``start_tls`` pauses reading
    and schedules the TLS protocol's ``connection_made`` and the resumption of
    reading; :meth:`_replay` is scheduled to run right after those two, in the
    same pass of the loop, before the next read can happen.
    """

    def __init__(self, gate: TlsGate) -> None:
        self.gate = gate
        self.task: asyncio.Task[None] | None = None
        self.early = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t = self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        t.pause_reading()  # effective on asyncio's loops; uvloop starts reading anyway
        peer = t.get_extra_info("peername")
        where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        loop = asyncio.get_running_loop()
        self.task = loop.create_task(self._start(t, where))
        self.gate.pending.add(self.task)
        self.task.add_done_callback(self.gate.pending.discard)
        # Runs after the task's first step (which calls start_tls); that step's own
        # callbacks are then queued, so _replay goes after them.
        loop.call_soon(loop.call_soon, self._replay)

    def data_received(self, data: bytes) -> None:
        if len(self.early) + len(data) > MAX_EARLY:
            assert self.transport is not None
            self.transport.abort()
            return
        self.early += data

    def _replay(self) -> None:
        if not self.early or self.transport is None or self.transport.is_closing():
            return
        proto = self.transport.get_protocol()
        if proto is self:  # start_tls did not take over (the task was cancelled)
            return
        data, self.early = bytes(self.early), bytearray()
        if hasattr(proto, "get_buffer"):  # both loops' TLS protocols are buffered ones
            buffered = cast(asyncio.BufferedProtocol, proto)  # uvloop's is no subclass
            view = memoryview(data)
            while view:
                buf = memoryview(buffered.get_buffer(len(view)))
                n = min(len(buf), len(view))
                buf[:n] = view[:n]
                buffered.buffer_updated(n)
                view = view[n:]
        else:
            cast(asyncio.Protocol, proto).data_received(data)

    async def _start(self, transport: asyncio.Transport, peer: str) -> None:
        gate = self.gate
        app = gate.app_factory()
        try:
            tls = await asyncio.get_running_loop().start_tls(
                transport, app, gate.context, server_side=True,
                ssl_handshake_timeout=gate.handshake_timeout)
        except (OSError, TimeoutError) as e:  # ssl.SSLError and resets are OSErrors
            gate.refusals.refused(peer, describe(e))
            transport.abort()
            return
        if tls is None:  # closed meanwhile
            return
        app.connection_made(tls)

    def connection_lost(self, exc: Exception | None) -> None:
        # Only before start_tls took the transport over: the peer left at once.
        if self.task is not None and not self.task.done():
            self.task.cancel()


#: Bytes a client may send before its TLS handshake starts (a ClientHello is ~0.5 KiB).
MAX_EARLY = 64 * 1024

"""Connections from the accept to a session: what keeps them bounded before HELLO.

The server accepts connections itself (not through ``loop.create_server``) so
that a connection counts from its accept, before any TLS: :mod:`.admission`
bounds those not yet past HELLO, in all and per source address, and the TLS
handshake runs in a task that can be cancelled to make room.  A handshake
that fails is logged with why (:mod:`.tlsgate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
import time
from typing import Any

from protocol.errors import ErrorCode

from ..logs import LogGate
from .admission import Admission, Pending, source_key
from .auth import ServerSecurity
from .settings import LimitSettings
from .stats import ServerStats
from .tlsgate import RefusalLog, describe

log = logging.getLogger("busbridge.server")


class Accepting:
    """The server's side of accepting: accept loops, handshakes, making room.

    A mixin of :class:`~.server.Server`, which owns the attributes below.
    """

    admission: Admission
    gate: LogGate
    stats: ServerStats
    tls_refusals: RefusalLog
    security: ServerSecurity
    limit_settings: LimitSettings
    _tasks: set[asyncio.Task[None]]
    _sweeper: asyncio.TimerHandle | None

    @property
    def closing(self) -> bool:
        raise NotImplementedError

    def _session(self, p: Pending) -> asyncio.BaseProtocol:
        """The session protocol of a connection whose turn came."""
        raise NotImplementedError

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept_loop(self, lsock: socket.socket) -> None:
        """Accept for ever; a connection counts (and is bounded) from here on."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, addr = await loop.sock_accept(lsock)
            except (OSError, ValueError) as e:  # ValueError: the listener was closed
                if self.closing or lsock.fileno() < 0:
                    return
                self.gate.event(log, logging.ERROR, "accept failed", reason=str(e),
                                errno=getattr(e, "errno", None))
                if getattr(e, "errno", None) in (errno.EMFILE, errno.ENFILE):
                    oldest = self.admission.oldest()
                    if oldest is not None:
                        self.admission.settle_quietly(oldest)
                        self._evict(oldest, "the server is out of descriptors")
                await asyncio.sleep(0.05)
                continue
            self._accepted(conn, addr)

    def _accepted(self, conn: socket.socket, addr: Any) -> None:
        if self.closing:
            close_quietly(conn)
            return
        conn.setblocking(False)
        host = str(addr[0]) if isinstance(addr, tuple) else str(addr)
        peer = f"{host}:{addr[1]}" if isinstance(addr, tuple) else host
        p = Pending(source_key(host), peer, time.monotonic(), sock=conn)
        self.admission.arrive(p)
        if self.admission.waiting and self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(1.0, self._sweep_waiting)

    def _sweep_waiting(self) -> None:
        """Waiting connections have the handshake timeout too, counted from their accept."""
        self._sweeper = None
        self.admission.expire_waiting(self.limit_settings.handshake_timeout_s)
        self.admission.pump()
        if self.admission.waiting:
            self._sweeper = asyncio.get_running_loop().call_later(1.0, self._sweep_waiting)

    def _start(self, p: Pending) -> None:
        """Its turn: run the TLS handshake (if any) and make the session."""
        conn, p.sock = p.sock, None
        p.task = task = asyncio.ensure_future(self._start_session(conn, p))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_session(self, conn: socket.socket, p: Pending) -> None:
        loop = asyncio.get_running_loop()
        sec = self.security
        left = self.limit_settings.handshake_timeout_s - (time.monotonic() - p.accepted)
        try:
            await loop.connect_accepted_socket(
                lambda: self._session(p), conn, ssl=sec.ssl,
                ssl_handshake_timeout=max(left, 0.1) if sec.ssl else None)
        except asyncio.CancelledError:
            close_quietly(conn)
            self.admission.settle(p)
        except (OSError, ssl.SSLError, TimeoutError, EOFError) as e:
            close_quietly(conn)
            self.admission.settle(p)
            self.stats.protocol_errors += 1
            self.tls_refusals.refused(p.peer, describe(e))
        finally:
            p.task = None

    def _evict(self, p: Pending, why: str) -> None:
        """Close a connection not past HELLO to make room (the admission's call)."""
        self.admission.settle(p)
        self.gate.event(log, logging.WARNING, "connection closed to make room", peer=p.peer,
                        reason=why)
        if p.sock is not None:  # still waiting: nothing was started
            close_quietly(p.sock)
            p.sock = None
        elif p.session is not None:
            p.session.close_with(ErrorCode.HANDSHAKE_TIMEOUT,
                                 f"closed to make room ({why}): send HELLO sooner")
        elif p.task is not None:
            p.task.cancel()


def close_quietly(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.close()

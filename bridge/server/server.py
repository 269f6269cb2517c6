"""The asyncio board server: TCP in, bus transactions out, exactly one answer each.

:class:`Server` listens, admits connections (``max_clients``), closes idle ones,
counts, and shuts down gracefully.  Each connection is a
:class:`~.session.Session` (framing, handshake, admission of each request,
answers); the requests it admits go to the :class:`~.scheduling.Scheduler`,
which owns the bus workers and deadlines and whose docstring states the
concurrency model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import Any, cast

from protocol.errors import ErrorCode
from protocol.handshake import LimitsInfo, WelcomeInfo
from protocol.limits import DEFAULT_PORT

from .. import __version__
from ..logs import event
from .acl import Acl
from .admin import Admin
from .auth import ServerSecurity, check_exposure, is_loopback
from .buswork import BusWorker, Job
from .guard import TokenBucket
from .leases import DEFAULT_MAX_TTL, ExpiryTimer, LeaseTable
from .observe import Observers
from .record import DEFAULT_MAX_BYTES, Recorder
from .scheduling import BoardLike, Scheduler
from .session import Session
from .settings import LimitSettings, ServerPolicy
from .stats import ServerStats
from .tlsgate import TlsGate
from .trace import Tracer

log = logging.getLogger("busbridge.server")


class Server:
    """Serve a board's buses on TCP.  Use ``async with Server(board) as s:``."""

    def __init__(
        self,
        board: BoardLike,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        policy: ServerPolicy | None = None,
        request_timeout: float = 1.0,
        leases: LeaseTable | None = None,
    ) -> None:
        self.board = board
        #: Who may use which bus; consulted before any request reaches a worker.
        self.leases = leases if leases is not None else LeaseTable()
        self._lease_timer: ExpiryTimer | None = None
        self.policy = policy = policy or ServerPolicy()
        self.security: ServerSecurity = policy.security
        self.limit_settings: LimitSettings = policy.limit_settings
        self.acl: Acl | None = policy.acl
        limits = self.limits = policy.limits
        #: Rate buckets of authenticated clients, by name (shared by their connections).
        self.buckets: dict[str, TokenBucket] = {}
        self._idle_sweep: asyncio.TimerHandle | None = None
        self.host = host
        self.port = port
        self.stats = ServerStats()
        self.welcome = WelcomeInfo(
            server=f"busbridge {__version__}",
            board=board.name,
            i2c=[b.info() for b in board.i2c.values()],
            spi=[b.info() for b in board.spi.values()],
            limits=LimitsInfo(**limits.as_dict()),
            capabilities=["admin"],
        )
        self.scheduler = Scheduler(board, self.stats, request_timeout,
                                   policy.limit_settings.max_timeout_ms / 1000)
        #: Everything that watches finished transactions attaches here (observe.py).
        self.observers = Observers(self.scheduler)
        self.admin = Admin(board, self.scheduler, self.leases,
                           Tracer(self.observers, limits.max_frame), limits)
        self.sessions: set[Session] = set()
        self._server: asyncio.Server | None = None
        self.tls_gate: TlsGate | None = None
        self._closed = asyncio.Event()

    @property
    def workers(self) -> dict[tuple[str, str], BusWorker]:
        """Each bus's worker, by ``(kind, name)``."""
        return self.scheduler.workers

    @property
    def jobs(self) -> set[Job]:
        """Requests queued on or running on a bus worker."""
        return self.scheduler.jobs

    @property
    def closing(self) -> bool:
        return self.scheduler.closing

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        sec, lim = self.security, self.limit_settings
        check_exposure(self.host, sec.authenticated, sec.insecure)  # before anything binds
        loop = asyncio.get_running_loop()
        factory: Callable[[], asyncio.BaseProtocol] = lambda: Session(self)  # noqa: E731
        if sec.ssl is not None:  # handshakes run (and refusals are logged) by the gate
            self.tls_gate = TlsGate(factory, sec.ssl, lim.handshake_timeout_s)
            factory = self.tls_gate
        self._server = await loop.create_server(factory, self.host, self.port)
        sock = cast(Any, self._server).sockets[0].getsockname()
        self.port = sock[1]
        self._lease_timer = ExpiryTimer(self.leases, loop)
        if sec.tokens and sec.ssl is None and not is_loopback(self.host):
            event(log, logging.WARNING, "tokens travel in clear text without TLS",
                  listen=f"{sock[0]}:{sock[1]}")
        if lim.idle_timeout_s:
            self._idle_sweep = loop.call_later(self._sweep_period, self._sweep_idle)
        event(log, logging.INFO, "serving", board=self.board.name, listen=f"{sock[0]}:{sock[1]}",
              i2c=",".join(self.board.i2c) or "-", spi=",".join(self.board.spi) or "-",
              tls=sec.ssl is not None, client_certs=sec.client_certs,
              tokens=len(sec.tokens or ()), access_rules=len(self.acl.rules) if self.acl else 0)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def serve_forever(self) -> None:
        await self._closed.wait()

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting, let in-flight requests finish and answer, then close."""
        if self.closing:
            await self._closed.wait()
            return
        self.scheduler.closing = True
        self.admin.close()
        if self._idle_sweep is not None:
            self._idle_sweep.cancel()
        if self._server is not None:
            self._server.close()
        if self.tls_gate is not None:
            self.tls_gate.close()
        await self.scheduler.drain(grace)
        for s in list(self.sessions):
            s.close()  # a peer that takes no data is aborted
        if self._server is not None:
            await self._server.wait_closed()
        if self._lease_timer is not None:
            self._lease_timer.close()
        self.scheduler.shutdown()
        self.board.close()
        self._closed.set()
        event(log, logging.INFO, "stopped", **self.stats.stop_line())

    # -- connections -----------------------------------------------------------

    def admit(self, session: Session) -> bool:
        """Count a new connection in, or refuse it (and say why) when the server is full."""
        lim = self.limit_settings
        if len(self.sessions) >= lim.max_clients:
            event(log, logging.WARNING, "connection refused: too many clients",
                  peer=session.peer, max_clients=lim.max_clients)
            session.close_with(ErrorCode.TOO_MANY_CLIENTS,
                               f"{lim.max_clients} clients already connected; try again later")
            return False
        self.sessions.add(session)
        self.stats.connections += 1
        return True

    def release(self, session: Session) -> None:
        """A connection is gone (its queued requests are the scheduler's to withdraw)."""
        self.sessions.discard(session)

    @property
    def _sweep_period(self) -> float:
        return min(max(self.limit_settings.idle_timeout_s / 4, 0.01), 5.0)

    def _sweep_idle(self) -> None:
        """Close connections that sent no frame for ``idle_timeout_s`` and await nothing."""
        timeout = self.limit_settings.idle_timeout_s
        now = asyncio.get_running_loop().time()
        for s in list(self.sessions):
            if not s.conn.in_flight and now - s.last_frame > timeout:
                event(log, logging.INFO, "idle connection closed", peer=s.peer, client=s.client)
                s.close_with(ErrorCode.IDLE_TIMEOUT, f"no frame for {timeout:g} s")
        self._idle_sweep = asyncio.get_running_loop().call_later(self._sweep_period,
                                                                 self._sweep_idle)


async def serve(board: BoardLike, *, host: str, port: int, policy: ServerPolicy | None = None,
                request_timeout: float = 1.0, max_lease_ttl: int = DEFAULT_MAX_TTL,
                ready: Callable[[Server], None] | None = None, record: str | None = None,
                record_max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Run until SIGINT/SIGTERM, then shut down gracefully.

    ``record``: write every transaction to this file (:mod:`.record`) from the
    first request to the end of the shutdown's drain.
    """
    server = Server(board, host=host, port=port, policy=policy, request_timeout=request_timeout,
                    leases=LeaseTable(max_ttl=max_lease_ttl))
    recorder = (Recorder(record, board, record_max_bytes).attach(server.observers)
                if record is not None else None)
    try:
        await _serve(server, ready)
    finally:
        if recorder is not None:
            recorder.close()


async def _serve(server: Server, ready: Callable[[Server], None] | None) -> None:
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # non-main thread
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.close()))
    if ready is not None:
        ready(server)
    await server.serve_forever()

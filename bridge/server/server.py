"""The asyncio board server: TCP in, bus transactions out, exactly one answer each.

:class:`Server` listens, admits connections, closes idle ones, counts, and shuts
down gracefully.  It accepts connections itself (not through
``loop.create_server``) so that a connection counts from its accept, before
any TLS: :mod:`.admission` bounds those not yet past HELLO, in all and per
source address, and the TLS handshake runs in a task that can be cancelled to
make room; ``max_clients`` bounds the clients past HELLO.  Each connection is a
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
import socket
import time
from collections.abc import Callable

from protocol.errors import ErrorCode
from protocol.handshake import LimitsInfo, WelcomeInfo
from protocol.limits import DEFAULT_PORT

from .. import __version__
from ..logs import LogGate, event
from .accept import Accepting
from .acl import Acl
from .admin import Admin
from .admission import Admission, AuthThrottle, Pending
from .auth import ServerSecurity, check_exposure, is_loopback
from .budget import AnswerBudget
from .buswork import BusWorker, Job
from .guard import TokenBucket
from .leases import DEFAULT_MAX_TTL, ExpiryTimer, LeaseTable
from .observe import Observers
from .record import DEFAULT_MAX_BYTES, Recorder
from .scheduling import BoardLike, Scheduler
from .session import Session
from .settings import LimitSettings, ServerPolicy
from .stats import ServerStats
from .tlsgate import RefusalLog
from .trace import Tracer

log = logging.getLogger("busbridge.server")

#: Seconds between summaries of log lines the gate suppressed.
LOG_FLUSH_PERIOD = 10.0
#: Descriptors beyond the connections' that the process needs (buses, listeners, logs).
SPARE_FDS = 64
#: Seconds a handshake (TLS, then HELLO) keeps its slot while other connections wait.
HANDSHAKE_GRACE = 2.0


class Server(Accepting):
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
        self.policy = policy = policy or ServerPolicy()
        self.security: ServerSecurity = policy.security
        self.limit_settings: LimitSettings = policy.limit_settings
        lim = self.limit_settings
        #: Who may use which bus; consulted before any request reaches a worker.
        self.leases = leases if leases is not None else LeaseTable(
            max_leases=lim.max_leases, max_per_client=lim.max_leases_per_client)
        self._lease_timer: ExpiryTimer | None = None
        self.acl: Acl | None = policy.acl
        limits = self.limits = policy.limits
        #: Rate buckets of authenticated clients, by name (shared by their connections).
        self.buckets: dict[str, TokenBucket] = {}
        self._idle_sweep: asyncio.TimerHandle | None = None
        self.host = host
        self.port = port
        self.stats = ServerStats()
        self.leases.add_listener(self.stats.leases_changed)
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
        #: Connections with a transport (TLS done), past HELLO or waiting for it.
        self.sessions: set[Session] = set()
        #: Those past HELLO: what max_clients bounds.
        self.clients: set[Session] = set()
        self.admission = Admission(lim.max_pending, lim.max_handshakes,
                                   lim.max_handshakes_per_source, HANDSHAKE_GRACE,
                                   time.monotonic, self._start, self._evict)
        self._sweeper: asyncio.TimerHandle | None = None
        self.throttle = AuthThrottle()
        self.budget = AnswerBudget(lim.answer_budget, lim.client_answer_budget,
                                   lambda: (s.answers for s in self.sessions))
        #: Refusals an attacker can trigger at will are logged through this, at a bounded rate.
        self.gate = LogGate()
        #: Refused TLS handshakes: logged with why, one line per burst.
        self.tls_refusals = RefusalLog(stats=self.stats)
        self._listeners: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._flusher: asyncio.TimerHandle | None = None
        self._server: bool | None = None  # set once listening (tests check it stays None)
        self._closed = asyncio.Event()
        self._no_sessions = asyncio.Event()
        self._no_sessions.set()

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
        self._listeners = await _listen(loop, self.host, self.port)
        self._server = True
        sock = self._listeners[0].getsockname()
        self.port = sock[1]
        for lsock in self._listeners:
            self._spawn(self._accept_loop(lsock))
        raise_fd_limit(lim.max_clients + lim.max_pending + SPARE_FDS)
        self._flusher = loop.call_later(LOG_FLUSH_PERIOD, self._flush_log)
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
        if self._flusher is not None:
            self._flusher.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.admission.close()
        for t in list(self._tasks):  # the accept loops and the TLS handshakes under way
            t.cancel()
        for lsock in self._listeners:
            lsock.close()
        await self.scheduler.drain(grace)
        for s in list(self.sessions):
            s.close()  # a peer that takes no data is aborted
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        await self._sessions_gone(grace)
        self.gate.flush()
        if self._lease_timer is not None:
            self._lease_timer.close()
        self.scheduler.shutdown()
        self.board.close()
        self._closed.set()
        event(log, logging.INFO, "stopped", **self.stats.stop_line())

    # -- connections -----------------------------------------------------------

    def _session(self, p: Pending) -> Session:
        return Session(self, p)

    def admit(self, session: Session) -> bool:
        """A transport is up: refuse it (and say why) when the clients past HELLO are many."""
        self.sessions.add(session)
        self._no_sessions.clear()
        self.stats.connections += 1
        self.stats.clients = len(self.sessions)
        return self._room(session)

    def established(self, session: Session) -> bool:
        """``session``'s HELLO was accepted: it leaves the pending ones and takes a client slot."""
        if session.pending is not None:
            self.admission.settle(session.pending)
            session.pending = None
        if not self._room(session):
            return False
        self.clients.add(session)
        return True

    def _room(self, session: Session) -> bool:
        lim = self.limit_settings
        if len(self.clients) < lim.max_clients:
            return True
        self.gate.event(log, logging.WARNING, "connection refused: too many clients",
                        peer=session.peer, max_clients=lim.max_clients)
        if session.pending is not None:
            self.admission.settle(session.pending)
        session.close_with(ErrorCode.TOO_MANY_CLIENTS,
                           f"{lim.max_clients} clients already connected; try again later")
        return False

    def release(self, session: Session) -> None:
        """A connection is gone (its queued requests are the scheduler's to withdraw)."""
        self.sessions.discard(session)
        self.clients.discard(session)
        self.stats.clients = len(self.sessions)
        if not self.sessions:
            self._no_sessions.set()
        if session.pending is not None:
            self.admission.settle(session.pending)

    async def _sessions_gone(self, grace: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._no_sessions.wait(), grace)

    def _flush_log(self) -> None:
        self.gate.flush()
        self._flusher = asyncio.get_running_loop().call_later(LOG_FLUSH_PERIOD, self._flush_log)

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
    lim = (policy or ServerPolicy()).limit_settings
    server = Server(board, host=host, port=port, policy=policy, request_timeout=request_timeout,
                    leases=LeaseTable(max_ttl=max_lease_ttl, max_leases=lim.max_leases,
                                      max_per_client=lim.max_leases_per_client))
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


async def _listen(loop: asyncio.AbstractEventLoop, host: str, port: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for ``host`` (every address it names), as
    ``loop.create_server`` would make them."""
    infos = await loop.getaddrinfo(host or None, port, family=socket.AF_UNSPEC,
                                   type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    try:
        for family, type_, proto, _name, sockaddr in dict.fromkeys(infos):
            sock = socket.socket(family, type_, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(sockaddr)
            except OSError as e:
                raise OSError(e.errno, f"error while attempting to bind on address "
                                       f"{sockaddr!r}: {e.strerror}") from None
            if port == 0 and len(socks) == 1:
                port = sock.getsockname()[1]  # the other addresses get the same port
            sock.listen(socket.SOMAXCONN)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def _seccomp_filtered() -> bool:
    """Is a seccomp filter installed?  Then setrlimit may be fatal (systemd's
    ``SystemCallFilter=~@resources`` kills a process that calls it)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Seccomp:"):
                    return line.split()[1] != "0"
    except OSError:
        pass
    return False


def raise_fd_limit(needed: int) -> None:
    """Raise the soft descriptor limit to ``needed`` if the hard one allows; else warn."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed and not _seccomp_filtered():
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if soft != resource.RLIM_INFINITY and soft < needed:
        event(log, logging.WARNING, "descriptor limit below what the connection limits need",
              limit=soft, needed=needed,
              hint="raise LimitNOFILE (systemd) or ulimit -n, or lower max_clients/max_pending")

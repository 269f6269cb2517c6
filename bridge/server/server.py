"""The asyncio board server: TCP in, bus transactions out, exactly one answer each.

Concurrency model: every bus has one worker thread (a single-thread executor),
so a bus runs one transaction at a time, in arrival order, never on the event
loop; different buses run in parallel.  A request's deadline answers it with
ERR/ETIMEDOUT if the bus does not finish in time: a request still queued is
withdrawn and never runs, one already on the bus is reported as unknown and
never retried.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from protocol.connection import Connection, LocalProtocolError, Role
from protocol.errors import ErrorCode, ProtocolError
from protocol.events import (
    Error,
    Event,
    Failure,
    Hello,
    I2CRequest,
    Ping,
    Pong,
    Result,
    SpiRequest,
    Welcome,
)
from protocol.handshake import LimitsInfo, WelcomeInfo
from protocol.leases import LeaseRequest
from protocol.limits import DEFAULT_LIMITS, DEFAULT_PORT, Limits

from .. import __version__
from ..buses.base import I2CBackend, SpiBackend
from ..logs import event
from .acl import ANONYMOUS, Acl
from .auth import ServerSecurity, check_exposure, is_loopback, peer_common_name
from .execute import Outcome, check_spi, run_i2c, run_spi, timed_out
from .guard import CLOSED, Guard, LimitSettings, TokenBucket, make_guard, set_keepalive
from .leases import DEFAULT_MAX_TTL, ExpiryTimer, LeaseError, LeaseTable
from .reqlog import RequestLog
from .stats import BusCounts, ServerStats
from .tlsgate import TlsGate

log = logging.getLogger("busbridge.server")


class BoardLike(Protocol):
    name: str

    @property
    def i2c(self) -> Mapping[str, I2CBackend]: ...

    @property
    def spi(self) -> Mapping[str, SpiBackend]: ...

    def close(self) -> None: ...


class BusWorker:
    """One thread per bus: serialises it and keeps blocking ioctls off the loop."""

    def __init__(self, kind: str, name: str, counts: BusCounts | None = None) -> None:
        self.label = f"{kind} bus {name}"
        #: Jobs submitted and not yet settled on the loop; inline runs wait for 0.
        self.pending = 0
        #: This bus's requests and their outcomes (the server's ServerStats holds them).
        self.counts = counts if counts is not None else BusCounts()
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{kind}-{name}")

    def submit(self, fn: Callable[..., Outcome], *args: Any) -> cf.Future[Outcome]:
        return self._pool.submit(fn, *args)

    def shutdown(self, wait: bool) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)


@dataclass(eq=False)
class _Job:
    """A request handed to a bus worker thread, until it is answered."""

    session: _Session
    request: I2CRequest | SpiRequest
    worker: BusWorker
    future: cf.Future[Outcome] | None = None
    timer: asyncio.TimerHandle | None = None
    answered: bool = False

    @property
    def where(self) -> str:
        r = self.request
        return f"i2c bus {r.bus}" if isinstance(r, I2CRequest) else f"spi bus {r.bus} cs {r.cs}"

    def expired(self, started: bool) -> Outcome:
        r = self.request
        if isinstance(r, I2CRequest):
            n, n_reads = len(r.msgs), sum(1 for m in r.msgs if m.is_read)
        else:
            n, n_reads = len(r.transfers), sum(1 for t in r.transfers if t.rx_len)
        return timed_out(n, n_reads, isinstance(r, SpiRequest), self.where, started)


class Server:
    """Serve a board's buses on TCP.  Use ``async with Server(board) as s:``."""

    def __init__(
        self,
        board: BoardLike,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        limits: Limits = DEFAULT_LIMITS,
        request_timeout: float = 1.0,
        leases: LeaseTable | None = None,
        security: ServerSecurity | None = None,
        limit_settings: LimitSettings | None = None,
        acl: Acl | None = None,
    ) -> None:
        self.board = board
        #: Who may use which bus; consulted before any request reaches a worker.
        self.leases = leases if leases is not None else LeaseTable()
        self._lease_timer: ExpiryTimer | None = None
        self.security = security or ServerSecurity()
        self.limit_settings = limit_settings or LimitSettings()
        self.acl = acl
        #: Rate buckets of authenticated clients, by name (shared by their connections).
        self.buckets: dict[str, TokenBucket] = {}
        self._idle_sweep: asyncio.TimerHandle | None = None
        self.host = host
        self.port = port
        self.limits = limits
        self.request_timeout = request_timeout
        self.stats = ServerStats()
        self.welcome = WelcomeInfo(
            server=f"busbridge {__version__}",
            board=board.name,
            i2c=[b.info() for b in board.i2c.values()],
            spi=[b.info() for b in board.spi.values()],
            limits=LimitsInfo(**limits.as_dict()),
        )
        self.workers: dict[tuple[str, str], BusWorker] = {}
        for name in board.i2c:
            self.workers["i2c", name] = BusWorker("i2c", name, self.stats.bus("i2c", name))
        for name in board.spi:
            self.workers["spi", name] = BusWorker("spi", name, self.stats.bus("spi", name))
        #: Bus name -> (backend, worker): one lookup on the hot path.
        self.i2c_routes: dict[str, tuple[I2CBackend, BusWorker]] = {
            name: (b, self.workers["i2c", name]) for name, b in board.i2c.items()
        }
        self.sessions: set[_Session] = set()
        self.jobs: set[_Job] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._server: asyncio.Server | None = None
        self.tls_gate: TlsGate | None = None
        self.closing = False
        self._closed = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        sec, lim = self.security, self.limit_settings
        check_exposure(self.host, sec.authenticated, sec.insecure)  # before anything binds
        loop = asyncio.get_running_loop()
        factory: Callable[[], asyncio.BaseProtocol] = lambda: _Session(self)  # noqa: E731
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
        self.closing = True
        if self._idle_sweep is not None:
            self._idle_sweep.cancel()
        if self._server is not None:
            self._server.close()
        if self.tls_gate is not None:
            self.tls_gate.close()
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            event(log, logging.WARNING, "shutdown grace expired", pending=len(self.jobs))
        for s in list(self.sessions):
            s._close()  # a peer that takes no data is aborted
        if self._server is not None:
            await self._server.wait_closed()
        if self._lease_timer is not None:
            self._lease_timer.close()
        for w in self.workers.values():
            w.shutdown(wait=False)
        self.board.close()
        self._closed.set()
        event(log, logging.INFO, "stopped", **self.stats.stop_line())

    # -- job bookkeeping -----------------------------------------------------

    def _track(self, job: _Job) -> None:
        self.jobs.add(job)
        self._idle.clear()

    def _untrack(self, job: _Job) -> None:
        self.jobs.discard(job)
        if not self.jobs:
            self._idle.set()

    def _withdraw(self, session: _Session) -> int:
        """Withdraw a gone client's requests that have not reached a bus yet.

        Nobody can receive their answers any more, so they must not hold the
        bus (or write to it) after the client died; one already on the bus
        finishes, as it would at a deadline.  Returns how many were withdrawn.
        """
        n = 0
        for job in list(self.jobs):
            if job.session is session and job.future is not None and job.future.cancel():
                n += 1
        return n


class _Session(asyncio.BufferedProtocol):
    """One client connection.

    A ``BufferedProtocol``: reads land in one reused buffer, which spares the
    default loop its 256 KiB allocation per read (cpython#85451).
    """

    def __init__(self, server: Server) -> None:
        self.server = server
        self.conn = Connection(Role.SERVER, server.limits)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.peer = "?"
        self.loop = asyncio.get_running_loop()
        self.open = False
        self.eof = False
        self._batch: list[bytes] | None = None
        self._rview = memoryview(bytearray(READ_BUFFER))
        self.client_name = ""
        #: Lease tokens this connection holds: taken here or presented in HELLO.
        self.lease_tokens: set[str] = set()
        #: The lease table's per-bus dict (never rebound): empty means nothing is leased.
        self.leased = server.leases.held
        #: Per-frame checks (rate, access rules, idle stamp); None when none are configured.
        self.guard: Guard | None = None
        self.client = ANONYMOUS  # token name or certificate CN once HELLO is accepted
        self.last_frame = 0.0
        self._hello_timer: asyncio.TimerHandle | None = None
        #: -vv: one DEBUG line per request, written when it is answered.
        self.reqlog = RequestLog(self) if log.isEnabledFor(logging.DEBUG) else None

    # -- asyncio callbacks -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.open = True
        lim = self.server.limit_settings
        if len(self.server.sessions) >= lim.max_clients:
            event(log, logging.WARNING, "connection refused: too many clients", peer=self.peer,
                  max_clients=lim.max_clients)
            self.close_with(ErrorCode.TOO_MANY_CLIENTS,
                            f"{lim.max_clients} clients already connected; try again later")
            return
        self.server.sessions.add(self)
        self.server.stats.connections += 1
        set_keepalive(transport, lim)
        self.last_frame = self.loop.time()
        self._hello_timer = self.loop.call_later(lim.handshake_timeout_s, self._no_hello)
        event(log, logging.INFO, "client connected", peer=self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self._hello_timer is not None:
            self._hello_timer.cancel()
        self.server.sessions.discard(self)
        withdrawn = self.server._withdraw(self)
        event(log, logging.INFO, "client disconnected", peer=self.peer,
              in_flight=len(self.conn.in_flight), withdrawn=withdrawn,
              error=str(exc) if exc else "")

    def pause_writing(self) -> None:
        # A client that does not read stops being read: no unbounded buffering.
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._rview

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._rview[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        try:
            items = self.conn.receive(data)
        except ProtocolError as e:  # already failed: nothing more is read
            self._refuse(e)
            return
        # Answers produced while handling this read are written once, together.
        batch: list[bytes] = []
        self._batch = batch
        try:
            dispatch = self._dispatch
            for ev in items:
                if type(ev) is I2CRequest and self.guard is None:  # guarded: via _dispatch
                    self._i2c(ev)
                elif isinstance(ev, ProtocolError):
                    self._refuse(ev)
                    if ev.fatal:
                        return
                else:
                    dispatch(ev)
        finally:
            self._batch = None
            if batch:
                self.transport.write(b"".join(batch) if len(batch) > 1 else batch[0])

    def eof_received(self) -> bool | None:
        # Half-closed by the client: answer what is in flight, then close.
        self.eof = True
        if self.conn.buffered:
            # It ended inside a frame: say so (SPEC §9, fatal malformed) before closing.
            self.conn.receive_data(b"")
            try:
                self.conn.next_event()
            except ProtocolError as e:
                self.server.stats.protocol_errors += 1
                event(log, logging.WARNING, "frame refused", peer=self.peer, id=0,
                      code=str(e.code), reason=e.message, fatal=True)
                self.send(Error(0, e.code, e.message))
        if self.conn.in_flight:
            self._probe_peer()
        return bool(self.conn.in_flight)

    def _probe_peer(self) -> None:
        """A FIN means "done sending" or "died" (SIGKILL closes with a FIN too).

        Write a PING: a dead peer's kernel answers it with an RST, which sets
        the socket's error; then the connection is dropped, and its requests
        still queued are withdrawn instead of running for nobody.  A live
        half-closed client loses nothing.
        """
        self.send(Ping(1))
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return

        def check() -> None:
            try:
                gone = self.open and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            except OSError:
                return  # already closed: connection_lost has run or is about to
            if gone:
                event(log, logging.INFO, "peer gone after its FIN", peer=self.peer)
                self.transport.abort()

        for delay in (0.0, 0.1, 1.0):  # loopback answers at once; allow a WAN round trip
            self.loop.call_later(delay, check)

    # -- sending ---------------------------------------------------------------

    def send(self, ev: Event) -> None:
        if self.reqlog is not None:
            self.reqlog.answered(ev)
        if not self.open or self.transport.is_closing():
            self.conn.in_flight.discard(getattr(ev, "id", 0))
            return
        try:
            data = self.conn.send(ev)
        except LocalProtocolError as e:
            # Cannot happen for RESULTs the decoder admitted; never leave a request unanswered.
            log.exception("cannot encode answer", extra={"fields": {"peer": self.peer}})
            rid = getattr(ev, "id", 0)
            data = self.conn.send(Error(rid, ErrorCode.INTERNAL, _short(str(e))))
        if self._batch is not None:
            self._batch.append(data)
        else:
            self.transport.write(data)

    def _refuse(self, e: ProtocolError) -> None:
        self.server.stats.protocol_errors += 1
        event(log, logging.WARNING if e.fatal else logging.INFO, "frame refused",
              peer=self.peer, id=e.request_id, code=str(e.code), reason=e.message, fatal=e.fatal)
        self.send(Error(e.request_id, e.code, e.message))
        if e.fatal:
            if self._batch:
                self.transport.write(b"".join(self._batch))
                self._batch.clear()
            self._close()

    # -- dispatch ---------------------------------------------------------------

    def _i2c(self, ev: I2CRequest) -> None:
        """The hot path: an I2C frame, run inline when its bus is idle and cannot block."""
        if self.reqlog is not None:
            self.reqlog.arrived(ev)
        if self.leased and self._lease_refused(ev):
            return
        route = self.server.i2c_routes.get(ev.bus)
        if route is None:
            self.server.stats.unknown_bus += 1
            self._unknown_bus(ev.id, "I2C", ev.bus, self.server.board.i2c)
            return
        backend, worker = route
        counts = worker.counts
        counts.requests += 1
        if self.server.closing:
            counts.refused += 1
            self.send(Error(ev.id, ErrorCode.SHUTTING_DOWN, "server is shutting down"))
        elif not worker.pending and not backend.may_block:
            status, reads, failures = run_i2c(backend, ev.msgs)
            if failures:
                counts.failed(failures)
            self._answer_parts(ev.id, status, reads, failures)
        else:
            self._submit(ev, worker, run_i2c, (backend, ev.msgs))

    def _dispatch(self, ev: Event) -> None:
        if self.guard is not None and self.guard.refuse(self, ev):
            self._count_refused(ev)
            return
        server = self.server
        if type(ev) is I2CRequest:
            self._i2c(ev)
        elif isinstance(ev, SpiRequest):
            if self.reqlog is not None:
                self.reqlog.arrived(ev)
            if self.leased and self._lease_refused(ev):
                return
            spi_backend = server.board.spi.get(ev.bus)
            if spi_backend is None:
                server.stats.unknown_bus += 1
                self._unknown_bus(ev.id, "SPI", ev.bus, server.board.spi)
                return
            worker = server.workers["spi", ev.bus]
            worker.counts.requests += 1
            if server.closing:
                worker.counts.refused += 1
                self.send(Error(ev.id, ErrorCode.SHUTTING_DOWN, "server is shutting down"))
                return
            refused = check_spi(spi_backend, ev.cs, ev.transfers)
            if refused is not None:
                # Touches no bus, but queues behind earlier requests to keep their order.
                if worker.pending:
                    self._submit(ev, worker, _refusal, (refused,))
                else:
                    self._answer(ev.id, refused, worker)
            elif not worker.pending and not spi_backend.may_block:
                self._answer(ev.id, run_spi(spi_backend, ev.cs, ev.transfers), worker)
            else:
                self._submit(ev, worker, run_spi, (spi_backend, ev.cs, ev.transfers))
        elif isinstance(ev, Hello):
            self._hello(ev)
        elif isinstance(ev, Ping):
            self.send(Pong(ev.id))
        elif isinstance(ev, LeaseRequest):
            self._lease(ev)

    # -- leases -------------------------------------------------------------------

    def _lease_refused(self, ev: Event) -> bool:
        """Answer ``busy`` if ``ev`` touches a scope leased to another holder."""
        if type(ev) is I2CRequest:
            why = self.server.leases.refusal("i2c", ev.bus, {m.addr for m in ev.msgs},
                                             self.lease_tokens, self.peer)
        elif type(ev) is SpiRequest:
            why = self.server.leases.refusal("spi", ev.bus, (ev.cs,), self.lease_tokens,
                                             self.peer)
        else:
            return False
        if why is None:
            return False
        self._count_refused(ev)
        self.send(Error(ev.id, ErrorCode.BUSY, why))
        return True

    def _count_refused(self, ev: Event) -> None:
        """A request frame answered with an ERROR before it reached its bus."""
        stats = self.server.stats
        if isinstance(ev, I2CRequest | SpiRequest):
            worker = self.server.workers.get(("i2c" if type(ev) is I2CRequest else "spi",
                                              ev.bus))
            if worker is None:
                stats.unknown_bus += 1
            else:
                worker.counts.requests += 1
                worker.counts.refused += 1
        elif isinstance(ev, LeaseRequest):
            stats.lease_refused += 1

    def _lease(self, ev: LeaseRequest) -> None:
        board = self.server.board
        if ev.op == "take":
            buses: Mapping[str, object] = board.i2c if ev.kind == "i2c" else board.spi
            spi = board.spi.get(ev.bus) if ev.kind == "spi" else None
            if ev.bus not in buses:
                self.server.stats.lease_refused += 1
                self._unknown_bus(ev.id, ev.kind.upper(), ev.bus, buses)
                return
            if spi is not None and ev.cs is not None and ev.cs >= spi.config.cs_max_number:
                self.server.stats.lease_refused += 1
                self.send(Error(ev.id, ErrorCode.BAD_REQUEST,
                                f"spi bus {ev.bus} has chip selects 0.."
                                f"{spi.config.cs_max_number - 1}; no cs {ev.cs} to lease"))
                return
        host = self.peer.rpartition(":")[0] or self.peer
        try:
            res = self.server.leases.handle(ev, self.lease_tokens, holder=self.client_name
                                            or f"client at {host}", peer=host)
        except LeaseError as e:
            self.server.stats.lease_refused += 1
            self.send(Error(ev.id, e.code, e.message))
            return
        if res.token is not None:
            self.lease_tokens.add(res.token)
        self.send(res)

    # -- handshake, authentication, connection-level refusals ----------------------

    def _hello(self, ev: Hello) -> None:
        server = self.server
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None
        sec = server.security
        cn = peer_common_name(self.transport) if sec.ssl is not None else None
        client, why = sec.identify(ev.info.token, cn)
        if why:  # the token itself is never logged
            event(log, logging.WARNING, "handshake refused", peer=self.peer,
                  client=ev.info.client, reason=why)
            self.close_with(ErrorCode.UNAUTHORIZED, why)
            return
        self.client = client or ANONYMOUS
        acl = server.acl.for_client(self.client) if server.acl is not None else None
        self.guard = make_guard(server.limit_settings, acl, server.buckets, client,
                                self.loop.time())
        self.client_name = ev.info.client
        self.lease_tokens.update(ev.info.leases)
        event(log, logging.INFO, "handshake", peer=self.peer, client=ev.info.client,
              identity=self.client, lease_tokens=len(ev.info.leases))
        self.send(Welcome(server.welcome))

    def _no_hello(self) -> None:
        self._hello_timer = None
        t = self.server.limit_settings.handshake_timeout_s
        event(log, logging.WARNING, "no HELLO in time", peer=self.peer, timeout_s=t)
        self.close_with(ErrorCode.HANDSHAKE_TIMEOUT, f"no HELLO within {t:g} s")

    def close_with(self, code: ErrorCode, message: str) -> None:
        """Send a fatal ERROR, stop decoding and close (answers already made go first)."""
        self.server.stats.protocol_errors += 1
        self.send(Error(0, code, message))
        if self._batch:
            self.transport.write(b"".join(self._batch))
            self._batch.clear()
        self.guard = CLOSED  # frames decoded from the same read never run
        self._close()

    def _close(self) -> None:
        """Close after the pending answers, or abort if the peer does not take them.

        ``transport.close()`` waits for the write buffer to drain; a peer that
        stopped reading (frozen, half-open) would keep its session, and megabytes
        of answers, for ever.
        """
        self.transport.close()
        if self.transport.get_write_buffer_size():
            self.loop.call_later(CLOSE_GRACE, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if self.open:
            event(log, logging.INFO, "connection aborted: the peer took no data",
                  peer=self.peer, buffered=self.transport.get_write_buffer_size())
            self.transport.abort()

    def _unknown_bus(self, rid: int, kind: str, bus: str, known: Mapping[str, object]) -> None:
        have = ", ".join(repr(k) for k in known) or "none"
        self.send(Error(rid, ErrorCode.UNKNOWN_BUS,
                        f"no {kind} bus {bus!r} on board {self.server.board.name!r} "
                        f"({kind} buses: {have})"))

    def _submit(self, ev: I2CRequest | SpiRequest, worker: BusWorker,
                fn: Callable[..., Outcome], args: tuple[Any, ...]) -> None:
        """Queue on the bus's worker thread, behind what it already has, with a deadline."""
        server = self.server
        job = _Job(self, ev, worker)
        server._track(job)
        worker.pending += 1
        job.future = worker.submit(fn, *args)
        timeout = ev.timeout_ms / 1000 if ev.timeout_ms else server.request_timeout
        job.timer = self.loop.call_later(timeout, self._timeout, job)
        job.future.add_done_callback(lambda _f: self._notify(job))

    def _notify(self, job: _Job) -> None:
        """On the bus's thread: hand a finished job back to the loop, if it still runs."""
        try:
            self.loop.call_soon_threadsafe(self._done, job)
        except RuntimeError:  # loop closed: the server stopped before the bus finished
            event(log, logging.WARNING, "completion after shutdown", where=job.where,
                  id=job.request.id, peer=self.peer)

    def _done(self, job: _Job) -> None:
        assert job.future is not None
        job.worker.pending -= 1
        if job.timer is not None:
            job.timer.cancel()
        if not job.answered:
            job.answered = True
            # Only the deadline cancels futures, and it answers first.
            outcome = job.expired(False) if job.future.cancelled() else job.future.result()
            self._answer(job.request.id, outcome, job.worker)
        elif not job.future.cancelled():
            event(log, logging.WARNING, "late completion after deadline", where=job.where,
                  id=job.request.id, peer=self.peer)
        self.server._untrack(job)

    def _timeout(self, job: _Job) -> None:
        if job.answered:
            return
        assert job.future is not None
        started = not job.future.cancel()
        job.answered = True
        job.worker.counts.timeouts += 1
        event(log, logging.WARNING, "request deadline passed", where=job.where,
              id=job.request.id, peer=self.peer, started=started)
        self._answer(job.request.id, job.expired(started), job.worker)

    def _answer(self, rid: int, outcome: Outcome, worker: BusWorker | None = None) -> None:
        status, reads, failures = outcome
        if failures and worker is not None:
            worker.counts.failed(failures)
        self._answer_parts(rid, status, reads, failures)

    def _answer_parts(self, rid: int, status: bytes, reads: list[bytes],
                      failures: list[Failure]) -> None:
        if self.reqlog is not None:
            self.reqlog.answered(Result(rid, status, reads, failures))
        if failures:
            for f in failures:
                if len(f.message) > MAX_MESSAGE:
                    f.message = _short(f.message)
        if self.open and self._batch is not None:
            try:
                self._batch.append(self.conn.send_result(rid, status, reads, failures))
            except LocalProtocolError:
                self.send(Result(rid, status, reads, failures))  # answers INTERNAL
        else:
            self.send(Result(rid, status, reads, failures))
        if self.eof and not self.conn.in_flight:
            self._close()  # half-closed by the client and all answered


def _refusal(outcome: Outcome) -> Outcome:
    return outcome


#: Size of each connection's read buffer.
READ_BUFFER = 65536

#: Seconds a closing connection gets to take its last answers before it is aborted.
CLOSE_GRACE = 1.0

#: Longest failure message sent; SPEC.md asks servers to keep them short.
MAX_MESSAGE = 512


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


async def serve(board: BoardLike, *, host: str, port: int, request_timeout: float = 1.0,
                max_lease_ttl: int = DEFAULT_MAX_TTL,
                limits: Limits = DEFAULT_LIMITS,
                ready: Callable[[Server], None] | None = None, **policy: Any) -> None:
    """Run until SIGINT/SIGTERM, then shut down gracefully.

    ``policy``: ``security``, ``limit_settings`` and ``acl``, as for :class:`Server`.
    """
    server = Server(board, host=host, port=port, request_timeout=request_timeout, limits=limits,
                    leases=LeaseTable(max_ttl=max_lease_ttl), **policy)
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # non-main thread
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.close()))
    if ready is not None:
        ready(server)
    await server.serve_forever()

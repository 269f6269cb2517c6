"""One client connection: reads, framing, the handshake, admission, dispatch and answers.

Two layers.  :class:`FramedProtocol` moves frames: it feeds what the socket
delivers to its sans-I/O :class:`~protocol.connection.Connection`, batches the
answers made while handling one read into one write, and closes carefully (the
half-close, a peer that stopped reading).  :class:`Session` decides what each
frame means: it answers PING, runs the handshake, serves LEASE frames, or
admits a request (the guard's rate and access rules, then the lease table) and
hands it to the server's :class:`~.scheduling.Scheduler`, which answers it
through :meth:`FramedProtocol.answer`.  A session never touches a bus.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Collection, Mapping
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
from protocol.handshake import WelcomeInfo
from protocol.leases import LeaseRequest
from protocol.limits import Limits

from ..logs import event
from .acl import ANONYMOUS
from .auth import peer_common_name
from .guard import CLOSED, Guard, TokenBucket, make_guard
from .leases import LeaseError, LeaseTable
from .reqlog import RequestLog
from .scheduling import INLINE_CLOCKS_PER_READ, BoardLike, Scheduler, unknown_bus
from .settings import LimitSettings, ServerPolicy
from .stats import ServerStats

log = logging.getLogger("busbridge.server")

#: Size of each connection's read buffer.
READ_BUFFER = 65536

#: Seconds a closing connection gets to take its last answers before it is aborted.
CLOSE_GRACE = 1.0

#: Longest failure message sent; SPEC.md asks servers to keep them short.
MAX_MESSAGE = 512


class SessionHost(Protocol):
    """What a session uses of its server (:class:`~.server.Server` is one)."""

    board: BoardLike
    policy: ServerPolicy
    limits: Limits
    welcome: WelcomeInfo
    leases: LeaseTable
    scheduler: Scheduler
    stats: ServerStats
    #: Rate buckets of authenticated clients, by name (shared by their connections).
    buckets: dict[str, TokenBucket]

    def admit(self, session: Session) -> bool: ...

    def release(self, session: Session) -> None: ...


class FramedProtocol(asyncio.BufferedProtocol):
    """The frames of one connection: reading, batched writing, answering, closing.

    A ``BufferedProtocol``: reads land in one reused buffer, which spares the
    default loop its 256 KiB allocation per read (cpython#85451).  While a read
    is handled, answers collect in ``_batch`` and go out in one write.  What a
    frame means is the subclass's business (:class:`Session`).
    """

    def __init__(self, stats: ServerStats, limits: Limits) -> None:
        self.stats = stats
        self.conn = Connection(Role.SERVER, limits)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.peer = "?"
        self.loop = asyncio.get_running_loop()
        self.open = False
        self.eof = False
        self._batch: list[bytes] | None = None
        self._rview = memoryview(bytearray(READ_BUFFER))
        #: -vv: one DEBUG line per request, written when it is answered (None otherwise).
        self.reqlog: RequestLog | None = None

    # -- reading ---------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._rview

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._rview[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        """Decode and handle what one read delivered (the subclass does)."""
        raise NotImplementedError

    def pause_writing(self) -> None:
        # A client that does not read stops being read: no unbounded buffering.
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        # Half-closed by the client: answer what is in flight, then close.
        self.eof = True
        if self.conn.buffered:
            # It ended inside a frame: say so (SPEC §9, fatal malformed) before closing.
            self.conn.receive_data(b"")
            try:
                self.conn.next_event()
            except ProtocolError as e:
                self.stats.protocol_errors += 1
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

    # -- answers -------------------------------------------------------------------------

    def send(self, ev: Event) -> None:
        if self.reqlog is not None:
            self.reqlog.answered(ev)
        if not self.open or self.transport.is_closing():
            self.conn.withdraw(getattr(ev, "id", 0))
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

    def answer(self, rid: int, status: bytes, reads: list[bytes],
               failures: list[Failure]) -> None:
        """The RESULT of request ``rid``, as the bus left it (counted by the scheduler)."""
        if self.reqlog is not None:
            self.reqlog.answered(Result(rid, status, reads, failures))
        if failures:
            for f in failures:
                if len(f.message) > MAX_MESSAGE:
                    f.message = _short(f.message)
        result = Result(rid, status, reads, failures)
        if self.open and self._batch is not None:
            try:
                self._batch.append(self.conn.send(result))
            except LocalProtocolError:
                self.send(result)  # answers INTERNAL
        else:
            self.send(result)
        if self.eof and not self.conn.in_flight:
            self.close()  # half-closed by the client and all answered

    def _refuse(self, e: ProtocolError) -> None:
        self.stats.protocol_errors += 1
        event(log, logging.WARNING if e.fatal else logging.INFO, "frame refused",
              peer=self.peer, id=e.request_id, code=str(e.code), reason=e.message, fatal=e.fatal)
        self.send(Error(e.request_id, e.code, e.message))
        if e.fatal:
            self._flush()
            self.close()

    def _flush(self) -> None:
        """Write the answers batched so far now: the connection is about to close."""
        if self._batch:
            self.transport.write(b"".join(self._batch))
            self._batch.clear()

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
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


class Session(FramedProtocol):
    """One client connection as the server sees it: who the client is (HELLO),
    what it may do (guard, leases), and where each frame goes."""

    def __init__(self, host: SessionHost) -> None:
        super().__init__(host.stats, host.limits)
        self.host = host
        self.scheduler = host.scheduler
        self.client_name = ""
        #: Lease tokens this connection holds: taken here or presented in HELLO.
        self.lease_tokens: set[str] = set()
        #: The lease table's per-bus dict (never rebound): empty means nothing is leased.
        self.leased = host.leases.held
        #: Per-frame checks (rate, access rules, idle stamp); None when none are configured.
        self.guard: Guard | None = None
        self.client = ANONYMOUS  # token name or certificate CN once HELLO is accepted
        self.last_frame = 0.0
        self._hello_timer: asyncio.TimerHandle | None = None
        if log.isEnabledFor(logging.DEBUG):
            self.reqlog = RequestLog(self)

    # -- asyncio callbacks -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.open = True
        if not self.host.admit(self):
            return
        lim = self.host.policy.limit_settings
        set_keepalive(transport, lim)
        self.last_frame = self.loop.time()
        self._hello_timer = self.loop.call_later(lim.handshake_timeout_s, self._no_hello)
        event(log, logging.INFO, "client connected", peer=self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self._hello_timer is not None:
            self._hello_timer.cancel()
        self.host.release(self)
        withdrawn = self.scheduler.withdraw(self)
        event(log, logging.INFO, "client disconnected", peer=self.peer,
              in_flight=len(self.conn.in_flight), withdrawn=withdrawn,
              error=str(exc) if exc else "")

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
            scheduler = self.scheduler  # a local, not a bound method: compiled, a direct call
            scheduler.inline_left = INLINE_CLOCKS_PER_READ  # this read's share of the loop
            for ev in items:
                if type(ev) is I2CRequest:  # the hot path: one type test per frame
                    if self.reqlog is not None:
                        self.reqlog.arrived(ev)
                    guard = self.guard
                    if guard is not None and guard.refuse(self, ev):
                        self._count_refused(ev)
                        continue
                    if self.leased and self._busy(ev.id, "i2c", ev.bus,
                                                  {m.addr for m in ev.msgs}):
                        continue
                    scheduler.i2c(self, ev)
                elif isinstance(ev, ProtocolError):
                    self._refuse(ev)
                    if ev.fatal:
                        return
                else:
                    self._dispatch(ev)
        finally:
            self._batch = None
            if batch:
                self.transport.write(b"".join(batch) if len(batch) > 1 else batch[0])

    # -- frames other than I2C ------------------------------------------------------

    def _dispatch(self, ev: Event) -> None:
        if self.reqlog is not None and isinstance(ev, SpiRequest):
            self.reqlog.arrived(ev)
        if self.guard is not None and self.guard.refuse(self, ev):
            self._count_refused(ev)
            return
        if isinstance(ev, SpiRequest):
            if not (self.leased and self._busy(ev.id, "spi", ev.bus, (ev.cs,))):
                self.scheduler.spi(self, ev)
        elif isinstance(ev, Hello):
            self._hello(ev)
        elif isinstance(ev, Ping):
            self.send(Pong(ev.id))
        elif isinstance(ev, LeaseRequest):
            self._lease(ev)

    def _busy(self, rid: int, kind: str, bus: str, targets: Collection[int]) -> bool:
        """Answer ``busy`` if the request touches a scope leased to another holder."""
        why = self.host.leases.refusal(kind, bus, targets, self.lease_tokens, self.peer)
        if why is None:
            return False
        self._count_refused_on(kind, bus)
        self.send(Error(rid, ErrorCode.BUSY, why))
        return True

    def _count_refused(self, ev: Event) -> None:
        """A frame the guard answered with an ERROR (rate, access rules), counted."""
        if isinstance(ev, I2CRequest | SpiRequest):
            self._count_refused_on("i2c" if type(ev) is I2CRequest else "spi", ev.bus)
        elif isinstance(ev, LeaseRequest):
            self.stats.lease_refused += 1

    def _count_refused_on(self, kind: str, bus: str) -> None:
        worker = self.scheduler.workers.get((kind, bus))
        if worker is None:
            self.stats.unknown_bus += 1
        else:
            worker.counts.requests += 1
            worker.counts.refused += 1

    def _lease(self, ev: LeaseRequest) -> None:
        board = self.host.board
        if ev.op == "take":
            buses: Mapping[str, object] = board.i2c if ev.kind == "i2c" else board.spi
            spi = board.spi.get(ev.bus) if ev.kind == "spi" else None
            if ev.bus not in buses:
                self.stats.lease_refused += 1
                self.send(unknown_bus(board, ev.id, ev.kind.upper(), ev.bus, buses))
                return
            if spi is not None and ev.cs is not None and ev.cs >= spi.config.cs_max_number:
                self.stats.lease_refused += 1
                self.send(Error(ev.id, ErrorCode.BAD_REQUEST,
                                f"spi bus {ev.bus} has chip selects 0.."
                                f"{spi.config.cs_max_number - 1}; no cs {ev.cs} to lease"))
                return
        host = self.peer.rpartition(":")[0] or self.peer
        try:
            res = self.host.leases.handle(ev, self.lease_tokens, holder=self.client_name
                                          or f"client at {host}", peer=host)
        except LeaseError as e:
            self.stats.lease_refused += 1
            self.send(Error(ev.id, e.code, e.message))
            return
        if res.token is not None:
            self.lease_tokens.add(res.token)
        self.send(res)

    # -- the handshake -------------------------------------------------------------------

    def _hello(self, ev: Hello) -> None:
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None
        policy = self.host.policy
        sec = policy.security
        cn = peer_common_name(self.transport) if sec.ssl is not None else None
        client, why = sec.identify(ev.info.token, cn)
        if why:  # the token itself is never logged
            event(log, logging.WARNING, "handshake refused", peer=self.peer,
                  client=ev.info.client, reason=why)
            self.close_with(ErrorCode.UNAUTHORIZED, why)
            return
        self.client = client or ANONYMOUS
        acl = policy.acl.for_client(self.client) if policy.acl is not None else None
        self.guard = make_guard(policy.limit_settings, acl, self.host.buckets, client,
                                self.loop.time())
        self.client_name = ev.info.client
        self.lease_tokens.update(ev.info.leases)
        event(log, logging.INFO, "handshake", peer=self.peer, client=ev.info.client,
              identity=self.client, lease_tokens=len(ev.info.leases))
        self.send(Welcome(self.host.welcome))

    def _no_hello(self) -> None:
        self._hello_timer = None
        t = self.host.policy.limit_settings.handshake_timeout_s
        event(log, logging.WARNING, "no HELLO in time", peer=self.peer, timeout_s=t)
        self.close_with(ErrorCode.HANDSHAKE_TIMEOUT, f"no HELLO within {t:g} s")

    # -- closing -------------------------------------------------------------------------

    def close_with(self, code: ErrorCode, message: str) -> None:
        """Send a fatal ERROR, stop decoding and close (answers already made go first)."""
        self.stats.protocol_errors += 1
        self.send(Error(0, code, message))
        self._flush()
        self.guard = CLOSED  # frames decoded from the same read never run
        self.close()


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def set_keepalive(transport: Any, limits: LimitSettings) -> None:
    """Short TCP keepalive, so a peer that vanished (half-open TCP) is noticed."""
    if not limits.keepalive_idle_s:
        return
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", limits.keepalive_idle_s),
                        ("TCP_KEEPINTVL", limits.keepalive_interval_s),
                        ("TCP_KEEPCNT", limits.keepalive_count)):
        opt = getattr(socket, name, None)
        if opt is not None:  # Linux has all three; others may lack some
            sock.setsockopt(socket.IPPROTO_TCP, opt, value)

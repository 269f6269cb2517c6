"""One client connection: the handshake, admission, dispatch and answers.

:class:`~.framing.FramedProtocol` moves frames (reading, flow control, batched
and budgeted answers, closing).  :class:`Session` decides what each frame means:
it answers PING, runs the handshake, serves LEASE frames, or admits a request
(the guard's rate and access rules, then the lease table) and hands it to the
server's :class:`~.scheduling.Scheduler`, which answers it through
:meth:`FramedProtocol.answer`.  A session never touches a bus.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Collection, Mapping
from typing import Any, Protocol, cast

from protocol.admin import AdminRequest
from protocol.errors import ErrorCode, ProtocolError
from protocol.events import (
    Error,
    Event,
    Hello,
    I2CRequest,
    Ping,
    Pong,
    SpiRequest,
    Welcome,
)
from protocol.handshake import WelcomeInfo
from protocol.leases import LeaseRequest
from protocol.limits import Limits

from ..logs import LogGate, event
from .acl import ANONYMOUS, ClientAcl
from .admin import Admin
from .admission import Admission, AuthThrottle, Pending
from .auth import peer_common_name
from .budget import AnswerBudget, i2c_cost, spi_cost
from .framing import CHUNK, HOLD_HIGH, READ_BUFFER, FramedProtocol
from .guard import CLOSED, Guard, TokenBucket, make_guard
from .leases import LeaseError, LeaseTable, Target
from .reqlog import RequestLog
from .scheduling import INLINE_CLOCKS_PER_READ, BoardLike, Scheduler, unknown_bus
from .settings import LimitSettings, ServerPolicy
from .stats import ServerStats

log = logging.getLogger("busbridge.server")

#: Lease tokens a connection remembers (HELLO's plus those it took); past it, dead ones go.
MAX_LEASE_TOKENS = 256
#: A lease ``list`` page needs at least this much of the connection's answer budget.
MIN_LIST_ROOM = 4096


class SessionHost(Protocol):
    """What a session uses of its server (:class:`~.server.Server` is one)."""

    board: BoardLike
    policy: ServerPolicy
    limits: Limits
    welcome: WelcomeInfo
    leases: LeaseTable
    scheduler: Scheduler
    stats: ServerStats
    admin: Admin
    #: Rate buckets of authenticated clients, by name (shared by their connections).
    buckets: dict[str, TokenBucket]
    budget: AnswerBudget
    gate: LogGate
    admission: Admission
    throttle: AuthThrottle

    def admit(self, session: Session) -> bool: ...

    def established(self, session: Session) -> bool: ...

    def release(self, session: Session) -> None: ...




class Session(FramedProtocol):
    """One client connection as the server sees it: who the client is (HELLO),
    what it may do (guard, leases), and where each frame goes."""

    def __init__(self, host: SessionHost, pending: Pending | None = None) -> None:
        super().__init__(host.stats, host.limits, host.budget)
        self.host = host
        self.gate = host.gate
        self.scheduler = host.scheduler
        #: The admission record while this connection is not past HELLO.
        self.pending = pending
        self.client_name = ""
        #: Lease tokens this connection holds: taken here or presented in HELLO.
        self.lease_tokens: set[str] = set()
        #: The lease table's per-bus dict (never rebound): empty means nothing is leased.
        self.leased = host.leases.held
        #: Per-frame checks (rate, access rules, idle stamp); None when none are configured.
        self.guard: Guard | None = None
        self.client = ANONYMOUS  # token:NAME or cn:NAME once HELLO is accepted
        #: This client's access rules (None: the server has none; everything is open).
        self.acl: ClientAcl | None = None
        self.last_frame = 0.0
        self._hello_timer: asyncio.TimerHandle | None = None
        if log.isEnabledFor(logging.DEBUG):
            self.reqlog = self.answers.reqlog = RequestLog(self)

    # -- asyncio callbacks -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.answers.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.answers.open = True
        if self.pending is not None:
            self.pending.session = self
        if not self.host.admit(self):
            return
        lim = self.host.policy.limit_settings
        set_keepalive(transport, lim)
        self.last_frame = now = self.loop.time()
        # The handshake timeout runs from the accept, TLS included.
        left = lim.handshake_timeout_s - (now - self.pending.accepted if self.pending else 0.0)
        self._hello_timer = self.loop.call_later(max(left, 0.0), self._no_hello)
        event(log, logging.INFO, "client connected", peer=self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._hello_timer is not None:
            self._hello_timer.cancel()
        self.release_budget()
        self.answers.open = False
        self.host.release(self)
        self.host.admin.forget(self)
        withdrawn = self.scheduler.withdraw(self)
        self.tally.close()
        event(log, logging.INFO, "client disconnected", peer=self.peer,
              in_flight=len(self.conn.in_flight), withdrawn=withdrawn,
              error=str(exc) if exc else "")

    def data_received(self, data: bytes | memoryview) -> None:
        """Decode and handle a read, ``CHUNK`` bytes per loop iteration (:func:`read`)."""
        read(self, data)

    def buffer_updated(self, nbytes: int) -> None:
        read(self, self._rview[:nbytes])  # compiled, a direct call: data_received is not
        if nbytes == READ_BUFFER:
            self._read_full()

    def _unstash(self) -> None:
        """Handle the rest of a read that waited for the peer to take its answers."""
        data, self._stash = self._stash, None
        if data is None or not self.answers.open:
            return
        read(self, data)
        self._maybe_resume()

    # -- frames other than I2C ------------------------------------------------------

    def _dispatch(self, ev: Event) -> None:
        if isinstance(ev, SpiRequest):
            self.tally.arrived(ev)
            if self.reqlog is not None:
                self.reqlog.arrived(ev)
        if self.guard is not None and self.guard.refuse(self, ev):
            self._count_refused(ev)
            return
        if isinstance(ev, SpiRequest):
            if self.leased and self._busy(ev.id, "spi", ev.bus, (ev.cs,)):
                return
            if self.reserve(ev.id, spi_cost(ev)):
                self.scheduler.spi(self, ev)
            else:
                self._count_refused(ev)
        elif isinstance(ev, Hello):
            self._hello(ev)
        elif isinstance(ev, Ping):
            self.send(Pong(ev.id))
        elif isinstance(ev, LeaseRequest):
            lease_frame(self, ev)
        elif isinstance(ev, AdminRequest):
            self.host.admin.handle(self, ev)

    def writable(self) -> None:
        self.host.admin.tracer.flush(self)

    def _busy(self, rid: int, kind: str, bus: str, targets: Collection[Target]) -> bool:
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

    # -- the handshake -------------------------------------------------------------------

    def _hello(self, ev: Hello) -> None:
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None
        policy = self.host.policy
        sec = policy.security
        source = self.pending.source if self.pending is not None else self.peer
        now = self.loop.time()
        token = ev.info.token if sec.tokens else None
        locked = self.host.throttle.locked(source, now) if token is not None else 0.0
        if locked:  # guessing from this source: its tokens are not even checked
            self._refuse_hello(ev, f"too many wrong tokens from {source}; try again in "
                                   f"{locked:.0f} s")
            return
        cn = peer_common_name(self.transport) if sec.ssl is not None else None
        client, why = sec.identify(ev.info.token, cn)
        if why:  # the token itself is never logged
            if token is not None:
                self.host.throttle.failed(source, now)
            self._refuse_hello(ev, why)
            return
        self.client = client or ANONYMOUS
        if not self.host.established(self):
            return
        board = self.host.board
        self.acl = acl = policy.acl.for_client(self.client, [*(("i2c", b) for b in board.i2c),
                                                  *(("spi", b) for b in board.spi)]) \
            if policy.acl is not None else None
        self.guard = make_guard(policy.limit_settings, acl, self.host.buckets, client, now)
        self.client_name = ev.info.client
        self.lease_tokens.update(ev.info.leases)
        event(log, logging.INFO, "handshake", peer=self.peer, name=ev.info.client,
              identity=self.client, lease_tokens=len(ev.info.leases))
        self.send(Welcome(self.host.welcome))

    def _refuse_hello(self, ev: Hello, why: str) -> None:
        self.gate.event(log, logging.WARNING, "handshake refused", peer=self.peer,
                        name=ev.info.client, reason=why)
        self.close_with(ErrorCode.UNAUTHORIZED, why)

    def _no_hello(self) -> None:
        self._hello_timer = None
        t = self.host.policy.limit_settings.handshake_timeout_s
        self.gate.event(log, logging.WARNING, "no HELLO in time", peer=self.peer, timeout_s=t)
        self.close_with(ErrorCode.HANDSHAKE_TIMEOUT, f"no HELLO within {t:g} s")

    # -- closing -------------------------------------------------------------------------

    def close_with(self, code: ErrorCode, message: str) -> None:
        """Send a fatal ERROR, stop decoding and close (answers already made go first)."""
        self.stats.protocol_errors += 1
        self.send(Error(0, code, message))
        self._flush()
        self.guard = CLOSED  # frames decoded from the same read never run
        self.close()


# -- a read's frames: module functions, so that their calls are direct ones, compiled --------


def read(s: Session, data: bytes | memoryview) -> None:
    """Decode and handle a read, ``CHUNK`` bytes per loop iteration.

    A read of tiny bad frames makes ten times its size in ERRORs.  By chunks,
    what one read adds to a peer that takes no answers is bounded (once the
    transport stops taking them, the rest of the read waits, raw, until it
    does), and a connection that floods gets a chunk's worth of the loop at a
    time, like every other, not a whole read's.
    """
    view = data if isinstance(data, memoryview) else memoryview(data)
    answers = s.answers
    if not receive(s, view if len(view) <= CHUNK else view[:CHUNK]) or not answers.open:
        return
    if len(view) > CHUNK:
        s._stash = bytes(view[CHUNK:])
        s.transport.pause_reading()
        if s._writing_paused or answers.buffered > HOLD_HIGH:
            s._hold()  # the rest waits for the peer to take its answers
        else:
            s.loop.call_soon(s._unstash)  # the others' reads go first
    elif answers.buffered > HOLD_HIGH:
        s._hold()


def receive(s: Session, data: bytes | memoryview) -> bool:
    """Decode and handle ``data``; False once the connection failed."""
    try:
        items = s.answers.conn.receive(data)
    except ProtocolError as e:  # already failed: nothing more is read
        s._refuse(e)
        return False
    return handle(s, items)


def handle(s: Session, items: list[Event | ProtocolError]) -> bool:
    """Handle decoded frames; answers made meanwhile are written together.
    False after a fatal error."""
    batch: list[bytes] = []
    answers = s.answers  # a native object: field loads and direct calls, compiled
    answers.batch = batch
    try:
        scheduler = s.scheduler  # a local, not a bound method: compiled, a direct call
        scheduler.inline_left = INLINE_CLOCKS_PER_READ  # this read's share of the loop
        tally = answers.tally  # a typed local: compiled, a direct call
        reqlog = s.reqlog  # set once, at the start
        leased = s.leased  # the lease table's dict, never rebound
        for ev in items:
            if type(ev) is I2CRequest:  # the hot path: one type test per frame
                tally.arrived(ev)
                if reqlog is not None:
                    reqlog.arrived(ev)
                guard = s.guard  # CLOSED once a frame of this read closed the connection
                if guard is not None and guard.refuse(s, ev):
                    s._count_refused(ev)
                    continue
                if leased and s._busy(ev.id, "i2c", ev.bus,
                                      {(m.addr, m.ten_bit) for m in ev.msgs}):
                    continue
                if answers.reserve(ev.id, i2c_cost(ev)):
                    scheduler.i2c(s, ev, answers)
                else:
                    s._count_refused(ev)
            elif isinstance(ev, ProtocolError):
                s._refuse(ev)
                if ev.fatal:
                    return False
            else:
                s._dispatch(ev)
        return True
    finally:
        answers.batch = None
        answers.batched = 0
        if batch:
            answers.write(batch)
            answers.note_buffer()



def lease_frame(s: Session, ev: LeaseRequest) -> None:
    """A LEASE frame: take, renew, release or list (SPEC §8.6), answered on ``s``."""
    board = s.host.board
    if ev.op == "take":
        buses: Mapping[str, object] = board.i2c if ev.kind == "i2c" else board.spi
        spi = board.spi.get(ev.bus) if ev.kind == "spi" else None
        if ev.bus not in buses:
            s.stats.lease_refused += 1
            s.send(unknown_bus(board, ev.id, ev.kind.upper(), ev.bus, buses))
            return
        if spi is not None and ev.cs is not None and ev.cs >= spi.config.cs_max_number:
            s.stats.lease_refused += 1
            s.send(Error(ev.id, ErrorCode.BAD_REQUEST,
                            f"spi bus {ev.bus} has chip selects 0.."
                            f"{spi.config.cs_max_number - 1}; no cs {ev.cs} to lease"))
            return
    host = s.peer.rpartition(":")[0] or s.peer
    room = s.host.limits.max_frame
    if ev.op == "list":
        # A 9-byte request for a page of up to max_frame bytes: charge the page.
        room = min(room, s.budget.per_client - s.owed - s.buffered)
        if room < MIN_LIST_ROOM:
            s.stats.lease_refused += 1
            s.send(Error(ev.id, ErrorCode.LIMIT_EXCEEDED,
                            "answers to this connection wait unread; read them, then list"))
            return
    leases = s.host.leases
    try:
        res = leases.handle(ev, s.lease_tokens, holder=s.client_name
                            or f"client at {host}", peer=host, client=s.client,
                            owner=s.client if s.client != ANONYMOUS
                            else f"{ANONYMOUS}@{host}", max_frame=room)
    except LeaseError as e:
        s.stats.lease_refused += 1
        s.send(Error(ev.id, e.code, e.message))
        return
    if res.token is not None:
        if len(s.lease_tokens) >= MAX_LEASE_TOKENS:
            s.lease_tokens = {t for t in s.lease_tokens if leases.alive(t)}
        s.lease_tokens.add(res.token)
    elif res.released:
        s.lease_tokens.discard(ev.token)
    s.send(res)

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

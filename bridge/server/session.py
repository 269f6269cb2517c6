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

from ..logs import LogGate, event
from .acl import ANONYMOUS
from .admission import Admission, AuthThrottle, Pending
from .auth import peer_common_name
from .budget import AnswerBudget, i2c_cost, spi_cost
from .guard import CLOSED, Guard, TokenBucket, make_guard
from .leases import LeaseError, LeaseTable, Target
from .scheduling import BoardLike, Scheduler, unknown_bus
from .settings import LimitSettings, ServerPolicy
from .stats import ServerStats

log = logging.getLogger("busbridge.server")

#: Size of each connection's read buffer.
READ_BUFFER = 65536

#: Seconds a closing connection gets to take its last answers before it is aborted.
CLOSE_GRACE = 1.0

#: Longest failure message sent; SPEC.md asks servers to keep them short.
MAX_MESSAGE = 512

#: Lease tokens a connection remembers (HELLO's plus those it took); past it, dead ones go.
MAX_LEASE_TOKENS = 256
#: A lease ``list`` page needs at least this much of the connection's answer budget.
MIN_LIST_ROOM = 4096
#: Answers waiting unread (write buffer) past which a connection is not read, until
#: they are down to HOLD_LOW; checked every HOLD_POLL seconds meanwhile.
HOLD_HIGH, HOLD_LOW, HOLD_POLL = 64 * 1024, 16 * 1024, 0.05
#: A read is decoded and answered this many bytes at a time (see ``data_received``):
#: enough for max_in_flight small frames written at once to be accepted together.
CHUNK = 16 * 1024
#: The most handed to the transport in one write (see ``FramedProtocol.write``).
PIECE = 64 * 1024


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
    budget: AnswerBudget
    gate: LogGate
    admission: Admission
    throttle: AuthThrottle

    def admit(self, session: Session) -> bool: ...

    def established(self, session: Session) -> bool: ...

    def release(self, session: Session) -> None: ...


class FramedProtocol(asyncio.BufferedProtocol):
    """The frames of one connection: reading, batched writing, answering, closing.

    A ``BufferedProtocol``: reads land in one reused buffer, which spares the
    default loop its 256 KiB allocation per read (cpython#85451).  While a read
    is handled, answers collect in ``_batch`` and go out in one write.  What a
    frame means is the subclass's business (:class:`Session`).
    """

    #: Where refusals are logged, at a bounded rate (the server's, for a session).
    gate: LogGate

    def __init__(self, stats: ServerStats, limits: Limits, budget: AnswerBudget) -> None:
        self.stats = stats
        self.budget = budget
        #: Bytes reserved for the answers of admitted requests (by id), and their sum.
        self._costs: dict[int, int] = {}
        self.owed = 0
        #: The transport's write buffer as last measured (answers the peer has not taken).
        self.buffered = 0
        self.conn = Connection(Role.SERVER, limits)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.peer = "?"
        self.loop = asyncio.get_running_loop()
        self.open = False
        self.eof = False
        self._batch: list[bytes] | None = None
        #: Bytes in ``_batch``: answers made, counted by the budget, not yet written.
        self._batched = 0
        self._writing_paused = False
        #: Reading paused for one loop iteration, to let other connections be read.
        self._yielding = False
        #: Reading paused until the answers waiting unread drain (``_hold``).
        self._held = False
        #: The rest of a read, raw, waiting for the peer to take the answers so far.
        self._stash: bytes | None = None
        self._rview = memoryview(bytearray(READ_BUFFER))

    # -- reading ---------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._rview

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._rview[:nbytes])
        if nbytes == READ_BUFFER and self.open and not self._yielding:
            # A full buffer: more is probably waiting.  libuv would read this socket
            # up to 32 times in a row before serving any other; let the others go first.
            self._yielding = True
            self.transport.pause_reading()
            self.loop.call_soon(self._read_again)

    def _read_again(self) -> None:
        self._yielding = False
        self._maybe_resume()

    def _maybe_resume(self) -> None:
        """Read again unless something still holds reading: a yield, a peer that takes
        no answers (the transport's pause, or our own hold), or a read not yet handled."""
        if self.open and not (self._yielding or self._writing_paused or self._held
                              or self._stash is not None):
            self.transport.resume_reading()

    def _hold(self) -> None:
        """Answers wait unread past ``HOLD_HIGH``: read nothing until they drain.

        The transport's own pause is not enough: behind TLS it counts only what the
        TLS layer holds, not the encrypted bytes below it.
        """
        if not self._held and self.open:
            self._held = True
            self.transport.pause_reading()
            self.loop.call_later(HOLD_POLL, self._check_hold)

    def _check_hold(self) -> None:
        if not self.open:
            return
        self.note_buffer()
        if self.buffered > HOLD_LOW:
            self.loop.call_later(HOLD_POLL, self._check_hold)
            return
        self._held = False
        if self._stash is not None:
            self._unstash()
        else:
            self._maybe_resume()

    def data_received(self, data: bytes | memoryview) -> None:
        """Decode and handle what one read delivered (the subclass does)."""
        raise NotImplementedError

    def _unstash(self) -> None:
        """Handle the rest of a read that waited for the peer (the subclass does)."""
        raise NotImplementedError

    def pause_writing(self) -> None:
        # A client that does not read stops being read: no unbounded buffering.
        self._writing_paused = True
        self.transport.pause_reading()
        self.note_buffer()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self.note_buffer()
        if self._stash is not None and not self._held:
            self.loop.call_soon(self._unstash)  # reading resumes once the rest is handled
        else:
            self._maybe_resume()

    def write(self, answers: list[bytes]) -> None:
        """Write ``answers`` in pieces of at most ``PIECE`` bytes.

        A write the socket takes only in part stays pinned whole while the
        transport counts only its unsent rest (uvloop keeps a view of it); a 4 MiB
        batch the kernel took but 100 KiB of pinned 4 MiB the budget never saw.
        In pieces, what is pinned and not counted is under ``PIECE`` a connection.
        """
        piece: list[bytes] = []
        size = 0
        for data in answers:
            if size + len(data) > PIECE and piece:
                self.transport.write(b"".join(piece) if len(piece) > 1 else piece[0])
                piece, size = [], 0
            if len(data) > PIECE:
                for off in range(0, len(data), PIECE):
                    self.transport.write(data[off:off + PIECE])
                continue
            piece.append(data)
            size += len(data)
        if piece:
            self.transport.write(b"".join(piece) if len(piece) > 1 else piece[0])

    # -- the answer budget -----------------------------------------------------------

    def note_buffer(self) -> None:
        """Measure the write buffer for the budget (it shrinks unannounced), with the
        answers batched for it and not written yet."""
        if self.open:
            self.budget.buffer(self, self.transport.get_write_buffer_size() + self._batched)

    def reserve(self, rid: int, cost: int) -> bool:
        """Charge an admitted request's answer to the budget, or refuse it (not run)."""
        why = self.budget.refusal(self, cost)
        if why is None:
            self._costs[rid] = cost
            return True
        self.stats.errors += 1
        self.send(Error(rid, ErrorCode.LIMIT_EXCEEDED, why))
        return False

    def _settle(self, rid: int) -> None:
        cost = self._costs.pop(rid, 0)
        if cost:
            self.budget.release(self, cost)

    def release_budget(self) -> None:
        """The connection is gone: nothing it reserved or buffered counts any more."""
        self._costs.clear()
        self.budget.release(self, self.owed)
        self.budget.buffer(self, 0)

    def eof_received(self) -> bool | None:
        # Half-closed by the client: answer what is in flight, then close.
        self.eof = True
        if self.conn.buffered:
            # It ended inside a frame: say so (SPEC §9, fatal malformed) before closing.
            self.conn.receive_data(b"")
            try:
                self.conn.next_event()
            except ProtocolError as e:
                self.stats.errors += 1
                self.gate.event(log, logging.WARNING, "frame refused", peer=self.peer, id=0,
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
        if self._costs and type(ev) is Error:
            self._settle(ev.id)
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
            self._batched += len(data)
            self.budget.grow(self, len(data))  # counted now: the batch is written after the read
        else:
            self.write([data])

    def answer(self, rid: int, status: bytes, reads: list[bytes],
               failures: list[Failure]) -> None:
        """The RESULT of request ``rid``, as the bus left it."""
        self._settle(rid)
        if failures:
            self.stats.errors += 1
            for f in failures:
                if len(f.message) > MAX_MESSAGE:
                    f.message = _short(f.message)
        if self.open and self._batch is not None:
            try:
                data = self.conn.send_result(rid, status, reads, failures)
                self._batch.append(data)
                self._batched += len(data)
                self.budget.grow(self, len(data))
            except LocalProtocolError:
                self.send(Result(rid, status, reads, failures))  # answers INTERNAL
        else:
            self.send(Result(rid, status, reads, failures))
            self.note_buffer()
        if self.eof and not self.conn.in_flight:
            self.close()  # half-closed by the client and all answered

    def _refuse(self, e: ProtocolError) -> None:
        self.stats.errors += 1
        self.gate.event(log, logging.WARNING if e.fatal else logging.INFO, "frame refused",
                        peer=self.peer, id=e.request_id, code=str(e.code), reason=e.message,
                        fatal=e.fatal)
        self.send(Error(e.request_id, e.code, e.message))
        if e.fatal:
            self._flush()
            self.close()

    def _flush(self) -> None:
        """Write the answers batched so far now (the connection is about to close, or
        they are many)."""
        if self._batch:
            self.write(self._batch)
            self._batch.clear()
            self._batched = 0
            self.note_buffer()

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
        self.last_frame = 0.0
        self._hello_timer: asyncio.TimerHandle | None = None

    # -- asyncio callbacks -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.open = True
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
        self.open = False
        self.host.release(self)
        withdrawn = self.scheduler.withdraw(self)
        event(log, logging.INFO, "client disconnected", peer=self.peer,
              in_flight=len(self.conn.in_flight), withdrawn=withdrawn,
              error=str(exc) if exc else "")

    def data_received(self, data: bytes | memoryview) -> None:
        """Decode and handle a read, ``CHUNK`` bytes per loop iteration.

        A read of tiny bad frames makes ten times its size in ERRORs.  By chunks,
        what one read adds to a peer that takes no answers is bounded (once the
        transport stops taking them, the rest of the read waits, raw, until it
        does), and a connection that floods gets a chunk's worth of the loop at a
        time, like every other, not a whole read's.
        """
        view = data if isinstance(data, memoryview) else memoryview(data)
        if not self._receive(view[:CHUNK]) or not self.open:
            return
        if len(view) > CHUNK:
            self._stash = bytes(view[CHUNK:])
            self.transport.pause_reading()
            if self._writing_paused or self.buffered > HOLD_HIGH:
                self._hold()  # the rest waits for the peer to take its answers
            else:
                self.loop.call_soon(self._unstash)  # the others' reads go first
        elif self.buffered > HOLD_HIGH:
            self._hold()

    def _receive(self, data: bytes | memoryview) -> bool:
        """Decode and handle ``data``; False once the connection failed."""
        try:
            items = self.conn.receive(data)
        except ProtocolError as e:  # already failed: nothing more is read
            self._refuse(e)
            return False
        return self._handle(items)

    def _handle(self, items: list[Event | ProtocolError]) -> bool:
        """Handle decoded frames; answers made meanwhile are written together.
        False after a fatal error."""
        batch: list[bytes] = []
        self._batch = batch
        try:
            scheduler = self.scheduler  # a local, not a bound method: compiled, a direct call
            for ev in items:
                if type(ev) is I2CRequest:  # the hot path: one type test per frame
                    guard = self.guard
                    if guard is not None and guard.refuse(self, ev):
                        continue
                    if self.leased and self._busy(ev.id, "i2c", ev.bus,
                                                  {(m.addr, m.ten_bit) for m in ev.msgs}):
                        continue
                    if self.reserve(ev.id, i2c_cost(ev)):
                        scheduler.i2c(self, ev)
                elif isinstance(ev, ProtocolError):
                    self._refuse(ev)
                    if ev.fatal:
                        return False
                else:
                    self._dispatch(ev)
            return True
        finally:
            self._batch = None
            self._batched = 0
            if batch:
                self.write(batch)
                self.note_buffer()

    def _unstash(self) -> None:
        """Handle the rest of a read that waited for the peer to take its answers."""
        data, self._stash = self._stash, None
        if data is None or not self.open:
            return
        self.data_received(data)
        self._maybe_resume()

    # -- frames other than I2C ------------------------------------------------------

    def _dispatch(self, ev: Event) -> None:
        if self.guard is not None and self.guard.refuse(self, ev):
            return
        if isinstance(ev, SpiRequest):
            if not (self.leased and self._busy(ev.id, "spi", ev.bus, (ev.cs,))) \
                    and self.reserve(ev.id, spi_cost(ev)):
                self.scheduler.spi(self, ev)
        elif isinstance(ev, Hello):
            self._hello(ev)
        elif isinstance(ev, Ping):
            self.send(Pong(ev.id))
        elif isinstance(ev, LeaseRequest):
            self._lease(ev)

    def _busy(self, rid: int, kind: str, bus: str, targets: Collection[Target]) -> bool:
        """Answer ``busy`` if the request touches a scope leased to another holder."""
        why = self.host.leases.refusal(kind, bus, targets, self.lease_tokens, self.peer)
        if why is None:
            return False
        self.stats.errors += 1
        self.send(Error(rid, ErrorCode.BUSY, why))
        return True

    def _lease(self, ev: LeaseRequest) -> None:
        board = self.host.board
        if ev.op == "take":
            buses: Mapping[str, object] = board.i2c if ev.kind == "i2c" else board.spi
            spi = board.spi.get(ev.bus) if ev.kind == "spi" else None
            if ev.bus not in buses:
                self.stats.errors += 1
                self.send(unknown_bus(board, ev.id, ev.kind.upper(), ev.bus, buses))
                return
            if spi is not None and ev.cs is not None and ev.cs >= spi.config.cs_max_number:
                self.stats.errors += 1
                self.send(Error(ev.id, ErrorCode.BAD_REQUEST,
                                f"spi bus {ev.bus} has chip selects 0.."
                                f"{spi.config.cs_max_number - 1}; no cs {ev.cs} to lease"))
                return
        host = self.peer.rpartition(":")[0] or self.peer
        room = self.host.limits.max_frame
        if ev.op == "list":
            # A 9-byte request for a page of up to max_frame bytes: charge the page.
            room = min(room, self.budget.per_client - self.owed - self.buffered)
            if room < MIN_LIST_ROOM:
                self.stats.errors += 1
                self.send(Error(ev.id, ErrorCode.LIMIT_EXCEEDED,
                                "answers to this connection wait unread; read them, then list"))
                return
        leases = self.host.leases
        try:
            res = leases.handle(ev, self.lease_tokens, holder=self.client_name
                                or f"client at {host}", peer=host, client=self.client,
                                owner=self.client if self.client != ANONYMOUS
                                else f"{ANONYMOUS}@{host}", max_frame=room)
        except LeaseError as e:
            self.stats.errors += 1
            self.send(Error(ev.id, e.code, e.message))
            return
        if res.token is not None:
            if len(self.lease_tokens) >= MAX_LEASE_TOKENS:
                self.lease_tokens = {t for t in self.lease_tokens if leases.alive(t)}
            self.lease_tokens.add(res.token)
        elif res.released:
            self.lease_tokens.discard(ev.token)
        self.send(res)

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
        acl = policy.acl.for_client(self.client, [*(("i2c", b) for b in board.i2c),
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
        self.stats.errors += 1
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

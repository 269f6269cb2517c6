"""One connection's frames: reading with flow control, answers in bounded writes, closing.

Two layers.  :class:`FlowControl` decides when to read: a read is handled a
chunk per turn of the loop, and nothing more is read while the peer leaves
answers unread.  :class:`FramedProtocol` feeds what is read to its sans-I/O
:class:`~protocol.connection.Connection`, batches the answers made while
handling one read, charges them to the answer budget, and closes carefully
(the half-close, a peer that stopped reading).  What a frame means is
:class:`~.session.Session`'s business.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Final

from protocol.admin import AdminResult
from protocol.connection import Connection, LocalProtocolError, Role
from protocol.errors import ErrorCode, ProtocolError
from protocol.events import Error, Event, Failure, Ping
from protocol.limits import Limits

from ..logs import LogGate, event
from .answers import Answers, short_message
from .budget import AnswerBudget
from .reqlog import RequestLog
from .stats import ServerStats
from .tally import RequestTally

log = logging.getLogger("busbridge.server")

#: Size of each connection's read buffer.
READ_BUFFER: Final = 65536
#: Seconds a closing connection gets to take its last answers before it is aborted.
CLOSE_GRACE = 1.0
#: Answers waiting unread (write buffer) past which a connection is not read, until
#: they are down to HOLD_LOW; checked every HOLD_POLL seconds meanwhile.
#: (Final: compiled, literals rather than lookups in the module's dict.)
HOLD_HIGH: Final = 64 * 1024
HOLD_LOW: Final = 16 * 1024
HOLD_POLL: Final = 0.05
#: A read is decoded and answered this many bytes at a time (see ``data_received``):
#: enough for max_in_flight small frames written at once to be accepted together.
CHUNK: Final = 16 * 1024


class FlowControl(asyncio.BufferedProtocol):
    """When to read, and writes the peer's slowness cannot turn into hidden memory.

    A ``BufferedProtocol``: reads land in one reused buffer, which spares the
    default loop its 256 KiB allocation per read (cpython#85451).
    """

    #: The connection's transport (set by ``connection_made``).
    transport: asyncio.Transport

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._writing_paused = False
        #: Reading paused for one loop iteration, to let other connections be read.
        self._yielding = False
        #: Reading paused until the answers waiting unread drain (``_hold``).
        self._held = False
        #: The rest of a read, raw, waiting for the peer to take the answers so far.
        self._stash: bytes | None = None
        self._rview = memoryview(bytearray(READ_BUFFER))

    @property
    def open(self) -> bool:
        """Connected and not yet lost (the subclass keeps it)."""
        raise NotImplementedError

    @property
    def buffered(self) -> int:
        """The transport's write buffer as last measured (answers the peer has not taken)."""
        raise NotImplementedError

    def note_buffer(self) -> None:
        """Measure the write buffer (the subclass also tells the budget)."""
        raise NotImplementedError

    # -- reading ---------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._rview

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._rview[:nbytes])
        if nbytes == READ_BUFFER:
            self._read_full()

    def _read_full(self) -> None:
        """A read filled the buffer: more is probably waiting (see ``buffer_updated``)."""
        if self.open and not self._yielding:
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
        self.writable()

    @property
    def paused(self) -> bool:
        """The transport is above its high-water mark: streamed events wait (trace.py)."""
        return self._writing_paused

    def writable(self) -> None:
        """The transport takes data again: the subclass sends what waited."""


class FramedProtocol(FlowControl):
    """The frames of one connection: decoding, batched answers, the budget, closing.

    While a read is handled, answers collect in ``_batch`` and go out together.
    """

    #: Where refusals are logged, at a bounded rate (the server's, for a session).
    gate: LogGate

    def __init__(self, stats: ServerStats, limits: Limits, budget: AnswerBudget) -> None:
        super().__init__()
        self.stats = stats
        self.budget = budget
        self.conn = Connection(Role.SERVER, limits)
        self.peer = "?"
        #: -vv: one DEBUG line per request, written when it is answered (None otherwise).
        self.reqlog: RequestLog | None = None
        #: Each bus request from arrival to answer: latency, bytes, queue (stats.py).
        self.tally = RequestTally(stats)
        #: The answer path's state and its account in the budget (a native object).
        self.answers = Answers(self, self.conn, budget, self.tally)

    # -- the state the answers keep (read-only here: set it on ``answers``) ------------

    @property
    def open(self) -> bool:
        return self.answers.open

    @property
    def eof(self) -> bool:
        return self.answers.eof

    @property
    def owed(self) -> int:
        """Bytes reserved for the answers of admitted requests."""
        return self.answers.owed

    @property
    def buffered(self) -> int:
        return self.answers.buffered

    @property
    def _costs(self) -> dict[int, int]:
        """Each admitted request's reservation, by id (their sum is ``owed``; a copy)."""
        return self.answers.reserved()

    # -- the answer budget -----------------------------------------------------------

    def note_buffer(self) -> None:
        """Measure the write buffer for the budget (it shrinks unannounced), with the
        answers batched for it and not written yet."""
        self.answers.note_buffer()

    def reserve(self, rid: int, cost: int) -> bool:
        """Charge an admitted request's answer to the budget, or refuse it (not run)."""
        return self.answers.reserve(rid, cost)

    def charge(self, rid: int, cost: int) -> str | None:
        """Charge ``cost`` bytes to request ``rid`` until its answer is sent (RESULT,
        ADMIN_RESULT or ERROR), or say why not (then nothing is charged)."""
        a = self.answers
        why = self.budget.refusal(a, cost)
        if why is None:
            a.hold(rid, cost)
        return why

    def _settle(self, rid: int) -> None:
        a = self.answers
        cost = a.take(rid)
        if cost:
            self.budget.release(a, cost)

    def release_budget(self) -> None:
        """The connection is gone: nothing it reserved or buffered counts any more."""
        a = self.answers
        a.forget_all()
        self.budget.release(a, a.owed)
        self.budget.buffer(a, 0)

    def write(self, answers: list[bytes]) -> None:
        """Write ``answers`` in bounded pieces (:meth:`.Answers.write`)."""
        self.answers.write(answers)

    def eof_received(self) -> bool | None:
        # Half-closed by the client: answer what is in flight, then close.
        self.answers.eof = True
        if self.transport.get_extra_info("ssl_object") is not None:
            # TLS has no half-close (SPEC §1): the client's close_notify, or a FIN, ends
            # the session.  Nothing more is sent (after a close_notify it would be an
            # error to the peer); frames not started are withdrawn as for a drop.
            return False
        # The one receive path: b"" is the end of the stream.  Ending inside a frame
        # is a fatal malformed (SPEC §9.3): said before closing.
        for e in self.conn.receive(b""):
            if isinstance(e, ProtocolError):
                self._refuse(e)
                return False
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
        a = self.answers
        if (a.last_cost or a.costs) and isinstance(ev, (Error, AdminResult)):
            self._settle(ev.id)
        if self.reqlog is not None:
            self.reqlog.answered(ev)
        if type(ev) is Error:
            self.tally.error(ev)
        if not a.open or self.transport.is_closing():
            self.conn.withdraw(getattr(ev, "id", 0))
            return
        try:
            data = self.conn.send(ev)
        except LocalProtocolError as e:
            # Cannot happen for RESULTs the decoder admitted; never leave a request unanswered.
            log.exception("cannot encode answer", extra={"fields": {"peer": self.peer}})
            rid = getattr(ev, "id", 0)
            data = self.conn.send(Error(rid, ErrorCode.INTERNAL, short_message(str(e))))
        if a.batch is not None:
            a.batch.append(data)
            a.batched += len(data)
            self.budget.grow(a, len(data))  # counted now: the batch is written after the read
        else:
            a.write([data])

    def answer(self, rid: int, status: bytes, reads: list[bytes],
               failures: list[Failure]) -> None:
        """The RESULT of request ``rid``, as the bus left it (:meth:`.Answers.answer`)."""
        self.answers.answer(rid, status, reads, failures)

    def _refuse(self, e: ProtocolError) -> None:
        self.stats.protocol_errors += 1
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
        a = self.answers
        if a.batch:
            a.write(a.batch)
            a.batch.clear()
            a.batched = 0
            a.note_buffer()

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Close after the pending answers, or abort if the peer does not take them.

        ``transport.close()`` waits for the write buffer to drain; a peer that
        stopped reading (frozen, half-open) would keep its session, and megabytes
        of answers, for ever.
        """
        if self.transport.is_closing():
            return  # closed already (a TLS transport may be detached from its buffer)
        self.transport.close()
        if self.transport.get_write_buffer_size():
            self.loop.call_later(CLOSE_GRACE, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if self.open:
            event(log, logging.INFO, "connection aborted: the peer took no data",
                  peer=self.peer, buffered=self.transport.get_write_buffer_size())
            self.transport.abort()


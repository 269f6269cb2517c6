"""One connection's answers: its account in the answer budget, the batch, the RESULT path.

The session cannot be a native (compiled) class: its base is asyncio's
``BufferedProtocol``, so each of its attributes is a dict lookup and each of its
methods a generic call.  What every request moves several times (the answer's
reservation, the bytes owed and waiting unread, the batch of one read's answers)
and the RESULT path live here instead, in a native object whose fields are
loads and stores and whose methods are direct calls.  The session
(:class:`~.framing.FramedProtocol`) owns one and hands it everything uncommon.
"""

from __future__ import annotations

from typing import Any, Protocol

from protocol.connection import Connection, LocalProtocolError
from protocol.errors import ErrorCode
from protocol.events import Error, Event, Failure, Result

from .budget import Account, AnswerBudget
from .tally import RequestTally

#: Longest failure message sent; SPEC.md asks servers to keep them short.
MAX_MESSAGE = 512
#: The most handed to the transport in one write (see :meth:`Answers.write`).
PIECE = 64 * 1024


class Host(Protocol):
    """What the answers need of their connection for the uncommon paths."""

    def send(self, ev: Event) -> None: ...

    def close(self) -> None: ...


class Logs(Protocol):
    """The -vv request log (:class:`~.reqlog.RequestLog`), as the answers see it."""

    def answered(self, ev: Event) -> None: ...


class Answers(Account):
    """The answer path of one connection (see the module's docstring)."""

    def __init__(self, host: Host, conn: Connection, budget: AnswerBudget,
                 tally: RequestTally) -> None:
        super().__init__()
        self.host = host
        self.conn = conn
        self.budget = budget
        self.tally = tally
        #: Bytes reserved for the answers of admitted requests, by id (:meth:`hold`): the
        #: last one in ``last_rid``/``last_cost`` (0: none), the others here; the sum is
        #: ``owed``.  Most requests are answered before the next one is admitted (run
        #: inline): a dict insert, lookup and delete each cost more than the rest.
        self.costs: dict[int, int] = {}
        self.last_rid = 0
        self.last_cost = 0
        #: The answers made while one read is handled, written together after it.
        self.batch: list[bytes] | None = None
        #: Bytes in ``batch``: answers made, counted by the budget, not yet written.
        self.batched = 0
        self.open = False
        #: Half-closed by the client: close once everything is answered.
        self.eof = False
        #: The connection's transport (uvloop's is not an ``asyncio.Transport`` subclass).
        self.transport: Any = None
        #: -vv: one DEBUG line per request, written when it is answered (None otherwise).
        self.reqlog: Logs | None = None

    def note_buffer(self) -> None:
        """Measure the write buffer for the budget (it shrinks unannounced), with the
        answers batched for it and not written yet."""
        if self.open:
            self.budget.buffer(self, self.transport.get_write_buffer_size() + self.batched)

    def hold(self, rid: int, cost: int) -> None:
        """Note ``cost`` bytes reserved for request ``rid`` (already charged)."""
        if self.last_cost:
            self.costs[self.last_rid] = self.last_cost
        self.last_rid = rid
        self.last_cost = cost

    def take(self, rid: int) -> int:
        """Forget request ``rid``'s reservation; how many bytes it was (0: none)."""
        if self.last_cost and self.last_rid == rid:
            cost = self.last_cost
            self.last_cost = 0
            return cost
        costs = self.costs
        if not costs:
            return 0
        cost = costs.get(rid, -1)  # get and del: compiled, cheaper than pop(rid, 0)
        if cost < 0:
            return 0
        del costs[rid]
        return cost

    def reserved(self) -> dict[int, int]:
        """Every reservation, by id (a copy)."""
        out = dict(self.costs)
        if self.last_cost:
            out[self.last_rid] = self.last_cost
        return out

    def forget_all(self) -> None:
        """The connection is gone: no reservation is held any more (``owed`` is the
        budget's to release)."""
        self.costs.clear()
        self.last_cost = 0

    def reserve(self, rid: int, cost: int) -> bool:
        """Charge an admitted request's answer to the budget, or refuse it (not run)."""
        why = self.budget.refusal(self, cost)
        if why is None:
            self.hold(rid, cost)
            return True
        self.host.send(Error(rid, ErrorCode.LIMIT_EXCEEDED, why))
        return False

    def answer(self, rid: int, status: bytes, reads: list[bytes],
               failures: list[Failure]) -> None:
        """The RESULT of request ``rid``, as the bus left it (counted by the scheduler).

        Its reservation is released and, batched, its bytes charged in one step of
        the budget (:meth:`~.budget.AnswerBudget.answered`): nothing reads the
        budget in between.
        """
        cost = self.take(rid)
        if self.reqlog is not None:
            self.reqlog.answered(Result(rid, status, reads, failures))
        self.tally.result(rid, status, reads, failures)
        if failures:
            for f in failures:
                if len(f.message) > MAX_MESSAGE:
                    f.message = short_message(f.message)
        result = Result(rid, status, reads, failures)
        batch = self.batch
        if self.open and batch is not None:
            try:
                data = self.conn.send(result)
            except LocalProtocolError:
                if cost:
                    self.budget.release(self, cost)
                self.host.send(result)  # answers INTERNAL
            else:
                batch.append(data)
                self.batched += len(data)
                self.budget.answered(self, cost, len(data))
        else:
            if cost:
                self.budget.release(self, cost)
            self.host.send(result)
            self.note_buffer()
        if self.eof and not self.conn.in_flight:
            self.host.close()  # half-closed by the client and all answered

    def write(self, answers: list[bytes]) -> None:
        """Write ``answers`` in pieces of at most ``PIECE`` bytes.

        A write the socket takes only in part stays pinned whole while the
        transport counts only its unsent rest (uvloop keeps a view of it); a 4 MiB
        batch the kernel took but 100 KiB of pinned 4 MiB the budget never saw.
        In pieces, what is pinned and not counted is under ``PIECE`` a connection.
        """
        transport = self.transport
        if len(answers) == 1 and len(answers[0]) <= PIECE:  # the common case: one answer
            transport.write(answers[0])
            return
        piece: list[bytes] = []
        size = 0
        for data in answers:
            if size + len(data) > PIECE and piece:
                transport.write(b"".join(piece) if len(piece) > 1 else piece[0])
                piece, size = [], 0
            if len(data) > PIECE:
                for off in range(0, len(data), PIECE):
                    transport.write(data[off:off + PIECE])
                continue
            piece.append(data)
            size += len(data)
        if piece:
            transport.write(b"".join(piece) if len(piece) > 1 else piece[0])


def short_message(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"

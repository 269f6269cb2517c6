"""The server's memory budget for answers: what admitted requests will answer, and what
answers sit written but not yet taken by their peer.

Every request frame reserves, when admitted, the most its RESULT can take
(``protocol.limits.result_room``: read bytes plus a per-request allowance)
plus the data it carries.  The reservation is released when the answer is
written; from then on the connection's transport write buffer (what the peer
has not read yet) counts instead, measured after every write.  A frame that
would take a connection past ``per_client`` bytes, or the server past
``total``, is refused with ``limit-exceeded`` before it runs, so a client that
never reads pins at most ``per_client`` (plus one read's worth of small
answers), and all of them together at most ``total`` plus a small floor per
connection that keeps clients that do read served whatever the others do.

Write buffers shrink without telling anyone (the loop drains them when the
socket is writable), so a connection's last measured size may be stale high;
:meth:`AnswerBudget.fits` measures every connection again before it refuses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from protocol.events import I2CRequest, SpiRequest
from protocol.limits import RESULT_BASE, RESULT_PER_REQUEST
from protocol.virtio import I2C_FLAGS_M_RD

#: Bytes of each connection that never count against the server-wide budget.
FLOOR = 64 * 1024


class Account:
    """A connection as the budget sees it: what its admitted requests' answers may take
    (``owed``) and what its answers written but not taken hold (``buffered``).

    A native class (compiled): the budget reads and sets both several times a
    request.  :class:`~.answers.Answers` is the connection's.
    """

    def __init__(self) -> None:
        self.owed = 0
        self.buffered = 0

    def note_buffer(self) -> None:
        """Measure the write buffer again (``buffer()`` what it holds); the
        connection's account does, this one holds nothing."""


def i2c_cost(ev: I2CRequest) -> int:
    """The bytes an I2C frame holds until answered: its RESULT's room and its write data."""
    n = RESULT_BASE
    for m in ev.msgs:
        n += RESULT_PER_REQUEST + (m.length if m.flags & I2C_FLAGS_M_RD else len(m.data))
    return n


def spi_cost(ev: SpiRequest) -> int:
    n = RESULT_BASE
    for t in ev.transfers:
        n += RESULT_PER_REQUEST + t.rx_len + (len(t.tx) if t.tx is not None else 0)
    return n


class AnswerBudget:
    """Bytes owed or unread over all connections, against ``total`` and ``per_client``.

    The first ``floor`` bytes of each connection do not count against ``total``:
    however many clients stopped reading, one that reads its answers can always
    have a few small requests in flight.  So the bound on what the answers hold
    is ``total + max_clients × floor``; ``used`` is everything, ``excess`` what
    counts against ``total``.
    """

    def __init__(self, total: int, per_client: int,
                 connections: Callable[[], Iterable[Account]], floor: int = FLOOR) -> None:
        self.total = total
        self.per_client = per_client
        self.floor = floor
        self.used = 0
        self.excess = 0
        self._connections = connections

    def _move(self, c: Account, owed: int, buffered: int) -> None:
        """Set ``c``'s counts, keeping ``used`` and ``excess`` in step."""
        self._shift(c, c.owed + c.buffered, owed, buffered)

    def _shift(self, c: Account, before: int, owed: int, buffered: int) -> None:
        """:meth:`_move`, ``before`` (``c.owed + c.buffered``) known: the attributes of a
        connection (not a native class) are dict lookups."""
        after = owed + buffered
        self.used += after - before
        floor = self.floor
        self.excess += ((after - floor if after > floor else 0)
                        - (before - floor if before > floor else 0))
        c.owed = owed
        c.buffered = buffered

    def refusal(self, c: Account, cost: int) -> str | None:
        """Why ``c`` may not take ``cost`` more bytes, or None (then it is charged)."""
        owed, buffered = c.owed, c.buffered
        if owed + buffered + cost > self.per_client:
            c.note_buffer()
            owed, buffered = c.owed, c.buffered
            if owed + buffered + cost > self.per_client:
                return (f"this connection's answers owed and unread would pass "
                        f"{self.per_client} bytes (client_answer_budget): read the answers "
                        "waiting for you, then send it again; it did not run")
        held = owed + buffered
        floor = self.floor
        more = ((held + cost - floor if held + cost > floor else 0)
                - (held - floor if held > floor else 0))
        if more and self.excess + more > self.total:
            if not self.fits(c, cost):
                return (f"the server's answer budget ({self.total} bytes over all "
                        "connections) is used up; it did not run: send it again later")
            owed, buffered = c.owed, c.buffered  # fits() measured every buffer again
            held = owed + buffered
        self._shift(c, held, owed + cost, buffered)
        return None

    def fits(self, c: Account, cost: int) -> bool:
        """Measure every connection's write buffer again; is there room for ``cost``?"""
        for other in self._connections():
            other.note_buffer()
        held = c.owed + c.buffered
        more = max(0, held + cost - self.floor) - max(0, held - self.floor)
        return self.excess + more <= self.total

    def release(self, c: Account, cost: int) -> None:
        self._move(c, c.owed - cost, c.buffered)

    def answered(self, c: Account, cost: int, size: int) -> None:
        """:meth:`release` ``cost`` and :meth:`grow` ``size`` in one move: ``c``'s answer
        is batched.  The same totals as the two calls (``_move`` telescopes)."""
        owed, buffered = c.owed, c.buffered
        self._shift(c, owed + buffered, owed - cost, buffered + size)

    def buffer(self, c: Account, size: int) -> None:
        """``c``'s write buffer now holds ``size`` bytes."""
        self._move(c, c.owed, size)

    def grow(self, c: Account, n: int) -> None:
        """``n`` more bytes of answers wait in ``c``'s batch (written after the read)."""
        self._move(c, c.owed, c.buffered + n)

"""Who gets a connection slot, and how fast a source may guess tokens.

A connection counts from the moment it is accepted, before TLS: until its
HELLO is accepted it is *pending*.  Pending connections are bounded apart from
the clients that are in (``max_clients``), so they can never take a client's
slot, and they are kept from crowding out new arrivals:

* at most ``max_handshakes`` of them do a handshake (TLS, then waiting for
  HELLO) at once, and at most ``max_handshakes_per_source`` from one source
  address; the others wait, with nothing started but the accepted socket, and
  are let in round-robin over sources, so a flooding source does not delay
  another source's connections behind its own;
* when every handshake slot is taken, a source that has none takes one from
  the source that has the most (if it has two or more);
* when the handshake slots (of all, or of a source) are taken and connections
  wait, a handshake older than ``grace`` seconds is closed to make room (a
  legitimate one takes milliseconds; an idle squatter holds its slot until
  this); a source's waiting connections go newest first, since one that waited
  long is more likely a squatter than a client still there;
* at most ``max_pending`` wait or handshake in all; past it, the oldest waiting
  connection of the source with the most waiting is closed.

A waiting connection still has the handshake timeout, counted from its accept.

:class:`AuthThrottle` slows guessing: after a few wrong tokens from one source
it refuses that source's tokens unchecked for a while that doubles with each
further failure.

Both are keyed by source address (an IPv6 source by its /64, which one host
usually has whole) and bounded.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Sources whose failures are remembered; the longest quiet are forgotten first.
MAX_SOURCES = 4096


def source_key(host: str) -> str:
    """The address a per-source bound counts: IPv4 as is, IPv6 by its /64."""
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(eq=False)
class Pending:
    """A connection accepted and not yet past HELLO."""

    source: str
    peer: str
    accepted: float
    #: The accepted socket, until its handshake starts.
    sock: Any = None
    started: bool = False
    #: When its handshake started (the grace counts from there).
    started_at: float = 0.0
    #: The task running the TLS handshake (and making the session), until it is done.
    task: asyncio.Task[Any] | None = None
    #: The session, once the transport exists (TLS done): it then waits for HELLO.
    session: Any = None
    settled: bool = field(default=False)


class Admission:
    """The pending connections: handshaking (oldest first) and waiting (per source).

    ``start(p)`` begins a connection's handshake, ``evict(p, why)`` closes one;
    both are the server's.  Everything runs on the event loop.  A source's
    waiting connections are let in newest first: one that has waited long is
    more likely a squatter than a client still there to complete a handshake.
    """

    def __init__(self, max_pending: int, max_handshakes: int, per_source: int,
                 grace: float, clock: Callable[[], float],
                 start: Callable[[Pending], None], evict: Callable[[Pending, str], None],
                 ) -> None:
        self.max_pending = max_pending
        self.max_handshakes = max_handshakes
        self.per_source = per_source
        self.grace = grace
        self.clock = clock
        self._start = start
        self._evict = evict
        self._active: dict[Pending, None] = {}
        self._active_by: dict[str, dict[Pending, None]] = {}
        #: source -> its waiting connections, oldest first; sources in round-robin order.
        self._waiting: OrderedDict[str, deque[Pending]] = OrderedDict()
        self._n_waiting = 0
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._active) + self._n_waiting

    @property
    def handshaking(self) -> int:
        return len(self._active)

    @property
    def waiting(self) -> int:
        return self._n_waiting

    def arrive(self, p: Pending) -> None:
        """Count ``p`` in: start its handshake, or let it wait; make room if full."""
        if len(self) >= self.max_pending:
            self._drop_one_waiting()
        self._waiting.setdefault(p.source, deque()).append(p)
        self._n_waiting += 1
        self.pump()

    def settle(self, p: Pending) -> None:
        """``p`` is past HELLO, refused or gone: it no longer counts."""
        if p.settled:
            return
        if p.started:
            self.settle_quietly(p)
            self.pump()
            return
        p.settled = True
        q = self._waiting.get(p.source)
        if q is not None and p in q:
            q.remove(p)
            self._n_waiting -= 1
            if not q:
                del self._waiting[p.source]

    def settle_quietly(self, p: Pending) -> None:
        """Settle a started connection without starting others (the caller is about to)."""
        if p.settled:
            return
        p.settled = True
        self._active.pop(p, None)
        mine = self._active_by.get(p.source)
        if mine is not None:
            mine.pop(p, None)
            if not mine:
                del self._active_by[p.source]

    def pump(self) -> None:
        """Start waiting connections while there are slots, round-robin over sources."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting:
            full = len(self._active) >= self.max_handshakes
            p = self._newcomer() if full else None
            p = p or self._next_waiting()
            if p is None:
                self._arm()
                return
            if full and not self._share(p):
                self._arm()
                return
            self._take(p)
            p.started = True
            p.started_at = self.clock()
            self._active[p] = None
            self._active_by.setdefault(p.source, {})[p] = None
            self._start(p)

    def _newcomer(self) -> Pending | None:
        """The newest waiting connection of a source that has no handshake at all."""
        for source, q in self._waiting.items():
            if source not in self._active_by:
                return q[-1]
        return None

    def _next_waiting(self) -> Pending | None:
        """The next source's newest waiting connection that may start (room made if due)."""
        for source, q in self._waiting.items():
            mine = self._active_by.get(source)
            if mine is None or len(mine) < self.per_source or self._make_room(next(iter(mine))):
                return q[-1]
        return None

    def _take(self, p: Pending) -> None:
        q = self._waiting.pop(p.source)
        q.pop()
        self._n_waiting -= 1
        if q:
            self._waiting[p.source] = q  # to the back of the rotation

    def _share(self, p: Pending) -> bool:
        """All handshake slots are taken: free one for ``p`` if that is fair.

        A source with none may take one from the source with the most (if that has
        two or more), at once; otherwise the oldest handshake goes after its grace.
        """
        if p.source not in self._active_by:
            hog = max(self._active_by.values(), key=len)
            if len(hog) >= 2:
                victim = next(iter(hog))
                self.settle_quietly(victim)
                self._evict(victim, f"a fair share of handshakes for {p.source}")
                return True
        return self._make_room(next(iter(self._active)))

    def _make_room(self, oldest: Pending) -> bool:
        """Close ``oldest``'s handshake if it had ``grace`` seconds; True if it was closed."""
        if self.clock() - oldest.started_at < self.grace:
            return False
        self.settle_quietly(oldest)
        self._evict(oldest, f"no HELLO after {self.grace:g} s while others wait")
        return True

    def _arm(self) -> None:
        """Try again when the first handshake in the way reaches its grace."""
        blocking = [next(iter(self._active_by[s])) for s in self._waiting if s in self._active_by]
        if len(self._active) >= self.max_handshakes:
            blocking.append(next(iter(self._active)))
        if not blocking:
            return
        first = min(p.started_at for p in blocking)
        delay = max(0.0, first + self.grace - self.clock()) + 0.001
        self._timer = asyncio.get_running_loop().call_later(delay, self.pump)

    def _drop_one_waiting(self) -> None:
        """Close the oldest waiting connection of the source with the most waiting."""
        if not self._waiting:
            victim = next(iter(self._active), None)
            if victim is not None:
                self.settle_quietly(victim)
                self._evict(victim, f"{self.max_pending} connections without HELLO")
            return
        source = max(self._waiting, key=lambda s: len(self._waiting[s]))
        victim = self._waiting[source][0]
        self.settle(victim)
        self._evict(victim, f"{self.max_pending} connections without HELLO, the most "
                            f"from {source}")

    def expire_waiting(self, timeout: float) -> None:
        """Close waiting connections older than the handshake timeout."""
        now = self.clock()
        for q in list(self._waiting.values()):
            while q and now - q[0].accepted >= timeout:
                victim = q[0]
                self.settle(victim)
                self._evict(victim, f"waited {timeout:g} s for a handshake slot")

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def oldest(self) -> Pending | None:
        return next(iter(self._active), None)


class AuthThrottle:
    """Per source: ``free`` wrong tokens, then a lockout of ``base`` s doubling to ``cap``.

    While a source is locked out its HELLO tokens are refused without being
    checked, so guessing goes no faster than one try per lockout.  A source's
    record is forgotten after ``forget`` seconds without a failure.
    """

    def __init__(self, free: int = 5, base: float = 1.0, cap: float = 60.0,
                 forget: float = 600.0) -> None:
        self.free = free
        self.base = base
        self.cap = cap
        self.forget = forget
        #: source -> [failures, last failure, locked until]
        self._by: OrderedDict[str, list[float]] = OrderedDict()

    def locked(self, source: str, now: float) -> float:
        """Seconds ``source`` is still locked out for (0: its token will be checked)."""
        rec = self._by.get(source)
        if rec is None:
            return 0.0
        return max(0.0, rec[2] - now)

    def failed(self, source: str, now: float) -> float:
        """Record a wrong token; returns the lockout it starts (0 while within ``free``)."""
        rec = self._by.get(source)
        if rec is None or now - rec[1] > self.forget:
            rec = [0.0, now, 0.0]
        rec[0] += 1
        rec[1] = now
        over = int(rec[0]) - self.free
        lock = min(self.cap, self.base * 2 ** (over - 1)) if over > 0 else 0.0
        rec[2] = now + lock
        self._by[source] = rec
        self._by.move_to_end(source)
        while len(self._by) > MAX_SOURCES:
            self._by.popitem(last=False)
        return lock

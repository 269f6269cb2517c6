"""The live trace: every finished transaction, as EVENT frames to the admins who asked.

``trace.start`` (an ADMIN op, :mod:`.admin`) opens a :class:`Subscription` on
its connection; :class:`Tracer` is attached to the server's observation hook
(:mod:`.observe`) while at least one subscription lives, and offers each
observed transaction that passes a subscription's filter to it.

A subscriber that does not read must never cost the server memory: events go
to the connection only while its transport is below its write high-water mark
(asyncio's ``pause_writing``); meanwhile they wait in a queue of at most
``max_events`` events and ``max_bytes`` bytes, and past that they are dropped
and counted.  The count goes out as one ``{"kind": "dropped", "count": k}``
event in the place of the lost ones (SPEC.md §4.12).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from protocol.admin import AdminEvent, i2c_messages, spi_transfers
from protocol.connection import Connection
from protocol.events import Event, I2CRequest

from ..logs import AUDIT_LOGGER, LogGate
from .observe import Observed, Observers

log = logging.getLogger("busbridge.server")
audit = logging.getLogger(AUDIT_LOGGER)

#: Events one subscription keeps while its connection cannot take them.
MAX_QUEUED_EVENTS = 256
#: ... and at most this many bytes of them (roughly: the data they carry).
MAX_QUEUED_BYTES = 1 << 20
#: Bytes an event may carry before its data is cut to :data:`TRUNCATED` bytes per item.
TRUNCATED = 64
#: Live subscriptions one connection may hold, and the server in total (SPEC.md §4.12):
#: every observed transaction is copied to each matching one, so the total bounds both
#: the memory the queues hold (64 × 1 MiB) and the loop time one transaction costs.
MAX_SUBS_PER_CONNECTION = 4
MAX_SUBS = 64


class Subscriber(Protocol):
    """The connection a subscription sends on (a :class:`~.session.Session`)."""

    peer: str
    client: str
    conn: Connection
    gate: LogGate

    @property
    def paused(self) -> bool:
        """True while the transport is above its high-water mark (``pause_writing``)."""

    def send(self, ev: Event) -> None: ...


@dataclass(frozen=True)
class TraceFilter:
    """Which transactions a subscription wants: ``None`` fields match anything."""

    kind: str | None = None
    bus: str | None = None
    addr: int | None = None
    ten_bit: bool = False
    cs: int | None = None

    @classmethod
    def from_params(cls, p: dict[str, Any]) -> TraceFilter:
        kind = p.get("kind")
        if kind is None and (p.get("addr") is not None or p.get("cs") is not None):
            kind = "i2c" if p.get("addr") is not None else "spi"
        return cls(kind, p.get("bus"), p.get("addr"), bool(p.get("ten_bit")), p.get("cs"))

    def matches(self, obs: Observed) -> bool:
        if self.kind is not None and obs.kind != self.kind:
            return False
        if self.bus is not None and obs.bus != self.bus:
            return False
        r = obs.request
        if self.addr is not None:
            return isinstance(r, I2CRequest) and any(
                m.addr == self.addr and m.ten_bit == self.ten_bit for m in r.msgs)
        if self.cs is not None:
            return not isinstance(r, I2CRequest) and r.cs == self.cs
        return True


def event_map(obs: Observed, max_bytes: int) -> tuple[dict[str, Any], int]:
    """The EVENT map of one transaction (SPEC.md §4.12) and its rough size in bytes.

    Data beyond ``max_bytes`` in total is cut to :data:`TRUNCATED` bytes per
    message, marked ``"truncated": true``, so an event always fits in a frame.
    """
    r = obs.request
    m: dict[str, Any] = {"t": obs.t, "client": obs.client, "name": obs.name,
                         "peer": obs.peer, "id": r.id, "kind": obs.kind, "bus": r.bus}
    if isinstance(r, I2CRequest):
        items = i2c_messages(r.msgs, obs.reads, obs.status)
        m["msgs"] = items
        size = sum(len(x["data"]) for x in items)
    else:
        m["cs"] = r.cs
        items = spi_transfers(r.transfers, obs.reads, obs.status)
        m["transfers"] = items
        size = sum(len(x["tx"] or b"") + len(x["rx"]) for x in items)
    if size > max_bytes:
        cut_data(m)
        size = len(items) * 2 * TRUNCATED
    m["failures"] = [[f.index, f.errno, f.message] for f in obs.failures]
    m["dur_us"] = int(obs.dur * 1_000_000)
    m["ran"] = obs.ran
    return m, size + 200 + 80 * len(items)


def cut_data(m: dict[str, Any]) -> None:
    """Cut a trace event's or log entry's data to :data:`TRUNCATED` bytes per
    ``data``/``tx``/``rx`` and mark it ``"truncated": true`` (SPEC.md §4.12)."""
    for x in m.get("msgs") or m.get("transfers") or ():
        for k in ("data", "tx", "rx"):
            if x.get(k) is not None:
                x[k] = x[k][:TRUNCATED]
    m["truncated"] = True


class Subscription:
    """One ``trace.start`` of one connection: its filter and its bounded queue."""

    def __init__(self, session: Subscriber, sid: int, flt: TraceFilter, max_events: int,
                 max_bytes: int) -> None:
        self.session = session
        self.id = sid
        self.filter = flt
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.queue: deque[tuple[dict[str, Any], int]] = deque()
        self.queued_bytes = 0
        #: Events lost since the last ``dropped`` event was queued.
        self.dropped = 0
        self.sent = 0
        self.lost = 0

    def offer(self, m: dict[str, Any], size: int) -> None:
        if len(self.queue) >= self.max_events or self.queued_bytes + size > self.max_bytes:
            self.dropped += 1
            self.lost += 1
            return
        if self.dropped:
            self.queue.append(({"kind": "dropped", "count": self.dropped}, 32))
            self.dropped = 0
        self.queue.append((m, size))
        self.queued_bytes += size
        self.flush()

    def flush(self) -> None:
        """Send what is queued while the connection takes it; then any drop count."""
        s = self.session
        q = self.queue
        while q and not s.paused:
            m, size = q.popleft()
            self.queued_bytes -= size
            s.send(AdminEvent(self.id, m))
            self.sent += 1
        if not q and self.dropped and not s.paused:
            s.send(AdminEvent(self.id, {"kind": "dropped", "count": self.dropped}))
            self.dropped = 0


class Tracer:
    """Every trace subscription of one server, fed by its observation hook."""

    def __init__(self, observers: Observers, max_frame: int,
                 max_events: int = MAX_QUEUED_EVENTS, max_bytes: int = MAX_QUEUED_BYTES
                 ) -> None:
        self.observers = observers
        #: Data one event may carry: half a frame leaves room for the rest of the map.
        self.max_event_bytes = max_frame // 2
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_per_connection = MAX_SUBS_PER_CONNECTION
        self.max_subs = MAX_SUBS
        self.subs: list[Subscription] = []

    def refusal(self, session: Subscriber) -> str | None:
        """Why ``session`` may not open one more subscription now, or None."""
        mine = sum(1 for s in self.subs if s.session is session)
        if mine >= self.max_per_connection:
            return (f"this connection has {mine} live traces, the most it may "
                    "(trace.stop one first)")
        if len(self.subs) >= self.max_subs:
            return f"the server has {len(self.subs)} live traces, the most it keeps: try later"
        return None

    def start(self, session: Subscriber, sid: int, flt: TraceFilter) -> Subscription:
        """Open subscription ``sid``: its ADMIN_RESULT has gone out (the connection
        now accepts EVENTs for it)."""
        sub = Subscription(session, sid, flt, self.max_events, self.max_bytes)
        if not self.subs:
            self.observers.attach(self.observe)
        self.subs.append(sub)
        target = "*" if flt.addr is None and flt.cs is None else \
            (f"{flt.addr:#04x}" if flt.addr is not None else f"cs {flt.cs}")
        session.gate.event(audit, logging.INFO, "trace started", peer=session.peer,
                           client=session.client, id=sid, kind=flt.kind or "*",
                           bus=flt.bus or "*", target=target)
        return sub

    def find(self, session: Subscriber, sid: int) -> Subscription | None:
        return next((s for s in self.subs if s.session is session and s.id == sid), None)

    def stop(self, sub: Subscription, why: str = "stopped") -> None:
        """End ``sub`` now: nothing more is sent for it (what is queued is dropped)."""
        if sub in self.subs:
            self.subs.remove(sub)
            if not self.subs:
                self.observers.detach(self.observe)
            sub.session.gate.event(audit, logging.INFO, f"trace {why}",
                                   peer=sub.session.peer, client=sub.session.client, id=sub.id,
                                   sent=sub.sent, dropped=sub.lost)

    def forget(self, session: Subscriber) -> None:
        """The connection is gone: its subscriptions end."""
        for sub in [s for s in self.subs if s.session is session]:
            self.stop(sub, "ended with its connection")

    def flush(self, session: Subscriber) -> None:
        """The connection can take data again (``resume_writing``)."""
        for sub in self.subs:
            if sub.session is session:
                sub.flush()

    def observe(self, obs: Observed) -> None:
        """The observer: offer ``obs`` to every subscription whose filter it passes."""
        made: tuple[dict[str, Any], int] | None = None
        for sub in self.subs:
            if sub.filter.matches(obs):
                if made is None:
                    made = event_map(obs, self.max_event_bytes)
                sub.offer(*made)

    def close(self) -> None:
        for sub in list(self.subs):
            self.stop(sub, "ended by shutdown")

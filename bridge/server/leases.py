"""The server's lease table: who may use which bus, address or chip select, and until when.

Pure logic with an injectable clock, so tests can step time; the server owns
one (``Server.leases``), checks it before a request reaches a bus worker, and
feeds it the LEASE frames.  Expiry is decided by comparing with the clock
whenever a lease is consulted, so a lease is dead at its TTL even if no timer
ran; :class:`ExpiryTimer` only tells listeners (the MQTT publisher) promptly.

Tokens are secrets: they are kept here, compared here, and never logged,
listed or passed to listeners.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from protocol.errors import ErrorCode
from protocol.leases import (
    MAX_LEASE_TTL,
    LeaseInfo,
    LeaseOp,
    LeaseRequest,
    LeaseResult,
    describe_scope,
)

from ..logs import event

log = logging.getLogger("busbridge.leases")

#: Longest TTL a server grants unless configured otherwise (one hour).
DEFAULT_MAX_TTL = 3600

Listener = Callable[[list[dict[str, Any]]], None]


class LeaseError(Exception):
    """A LEASE op or a request refused: ``code`` goes in the ERROR frame."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(eq=False)
class HeldLease:
    """A live lease as the table keeps it, secret token included.

    What goes on the wire is its :class:`~protocol.leases.LeaseInfo`, without the
    token (the client's ``Lease`` is that, as a taker sees it).
    """

    id: str
    token: str
    kind: str
    bus: str
    address: int | None
    cs: int | None
    holder: str
    peer: str
    ttl: int
    expires: float  # in the table's clock

    @property
    def scope(self) -> str:
        return describe_scope(self.kind, self.bus, self.address, self.cs)

    def overlaps(self, address: int | None, cs: int | None) -> bool:
        """Whether this lease and a scope (address/cs, or None for the bus) on its bus meet."""
        mine = self.address if self.kind == "i2c" else self.cs
        other = address if self.kind == "i2c" else cs
        return mine is None or other is None or mine == other


def iso_utc(t: float) -> str:
    """``2026-12-01T08:01:00.000Z``: millisecond precision, always UTC."""
    ms = round(t * 1000)
    d = datetime.fromtimestamp(ms // 1000, UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def busy_message(info: LeaseInfo) -> str:
    """The ERROR ``busy`` text: scope, holder, expiry and lease id (SPEC.md §8.6)."""
    return f"busy: {info.scope} held by {info.holder} until {info.expires} (lease {info.id})"


class LeaseTable:
    """Live leases of one board.

    ``held`` maps ``(kind, bus)`` to that bus's leases and is empty when no
    lease exists, which is what keeps the server's per-request check to one
    dict truth test in the common case.
    """

    def __init__(self, *, max_ttl: int = DEFAULT_MAX_TTL,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        if not 0 < max_ttl <= MAX_LEASE_TTL:
            raise ValueError(f"max lease TTL must be 1..{MAX_LEASE_TTL} seconds")
        self.max_ttl = max_ttl
        self.clock = clock
        self.wall = wall
        self.held: dict[tuple[str, str], list[HeldLease]] = {}
        self._by_token: dict[str, HeldLease] = {}
        self._listeners: list[Listener] = []

    # -- observers --------------------------------------------------------------

    def add_listener(self, callback: Listener) -> None:
        """Call ``callback(snapshot())`` after every take, renew, release and expiry."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Listener) -> None:
        self._listeners.remove(callback)

    def _changed(self) -> None:
        if not self._listeners:
            return
        snap = self.snapshot()
        for cb in list(self._listeners):
            try:
                cb(snap)
            except Exception:  # an observer must never break the data path
                log.exception("lease listener failed")

    def info(self, lease: HeldLease, now: float | None = None) -> LeaseInfo:
        now = self.clock() if now is None else now
        left = max(0.0, lease.expires - now)
        return LeaseInfo(lease.id, lease.kind, lease.bus, lease.address, lease.cs, lease.holder,
                         lease.peer, lease.ttl, iso_utc(self.wall() + left), int(left * 1000))

    def live(self) -> list[HeldLease]:
        self.expire()
        return [x for leases in self.held.values() for x in leases]

    def snapshot(self) -> list[dict[str, Any]]:
        """Every live lease as a plain dict (the LEASE_RESULT lease map), without tokens."""
        now = self.clock()
        return [self.info(x, now).to_map() for leases in self.held.values() for x in leases
                if x.expires > now]

    def next_expiry(self) -> float | None:
        return min((x.expires for x in self._by_token.values()), default=None)

    # -- changes ---------------------------------------------------------------------

    def _drop(self, lease: HeldLease) -> None:
        self._by_token.pop(lease.token, None)
        key = (lease.kind, lease.bus)
        leases = self.held.get(key)
        if leases is not None:
            leases.remove(lease)
            if not leases:
                del self.held[key]  # keeps `held` empty when nothing is leased

    def expire(self, now: float | None = None) -> list[HeldLease]:
        """Drop the leases whose time is up; they are dead from their expiry on."""
        now = self.clock() if now is None else now
        dead = [x for x in self._by_token.values() if x.expires <= now]
        for x in dead:
            self._drop(x)
            event(log, logging.INFO, "lease expired", lease=x.id, scope=x.scope,
                  holder=x.holder)
        if dead:
            self._changed()
        return dead

    def _check_ttl(self, ttl: int) -> None:
        if ttl > self.max_ttl:
            raise LeaseError(ErrorCode.BAD_REQUEST,
                             f"lease ttl {ttl} s exceeds this server's maximum of "
                             f"{self.max_ttl} s")

    def take(self, kind: str, bus: str, *, address: int | None = None, cs: int | None = None,
             ttl: int, holder: str, peer: str = "", tokens: Collection[str] = ()) -> HeldLease:
        """A new lease, or ``LeaseError(busy)`` naming the first lease in the way."""
        self._check_ttl(ttl)
        self.expire()
        for other in self.held.get((kind, bus), ()):
            if other.overlaps(address, cs) and other.token not in tokens:
                info = self.info(other)
                event(log, logging.INFO, "lease denied", scope=describe_scope(
                    kind, bus, address, cs), holder=holder, peer=peer, by=other.id)
                raise LeaseError(ErrorCode.BUSY, busy_message(info))
        lease_id = secrets.token_hex(4)
        while any(x.id == lease_id for x in self._by_token.values()):
            lease_id = secrets.token_hex(4)
        # Hex, not URL-safe base64: a token starting with "-" would read as an option
        # on the command line (`busbridge lease release TOKEN`).
        lease = HeldLease(lease_id, secrets.token_hex(24), kind, bus, address, cs, holder,
                          peer, ttl, self.clock() + ttl)
        self._by_token[lease.token] = lease
        self.held.setdefault((kind, bus), []).append(lease)
        event(log, logging.INFO, "lease taken", lease=lease.id, scope=lease.scope,
              holder=holder, peer=peer, ttl=ttl)
        self._changed()
        return lease

    def _alive(self, token: str) -> HeldLease | None:
        lease = self._by_token.get(token)
        if lease is not None and lease.expires <= self.clock():
            self.expire()
            return None
        return lease

    def renew(self, token: str, ttl: int | None = None) -> HeldLease:
        """Extend a live lease to now + ``ttl`` (default: its own ttl)."""
        if ttl is not None:
            self._check_ttl(ttl)
        lease = self._alive(token)
        if lease is None:
            raise LeaseError(ErrorCode.NO_LEASE,
                             "no live lease for this token (it expired, was released, or "
                             "was never taken): take a new one")
        lease.ttl = ttl if ttl is not None else min(lease.ttl, self.max_ttl)
        lease.expires = self.clock() + lease.ttl
        event(log, logging.INFO, "lease renewed", lease=lease.id, scope=lease.scope,
              holder=lease.holder, ttl=lease.ttl)
        self._changed()
        return lease

    def release(self, token: str) -> HeldLease | None:
        """Drop a live lease; idempotent (an unknown or dead token is not an error)."""
        lease = self._alive(token)
        if lease is None:
            return None
        self._drop(lease)
        event(log, logging.INFO, "lease released", lease=lease.id, scope=lease.scope,
              holder=lease.holder)
        self._changed()
        return lease

    # -- the LEASE frame -----------------------------------------------------------------

    def handle(self, req: LeaseRequest, tokens: Collection[str], *, holder: str,
               peer: str) -> LeaseResult:
        """Answer a LEASE frame whose bus (for take) the caller has checked exists."""
        if req.op is LeaseOp.TAKE:
            assert req.ttl is not None
            lease = self.take(req.kind, req.bus, address=req.address, cs=req.cs, ttl=req.ttl,
                              holder=req.holder or holder, peer=peer, tokens=tokens)
            return LeaseResult(req.id, [self.info(lease)], token=lease.token)
        if req.op is LeaseOp.RENEW:
            return LeaseResult(req.id, [self.info(self.renew(req.token, req.ttl))])
        if req.op is LeaseOp.RELEASE:
            return LeaseResult(req.id, [], released=self.release(req.token) is not None)
        now = self.clock()
        return LeaseResult(req.id, [self.info(x, now) for x in self.live()])

    # -- enforcement ------------------------------------------------------------------------

    def blocking(self, kind: str, bus: str, targets: Iterable[int | None],
                 tokens: Collection[str]) -> HeldLease | None:
        """The first live lease of ``bus`` that covers one of ``targets`` (addresses for
        I2C, one cs for SPI) and whose token is not in ``tokens``."""
        leases = self.held.get((kind, bus))
        if not leases:
            return None
        now = self.clock()
        wanted = set(targets)
        found = None
        for lease in leases:
            if lease.expires <= now or lease.token in tokens:
                continue
            mine = lease.address if kind == "i2c" else lease.cs
            if mine is None or mine in wanted:
                found = lease
                break
        if any(x.expires <= now for x in leases):
            self.expire(now)
        return found

    def refusal(self, kind: str, bus: str, targets: Iterable[int | None],
                tokens: Collection[str], peer: str) -> str | None:
        """The ``busy`` message for a request frame, or ``None`` if it may run."""
        lease = self.blocking(kind, bus, targets, tokens)
        if lease is None:
            return None
        event(log, logging.INFO, "request denied by lease", lease=lease.id, scope=lease.scope,
              holder=lease.holder, peer=peer)
        return busy_message(self.info(lease))


class ExpiryTimer:
    """Wakes the table at the next expiry so listeners hear of it without a request."""

    def __init__(self, table: LeaseTable, loop: asyncio.AbstractEventLoop) -> None:
        self.table = table
        self.loop = loop
        self._handle: asyncio.TimerHandle | None = None
        table.add_listener(self._arm)

    def _arm(self, _snapshot: object = None) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        nxt = self.table.next_expiry()
        if nxt is not None:
            self._handle = self.loop.call_later(max(0.0, nxt - self.table.clock()), self._fire)

    def _fire(self) -> None:
        self._handle = None
        if not self.table.expire():
            self._arm()  # woke early (clock granularity): sleep again

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.table.remove_listener(self._arm)

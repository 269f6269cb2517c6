"""The server's lease table: who may use which bus, address or chip select, and until when.

Pure logic with an injectable clock, so tests can step time; the server owns
one (``Server.leases``), checks it before a request reaches a bus worker, and
feeds it the LEASE frames.  Expiry is decided by comparing with the clock
whenever a lease is consulted, so a lease is dead at its TTL even if no timer
ran; :class:`ExpiryTimer` only tells listeners (the MQTT publisher) promptly.

Bounded and indexed, because any client with write access to one address can
take leases: at most ``max_leases`` live leases and ``max_per_client`` per
client identity; a holder taking a scope it already holds renews that lease
instead of stacking another; the per-request check looks up the bus and each
target it names (never scans the table); expiry pops a heap; ``list`` answers
one page that fits in a frame, with a cursor for the next.

An I2C address is a (number, 10-bit?) pair, as for the access rules: a lease
on the 7-bit 0x50 does not cover the 10-bit 0x050, a different device.

Tokens are secrets: they are kept here, compared here, and never logged,
listed or passed to listeners.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import secrets
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgpack

from protocol.errors import ErrorCode
from protocol.leases import (
    MAX_LEASE_TTL,
    LeaseInfo,
    LeaseOp,
    LeaseRequest,
    LeaseResult,
    describe_scope,
)

from ..logs import event, printable, quoted

log = logging.getLogger("busbridge.leases")

#: Longest TTL a server grants unless configured otherwise (one hour).
DEFAULT_MAX_TTL = 3600
#: Live leases on one board, and per client identity, unless configured otherwise.
DEFAULT_MAX_LEASES = 1024
DEFAULT_MAX_PER_CLIENT = 1024
#: Bytes of a LEASE_RESULT frame besides its lease maps (id, keys, total, next).
LIST_OVERHEAD = 128

Listener = Callable[[list[dict[str, Any]]], None]
#: An I2C target is (address, ten_bit); an SPI target is its chip select.
Target = tuple[int, bool] | int


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
    ten_bit: bool = False
    #: Who the server authenticated the taker as (token:NAME, cn:NAME, anonymous).
    client: str = ""
    #: What the per-client bound counts against (the identity, or anonymous@host).
    owner: str = ""
    seq: int = 0

    @property
    def scope(self) -> str:
        return describe_scope(self.kind, self.bus, self.address, self.cs, self.ten_bit)

    @property
    def target(self) -> Target | None:
        """The key of its scope on its bus: None for the whole bus."""
        if self.kind == "i2c":
            return None if self.address is None else (self.address, self.ten_bit)
        return self.cs


@dataclass
class BusLeases:
    """The leases of one bus: bus-wide ones, and the others by target."""

    whole: list[HeldLease] = field(default_factory=list)
    targets: dict[Target, list[HeldLease]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.whole or self.targets)

    def all(self) -> Iterable[HeldLease]:
        yield from self.whole
        for leases in self.targets.values():
            yield from leases


def iso_utc(t: float) -> str:
    """``2026-12-01T08:01:00.000Z``: millisecond precision, always UTC."""
    ms = round(t * 1000)
    d = datetime.fromtimestamp(ms // 1000, UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def busy_message(info: LeaseInfo) -> str:
    """The ERROR ``busy`` text: scope, holder and who it is, expiry, lease id (SPEC.md §8.6).

    The holder text is the taker's own words: quoted and escaped, with the
    identity the server authenticated beside it.
    """
    who = f" ({printable(info.client)})" if info.client else ""
    return (f"busy: {info.scope} held by {quoted(info.holder)}{who} until {info.expires} "
            f"(lease {info.id})")


def _key(kind: str, t: Target | None) -> Target | None:
    if kind == "i2c" and type(t) is int:
        return (t, False)  # a bare number is a 7-bit address
    return t


class LeaseIndex:
    """The live leases of one board as stored: by token, id, owner and bus, the
    expiry heap, and who is told of changes.  :class:`LeaseTable` holds the rules.

    ``held`` maps ``(kind, bus)`` to that bus's leases and is empty when no
    lease exists, which is what keeps the server's per-request check to one
    dict truth test in the common case.
    """

    def __init__(self, *, max_ttl: int = DEFAULT_MAX_TTL, max_leases: int = DEFAULT_MAX_LEASES,
                 max_per_client: int = DEFAULT_MAX_PER_CLIENT,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        if not 0 < max_ttl <= MAX_LEASE_TTL:
            raise ValueError(f"max lease TTL must be 1..{MAX_LEASE_TTL} seconds")
        self.max_ttl = max_ttl
        self.max_leases = max_leases
        self.max_per_client = max_per_client
        self.clock = clock
        self.wall = wall
        self.held: dict[tuple[str, str], BusLeases] = {}
        self._by_token: dict[str, HeldLease] = {}
        self._by_id: dict[str, HeldLease] = {}
        #: seq -> lease, in the order they were taken (the order of ``list``).
        self._order: dict[int, HeldLease] = {}
        self._per_owner: dict[str, int] = {}
        #: (expires, seq) of every lease, stale entries included until they surface.
        self._heap: list[tuple[float, int]] = []
        self._seq = 0
        self._listeners: list[Listener] = []
        self._wakers: list[Callable[[], None]] = []

    def __len__(self) -> int:
        return len(self._by_token)

    # -- observers --------------------------------------------------------------

    def add_listener(self, callback: Listener) -> None:
        """Call ``callback(snapshot())`` after every take, renew, release and expiry."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Listener) -> None:
        self._listeners.remove(callback)

    def add_waker(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every change: a listener that needs no snapshot."""
        self._wakers.append(callback)

    def remove_waker(self, callback: Callable[[], None]) -> None:
        self._wakers.remove(callback)

    def _changed(self) -> None:
        for wake in list(self._wakers):
            wake()
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
                         lease.peer, lease.ttl, iso_utc(self.wall() + left), int(left * 1000),
                         lease.ten_bit, lease.client)

    def snapshot(self) -> list[dict[str, Any]]:
        """Every live lease as a plain dict (the LEASE_RESULT lease map), without tokens."""
        now = self.clock()
        return [self.info(x, now).to_map() for x in self._order.values() if x.expires > now]

    def next_expiry(self) -> float | None:
        heap = self._heap
        while heap:
            expires, seq = heap[0]
            lease = self._order.get(seq)
            if lease is not None and lease.expires == expires:
                return expires
            heapq.heappop(heap)  # released or renewed since: stale
        return None

    # -- changes ---------------------------------------------------------------------

    def _add(self, lease: HeldLease) -> None:
        self._by_token[lease.token] = lease
        self._by_id[lease.id] = lease
        self._order[lease.seq] = lease
        self._per_owner[lease.owner] = self._per_owner.get(lease.owner, 0) + 1
        bl = self.held.get((lease.kind, lease.bus))
        if bl is None:
            bl = self.held[lease.kind, lease.bus] = BusLeases()
        t = lease.target
        if t is None:
            bl.whole.append(lease)
        else:
            bl.targets.setdefault(t, []).append(lease)
        self._push(lease)

    def _push(self, lease: HeldLease) -> None:
        heapq.heappush(self._heap, (lease.expires, lease.seq))
        if len(self._heap) > 4 * len(self._order) + 64:  # renewals left stale entries
            self._heap = [(x.expires, x.seq) for x in self._order.values()]
            heapq.heapify(self._heap)

    def _drop(self, lease: HeldLease) -> None:
        if self._by_token.pop(lease.token, None) is None:
            return
        del self._by_id[lease.id]
        del self._order[lease.seq]
        n = self._per_owner[lease.owner] - 1
        if n:
            self._per_owner[lease.owner] = n
        else:
            del self._per_owner[lease.owner]
        key = (lease.kind, lease.bus)
        bl = self.held[key]
        t = lease.target
        if t is None:
            bl.whole.remove(lease)
        else:
            same = bl.targets[t]
            same.remove(lease)
            if not same:
                del bl.targets[t]
        if not bl:
            del self.held[key]  # keeps `held` empty when nothing is leased



class LeaseTable(LeaseIndex):
    """Live leases of one board: take, renew, release, expire and list them, and
    which requests they make ``busy``."""

    def live(self) -> list[HeldLease]:
        self.expire()
        return list(self._order.values())

    def expire(self, now: float | None = None) -> list[HeldLease]:
        """Drop the leases whose time is up; they are dead from their expiry on."""
        now = self.clock() if now is None else now
        dead = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _at, seq = heapq.heappop(heap)
            lease = self._order.get(seq)
            if lease is not None and lease.expires <= now:
                self._drop(lease)
                dead.append(lease)
        for x in dead:
            event(log, logging.INFO, "lease expired", lease=x.id, scope=x.scope,
                  holder=x.holder, client=x.client)
        if dead:
            self._changed()
        return dead

    def _check_ttl(self, ttl: int) -> None:
        if ttl > self.max_ttl:
            raise LeaseError(ErrorCode.BAD_REQUEST,
                             f"lease ttl {ttl} s exceeds this server's maximum of "
                             f"{self.max_ttl} s")

    def _overlapping(self, kind: str, bus: str, target: Target | None) -> Iterable[HeldLease]:
        bl = self.held.get((kind, bus))
        if not bl:
            return ()
        if target is None:
            return bl.all()
        return [*bl.whole, *bl.targets.get(target, ())]

    def take(self, kind: str, bus: str, *, address: int | None = None, cs: int | None = None,
             ttl: int, holder: str, peer: str = "", tokens: Collection[str] = (),
             ten_bit: bool = False, client: str = "", owner: str | None = None) -> HeldLease:
        """A new lease, the renewal of the same scope's lease the caller holds, or
        ``LeaseError``: ``busy`` naming the first lease in the way, ``limit-exceeded``."""
        self._check_ttl(ttl)
        self.expire()
        ten_bit = ten_bit and address is not None
        target = (address, ten_bit) if kind == "i2c" and address is not None else \
            cs if kind == "spi" else None
        scope = describe_scope(kind, bus, address, cs, ten_bit)
        mine = None
        for other in self._overlapping(kind, bus, target):
            if other.token not in tokens:
                info = self.info(other)
                event(log, logging.INFO, "lease denied", scope=scope, holder=holder,
                      client=client, peer=peer, by=other.id)
                raise LeaseError(ErrorCode.BUSY, busy_message(info))
            if other.target == target:
                mine = other
        if mine is not None:  # the caller's own scope again: renew, never stack
            mine.holder, mine.client = holder, client
            return self.renew(mine.token, ttl)
        owner = client if owner is None else owner
        if len(self._by_token) >= self.max_leases:
            raise LeaseError(ErrorCode.LIMIT_EXCEEDED,
                             f"the board has {len(self._by_token)} leases, its maximum; "
                             "try again when some are released or expire")
        if self._per_owner.get(owner, 0) >= self.max_per_client:
            raise LeaseError(ErrorCode.LIMIT_EXCEEDED,
                             f"{client or 'this client'} holds {self.max_per_client} leases, "
                             "the most one client may; release some first")
        lease_id = secrets.token_hex(4)
        while lease_id in self._by_id:
            lease_id = secrets.token_hex(4)
        self._seq += 1
        # Hex, not URL-safe base64: a token starting with "-" would read as an option
        # on the command line (`busbridge lease release TOKEN`).
        lease = HeldLease(lease_id, secrets.token_hex(24), kind, bus, address, cs, holder,
                          peer, ttl, self.clock() + ttl, ten_bit, client, owner, self._seq)
        self._add(lease)
        event(log, logging.INFO, "lease taken", lease=lease.id, scope=lease.scope,
              holder=holder, client=client, peer=peer, ttl=ttl)
        self._changed()
        return lease

    def _alive(self, token: str) -> HeldLease | None:
        lease = self._by_token.get(token)
        if lease is not None and lease.expires <= self.clock():
            self.expire()
            return None
        return lease

    def alive(self, token: str) -> bool:
        return self._alive(token) is not None

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
        self._push(lease)
        event(log, logging.INFO, "lease renewed", lease=lease.id, scope=lease.scope,
              holder=lease.holder, client=lease.client, ttl=lease.ttl)
        self._changed()
        return lease

    def release(self, token: str) -> HeldLease | None:
        """Drop a live lease; idempotent (an unknown or dead token is not an error)."""
        lease = self._alive(token)
        if lease is None:
            return None
        self._drop(lease)
        event(log, logging.INFO, "lease released", lease=lease.id, scope=lease.scope,
              holder=lease.holder, client=lease.client)
        self._changed()
        return lease

    def force_release(self, lease_id: str, *, by: str) -> LeaseInfo | None:
        """Drop the live lease with public id ``lease_id`` whoever holds it (the admin op
        ``lease.release``); ``None`` if there is none.  Logged with who did it."""
        self.expire()
        lease = next((x for x in self._by_token.values() if x.id == lease_id), None)
        if lease is None:
            return None
        info = self.info(lease)
        self._drop(lease)
        event(log, logging.WARNING, "lease force-released", lease=lease.id, scope=lease.scope,
              holder=lease.holder, by=by)
        self._changed()
        return info

    # -- the LEASE frame -----------------------------------------------------------------

    def handle(self, req: LeaseRequest, tokens: Collection[str], *, holder: str,
               peer: str, client: str = "", owner: str | None = None,
               max_frame: int = 262144) -> LeaseResult:
        """Answer a LEASE frame whose bus (for take) the caller has checked exists."""
        if req.op is LeaseOp.TAKE:
            assert req.ttl is not None
            lease = self.take(req.kind, req.bus, address=req.address, cs=req.cs, ttl=req.ttl,
                              holder=req.holder or holder, peer=peer, tokens=tokens,
                              ten_bit=req.ten_bit, client=client, owner=owner)
            return LeaseResult(req.id, [self.info(lease)], token=lease.token)
        if req.op is LeaseOp.RENEW:
            return LeaseResult(req.id, [self.info(self.renew(req.token, req.ttl))])
        if req.op is LeaseOp.RELEASE:
            return LeaseResult(req.id, [], released=self.release(req.token) is not None)
        return self.page(req.id, req.after, max_frame)

    def page(self, rid: int, after: str, max_frame: int) -> LeaseResult:
        """The live leases after cursor ``after``, as many as fit in a ``max_frame`` frame."""
        self.expire()
        now = self.clock()
        try:
            start = int(after) if after else 0
        except ValueError:
            raise LeaseError(ErrorCode.BAD_REQUEST,
                             f"LEASE list: after {quoted(after)} is not a cursor this "
                             "server gave") from None
        room = max_frame - LIST_OVERHEAD
        out: list[LeaseInfo] = []
        last, more = start, False
        for seq, lease in self._order.items():
            if seq <= start:
                continue
            info = self.info(lease, now)
            size = len(msgpack.packb(info.to_map(), use_bin_type=True))
            if size > room and out:  # (one lease map always fits: max_frame >= 4096)
                more = True
                break
            room -= size
            out.append(info)
            last = seq
        return LeaseResult(rid, out, total=len(self._order), next=str(last) if more else None)

    # -- enforcement ------------------------------------------------------------------------

    def blocking(self, kind: str, bus: str, targets: Iterable[Target],
                 tokens: Collection[str]) -> HeldLease | None:
        """The first live lease of ``bus`` that covers one of ``targets`` ((address,
        ten_bit) pairs for I2C, one cs for SPI) and whose token is not in ``tokens``."""
        bl = self.held.get((kind, bus))
        if not bl:
            return None
        heap = self._heap
        if heap and heap[0][0] <= self.clock():
            self.expire()
            bl = self.held.get((kind, bus))
            if not bl:
                return None
        for lease in bl.whole:
            if lease.token not in tokens:
                return lease
        if bl.targets:
            for t in targets:
                for lease in bl.targets.get(_key(kind, t), ()):  # type: ignore[arg-type]
                    if lease.token not in tokens:
                        return lease
        return None

    def refusal(self, kind: str, bus: str, targets: Iterable[Target],
                tokens: Collection[str], peer: str) -> str | None:
        """The ``busy`` message for a request frame, or ``None`` if it may run."""
        lease = self.blocking(kind, bus, targets, tokens)
        if lease is None:
            return None
        event(log, logging.INFO, "request denied by lease", lease=lease.id, scope=lease.scope,
              holder=lease.holder, client=lease.client, peer=peer)
        return busy_message(self.info(lease))


class ExpiryTimer:
    """Wakes the table at the next expiry so listeners hear of it without a request."""

    def __init__(self, table: LeaseTable, loop: asyncio.AbstractEventLoop) -> None:
        self.table = table
        self.loop = loop
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None
        table.add_waker(self._arm)

    def _arm(self) -> None:
        nxt = self.table.next_expiry()
        if nxt == self._at and self._handle is not None:
            return  # already set for that moment: a take or renew changed nothing sooner
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._at = nxt
        if nxt is not None:
            self._handle = self.loop.call_later(max(0.0, nxt - self.table.clock()), self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._at = None
        if not self.table.expire():
            self._arm()  # woke early (clock granularity): sleep again

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.table.remove_waker(self._arm)

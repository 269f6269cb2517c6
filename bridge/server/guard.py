"""The per-frame access and rate policy: the :class:`Guard` a session asks before it runs a frame.

One guard per session once its HELLO is accepted, built by :func:`make_guard` from
the client's access rules and the server's :class:`~.settings.LimitSettings`:
it stamps the session's last activity (idle timeout), takes a token from the
client's rate bucket, and checks the access rules.  It exists only when one of
those is configured, so an unconfigured server pays one attribute test per
frame.  The limits themselves are in :mod:`.settings`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from protocol.admin import AdminRequest
from protocol.errors import ErrorCode
from protocol.events import Error, Event, I2CRequest, SpiRequest
from protocol.leases import LeaseRequest

from ..logs import LogGate
from .acl import ClientAcl
from .settings import LimitSettings

log = logging.getLogger("busbridge.server")

#: Rate buckets of named clients kept; past it, full buckets (nothing to remember) go.
MAX_BUCKETS = 4096


class TokenBucket:
    """``rate`` tokens per second up to ``size``; a request takes one or is refused."""

    __slots__ = ("rate", "size", "stamp", "tokens")

    def __init__(self, rate: float, size: float, now: float) -> None:
        self.rate = rate
        self.size = size
        self.tokens = size
        self.stamp = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.size, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class SessionLike(Protocol):
    peer: str
    client: str
    last_frame: float
    loop: asyncio.AbstractEventLoop
    gate: LogGate

    def send(self, ev: Event) -> None: ...


class Guard:
    """Per-session checks before a frame is dispatched: activity, rate, access rules."""

    __slots__ = ("acl", "bucket", "stamp")

    def __init__(self, acl: ClientAcl | None, bucket: TokenBucket | None, stamp: bool) -> None:
        self.acl = acl
        self.bucket = bucket
        self.stamp = stamp

    def refuse(self, s: SessionLike, ev: Event) -> bool:
        """True if ``ev`` was answered with an ERROR here and must not run."""
        if self.stamp:
            s.last_frame = s.loop.time()
        if not isinstance(ev, I2CRequest | SpiRequest | LeaseRequest | AdminRequest):
            return False
        if self.bucket is not None and not self.bucket.take(s.loop.time()):
            s.gate.event(log, logging.INFO, "rate limited", peer=s.peer, identity=s.client,
                         id=ev.id, bus=getattr(ev, "bus", "-"))
            s.send(Error(ev.id, ErrorCode.RATE_LIMITED,
                         f"client {s.client!r} is over its request rate "
                         f"({self.bucket.rate:g}/s, burst {self.bucket.size:g}); not run"))
            return True
        if self.acl is not None and not isinstance(ev, AdminRequest):  # admin.py checks those
            why = self.acl.check(ev)
            if why is not None:
                kind = ("i2c" if isinstance(ev, I2CRequest) else "spi"
                        if isinstance(ev, SpiRequest) else ev.kind)
                s.gate.event(log, logging.WARNING, "request denied", peer=s.peer,
                             identity=s.client, id=ev.id, bus=f"{kind}:{ev.bus}", reason=why)
                s.send(Error(ev.id, ErrorCode.DENIED, why))
                return True
        return False


class _Closed(Guard):
    """The guard of a refused session: whatever else was decoded is dropped unanswered."""

    __slots__ = ()

    def refuse(self, s: SessionLike, ev: Event) -> bool:
        return True


CLOSED: Guard = _Closed(None, None, False)


def make_guard(limits: LimitSettings, acl: ClientAcl | None, buckets: dict[str, TokenBucket],
               client: str | None, now: float) -> Guard | None:
    """The session's guard, or ``None`` when nothing needs checking per frame.

    Authenticated clients share one bucket per identity, so more connections do
    not buy more rate; anonymous connections get one each.  The table of buckets
    is bounded: when full, the buckets that have refilled (as good as new) go.
    """
    bucket = None
    if limits.rate:
        if client is None:
            bucket = TokenBucket(limits.rate, limits.bucket_size, now)
        else:
            bucket = buckets.get(client)
            if bucket is None:
                if len(buckets) >= MAX_BUCKETS:
                    _forget_full(buckets, now)
                bucket = buckets[client] = TokenBucket(limits.rate, limits.bucket_size, now)
    stamp = limits.idle_timeout_s > 0
    if acl is None and bucket is None and not stamp:
        return None
    return Guard(acl, bucket, stamp)


def _forget_full(buckets: dict[str, TokenBucket], now: float) -> None:
    """Drop buckets that have refilled (a new one would be the same); else the oldest half."""
    full = [k for k, b in buckets.items()
            if b.tokens + (now - b.stamp) * b.rate >= b.size]
    for k in full or list(buckets)[: len(buckets) // 2]:
        del buckets[k]

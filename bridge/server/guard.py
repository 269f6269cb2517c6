"""Server resource limits: clients, request rate, idle and handshake timeouts, keepalive.

The protocol limits (frame size, requests in flight) live in
:mod:`protocol.limits`; this module adds the ones that need a clock or a
socket, and the per-session :class:`Guard` that the server calls once per
frame — only when a rate, an idle timeout or access rules are configured, so an
unconfigured server pays one attribute test.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from protocol.errors import ErrorCode
from protocol.events import Error, Event, I2CRequest, SpiRequest
from protocol.leases import LeaseRequest
from protocol.limits import DEFAULT_LIMITS, Limits

from ..logs import event
from .acl import ClientAcl

log = logging.getLogger("busbridge.server")

Seconds = Annotated[float, Field(ge=0, le=86400)]


class LimitSettings(BaseModel):
    """``[server.limits]``; 0 turns a timeout or the rate limit off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_frame: Annotated[int, Field(ge=4096, le=16 * 1024 * 1024)] = DEFAULT_LIMITS.max_frame
    max_in_flight: Annotated[int, Field(ge=1, le=65536)] = DEFAULT_LIMITS.max_in_flight
    max_clients: Annotated[int, Field(ge=1, le=65536)] = 256
    #: Request frames per second per client (token bucket); 0: unlimited.
    rate: Annotated[float, Field(ge=0)] = 0.0
    #: Bucket size: how many requests may come at once; default one second's worth.
    burst: Annotated[int, Field(ge=0)] = 0
    idle_timeout_s: Seconds = 0.0
    handshake_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    #: TCP keepalive: first probe after this many idle seconds (0: off).
    keepalive_idle_s: Annotated[int, Field(ge=0, le=32767)] = 0
    keepalive_interval_s: Annotated[int, Field(ge=1, le=32767)] = 5
    keepalive_count: Annotated[int, Field(ge=1, le=127)] = 3

    def protocol_limits(self, base: Limits = DEFAULT_LIMITS) -> Limits:
        return Limits(max_frame=self.max_frame, max_requests=base.max_requests,
                      max_i2c_len=base.max_i2c_len, max_spi_len=base.max_spi_len,
                      max_in_flight=self.max_in_flight)

    @property
    def bucket_size(self) -> float:
        return float(self.burst) if self.burst else max(1.0, self.rate)


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
        if not isinstance(ev, I2CRequest | SpiRequest | LeaseRequest):
            return False
        if self.bucket is not None and not self.bucket.take(s.loop.time()):
            event(log, logging.INFO, "rate limited", peer=s.peer, client=s.client, id=ev.id,
                  bus=ev.bus)
            s.send(Error(ev.id, ErrorCode.RATE_LIMITED,
                         f"client {s.client!r} is over its request rate "
                         f"({self.bucket.rate:g}/s, burst {self.bucket.size:g}); not run"))
            return True
        if self.acl is not None:
            why = self.acl.check(ev)
            if why is not None:
                kind = ("i2c" if isinstance(ev, I2CRequest) else "spi"
                        if isinstance(ev, SpiRequest) else ev.kind)
                event(log, logging.WARNING, "request denied", peer=s.peer, client=s.client,
                      id=ev.id, bus=f"{kind}:{ev.bus}", reason=why)
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

    Authenticated clients share one bucket per name, so more connections do not
    buy more rate; anonymous connections get one each.
    """
    bucket = None
    if limits.rate:
        if client is None:
            bucket = TokenBucket(limits.rate, limits.bucket_size, now)
        else:
            bucket = buckets.get(client)
            if bucket is None:
                bucket = buckets[client] = TokenBucket(limits.rate, limits.bucket_size, now)
    stamp = limits.idle_timeout_s > 0
    if acl is None and bucket is None and not stamp:
        return None
    return Guard(acl, bucket, stamp)


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

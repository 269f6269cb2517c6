"""What a board file's ``[server]`` section configures, as the server takes it.

:class:`LimitSettings` is ``[server.limits]``: clients, request rate, idle and
handshake timeouts, keepalive, the cap on deadlines.  :class:`ServerPolicy`
bundles it with the security (TLS, tokens) and the access rules; it is what
:class:`~bridge.server.Server` takes, and :func:`server_policy` builds it from a
board's settings and the command line.

The limits live here, not with the code that enforces them, because three
places read them: the server (client count, idle sweep), the session (handshake
timeout, keepalive) and the guard (rate, idle stamps); and the board-file
schema imports them without pulling in any of those.  The protocol limits (frame
size, requests in flight) are :mod:`protocol.limits`; ``LimitSettings`` only
chooses some of their values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from protocol.limits import DEFAULT_LIMITS, MAX_TIMEOUT_MS, Limits

from .acl import AccessRule, Acl
from .auth import ServerSecurity, TlsSettings, TokenSpec, build_server_security, resolve_tls

Seconds = Annotated[float, Field(ge=0, le=86400)]

#: Default cap on any request's deadline (``max_timeout_ms``): 10 s.
DEFAULT_MAX_TIMEOUT_MS = 10_000


#: The board file's schema (bridge/config) takes every server model from here.
__all__ = ["AccessRule", "LimitSettings", "ServerPolicy", "ServerSection", "TlsSettings",
           "TokenSpec", "server_policy"]

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
    #: Cap on every request's deadline (its ``timeout_ms``, else the server's
    #: request timeout): how long one frame may wait for and hold a bus.
    max_timeout_ms: Annotated[int, Field(ge=10, le=MAX_TIMEOUT_MS)] = DEFAULT_MAX_TIMEOUT_MS
    handshake_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    #: TCP keepalive: first probe after this many idle seconds (0: off).
    keepalive_idle_s: Annotated[int, Field(ge=0, le=32767)] = 0
    keepalive_interval_s: Annotated[int, Field(ge=1, le=32767)] = 5
    keepalive_count: Annotated[int, Field(ge=1, le=127)] = 3

    # -- hardening: connections not past HELLO, leases, memory (docs/security.md) --
    #: Connections accepted and not yet past HELLO, waiting or in their handshake;
    #: past it, the oldest waiting one of the source with the most waiting is closed.
    max_pending: Annotated[int, Field(ge=1, le=65536)] = 256
    #: Of those, how many do their handshake (TLS, then HELLO) at once, in all and
    #: per source address (an IPv6 source is its /64); the others wait their turn.
    max_handshakes: Annotated[int, Field(ge=1, le=65536)] = 64
    max_handshakes_per_source: Annotated[int, Field(ge=1, le=65536)] = 8
    #: Live leases on the board, and per client identity.
    max_leases: Annotated[int, Field(ge=1, le=1_000_000)] = 1024
    max_leases_per_client: Annotated[int, Field(ge=1, le=1_000_000)] = 32
    #: Bytes of answers owed (admitted requests' RESULTs, reads included) and answers
    #: written but not yet taken by the peer, over all connections, and per connection.
    answer_budget: Annotated[int, Field(ge=65536)] = 32 * 1024 * 1024
    client_answer_budget: Annotated[int, Field(ge=65536)] = 4 * 1024 * 1024

    def protocol_limits(self, base: Limits = DEFAULT_LIMITS) -> Limits:
        return Limits(max_frame=self.max_frame, max_requests=base.max_requests,
                      max_i2c_len=base.max_i2c_len, max_spi_len=base.max_spi_len,
                      max_in_flight=self.max_in_flight)

    @property
    def bucket_size(self) -> float:
        return float(self.burst) if self.burst else max(1.0, self.rate)

    @model_validator(mode="after")
    def _budgets(self) -> LimitSettings:
        if self.max_handshakes > self.max_pending:
            raise ValueError(f"max_handshakes {self.max_handshakes} is above max_pending "
                             f"{self.max_pending}")
        if self.client_answer_budget < self.max_frame:
            raise ValueError(f"client_answer_budget {self.client_answer_budget} is below "
                             f"max_frame {self.max_frame}: no answer would fit")
        if self.answer_budget < self.client_answer_budget:
            raise ValueError(f"answer_budget {self.answer_budget} is below "
                             f"client_answer_budget {self.client_answer_budget}")
        return self


@dataclass(frozen=True)
class ServerPolicy:
    """Who may connect, what each client may do, and how much: all of ``[server]``
    except where to listen, the request timeout and the lease TTL."""

    security: ServerSecurity = field(default_factory=ServerSecurity)
    limit_settings: LimitSettings = field(default_factory=LimitSettings)
    #: Per-client access rules; None: everything is allowed and nothing is checked.
    acl: Acl | None = None

    @property
    def limits(self) -> Limits:
        """The protocol limits each connection enforces and WELCOME announces."""
        return self.limit_settings.protocol_limits()


class ServerSection(Protocol):
    """The parts of a board's ``[server]`` settings that make a policy."""

    @property
    def tls(self) -> TlsSettings | None: ...

    @property
    def tokens(self) -> Sequence[TokenSpec]: ...

    @property
    def insecure(self) -> bool: ...

    @property
    def limits(self) -> LimitSettings: ...

    @property
    def access(self) -> Sequence[AccessRule]: ...


def server_policy(settings: ServerSection, source: str = "", *, cert: str | None = None,
                  key: str | None = None, client_ca: str | None = None,
                  insecure: bool = False) -> ServerPolicy:
    """The policy of a board's ``[server]`` settings with the command line's overrides.

    ``source`` is the board file's path: relative certificate paths in it are
    relative to that file.
    """
    tls = resolve_tls(settings.tls, source, cert=cert, key=key, client_ca=client_ca)
    security = build_server_security(tls, list(settings.tokens), insecure or settings.insecure)
    return ServerPolicy(security, settings.limits,
                        Acl(list(settings.access)) if settings.access else None)

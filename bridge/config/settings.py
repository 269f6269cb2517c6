"""``[server]`` and ``[mqtt]``: how the board's server listens and where it announces itself.

The security and limit models (``tls``, ``tokens``, ``limits``, ``access``) live
with the server code that enforces them; this module only places them in the file.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, field_validator, model_validator

from protocol.limits import DEFAULT_PORT, MAX_TIMEOUT_MS

from ..addresses import parse_host_port
from ..server.settings import AccessRule, LimitSettings, TlsSettings, TokenSpec
from .fields import STRICT

DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
DEFAULT_REQUEST_TIMEOUT_MS = 1000


class ServerSettings(BaseModel):
    """Server defaults a board file may carry; command-line options override them."""

    model_config = STRICT

    listen: str = DEFAULT_LISTEN
    request_timeout_ms: Annotated[int, Field(gt=0, le=MAX_TIMEOUT_MS)] = DEFAULT_REQUEST_TIMEOUT_MS
    #: ``HOST:PORT`` of the Prometheus endpoint (``/metrics``); absent: none (docs/docker.md,
    #: Metrics).
    metrics: str | None = None
    #: Longest lease TTL the server grants (seconds); longer takes are refused.
    lease_max_ttl_s: Annotated[int, Field(gt=0, le=86_400)] = 3600
    # Security and limits (docs/security.md); the models live with their logic.
    insecure: bool = False
    tls: TlsSettings | None = None
    tokens: list[TokenSpec] = []
    limits: LimitSettings = LimitSettings()
    access: list[AccessRule] = []

    @field_validator("listen", "metrics")
    @classmethod
    def _check_listen(cls, v: str | None) -> str | None:
        if v is not None:
            parse_host_port(v)
        return v

    @property
    def host(self) -> str:
        return parse_host_port(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_host_port(self.listen)[1]

    @property
    def request_timeout(self) -> float:
        return self.request_timeout_ms / 1000

    @model_validator(mode="after")
    def _check_tokens(self) -> ServerSettings:
        names = [t.name for t in self.tokens]
        if len(names) != len(set(names)):
            raise ValueError("two [[server.tokens]] share a name")
        return self


class MqttSettings(BaseModel):
    """``[mqtt]``: where the board announces itself (see docs/mqtt.md); absent: no broker."""

    model_config = STRICT

    #: ``[mqtt[s]://][user[:password]@]host[:port]``; mqtts means TLS (default port 8883).
    broker: str = Field(min_length=1)
    prefix: str = Field(default="busbridge", min_length=1, pattern=r"^[^#+]+$")
    #: Default ``busbridge-<board name>``.
    client_id: str = ""
    #: HOST:PORT clients should dial; default: the listen address, or this host's
    #: name when listening on every interface (0.0.0.0 / ::).  Several, comma-separated,
    #: for clients on different networks: a client dials the first it can resolve.
    advertise: str = ""
    health_interval_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    keepalive_s: Annotated[int, Field(ge=1, le=65535)] = 30
    username: str = ""
    password: str = ""
    #: CA bundle for an mqtts:// broker; default: the system's.
    ca_file: str = ""
    reconnect_min_s: Annotated[float, Field(gt=0, le=3600)] = 0.5
    reconnect_max_s: Annotated[float, Field(gt=0, le=3600)] = 30.0

    @field_validator("advertise")
    @classmethod
    def _check_advertise(cls, v: str) -> str:
        for part in v.split(",") if v else ():
            parse_host_port(part.strip())
        return v

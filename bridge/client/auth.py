"""How a client proves who it is to a board, and checks who the board is.

The client half of transport security: TLS settings, the access token sent in
HELLO (never logged, never in ``repr``), and the ``BUSBRIDGE_TLS*`` /
``BUSBRIDGE_TOKEN*`` variables that hand them to a child process.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.limits import MAX_ACCESS_TOKEN

ENV_TLS = "BUSBRIDGE_TLS"
ENV_TLS_CA = "BUSBRIDGE_TLS_CA"
ENV_TLS_CERT = "BUSBRIDGE_TLS_CERT"
ENV_TLS_KEY = "BUSBRIDGE_TLS_KEY"
ENV_TLS_SERVER_NAME = "BUSBRIDGE_TLS_SERVER_NAME"
ENV_TOKEN = "BUSBRIDGE_TOKEN"
ENV_TOKEN_FILE = "BUSBRIDGE_TOKEN_FILE"


@dataclass(frozen=True)
class ClientAuth:
    """How a client proves who it is and checks who the server is.

    ``tls`` is implied by ``cafile`` or ``certfile``. ``token`` goes in HELLO;
    it is never logged and never shown in ``repr``.
    """

    tls: bool | ssl.SSLContext = False
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    server_hostname: str | None = None
    token: str | None = None

    def __post_init__(self) -> None:
        if self.token is not None and not 0 < len(self.token) <= MAX_ACCESS_TOKEN:
            raise ValueError(f"a token must be 1..{MAX_ACCESS_TOKEN} characters")

    def __repr__(self) -> str:
        return (f"ClientAuth(tls={self.uses_tls}, cafile={self.cafile!r}, "
                f"certfile={self.certfile!r}, token={'<set>' if self.token else None})")

    @property
    def uses_tls(self) -> bool:
        return bool(self.tls) or bool(self.cafile) or bool(self.certfile)

    def ssl_context(self) -> ssl.SSLContext | None:
        if isinstance(self.tls, ssl.SSLContext):
            return self.tls
        if not self.uses_tls:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.cafile)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.certfile:
            ctx.load_cert_chain(self.certfile, self.keyfile)
        return ctx

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``AsyncClient.connect`` / ``Client``."""
        return {"tls": self.tls, "cafile": self.cafile, "certfile": self.certfile,
                "keyfile": self.keyfile, "server_hostname": self.server_hostname,
                "token": self.token}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **override: Any) -> ClientAuth:
        """From ``BUSBRIDGE_TLS*`` / ``BUSBRIDGE_TOKEN[_FILE]``; ``override`` wins if not None."""
        e = os.environ if env is None else env
        token = e.get(ENV_TOKEN) or None
        token_file = override.pop("token_file", None) or e.get(ENV_TOKEN_FILE)
        if token_file and not override.get("token"):
            token = read_token_file(token_file)
        values: dict[str, Any] = {
            "tls": e.get(ENV_TLS, "").lower() in ("1", "true", "yes", "on"),
            "cafile": e.get(ENV_TLS_CA) or None,
            "certfile": e.get(ENV_TLS_CERT) or None,
            "keyfile": e.get(ENV_TLS_KEY) or None,
            "server_hostname": e.get(ENV_TLS_SERVER_NAME) or None,
            "token": token,
        }
        values.update({k: v for k, v in override.items() if v is not None})
        return cls(**values)

    def env(self) -> dict[str, str]:
        """The environment that gives a child process (``busbridge run``) the same settings."""
        out: dict[str, str] = {}
        if self.uses_tls:
            out[ENV_TLS] = "1"
        for key, value in ((ENV_TLS_CA, self.cafile), (ENV_TLS_CERT, self.certfile),
                           (ENV_TLS_KEY, self.keyfile),
                           (ENV_TLS_SERVER_NAME, self.server_hostname),
                           (ENV_TOKEN, self.token)):
            if value:
                out[key] = value
        return out


def read_token_file(path: str) -> str:
    try:
        token = Path(path).expanduser().read_text("utf-8").strip()
    except OSError as e:
        raise OSError(e.errno, f"cannot read token file {path}: {e.strerror}") from None
    if not token:
        raise ValueError(f"token file {path} is empty")
    return token

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

from protocol.limits import MAX_ACCESS_TOKEN

from .. import env
from .errors import InvalidRequest


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
            raise InvalidRequest(f"a token must be 1..{MAX_ACCESS_TOKEN} characters")

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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *,
                 tls: bool | ssl.SSLContext | None = None, cafile: str | None = None,
                 certfile: str | None = None, keyfile: str | None = None,
                 server_hostname: str | None = None, token: str | None = None,
                 token_file: str | None = None) -> ClientAuth:
        """From ``BUSBRIDGE_TLS*`` / ``BUSBRIDGE_TOKEN[_FILE]`` (``environ`` defaults to
        ``os.environ``); an argument that is not None wins over its variable, as a
        command-line option wins over the environment."""
        e = os.environ if environ is None else environ

        def pick(arg: str | None, var: str) -> str | None:
            return arg if arg is not None else e.get(var) or None

        if token is None:
            token_file = pick(token_file, env.TOKEN_FILE)
            token = read_token_file(token_file) if token_file else e.get(env.TOKEN) or None
        on = e.get(env.TLS, "").lower() in ("1", "true", "yes", "on")
        return cls(tls=on if tls is None else tls, cafile=pick(cafile, env.TLS_CA),
                   certfile=pick(certfile, env.TLS_CERT), keyfile=pick(keyfile, env.TLS_KEY),
                   server_hostname=pick(server_hostname, env.TLS_SERVER_NAME), token=token)

    def env(self) -> dict[str, str]:
        """The environment that gives a child process (``busbridge run``) the same settings."""
        out: dict[str, str] = {}
        if self.uses_tls:
            out[env.TLS] = "1"
        for key, value in ((env.TLS_CA, self.cafile), (env.TLS_CERT, self.certfile),
                           (env.TLS_KEY, self.keyfile),
                           (env.TLS_SERVER_NAME, self.server_hostname),
                           (env.TOKEN, self.token)):
            if value:
                out[key] = value
        return out


def read_token_file(path: str) -> str:
    try:
        token = Path(path).expanduser().read_text("utf-8").strip()
    except OSError as e:
        raise OSError(e.errno, f"cannot read token file {path}: {e.strerror}") from None
    if not token:
        raise InvalidRequest(f"token file {path} is empty")
    return token

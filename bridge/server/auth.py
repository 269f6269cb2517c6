"""The board's transport security: TLS contexts, token hashes, who a client is.

Tokens are stored in the board file as salted SHA-256 hashes, never in clear:
a board file is often readable by more people than should hold the token. A
token is 32 random bytes (``busbridge token new``), so one salted SHA-256 is
enough — slow password hashes exist for guessable secrets, and would only
make every handshake cost CPU on a small board. Every configured hash is
compared on every handshake, in constant time, so the timing says nothing
about which token (or how much of one) matched.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .acl import cert_identity, token_identity

_STRICT = ConfigDict(extra="forbid", frozen=True)

HASH_SCHEME = "sha256"


class TlsSettings(BaseModel):
    """``[server.tls]``: certificate and key; ``client_ca`` turns on mutual TLS."""

    model_config = _STRICT

    cert: str = Field(min_length=1)
    key: str = Field(min_length=1)
    client_ca: str | None = None


class TokenSpec(BaseModel):
    """One ``[[server.tokens]]`` entry: a client name and its token's salted hash."""

    model_config = _STRICT

    name: str = Field(min_length=1, max_length=256)
    hash: str

    @field_validator("hash")
    @classmethod
    def _check_hash(cls, v: str) -> str:
        parts = v.split(":")
        if len(parts) != 3 or parts[0] != HASH_SCHEME:
            raise ValueError("hash must look like \"sha256:SALT:DIGEST\" "
                             "(make one with `busbridge token new` or `busbridge token hash`)")
        try:
            salt, digest = bytes.fromhex(parts[1]), bytes.fromhex(parts[2])
        except ValueError:
            raise ValueError("hash: SALT and DIGEST must be hex") from None
        if len(salt) < 8 or len(digest) != 32:
            raise ValueError("hash: SALT must be at least 8 bytes and DIGEST 32 bytes")
        return v


def new_token() -> str:
    """A fresh random token: 256 bits as hex, so it never starts with "-" and can
    be passed as a command-line argument."""
    return secrets.token_hex(32)


def hash_token(token: str, salt: bytes | None = None) -> str:
    """The ``sha256:SALT:DIGEST`` line to put in the board file for ``token``."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.sha256(salt + token.encode()).hexdigest()
    return f"{HASH_SCHEME}:{salt.hex()}:{digest}"


class TokenStore:
    """The configured tokens; :meth:`verify` names the client a token belongs to."""

    def __init__(self, specs: list[TokenSpec]) -> None:
        self._entries = []
        for s in specs:
            _scheme, salt, digest = s.hash.split(":")
            self._entries.append((s.name, bytes.fromhex(salt), bytes.fromhex(digest)))

    def __len__(self) -> int:
        return len(self._entries)

    def verify(self, token: str) -> str | None:
        raw = token.encode()
        found: str | None = None
        for name, salt, digest in self._entries:  # no early exit: constant work
            if hmac.compare_digest(hashlib.sha256(salt + raw).digest(), digest):
                found = found or name
        return found


# ---------------------------------------------------------------------------
# TLS contexts
# ---------------------------------------------------------------------------


def _path(p: str, base: Path | None) -> str:
    q = Path(p).expanduser()
    return str(q if q.is_absolute() or base is None else base / q)


def server_ssl_context(tls: TlsSettings, base: Path | None = None) -> ssl.SSLContext:
    """TLS ≥ 1.2 server context; with ``client_ca``, client certificates are required."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(_path(tls.cert, base), _path(tls.key, base))
    if tls.client_ca:
        ctx.load_verify_locations(cafile=_path(tls.client_ca, base))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def peer_common_name(transport: Any) -> str | None:
    """The CN of a verified client certificate, if the connection has one."""
    cert = transport.get_extra_info("peercert")
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


# ---------------------------------------------------------------------------
# Who may listen where
# ---------------------------------------------------------------------------


class InsecureListenError(ValueError):
    """Refusal to expose the buses beyond this machine without authentication."""


def is_loopback(host: str) -> bool:
    """True if every address ``host`` names is a loopback address."""
    if host in ("", "*"):
        return False
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addrs = {str(i[4][0]) for i in infos}
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def check_exposure(host: str, authenticated: bool, insecure: bool) -> None:
    """Raise :class:`InsecureListenError` for a non-loopback listen without authentication."""
    if authenticated or insecure or is_loopback(host):
        return
    raise InsecureListenError(
        f"refusing to listen on {host or 'all interfaces'}: that is reachable from other "
        "machines and no authentication is configured, so anyone who can reach the port "
        "could drive the buses. Configure client certificates ([server.tls] client_ca) or "
        "tokens ([[server.tokens]]), or pass --insecure (insecure = true in [server]) on a "
        "network you trust.")


# ---------------------------------------------------------------------------
# The server's view
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSecurity:
    """What the server needs to authenticate clients (built from ``[server]``)."""

    ssl: ssl.SSLContext | None = None
    tokens: TokenStore | None = None
    client_certs: bool = False
    insecure: bool = False

    @property
    def authenticated(self) -> bool:
        """Does every accepted client prove who it is?"""
        return self.client_certs or bool(self.tokens)

    def identify(self, token: str | None, cert_cn: str | None) -> tuple[str | None, str]:
        """``(identity, "")`` for an accepted HELLO, ``(None, reason)`` for a refused one.

        A valid token names the client (``token:NAME``); without one, a verified
        certificate's CN does (``cn:NAME``): the prefixes keep the two namespaces
        apart, so a CN can never pose as a token, nor as the anonymous client.
        A token that does not match is refused even with a certificate.
        """
        if token is not None and self.tokens:  # without tokens configured it grants nothing
            name = self.tokens.verify(token)
            if name is None:
                return None, "invalid token"
            return token_identity(name), ""
        if cert_cn is not None:
            return cert_identity(cert_cn), ""
        if self.client_certs:  # a certificate without a CN
            return None, "client certificate has no common name"
        if self.tokens:
            return None, "this server requires a token"
        return None, ""


def build_server_security(tls: TlsSettings | None, tokens: list[TokenSpec], insecure: bool,
                          base: Path | None = None) -> ServerSecurity:
    ctx = server_ssl_context(tls, base) if tls is not None else None
    return ServerSecurity(ctx, TokenStore(tokens) if tokens else None,
                          bool(tls and tls.client_ca), insecure)


def resolve_tls(tls: TlsSettings | None, source: str = "", *, cert: str | None = None,
                key: str | None = None, client_ca: str | None = None) -> TlsSettings | None:
    """A board file's ``[server.tls]`` with the command line's paths on top.

    Relative paths in a board file are relative to that file (``source``); paths
    given on the command line are relative to the working directory.
    """
    base = Path(source).resolve().parent if source and not source.startswith("<") else None
    if tls is not None and base is not None:
        tls = TlsSettings(cert=_path(tls.cert, base), key=_path(tls.key, base),
                          client_ca=_path(tls.client_ca, base) if tls.client_ca else None)
    if cert or key or client_ca:
        merged = {**(tls.model_dump() if tls else {}),
                  **{k: v for k, v in (("cert", cert), ("key", key), ("client_ca", client_ca))
                     if v}}
        if not merged.get("cert") or not merged.get("key"):
            raise ValueError("TLS needs both a certificate and a key (--tls-cert and --tls-key)")
        tls = TlsSettings(**merged)
    return tls

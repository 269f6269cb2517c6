"""Why a handshake failed, in words a user can act on.

A client that reaches the wrong kind of peer used to report what the socket saw:
``connection … lost (closed)`` from a TLS server it spoke plain TCP to,
``[SSL: WRONG_VERSION_NUMBER]`` from a plain server it spoke TLS to, a timeout
or ``frame-too-large`` from an HTTP server.  Before WELCOME both clients keep
the first bytes the peer sent (:data:`HEAD` of them); when the handshake fails,
:func:`explain` (asyncio) or :func:`explain_sync` turns that, and what the
client itself asked for, into one exception that says what is wrong and what
to change.  The types stay what callers already catch: :class:`TLSMismatch` is
an ``ssl.SSLError``, :class:`NotBusbridge` a :class:`ConnectionLost`, and a
silent peer still raises :class:`ConnectTimeout`.
"""

from __future__ import annotations

import asyncio
import errno as _errno
import socket
import ssl

from .auth import ClientAuth
from .errors import BusBridgeError, ConnectionLost, ConnectTimeout

__all__ = ["HEAD", "NotBusbridge", "TLSCertificateError", "TLSMismatch", "explain",
           "explain_sync", "tls_error"]

#: How many of the peer's first bytes a client keeps before WELCOME.
HEAD = 64
#: The longest first frame a busbridge server sends (WELCOME or ERROR) is far below this.
_MAX_FIRST_FRAME = 1 << 24
#: OpenSSL reasons meaning "the answer was not TLS": the server speaks plain TCP.
_NOT_TLS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
            "UNKNOWN_PROTOCOL", "WRONG_SSL_VERSION", "UNEXPECTED_RECORD", "HTTP_REQUEST")

_USE_TLS = ("connect with TLS: --tls-ca CA.pem, the CA that signed the server's "
            "certificate (or --tls for the system's CAs; env BUSBRIDGE_TLS_CA / BUSBRIDGE_TLS)")


class NotBusbridge(ConnectionLost):
    """The peer answered, but not with the busbridge protocol: nothing was sent to a bus."""


class TLSMismatch(BusBridgeError, ssl.SSLError):
    """TLS on one side and not the other, or a certificate one side does not accept."""

    def __init__(self, message: str) -> None:
        ssl.SSLError.__init__(self, _errno.EPROTO, message)

    def __str__(self) -> str:
        return str(self.strerror)


class TLSCertificateError(TLSMismatch, ssl.SSLCertVerificationError):
    """The server's certificate is not trusted or not for the name dialled (still an
    ``ssl.SSLCertVerificationError``, as before)."""


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def looks_like_tls(head: bytes | bytearray) -> bool:
    """A TLS record header: content type 20-23, version 3.x."""
    return len(head) >= 3 and 20 <= head[0] <= 23 and head[1] == 3 and head[2] <= 4


def looks_like_busbridge(head: bytes | bytearray) -> bool | None:
    """Whether ``head`` can begin a busbridge frame (length prefix, then a msgpack array);
    None while too few bytes have come to tell."""
    if len(head) < 4:
        return None
    n = int.from_bytes(head[:4], "big")
    if not 0 < n < _MAX_FIRST_FRAME:
        return False
    if len(head) < 5:
        return None
    return 0x90 <= head[4] <= 0x9F or head[4] in (0xDC, 0xDD)


def shown(head: bytes | bytearray, limit: int = 40) -> str:
    """The peer's bytes as a Python literal (escaped: no terminal control reaches the user)."""
    text = repr(bytes(head[:limit]))
    return text + ("…" if len(head) > limit else "")


def _classify(where: str, head: bytes | bytearray, auth: ClientAuth) -> BusBridgeError | None:
    """What the first bytes say, if they say enough."""
    if looks_like_tls(head) and not auth.uses_tls:
        return TLSMismatch(f"{where} speaks TLS and this client does not: {_USE_TLS}")
    if head and looks_like_busbridge(head) is False:
        return NotBusbridge(f"{where} is not a busbridge server (got {shown(head)})")
    return None


def _silent(where: str, timeout: float) -> ConnectTimeout:
    return ConnectTimeout(_errno.ETIMEDOUT,
                          f"no WELCOME from {where} within {timeout:g} s (got nothing): "
                          "not a busbridge server, or one too busy to answer")


def _closed_tls(where: str, auth: ClientAuth, exc: BaseException | None) -> TLSMismatch:
    reason = getattr(exc, "reason", None) or ""
    if not auth.certfile or "CERTIFICATE_REQUIRED" in reason:
        return TLSMismatch(f"{where} closed the TLS connection before its WELCOME"
                           + (f" ({reason})" if reason else "") + ": it requires a client "
                           "certificate; give one with --tls-cert CERT.pem --tls-key KEY.pem "
                           "(env BUSBRIDGE_TLS_CERT / BUSBRIDGE_TLS_KEY)")
    return TLSMismatch(f"{where} closed the TLS connection before its WELCOME"
                       + (f" ({reason})" if reason else "") + f": it did not accept the "
                       f"client certificate {auth.certfile} (is it signed by the CA the "
                       "server trusts, [server.tls] client_ca?)")


def tls_error(host: str, port: int, e: ssl.SSLError, auth: ClientAuth) -> ssl.SSLError:
    """A TLS handshake the client itself failed: say which side is wrong and how to fix it."""
    where = _where(host, port)
    if isinstance(e, ssl.SSLCertVerificationError):
        why = f"{e.reason}: {e.verify_message}" if e.reason and e.verify_message else str(e)
        if "mismatch" in why.lower():
            name = auth.server_hostname or host
            return TLSCertificateError(
                f"the TLS certificate of {where} is not for {name!r} ({why}): dial a name the "
                "certificate has, or give that name with --tls-server-name "
                "(env BUSBRIDGE_TLS_SERVER_NAME)")
        return TLSCertificateError(
            f"the TLS certificate of {where} is not trusted ({why}): give the CA that signed "
            "it with --tls-ca CA.pem (env BUSBRIDGE_TLS_CA)")
    reason = e.reason or ""
    if reason in _NOT_TLS:
        return TLSMismatch(f"{where} does not speak TLS (its answer is not a TLS record: "
                           f"{reason}): connect without --tls/--tls-ca/--tls-cert (and "
                           "BUSBRIDGE_TLS*), or give the server a certificate ([server.tls] "
                           "in its board file)")
    if "CERTIFICATE_REQUIRED" in reason or "ALERT" in reason:
        return _closed_tls(where, auth, e)
    return e


async def _speaks_tls(host: str, port: int, timeout: float) -> bool:
    """Whether a TLS handshake with the peer gets anywhere (nothing is verified or sent)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    loop = asyncio.get_running_loop()
    try:
        transport, _ = await asyncio.wait_for(
            loop.create_connection(asyncio.Protocol, host, port, ssl=ctx), timeout)
    except ssl.SSLError as e:
        return "ALERT" in (e.reason or "")  # the peer answered in TLS, refusing something
    except (OSError, TimeoutError):
        return False
    transport.abort()
    return True


def _speaks_tls_sync(host: str, port: int, timeout: float) -> bool:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout) as raw, \
                ctx.wrap_socket(raw, do_handshake_on_connect=True):
            return True
    except ssl.SSLError as e:
        return "ALERT" in (e.reason or "")
    except OSError:
        return False


def _explained(host: str, port: int, head: bytes | bytearray, auth: ClientAuth, timeout: float,
               timed_out: bool, exc: BaseException | None) -> tuple[BusBridgeError | None, bool]:
    """(the error, whether to probe for a TLS server first)."""
    where = _where(host, port)
    found = _classify(where, head, auth)
    if found is not None or head:
        return found, False
    if timed_out:
        return _silent(where, timeout), False
    if auth.uses_tls:
        return _closed_tls(where, auth, exc), False
    return None, True  # closed without a word: is it a TLS server?


def _tls_required(host: str, port: int) -> TLSMismatch:
    return TLSMismatch(f"{_where(host, port)} closed the connection before its WELCOME; it "
                       f"speaks TLS and this client does not: {_USE_TLS}")


async def explain(host: str, port: int, head: bytes | bytearray, auth: ClientAuth,
                  timeout: float, *, timed_out: bool = False,
                  exc: BaseException | None = None) -> BusBridgeError | None:
    """A precise error for a failed handshake, or None to keep the generic one."""
    found, probe = _explained(host, port, head, auth, timeout, timed_out, exc)
    if probe and await _speaks_tls(host, port, timeout):
        return _tls_required(host, port)
    return found


def explain_sync(host: str, port: int, head: bytes | bytearray, auth: ClientAuth, timeout: float, *,
                 timed_out: bool = False, exc: BaseException | None = None
                 ) -> BusBridgeError | None:
    """:func:`explain` for the blocking client."""
    found, probe = _explained(host, port, head, auth, timeout, timed_out, exc)
    if probe and _speaks_tls_sync(host, port, timeout):
        return _tls_required(host, port)
    return found

"""TLS, tokens (SPEC.md §1, §6) and the server policies of §8.7/§10 the kit is told about.

Server policies (handshake and idle timeouts, connection limit, access rules) are not
advertised in WELCOME, so these checks run only when the caller states the policy
(``--expect-…`` options); otherwise they SKIP saying so.
"""

from __future__ import annotations

import socket
import ssl
import time
import warnings

from ..board import EEPROM_SCRATCH_OFFSETS, Board, fresh_marker, holds, next_id
from ..model import check_error, check_welcome, i2c_frame, rd, wr
from ..registry import Ctx, Fail, Skip, check
from ..wire import Closed, Conn, frame


def _need_tls(ctx: Ctx) -> None:
    if not ctx.target.uses_tls:
        raise Skip("the target is not TLS (give --tls-ca)")


@check("sec.tls-1.1-refused", "§1")
def tls_11(ctx: Ctx) -> str:
    """The server speaks TLS >= 1.2 only: a client offering at most TLS 1.1 is refused."""
    _need_tls(ctx)
    tctx = ctx.target.ssl_context()
    try:
        with warnings.catch_warnings():  # deprecated on purpose: that is what is refused
            warnings.simplefilter("ignore", DeprecationWarning)
            tctx.minimum_version = ssl.TLSVersion.TLSv1
            tctx.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError) as e:
        raise Skip(f"this Python/OpenSSL cannot offer TLS 1.1 ({e})") from None
    raw = socket.create_connection((ctx.target.host, ctx.target.port), ctx.target.timeout)
    try:
        s = tctx.wrap_socket(raw, server_hostname=ctx.target.server_name or ctx.target.host)
    except ssl.SSLError as e:
        if "no protocols available" in str(e).lower():
            raise Skip(f"this OpenSSL refuses to offer TLS 1.1 ({e})") from None
        return f"TLS 1.1 handshake refused ({e.reason or e})"
    except OSError as e:
        return f"TLS 1.1 handshake refused ({e})"
    finally:
        raw.close()
    s.close()
    raise Fail("a TLS 1.1 handshake succeeded")


def _refused_before_frames(ctx: Ctx, c: Conn, what: str) -> str:
    try:
        c.send([0, 0, ctx.hello_map()])
        frames = c.wait_closed(ctx.target.timeout)
    except (OSError, Closed) as e:
        return f"{what}: connection ended ({e})"
    except TimeoutError:
        raise Fail(f"{what}: the server kept the connection open") from None
    if frames:
        raise Fail(f"{what}: the server sent {frames[0].brief()} before closing")
    return f"{what}: closed before any frame ({c.closed.reason if c.closed else ''})"


@check("sec.mtls-no-cert", "§1")
def mtls_no_cert(ctx: Ctx) -> str:
    """With mutual TLS a client without a certificate is cut off in the TLS handshake."""
    _need_tls(ctx)
    if not ctx.target.certfile:
        raise Skip("no client certificate given (--tls-cert): mutual TLS not in use")
    try:
        c = ctx.raw(client_cert=False)
    except (ssl.SSLError, OSError) as e:
        return f"TLS handshake without a certificate refused ({e})"
    return _refused_before_frames(ctx, c, "no client certificate")


@check("sec.token-missing", "§1 §6 §9")
def token_missing(ctx: Ctx) -> str:
    """A server with tokens answers a HELLO without one (and no certificate) ``unauthorized``."""
    if ctx.target.token is None:
        raise Skip("no token given (--token-file): tokens not in use")
    if ctx.target.certfile:
        raise Skip("a verified client certificate stands in for a token (§6)")
    c = ctx.raw()
    c.send([0, 0, {"version": 1, "client": "kit"}])
    _, msg = ctx.expect_error(c, "unauthorized", 0, fatal=True, what="a HELLO without token")
    return f"ERROR unauthorized id 0 ({msg!r}), then closed"


@check("sec.token-wrong", "§6 §9 §12.15a")
def token_wrong(ctx: Ctx) -> str:
    """A wrong token is ``unauthorized`` (fatal, even with a certificate); nothing after it runs."""
    if ctx.target.token is None:
        raise Skip("no token given (--token-file): tokens not in use")
    board = Board(ctx)
    where = EEPROM_SCRATCH_OFFSETS["unauthorized"]
    probe = ctx.open()
    try:
        mark = fresh_marker(board, probe, where)
        write = frame(i2c_frame(next_id(), "1", [board.eeprom_msg(where, bytes([mark]))]))
    except Skip:
        mark, write = -1, b""
    c = ctx.raw()
    c.send_bytes(frame([0, 0, ctx.hello_map(token="w" * 43)]) + write)
    _, msg = ctx.expect_error(c, "unauthorized", 0, fatal=True, what="a wrong token")
    if mark >= 0 and holds(board, probe, where, mark):
        raise Fail("the write pipelined behind a refused HELLO ran")
    return f"ERROR unauthorized id 0 ({msg!r}), closed; the pipelined write never ran"


@check("sec.cert-no-token", "§6")
def cert_no_token(ctx: Ctx) -> str:
    """A client with a verified certificate needs no token: HELLO without one is WELCOMEd."""
    if ctx.target.token is None or not ctx.target.certfile:
        raise Skip("needs both tokens and a client certificate")
    c = ctx.raw()
    c.send([0, 0, {"version": 1, "client": "kit"}])
    check_welcome(ctx.recv(c, "WELCOME"))
    return "certificate, no token: WELCOME"


# -- stated server policies ---------------------------------------------------------


def _timed_out(ctx: Ctx, c: Conn, code: str, t: float) -> str:
    """Wait for the fatal ERROR ``code`` a server with timeout ``t`` owes ``c``."""
    t0 = time.perf_counter()
    _, msg = ctx.expect_error(c, code, 0, fatal=True, timeout=t * 3 + ctx.target.timeout)
    took = (c.closed.at if c.closed else time.perf_counter()) - t0
    return f"ERROR {code} id 0 ({msg!r}), closed after {took:.2f} s (stated {t:g} s)"


@check("pol.handshake-timeout", "§6 §9")
def handshake_timeout(ctx: Ctx) -> str:
    """No HELLO within the handshake timeout: fatal ``handshake-timeout``, id 0."""
    t = ctx.policy.handshake_timeout_s
    if t is None:
        raise Skip("handshake timeout not stated (--expect-handshake-timeout)")
    return _timed_out(ctx, ctx.raw(), "handshake-timeout", t)


@check("pol.idle-timeout", "§8.7 §9")
def idle_timeout(ctx: Ctx) -> str:
    """PINGs keep a connection alive past the idle timeout; silence then ends it (fatal)."""
    t = ctx.policy.idle_timeout_s
    if t is None:
        raise Skip("idle timeout not stated (--expect-idle-timeout)")
    c = ctx.open()
    for k in range(3):  # 1.5 idle timeouts, with a PING every half
        time.sleep(t / 2)
        ctx.alive(c, ping_id=100 + k)
    return f"PINGs for {1.5 * t:g} s kept it; then " + _timed_out(ctx, c, "idle-timeout", t)


@check("pol.max-clients", "§6 §9 §10")
def max_clients(ctx: Ctx) -> str:
    """One connection beyond the stated maximum gets fatal ``too-many-clients`` (id 0)."""
    n = ctx.policy.max_clients
    if n is None:
        raise Skip("connection limit not stated (--expect-max-clients)")
    time.sleep(0.5)  # let the server free the connections of earlier checks
    for _ in range(n):
        ctx.open()
    for attempt in range(10):
        c = ctx.raw()
        f = ctx.recv(c, "ERROR too-many-clients", ctx.target.timeout)
        rid, code, msg = check_error(f)
        if (rid, code) == (0, "too-many-clients"):
            return f"connection {n + 1}: ERROR too-many-clients id 0 ({msg!r})"
        raise Fail(f"connection {n + 1} (attempt {attempt}): {f.brief()}")
    raise Fail("unreachable")


@check("pol.denied", "§8.7 §9")
def denied(ctx: Ctx) -> str:
    """A write an access rule forbids is refused with ``denied`` (non-fatal); nothing runs."""
    spec = ctx.policy.denied
    if spec is None:
        raise Skip("no forbidden write stated (--expect-denied BUS@ADDR)")
    bus, _, addr_s = spec.partition("@")
    addr = int(addr_s, 0)
    c = ctx.open()
    rid = next_id()
    c.send(i2c_frame(rid, bus, [rd(0x08, 0), wr(addr, b"\x00")]))
    _, msg = ctx.expect_error(c, "denied", rid, fatal=False, what=f"a write to {addr:#x}")
    return f"ERROR denied ({msg[:80]!r}); connection kept"

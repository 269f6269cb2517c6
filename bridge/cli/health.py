"""``busbridge health``: does a busbridge server answer here?  For container HEALTHCHECKs.

Healthy means the server answers the busbridge handshake: with a WELCOME, or with
a refusal only a busbridge server makes (``unauthorized`` from a board that
requires tokens, which a health check need not hold).  Either proves a server
that accepts, decodes and answers; nothing listening, no answer in time or
another protocol is unhealthy (exit 1).  A server that speaks TLS while the
check was given no TLS settings is asked again over TLS without verifying its
certificate (and without any token): aliveness, not identity, is the question.

Where: ``--connect``/``--board`` (or their variables) as for every command, else
the port ``busbridge serve`` listens on from ``$BUSBRIDGE_LISTEN``, dialled on
this host, so an image sets its port in one place.
"""

from __future__ import annotations

import os
import ssl

import click

from .. import env
from ..addresses import format_address, parse_host_port
from ..client import AsyncClient, ClientAuth, RemoteError
from ..client.diagnose import TLSMismatch
from ..runtime import run
from .common import CONTEXT, CliError, connect_failure, connection_options, options, resolve_board


def _listen_target() -> tuple[str, int] | None:
    """``$BUSBRIDGE_LISTEN`` as an address to dial from this host (wildcards → loopback)."""
    text = os.environ.get(env.LISTEN)
    if not text:
        return None
    try:
        host, port = parse_host_port(text)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=env.LISTEN) from None
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, port


async def _answer(host: str, port: int, timeout: float, auth: ClientAuth) -> str:
    """What the server said, or raise what went wrong (``OSError``)."""
    try:
        client = await AsyncClient.connect(host, port, timeout=timeout, auth=auth,
                                           name="busbridge-health")
    except RemoteError as e:
        return f"busbridge server, refused this check: {e}"
    try:
        w = client.welcome
        assert w is not None
        return f"board {w.board!r}, {w.server}"
    finally:
        await client.close()


def _unverified() -> ClientAuth:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ClientAuth(tls=ctx)


@click.command(context_settings=CONTEXT)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing when healthy.")
@connection_options
@click.pass_context
def health(ctx: click.Context, quiet: bool) -> None:
    """Exit 0 if a busbridge server answers the handshake, else 1 (one line saying why).

    Without --connect/--board: the port of $BUSBRIDGE_LISTEN (what `busbridge serve`
    listens on) on this host, else localhost:7707.  Meant for a container's
    HEALTHCHECK (see the Dockerfile).
    """
    opts = options(ctx)
    local = None if opts.explicit else _listen_target()
    if opts.board:
        host, port = parse_host_port(resolve_board(opts.board, opts.broker, opts.timeout))
    elif local is not None:
        host, port = local
    else:
        host, port = opts.host, opts.port
    where = format_address(host, port)
    try:
        try:
            said = run(_answer(host, port, opts.timeout, opts.auth))
        except TLSMismatch:
            if opts.auth.uses_tls:
                raise
            said = run(_answer(host, port, opts.timeout, _unverified())) + " (over TLS)"
    except OSError as e:
        raise CliError(f"unhealthy: {connect_failure(where, where, e)}") from None
    if not quiet:
        click.echo(f"healthy: {where}: {said}")

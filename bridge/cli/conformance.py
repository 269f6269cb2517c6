"""``busbridge conformance HOST:PORT``: hold a server against protocol/SPEC.md.

A thin front end to :mod:`bridge.conformance`, which talks raw msgpack over sockets
and shares no code with the client, so it can judge any implementation.  The
server and how to reach it (TLS, token) come from the usual connection options,
before or after the command; HOST:PORT, if given, wins over --connect.
"""

from __future__ import annotations

import click

from ..addresses import parse_host_port
from ..conformance import Policy, Target, all_checks, find_spec_md, run_checks
from ..conformance.registry import select
from .common import ConfigError, connection_options, options, resolve_board

#: The conformance kit waits longer than the other commands by default: some checks
#: provoke slow answers on purpose.
DEFAULT_TIMEOUT = 10.0


def _split(address: str) -> tuple[str, int]:
    try:
        return parse_host_port(address)
    except ValueError:
        raise click.BadParameter(f"{address!r} is not HOST:PORT", param_hint="HOST:PORT"
                                 ) from None


def _denied(text: str | None) -> str | None:
    """``--expect-denied BUS@ADDR``: a 7-bit address, as the kit writes it."""
    if text is None:
        return None
    from .i2ctools import I2CArgError, parse_chip_address

    bus, at, addr = text.rpartition("@")
    if not at or not bus:
        raise click.BadParameter(f"{text!r} is not BUS@ADDR (e.g. 1@0x76)",
                                 param_hint="--expect-denied")
    try:
        parse_chip_address(addr, all_addrs=True)
    except I2CArgError as e:
        raise click.BadParameter(str(e), param_hint="--expect-denied") from None
    return text


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("address", metavar="[HOST:PORT]", required=False)
@click.option("-k", "pattern", metavar="PATTERN", default=None,
              help="Only checks whose id matches (substring or glob; comma-separated).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--list", "list_only", is_flag=True, help="List the checks; run nothing.")
@click.option("--spec", "spec_path", metavar="SPEC.md", default=None,
              help="The SPEC.md to take vectors from (default: the installed one).")
@click.option("--expect-handshake-timeout", type=click.FloatRange(min=0), default=None,
              metavar="SECONDS", help="The server's handshake timeout (enables its check).")
@click.option("--expect-idle-timeout", type=click.FloatRange(min=0), default=None,
              metavar="SECONDS", help="The server's idle timeout (enables its check).")
@click.option("--expect-max-clients", type=click.IntRange(min=1), default=None, metavar="N",
              help="The server's connection limit (enables its check).")
@click.option("--expect-denied", metavar="BUS@ADDR", default=None,
              help="An I2C address (7-bit) an access rule forbids this client to write.")
@connection_options
@click.pass_context
def conformance(ctx: click.Context, address: str | None, pattern: str | None, as_json: bool,
                list_only: bool, spec_path: str | None,
                expect_handshake_timeout: float | None, expect_idle_timeout: float | None,
                expect_max_clients: int | None, expect_denied: str | None) -> None:
    """Check a busbridge server against protocol/SPEC.md over raw sockets.

    One line per check (PASS/FAIL/SKIP, id, SPEC.md section, reason), then a summary;
    exit 1 if any check failed.  The checks take leases briefly and write to the
    default board's EEPROM scratch area (0x0fc0-0x0fff); see docs/conformance.md.
    --timeout is the longest wait for any one answer (default 10 s here).
    """
    try:
        spec_file = find_spec_md(spec_path)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None
    if list_only:
        for chk in select(all_checks(spec_file.read_text(encoding="utf-8")), pattern):
            click.echo(f"{chk.id:<34} {chk.section:<12} {chk.title}")
        return
    opts = options(ctx)
    if address is not None:
        host, port = _split(address)
    elif opts.board:
        host, port = _split(resolve_board(opts.board, opts.broker, opts.timeout))
    else:
        host, port = opts.host, opts.port
    auth = opts.auth
    target = Target(host, port, cafile=auth.cafile, certfile=auth.certfile,
                    keyfile=auth.keyfile, token=auth.token,
                    server_name=auth.server_hostname, tls=bool(auth.tls),
                    timeout=opts.timeout if opts.timeout_given else DEFAULT_TIMEOUT)
    policy = Policy(expect_handshake_timeout, expect_idle_timeout, expect_max_clients,
                    _denied(expect_denied))
    report = run_checks(target, pattern, spec_path=str(spec_file), policy=policy,
                        on_result=None if as_json else lambda r: click.echo(r.line()))
    if as_json:
        click.echo(report.to_json())
    else:
        click.echo(report.summary())
    if not report.ok:
        ctx.exit(1)

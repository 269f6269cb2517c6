"""``busbridge conformance HOST:PORT``: hold a server against protocol/SPEC.md.

A thin front end to :mod:`bridge.conformance`, which talks raw msgpack over sockets
and shares no code with the client, so it can judge any implementation.
"""

from __future__ import annotations

import os

import click

from ..conformance import Policy, Target, all_checks, find_spec_md, run_checks
from ..conformance.registry import select
from .common import ConfigError


def _split(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise click.BadParameter(f"{address!r} is not HOST:PORT", param_hint="HOST:PORT")
    return host.strip("[]"), int(port)


def _token(token_file: str | None) -> str | None:
    path = token_file or os.environ.get("BUSBRIDGE_TOKEN_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read().strip()
        except OSError as e:
            raise ConfigError(f"cannot read token file {path}: {e.strerror or e}") from None
    return os.environ.get("BUSBRIDGE_TOKEN") or None


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("address", metavar="HOST:PORT", required=False)
@click.option("--token-file", metavar="FILE", default=None,
              help="File holding the access token [env: BUSBRIDGE_TOKEN_FILE; or the token "
                   "itself in BUSBRIDGE_TOKEN].")
@click.option("--tls", is_flag=True, help="Use TLS, trusting the system CAs.")
@click.option("--tls-ca", metavar="PEM", default=None, help="CA of the server's certificate.")
@click.option("--tls-cert", metavar="PEM", default=None,
              help="Client certificate; give it only for a server that requires mutual TLS.")
@click.option("--tls-key", metavar="PEM", default=None, help="Key of --tls-cert.")
@click.option("--tls-server-name", metavar="NAME", default=None,
              help="Name to verify in the server's certificate (default: HOST).")
@click.option("-k", "pattern", metavar="PATTERN", default=None,
              help="Only checks whose id matches (substring or glob; comma-separated).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--list", "list_only", is_flag=True, help="List the checks; run nothing.")
@click.option("--spec", "spec_path", metavar="SPEC.md", default=None,
              help="The SPEC.md to take vectors from (default: the installed one).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              metavar="SECONDS", help="Longest wait for any one answer.")
@click.option("--expect-handshake-timeout", type=click.FloatRange(min=0), default=None,
              metavar="SECONDS", help="The server's handshake timeout (enables its check).")
@click.option("--expect-idle-timeout", type=click.FloatRange(min=0), default=None,
              metavar="SECONDS", help="The server's idle timeout (enables its check).")
@click.option("--expect-max-clients", type=click.IntRange(min=1), default=None, metavar="N",
              help="The server's connection limit (enables its check).")
@click.option("--expect-denied", metavar="BUS@ADDR", default=None,
              help="An I2C address an access rule forbids this client to write.")
def conformance(address: str | None, token_file: str | None, tls: bool, tls_ca: str | None,
                tls_cert: str | None, tls_key: str | None, tls_server_name: str | None,
                pattern: str | None, as_json: bool, list_only: bool, spec_path: str | None,
                timeout: float, expect_handshake_timeout: float | None,
                expect_idle_timeout: float | None, expect_max_clients: int | None,
                expect_denied: str | None) -> None:
    """Check a busbridge server against protocol/SPEC.md over raw sockets.

    One line per check (PASS/FAIL/SKIP, id, SPEC.md section, reason), then a summary;
    exit 1 if any check failed.  The checks take leases briefly and write to the
    default board's EEPROM scratch area (0x0fc0-0x0fff); see docs/conformance.md.
    """
    try:
        spec_file = find_spec_md(spec_path)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None
    if list_only:
        for chk in select(all_checks(spec_file.read_text(encoding="utf-8")), pattern):
            click.echo(f"{chk.id:<34} {chk.section:<12} {chk.title}")
        return
    if address is None:
        raise click.UsageError("missing HOST:PORT (the server to check)")
    host, port = _split(address)
    target = Target(host, port, cafile=tls_ca, certfile=tls_cert, keyfile=tls_key,
                    token=_token(token_file), server_name=tls_server_name, tls=tls,
                    timeout=timeout)
    policy = Policy(expect_handshake_timeout, expect_idle_timeout, expect_max_clients,
                    expect_denied)
    report = run_checks(target, pattern, spec_path=str(spec_file), policy=policy,
                        on_result=None if as_json else lambda r: click.echo(r.line()))
    if as_json:
        click.echo(report.to_json())
    else:
        click.echo(report.summary())
    if not report.ok:
        click.get_current_context().exit(1)

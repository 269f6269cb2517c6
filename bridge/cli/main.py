"""The ``busbridge`` command: the top-level group, its global options, and ``main()``.

Every command lives in its own module of this package (``serve``, ``info``,
``i2c``, ``spi``, ``demo``, ``bench``, ``lease``, ``run``, ``vhost-user``,
``boards``, ``token``, ``conformance``, ``mount``) and is only registered here.  The global options
(--connect/--board, TLS, token, timeout, logging) are read once into an
:class:`~bridge.cli.common.Options` that subcommands find in the click context.
Errors are one line on stderr, never a traceback: exit 1 for anything the board
or server refused, 2 for a bad command line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from .. import __version__, env, logs
from .bench import bench
from .boards import boards
from .common import CONTEXT, DEFAULT_TIMEOUT, DEFAULT_URL, ConnSpec, show_error
from .conformance import conformance
from .demo import demo
from .health import health
from .i2c import i2c
from .info import info
from .lease import lease
from .mount import mount
from .run import run
from .serve import serve
from .spi import spi
from .token import token
from .vhost import vhost_user


class BusbridgeGroup(click.Group):
    """The top-level group: renders every error in the one style (:func:`show_error`)."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.Abort as e:
            if isinstance(e.__cause__, KeyboardInterrupt):
                sys.exit(130)
            logs.say("aborted", logging.ERROR)
            sys.exit(1)
        except click.ClickException as e:
            show_error(e)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            sys.exit(130)
        except BrokenPipeError:
            # Output piped into `head`: stop quietly, and keep the interpreter's
            # final flush from failing on the same pipe.
            with contextlib.suppress(OSError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            sys.exit(141)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=BusbridgeGroup, context_settings=CONTEXT)
@click.option("--connect", "url", metavar="HOST:PORT", envvar=env.URL,
              default=DEFAULT_URL, show_default=True, show_envvar=True,
              help="Server to talk to.")
@click.option("--board", metavar="NAME", envvar=env.BOARD, default=None,
              show_envvar=True, help="Board to talk to, found by name through the MQTT "
              "broker (instead of --connect; see `busbridge boards`).")
@click.option("--broker", metavar="[mqtt[s]://]HOST[:PORT]", envvar=env.BROKER,
              default=None, show_envvar=True,
              help="MQTT broker for --board and `boards`; default localhost:1883.")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-v info, -vv debug).")
@click.option("--log-json", is_flag=True, help="Log JSON lines instead of key=value.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_TIMEOUT,
              show_default=True, metavar="SECONDS", help="Connect and request timeout.")
@click.option("--tls/--no-tls", "tls", default=None,
              help=f"Use TLS (implied by --tls-ca/--tls-cert) [env: {env.TLS}].")
@click.option("--tls-ca", metavar="PEM", default=None,
              help=f"CA that signed the server's certificate [env: {env.TLS_CA}].")
@click.option("--tls-cert", metavar="PEM", default=None,
              help=f"Client certificate for mutual TLS [env: {env.TLS_CERT}].")
@click.option("--tls-key", metavar="PEM", default=None,
              help=f"Key of --tls-cert [env: {env.TLS_KEY}].")
@click.option("--tls-server-name", metavar="NAME", default=None,
              help="Name to verify in the server's certificate (default: the host) "
                   f"[env: {env.TLS_SERVER_NAME}].")
@click.option("--token-file", metavar="FILE", default=None,
              help=f"File holding the access token [env: {env.TOKEN_FILE}; or the token "
                   f"itself in {env.TOKEN}]. Never put a token on the command line.")
@click.version_option(__version__, "--version", prog_name="busbridge")
@click.pass_context
def cli(ctx: click.Context, url: str, board: str | None, broker: str | None, verbose: int,
        log_json: bool, timeout: float, tls: bool | None, tls_ca: str | None,
        tls_cert: str | None, tls_key: str | None, tls_server_name: str | None,
        token_file: str | None) -> None:
    """busbridge: a board's I2C and SPI buses over the network (virtio-i2c / virtio-spi).

    \b
    busbridge serve                     serve the built-in simulated board
    busbridge info                      what the server offers
    busbridge i2c detect -y 1           i2cdetect
    busbridge i2c get -y 1 0x48 0x0f w  i2cget
    busbridge i2c transfer -y 1 w1@0x50 0x00 r8
    busbridge spi transfer 0 0 9f000000
    busbridge demo                      a tour of the simulated board
    busbridge --board lab-pi-3 info     a board found by name (MQTT)
    busbridge boards                    the boards online
    """
    logs.setup(verbose, json_format=log_json)
    cmdline = click.core.ParameterSource.COMMANDLINE
    given = {name: ctx.get_parameter_source(name) == cmdline
             for name in ("url", "board", "timeout")}
    spec = ConnSpec(url, given["url"], board, given["board"], broker, timeout,
                    given["timeout"], tls, tls_ca, tls_cert, tls_key, tls_server_name,
                    token_file, verbose)
    # Checked by the command that connects, after its own connection options are merged.
    ctx.obj = spec


for _command in (serve, info, health, i2c, spi, demo, bench, lease, run, vhost_user, boards,
                 token, conformance, mount):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry: errors as one line, quiet on Ctrl-C and closed pipes."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="busbridge")


if __name__ == "__main__":
    main()

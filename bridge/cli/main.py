"""The ``busbridge`` command: the top-level group, its global options, and ``main()``.

Every command lives in its own module of this package (``serve``, ``info``,
``i2c``, ``spi``, ``demo``, ``bench``, ``lease``, ``run``, ``vhost-user``,
``boards``, ``token``, ``sim``, ``trace``) and is only registered here.  The global options
(--connect/--board, TLS, token, timeout, logging) are read once into an
:class:`~bridge.cli.common.Options` that subcommands find in the click context.
Errors are one line on stderr, never a traceback: exit 1 for anything the board
or server refused, 2 for a bad command line.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence

import click

from .. import __version__, logs
from ..client import parse_address
from ..client.auth import ClientAuth
from .bench import bench
from .boards import boards
from .common import CONTEXT, DEFAULT_URL, Options, pick_target
from .conformance import conformance
from .demo import demo
from .i2c import i2c
from .info import info
from .lease import lease
from .mount import mount
from .run import run
from .serve import serve
from .sim import sim, trace
from .spi import spi
from .token import token
from .vhost import vhost_user


@click.group(context_settings=CONTEXT)
@click.option("--connect", "url", metavar="HOST:PORT", envvar="BUSBRIDGE_URL",
              default=DEFAULT_URL, show_default=True, show_envvar=True,
              help="Server to talk to.")
@click.option("--board", metavar="NAME", envvar="BUSBRIDGE_BOARD", default=None,
              show_envvar=True, help="Board to talk to, found by name through the MQTT "
              "broker (instead of --connect; see `busbridge boards`).")
@click.option("--broker", metavar="[mqtt[s]://]HOST[:PORT]", envvar="BUSBRIDGE_BROKER",
              default=None, show_envvar=True,
              help="MQTT broker for --board and `boards`; default localhost:1883.")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-v info, -vv debug).")
@click.option("--log-json", is_flag=True, help="Log JSON lines instead of key=value.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=5.0,
              show_default=True, metavar="SECONDS", help="Connect and request timeout.")
@click.option("--tls/--no-tls", "tls", default=None,
              help="Use TLS (implied by --tls-ca/--tls-cert) [env: BUSBRIDGE_TLS].")
@click.option("--tls-ca", metavar="PEM", default=None,
              help="CA that signed the server's certificate [env: BUSBRIDGE_TLS_CA].")
@click.option("--tls-cert", metavar="PEM", default=None,
              help="Client certificate for mutual TLS [env: BUSBRIDGE_TLS_CERT].")
@click.option("--tls-key", metavar="PEM", default=None,
              help="Key of --tls-cert [env: BUSBRIDGE_TLS_KEY].")
@click.option("--tls-server-name", metavar="NAME", default=None,
              help="Name to verify in the server's certificate (default: the host) "
                   "[env: BUSBRIDGE_TLS_SERVER_NAME].")
@click.option("--token-file", metavar="FILE", default=None,
              help="File holding the access token [env: BUSBRIDGE_TOKEN_FILE; or the token "
                   "itself in BUSBRIDGE_TOKEN]. Never put a token on the command line.")
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
    busbridge sim set 1 0x48 temperature=31.25   test control (admin)
    busbridge trace --bus 1             every transaction, live (admin)
    """
    logs.setup(verbose, json_format=log_json)
    try:
        host, port = parse_address(url)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--connect") from None
    board = pick_target(ctx, "url", board)
    try:
        auth = ClientAuth.from_env(tls=tls, cafile=tls_ca, certfile=tls_cert, keyfile=tls_key,
                                   server_hostname=tls_server_name, token_file=token_file)
    except (OSError, ValueError) as e:
        raise click.BadParameter(str(e), param_hint="--token-file") from None
    ctx.obj = Options(f"board {board}" if board else url, host, port, timeout, verbose,
                      board, broker, auth)


for _command in (serve, info, i2c, spi, demo, bench, lease, run, vhost_user, boards, token,
                 conformance, mount, sim, trace):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry: click without its tracebacks, quiet on Ctrl-C and closed pipes."""
    try:
        rv = cli.main(args=list(argv) if argv is not None else None, prog_name="busbridge",
                      standalone_mode=False)
    except click.exceptions.Abort as e:
        if isinstance(e.__cause__, KeyboardInterrupt):
            sys.exit(130)
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except click.ClickException as e:
        e.show()
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


if __name__ == "__main__":
    main()

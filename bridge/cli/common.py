"""What every ``busbridge`` command shares: the global options, the error style, a client.

Errors are one line on stderr, never a traceback: exit 1 for anything the board
or server refused, 2 for a bad command line.  Naming a board (``--board``)
needs the ``mqtt`` extra, which is imported only when a board is named, so a
guest install without it keeps every other command.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any, TypeVar

import click

from protocol.limits import DEFAULT_PORT

from ..client import AsyncClient, ConnectionLost, RemoteError, TransferError
from ..client.auth import ClientAuth
from ..dropin.session import env_leases
from ..logs import printable
from ..runtime import run

T = TypeVar("T")

DEFAULT_URL = f"localhost:{DEFAULT_PORT}"
CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
INSTALL_HINT = "pip install 'busbridge[mqtt]'"


# ---------------------------------------------------------------------------
# Errors and plumbing
# ---------------------------------------------------------------------------


class CliError(click.ClickException):
    """A failure to report as one ``busbridge: error: ...`` line, exit 1."""

    prefix = "busbridge: error: "

    def show(self, file: IO[Any] | None = None) -> None:
        # Messages carry text from the server and, through it, from other clients
        # (lease holders, bus names): never a control character on the terminal.
        click.echo(f"{self.prefix}{printable(self.format_message())}", file=file,
                   err=file is None)


class ConnectError(CliError):
    """No server to talk to: said plainly, as it is usually a wrong address or a stopped server."""

    prefix = "busbridge: "


class ConfigError(CliError):
    """A board file that cannot be used: a usage problem, so exit 2."""

    exit_code = 2


def usage_error(e: Exception) -> click.UsageError:
    return click.UsageError(str(e))


@dataclass(frozen=True)
class Options:
    """Global options, shared by every subcommand through the click context."""

    url: str
    host: str
    port: int
    timeout: float
    verbose: int = 0
    #: A board name to find through the MQTT broker instead of ``host:port``.
    board: str | None = None
    broker: str | None = None
    auth: ClientAuth = dataclasses.field(default_factory=ClientAuth)


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def errmsg(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def with_client(opts: Options, fn: Callable[[AsyncClient], Awaitable[T]]) -> T:
    """Connect, run ``fn``, close; map every expected failure to a one-line CliError."""

    async def main() -> T:
        host, port = opts.host, opts.port
        if opts.board:
            host, port = await resolve_board_address(opts)
        try:
            client = await AsyncClient.connect(host, port, timeout=opts.timeout,
                                               leases=env_leases(), auth=opts.auth)
        except RemoteError as e:
            raise CliError(f"{opts.url} refused the connection: {e.message}") from None
        except OSError as e:
            raise ConnectError(f"cannot connect to {opts.url}: {errmsg(e)}") from None
        try:
            return await fn(client)
        finally:
            await client.close()

    try:
        return run(main())
    except TransferError as e:
        raise CliError(errmsg(e)) from None
    except RemoteError as e:
        raise CliError(e.message) from None
    except ConnectionLost as e:
        raise CliError(str(e)) from None
    except OSError as e:  # TimeoutError included
        raise CliError(errmsg(e)) from None
    except ValueError as e:  # refused before sending, e.g. above a limit
        raise CliError(str(e)) from None


async def resolve_board_address(opts: Options) -> tuple[str, int]:
    """``--board``: the board's address from the broker, or a one-line error."""
    assert opts.board
    need_aiomqtt("--board")
    from ..mqtt.discovery import resolve

    try:
        return await resolve(opts.board, opts.broker, timeout=opts.timeout)
    except OSError as e:
        raise ConnectError(e.strerror or str(e)) from None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--broker") from None


def resolve_board(board: str, broker: str | None, timeout: float) -> str:
    """HOST:PORT of ``board`` (synchronous; for commands that are not async)."""
    need_aiomqtt("--board")
    from ..mqtt.discovery import resolve_url

    try:
        return resolve_url(board, broker, timeout=timeout)
    except OSError as e:
        raise click.ClickException(e.strerror or str(e)) from None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--broker") from None


def need_aiomqtt(what: str) -> None:
    """A one-line error instead of an ImportError when the ``mqtt`` extra is missing."""
    try:
        import aiomqtt  # noqa: F401
    except ImportError:
        raise click.ClickException(f"{what} needs the MQTT client: {INSTALL_HINT}") from None


def pick_target(ctx: click.Context, url_param: str, board: str | None) -> str | None:
    """Which of ``--connect`` and ``--board`` applies: the command line beats the environment.

    Both on the command line is a usage error; both from the environment means
    the board (a lab-wide ``BUSBRIDGE_BOARD`` is the more specific setting).
    """
    if not board:
        return None
    src_url = ctx.get_parameter_source(url_param)
    src_board = ctx.get_parameter_source("board")
    cmdline = click.core.ParameterSource.COMMANDLINE
    if src_url == cmdline and src_board == cmdline:
        raise click.UsageError("give --connect HOST:PORT or --board NAME, not both")
    if src_url == cmdline:
        return None
    return board


def confirm(lines: Sequence[str], default: bool) -> bool:
    """i2c-tools' prompt: lines on stderr, one answer line on stdin; EOF means no."""
    for line in lines:
        click.echo(line, err=True)
    click.echo(f"Continue? [{'Y/n' if default else 'y/N'}] ", err=True, nl=False)
    answer = sys.stdin.readline()
    if not answer:
        ok = False
    elif answer[0] in "yY":
        ok = True
    elif answer[0] in "nN":
        ok = False
    else:
        ok = default
    if not ok:
        click.echo("Aborting on user request.", err=True)
    return ok


def options(ctx: click.Context) -> Options:
    opts = ctx.find_object(Options)
    assert opts is not None
    return opts

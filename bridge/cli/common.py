"""What every ``busbridge`` command shares: the global options, the error style, a client.

Errors are one line on stderr, never a traceback: exit 1 for anything the board
or server refused, 2 for a bad command line.  Naming a board (``--board``)
needs the ``mqtt`` extra, which is imported only when a board is named, so a
guest install without it keeps every other command.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import click

from protocol.limits import DEFAULT_PORT

from .. import env, logs
from ..addresses import format_address
from ..client import AsyncClient, ConnectionLost, RemoteError, TransferError, parse_address
from ..client.auth import ClientAuth
from ..dropin.session import env_leases
from ..runtime import run

T = TypeVar("T")

DEFAULT_URL = f"localhost:{DEFAULT_PORT}"
DEFAULT_TIMEOUT = 5.0
CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
INSTALL_HINT = "pip install 'busbridge[mqtt]'"


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

#: The one prefix of every error the command prints (see :func:`show_error`).
ERROR_PREFIX = "busbridge: error: "


class CliError(click.ClickException):
    """A failure to report as one ``busbridge: error: ...`` line, exit 1."""


class ConnectError(CliError):
    """No server to talk to: said plainly, as it is usually a wrong address or a stopped server."""


class ConfigError(CliError):
    """A board file that cannot be used: a usage problem, so exit 2."""

    exit_code = 2


def usage_error(e: Exception) -> click.UsageError:
    return click.UsageError(str(e))


def show_error(e: click.ClickException) -> None:
    """Every error the same way: ``busbridge: error: MESSAGE`` (after the usage line for a
    command-line mistake), or one JSON record under ``--log-json``."""
    if isinstance(e, click.UsageError) and e.ctx is not None and not logs.json_mode():
        hint = ""
        if e.ctx.command.get_help_option(e.ctx) is not None:
            hint = f"Try '{e.ctx.command_path} {e.ctx.help_option_names[0]}' for help.\n"
        click.echo(f"{e.ctx.get_usage()}\n{hint}", err=True)
    logs.say(e.format_message(), logging.ERROR, exit_code=e.exit_code)


# ---------------------------------------------------------------------------
# Connection options: before or after the subcommand
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnSpec:
    """The connection options as given (command line, environment, defaults), unchecked.

    The group's options fill one; a subcommand's own copies of the same options
    (:func:`connection_options`) are merged over it, so ``busbridge --connect X info``
    and ``busbridge info --connect X`` mean the same, and the later one wins.
    """

    url: str = DEFAULT_URL
    url_given: bool = False  # on the command line (beats an environment --board)
    board: str | None = None
    board_given: bool = False
    broker: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    timeout_given: bool = False
    tls: bool | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_server_name: str | None = None
    token_file: str | None = None
    verbose: int = 0

    @classmethod
    def from_env(cls) -> ConnSpec:
        """What applies with no option on the command line (a subcommand used on its own)."""
        return cls(url=os.environ.get(env.URL) or DEFAULT_URL,
                   board=os.environ.get(env.BOARD) or None,
                   broker=os.environ.get(env.BROKER) or None)

    def merged(self, given: dict[str, Any]) -> ConnSpec:
        changes = {k: v for k, v in given.items() if v is not None}
        if "url" in changes:
            changes["url_given"] = True
        if "board" in changes:
            changes["board_given"] = True
        if "timeout" in changes:
            changes["timeout_given"] = True
        return dataclasses.replace(self, **changes)

    def options(self) -> Options:
        """Check the options and make the :class:`Options` commands use; click errors."""
        try:
            host, port = parse_address(self.url)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--connect") from None
        board = self.board
        if board and self.url_given:
            # Both on the command line: a mistake.  Otherwise the command line beats the
            # environment, and of two variables the board (the more specific) wins.
            if self.board_given:
                raise click.UsageError("give --connect HOST:PORT or --board NAME, not both")
            board = None
        try:
            auth = ClientAuth.from_env(tls=self.tls, cafile=self.tls_ca, certfile=self.tls_cert,
                                       keyfile=self.tls_key,
                                       server_hostname=self.tls_server_name,
                                       token_file=self.token_file)
        except (OSError, ValueError) as e:
            raise click.BadParameter(str(e), param_hint="--token-file") from None
        explicit = self.url_given or bool(board) or bool(os.environ.get(env.URL))
        return Options(f"board {board}" if board else self.url, host, port, self.timeout,
                       self.verbose, board, self.broker, auth, self.timeout_given, explicit)


#: ``(parameter name, ConnSpec field, click.option arguments)`` of each connection option.
_CONN_OPTIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("--connect", "url", {"metavar": "HOST:PORT", "help": "Server to talk to."}),
    ("--board", "board", {"metavar": "NAME", "help": "Board to talk to, found by name "
                          "through the MQTT broker (instead of --connect; see `busbridge "
                          "boards`)."}),
    ("--broker", "broker", {"metavar": "[mqtt[s]://]HOST[:PORT]",
                            "help": "MQTT broker for --board and `boards`; default "
                                    "localhost:1883."}),
    ("--timeout", "timeout", {"type": click.FloatRange(min=0, min_open=True),
                              "metavar": "SECONDS", "help": "Connect and request timeout."}),
    ("--tls/--no-tls", "tls", {"help": "Use TLS (implied by --tls-ca/--tls-cert)."}),
    ("--tls-ca", "tls_ca", {"metavar": "PEM", "help": "CA that signed the server's "
                            "certificate."}),
    ("--tls-cert", "tls_cert", {"metavar": "PEM", "help": "Client certificate for mutual "
                                "TLS."}),
    ("--tls-key", "tls_key", {"metavar": "PEM", "help": "Key of --tls-cert."}),
    ("--tls-server-name", "tls_server_name", {"metavar": "NAME", "help": "Name to verify in "
                                              "the server's certificate (default: the host)."}),
    ("--token-file", "token_file", {"metavar": "FILE", "help": "File holding the access "
                                    "token. Never put a token on the command line."}),
]

#: Said in the help of every command that takes the connection options.
CONNECTION_NOTE = ("Connection options (--connect, --board, --broker, --timeout, --tls*, "
                   "--token-file) go before or after the command; see busbridge -h.")

F = TypeVar("F", bound=Callable[..., Any])


def connection_options(f: F) -> F:
    """Accept the connection options after the subcommand too (hidden in its help, which
    says so); given there, they win over the ones before it and the environment."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {field: kwargs.pop(f"conn_{field}") for _, field, _ in _CONN_OPTIONS}
        ctx = click.get_current_context()
        ctx.obj = (ctx.find_object(ConnSpec) or ConnSpec.from_env()).merged(given).options()
        return f(*args, **kwargs)

    for decl, field, kw in reversed(_CONN_OPTIONS):
        wrapper = click.option(decl, f"conn_{field}", default=None, hidden=True, **kw)(wrapper)
    wrapper.__doc__ = (f.__doc__ or "").rstrip() + "\n\n" + CONNECTION_NOTE
    return cast(F, wrapper)


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
    #: --timeout was given (a command with another default may use its own).
    timeout_given: bool = False
    #: The server was named (--connect, --board or their variables), not defaulted.
    explicit: bool = False

    @property
    def address(self) -> str:
        """``HOST:PORT`` to dial when no board is named."""
        return format_address(self.host, self.port)


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def errmsg(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def connect_failure(where: str, address: str, e: BaseException) -> str:
    """``cannot connect to WHERE: WHY``, unless WHY already names the address."""
    why = errmsg(e)
    return why if address in why else f"cannot connect to {where}: {why}"


def with_client(opts: Options, fn: Callable[[AsyncClient], Awaitable[T]]) -> T:
    """Connect, run ``fn``, close; map every expected failure to a one-line CliError."""

    async def main() -> T:
        host, port = opts.host, opts.port
        where = opts.url
        if opts.board:
            host, port = await resolve_board_address(opts)
            where = f"{opts.url} at {format_address(host, port)} (its address on the broker)"
        try:
            client = await AsyncClient.connect(host, port, timeout=opts.timeout,
                                               leases=env_leases(), auth=opts.auth)
        except RemoteError as e:
            raise CliError(f"{where} refused the connection: {e.message}") from None
        except OSError as e:
            raise ConnectError(connect_failure(where, format_address(host, port), e)) from None
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
        raise ConnectError(e.strerror or str(e)) from None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--broker") from None


def need_aiomqtt(what: str) -> None:
    """A one-line error instead of an ImportError when the ``mqtt`` extra is missing."""
    try:
        import aiomqtt  # noqa: F401
    except ImportError:
        raise CliError(f"{what} needs the MQTT client: {INSTALL_HINT}") from None


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
    """The checked connection options (made by :func:`connection_options`)."""
    opts = ctx.find_object(Options)
    if opts is None:
        opts = (ctx.find_object(ConnSpec) or ConnSpec.from_env()).options()
    return opts


def verbosity(ctx: click.Context) -> int:
    """``-v`` count of the top-level group (0 when a command runs on its own)."""
    spec = ctx.find_object(ConnSpec)
    return spec.verbose if spec is not None else 0

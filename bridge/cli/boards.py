"""CLI glue for the control plane: ``busbridge boards``, ``--board``, ``serve``'s announcer.

Nothing here imports ``aiomqtt`` at module level: a guest install without the
``mqtt`` extra keeps every command that does not name a board.
"""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ..config import Board, MqttSettings
    from ..mqtt.discovery import BoardRecord
    from ..mqtt.presence import Presence
    from ..server import Server

INSTALL_HINT = "pip install 'busbridge[mqtt]'"

BOARD_HELP = ("Board to talk to, found by name in the MQTT broker's retained inventory "
              "(instead of --connect).")
BROKER_HELP = "MQTT broker for --board: [mqtt[s]://][USER[:PASS]@]HOST[:PORT] (default " \
              "localhost:1883)."


def need_aiomqtt(what: str) -> None:
    """A one-line error instead of an ImportError when the ``mqtt`` extra is missing."""
    try:
        import aiomqtt  # noqa: F401
    except ImportError:
        raise click.ClickException(f"{what} needs the MQTT client: {INSTALL_HINT}") from None


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


# ---------------------------------------------------------------------------
# serve
# ---------------------------------------------------------------------------


def mqtt_settings(board: Board, broker: str | None, advertise: str | None) -> MqttSettings | None:
    """The board file's ``[mqtt]`` with ``serve --broker/--advertise`` applied, or None."""
    from ..config import MqttSettings

    base = board.mqtt
    if base is None and broker is None:
        if advertise is not None:
            raise click.UsageError("--advertise needs a broker (--broker or [mqtt] broker)")
        return None
    updates: dict[str, Any] = {}
    if broker is not None:
        updates["broker"] = broker
    if advertise is not None:
        updates["advertise"] = advertise
    try:
        data = {**(base.model_dump() if base is not None else {}), **updates}
        settings = MqttSettings.model_validate(data)
        from ..mqtt.topics import BrokerAddress, Topics

        BrokerAddress.parse(settings.broker).client_kwargs(settings.ca_file)  # TLS files too
        Topics(settings.prefix).board(board.name, "status")
    except (ValueError, OSError) as e:
        raise click.UsageError(f"MQTT settings: {e}") from None
    need_aiomqtt("announcing the board on MQTT ([mqtt] in the board file, or --broker)")
    return settings


async def serve_announced(settings: MqttSettings | None, description: str,
                          serve: Callable[[Callable[[Server], None]], Awaitable[None]],
                          ready: Callable[[Server], None]) -> None:
    """Run ``serve(ready)``; once the server listens, start its presence beside it.

    The presence is stopped (announcing "offline") after the server has closed,
    so a board never says offline while it still answers.
    """
    started: list[Presence] = []

    def on_ready(server: Server) -> None:
        ready(server)
        if settings is not None:
            from ..mqtt.presence import Presence

            p = Presence(server, settings, description=description)
            p.start()
            started.append(p)
            click.echo(f"busbridge: announcing {server.board.name!r} as {p.address} on MQTT "
                       f"broker {p.broker} (topics {p.topic('+')})", err=True)

    try:
        await serve(on_ready)
    finally:
        for p in started:
            await p.stop()


# ---------------------------------------------------------------------------
# boards
# ---------------------------------------------------------------------------


def _age(iso: str, now: float) -> str:
    try:
        t = calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return iso
    s = max(0, int(now - t))
    return f"{s}s ago" if s < 120 else f"{s // 60}m ago" if s < 7200 else f"{s // 3600}h ago"


def _uptime(seconds: float) -> str:
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def board_rows(records: list[BoardRecord], now: float | None = None) -> list[list[str]]:
    now = time.time() if now is None else now
    rows = [["BOARD", "STATE", "ADDRESS", "I2C", "SPI", "UPTIME", "REQUESTS", "ERRORS",
             "LAST SEEN"]]
    for r in records:
        h = r.health or {}
        buses = r.buses()
        rows.append([
            r.name, "online" if r.online else (r.status or {}).get("state", "?"),
            r.address or "-", ",".join(buses["i2c"]) or "-", ",".join(buses["spi"]) or "-",
            _uptime(float(h["uptime_s"])) if "uptime_s" in h else "-",
            str(h.get("requests", "-")), str(h.get("errors", "-")), _age(r.last_seen, now),
        ])
    return rows


def format_table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


@click.command("boards", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--broker", metavar="[mqtt[s]://]HOST[:PORT]", default=None,
              help="MQTT broker (default: busbridge --broker, $BUSBRIDGE_BROKER, "
                   "localhost:1883).")
@click.option("--all", "show_all", is_flag=True, help="Include boards that are offline.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable: everything retained.")
@click.pass_context
def boards(ctx: click.Context, broker: str | None, show_all: bool, as_json: bool) -> None:
    """List the boards announced on the MQTT broker: name, address, buses, last health."""
    need_aiomqtt("busbridge boards")
    from ..mqtt.discovery import run_sync, snapshot

    broker = broker or getattr(ctx.obj, "broker", None)
    timeout = float(getattr(ctx.obj, "timeout", 5.0))
    try:
        found = run_sync(snapshot(broker, timeout=timeout))
    except OSError as e:
        raise click.ClickException(e.strerror or str(e)) from None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--broker") from None
    records = sorted((r for r in found.values() if show_all or r.online), key=lambda r: r.name)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in records], indent=2))
        return
    if not records:
        click.echo("no boards online" if not show_all else "no boards known", err=True)
        return
    click.echo("\n".join(format_table(board_rows(records))))

"""``busbridge boards``: the boards announced on the MQTT broker, as a table or JSON.

Nothing here imports ``aiomqtt`` at module level: a guest install without the
``mqtt`` extra keeps every command that does not name a board.
"""

from __future__ import annotations

import calendar
import json
import time
from typing import TYPE_CHECKING

import click

from .. import logs
from .common import ConnectError, connection_options, need_aiomqtt, options

if TYPE_CHECKING:
    from ..mqtt.discovery import BoardRecord


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
            ",".join(r.addresses) or "-", ",".join(buses["i2c"]) or "-",
            ",".join(buses["spi"]) or "-",
            _uptime(float(h["uptime_s"])) if "uptime_s" in h else "-",
            str(h.get("requests", "-")), str(h.get("errors", "-")), _age(r.last_seen, now),
        ])
    return rows


def format_table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


@click.command("boards", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--all", "show_all", is_flag=True, help="Include boards that are offline.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable: everything retained.")
@connection_options
@click.pass_context
def boards(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """List the boards announced on the MQTT broker (--broker, default localhost:1883):
    name, address, buses, last health."""
    need_aiomqtt("busbridge boards")
    from ..mqtt.discovery import run_sync, snapshot

    opts = options(ctx)
    try:
        found = run_sync(snapshot(opts.broker, timeout=opts.timeout))
    except OSError as e:
        raise ConnectError(e.strerror or str(e)) from None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--broker") from None
    records = sorted((r for r in found.values() if show_all or r.online), key=lambda r: r.name)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in records], indent=2))
        return
    if not records:
        logs.say("no boards online" if not show_all else "no boards known")
        return
    click.echo("\n".join(format_table(board_rows(records))))

"""``busbridge sim ...`` and ``busbridge trace``: the admin channel from the command line.

Thin wrappers over ``client.sim`` and ``client.trace`` (docs/admin.md): set what
a simulated chip measures, inject faults, read a simulated bus's log, screenshot
a display, and watch every client's transactions live.  Values on the command
line are numbers (``31.25``, ``0x2a``), ``true``/``false``, or text.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import click

from ..client import AsyncClient, describe_event
from .common import CONTEXT, connection_options, options, with_client


def parse_value(text: str) -> Any:
    """``31.25`` -> float, ``0x2a``/``42`` -> int, ``true``/``false`` -> bool, else the text."""
    low = text.strip().lower()
    if low in ("true", "on", "yes"):
        return True
    if low in ("false", "off", "no"):
        return False
    try:
        return int(low, 0)
    except ValueError:
        pass
    try:
        return float(low)
    except ValueError:
        return text


def parse_assignments(items: Sequence[str], what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint=what)
        out[name.strip()] = parse_value(value)
    return out


def parse_target(text: str, spi: bool) -> int:
    try:
        n = int(text, 0)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a number",
                                 param_hint="CS" if spi else "ADDR") from None
    top = 255 if spi else 0x3FF
    if not 0 <= n <= top:
        raise click.BadParameter(f"{text} is not within 0-{top:#x}",
                                 param_hint="CS" if spi else "ADDR")
    return n


def _where(bus: str, target: str, spi: bool) -> dict[str, Any]:
    n = parse_target(target, spi)
    return {"cs": n, "kind": "spi"} if spi else {"addr": n, "ten_bit": n > 0x7F}


def _json_default(o: object) -> Any:
    if isinstance(o, bytes | bytearray | memoryview):
        return bytes(o).hex()
    raise TypeError(f"not JSON: {type(o).__name__}")


def dumps(x: object) -> str:
    return json.dumps(x, default=_json_default, ensure_ascii=True)


_spi_option = click.option("--spi", is_flag=True,
                           help="BUS is an SPI bus and the target a chip select.")


@click.group(context_settings=CONTEXT)
def sim() -> None:
    """Test control of the board's simulated chips (the admin channel).

    \b
    busbridge sim devices                       every simulated chip, quantities, faults
    busbridge sim set 1 0x48 temperature=31.25  what the chip measures from now on
    busbridge sim get 1 0x48                    what it holds
    busbridge sim fault 1 0x50 nack-next=3      NACK the next 3 address phases
    busbridge sim fault 1 0x50 clear            remove every fault
    busbridge sim log 1                         what the bus did, oldest first
    busbridge sim screenshot 1 0x3c oled.png    an SSD1306's framebuffer as a PNG
    """


@sim.command("devices", context_settings=CONTEXT)
@click.argument("bus", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@connection_options
@click.pass_context
def sim_devices(ctx: click.Context, bus: str | None, as_json: bool) -> None:
    """List the simulated devices (of BUS), what can be set on them and their faults."""
    devs = with_client(options(ctx), lambda c: c.sim.devices(bus))
    if as_json:
        click.echo(json.dumps(devs, indent=2, default=_json_default))
        return
    for d in devs:
        where = f"{d['addr']:#04x}" if d["kind"] == "i2c" else f"cs {d['cs']}"
        qs = ", ".join(f"{q['name']}" + (f" ({q['unit']})" if q.get("unit") else "")
                       for q in d.get("quantities", []) if q.get("settable", True))
        faults = ", ".join(f["name"] for f in d.get("faults", []))
        click.echo(f"{d['kind']} {d['bus']} {where}  {d.get('model', '?')}"
                   f"  set: {qs or '-'}  faults: {faults or '-'}")


@sim.command("get", context_settings=CONTEXT)
@click.argument("bus")
@click.argument("target", metavar="ADDR|CS")
@_spi_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@connection_options
@click.pass_context
def sim_get(ctx: click.Context, bus: str, target: str, spi: bool, as_json: bool) -> None:
    """Print the values a simulated chip holds."""
    w = _where(bus, target, spi)
    got = with_client(options(ctx), lambda c: c.sim.get(bus, **w))
    _print_values(got, as_json)


@sim.command("set", context_settings=CONTEXT)
@click.argument("bus")
@click.argument("target", metavar="ADDR|CS")
@click.argument("values", nargs=-1, required=True, metavar="NAME=VALUE...")
@_spi_option
@connection_options
@click.pass_context
def sim_set(ctx: click.Context, bus: str, target: str, values: tuple[str, ...],
            spi: bool) -> None:
    """Set what a simulated chip measures; print the values as it now holds them."""
    w = _where(bus, target, spi)
    vals = parse_assignments(values, "NAME=VALUE")
    got = with_client(options(ctx), lambda c: c.sim.set(bus, **w, **vals))
    _print_values(got, False)


@sim.command("fault", context_settings=CONTEXT)
@click.argument("bus")
@click.argument("target", metavar="ADDR|CS")
@click.argument("fault", metavar="FAULT[=VALUE]")
@click.argument("params", nargs=-1, metavar="[PARAM=VALUE]...")
@_spi_option
@connection_options
@click.pass_context
def sim_fault(ctx: click.Context, bus: str, target: str, fault: str, params: tuple[str, ...],
              spi: bool) -> None:
    """Inject a fault: FAULT=VALUE gives the fault's first parameter (nack-next=3 is
    count=3; `busbridge sim devices` lists each fault's parameters)."""
    w = _where(bus, target, spi)
    name, sep, value = fault.partition("=")
    extra = parse_assignments(params, "PARAM=VALUE")

    async def go(c: AsyncClient) -> None:
        p = dict(extra)
        if sep:
            p[await _first_param(c, bus, w, name)] = parse_value(value)
        await c.sim.fault(bus, w.pop("addr", None), name, **w, **p)

    with_client(options(ctx), go)
    click.echo("every fault cleared" if name == "clear" else f"{name}: injected")


async def _first_param(c: AsyncClient, bus: str, where: Mapping[str, Any], fault: str) -> str:
    """The name of ``fault``'s first parameter on that device (what ``FAULT=VALUE`` sets)."""
    kind = where.get("kind", "i2c")
    for d in await c.sim.devices(bus):
        if d["kind"] == kind and d.get("addr", d.get("cs")) == where.get("addr",
                                                                         where.get("cs")):
            for f in d.get("faults", []):
                if f["name"] == fault:
                    if not f["params"]:
                        raise click.UsageError(f"fault {fault!r} takes no value")
                    return str(f["params"][0]["name"])
            return "count"  # the server names the unknown fault
    return "count"  # the server names the missing device


@sim.command("log", context_settings=CONTEXT)
@click.argument("bus")
@_spi_option
@click.option("--since", type=click.IntRange(min=0), default=0, metavar="SEQ",
              help="Entries after this sequence number.")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True,
              help="At most this many entries.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@connection_options
@click.pass_context
def sim_log(ctx: click.Context, bus: str, spi: bool, since: int, limit: int,
            as_json: bool) -> None:
    """What a simulated bus did, oldest first (its log keeps the most recent entries)."""
    kind = "spi" if spi else "i2c"

    async def go(c: AsyncClient) -> tuple[list[dict[str, Any]], int, bool]:
        entries: list[dict[str, Any]] = []
        after, more = since, True
        while more and len(entries) < limit:  # pages of at most what one answer may hold
            page = await c.sim.log(bus, kind=kind, since=after,
                                   limit=min(limit - len(entries), 1000))
            entries += page.entries
            if page.next <= after or not page.entries:
                break  # a page that does not advance would be asked for forever
            after, more = page.next, page.more
        return entries, after, more

    entries, after, more = with_client(options(ctx), go)
    for e in entries:
        if as_json:
            click.echo(dumps(e))
            continue
        fails = [[e.get("index", 0), e["errno"], e.get("error") or ""]] if e.get("errno") else []
        line = describe_event({**e, "kind": kind, "bus": bus, "client": f"#{e['seq']}",
                               "failures": fails, "dur_us": 0})
        click.echo(line.rsplit(" (", 1)[0])
    if more:
        click.echo(f"busbridge: more after {after}: --since {after}", err=True)


@sim.command("screenshot", context_settings=CONTEXT)
@click.argument("bus")
@click.argument("addr")
@click.argument("output", type=click.Path(dir_okay=False, writable=True, path_type=Path))
@click.option("--scale", type=click.IntRange(1, 16), default=4, show_default=True,
              help="Pixels per display pixel.")
@connection_options
@click.pass_context
def sim_screenshot(ctx: click.Context, bus: str, addr: str, output: Path, scale: int) -> None:
    """Save what a simulated display (SSD1306) shows as a PNG."""
    a = parse_target(addr, False)
    png = with_client(options(ctx), lambda c: c.sim.screenshot(bus, a, scale=scale))
    output.write_bytes(png)
    click.echo(f"wrote {output} ({len(png)} bytes)", err=True)


def _print_values(got: Mapping[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(got, indent=2, default=_json_default))
    else:
        for k, v in got.items():
            click.echo(f"{k} = {v}")


@click.command(context_settings=CONTEXT)
@click.option("--bus", default=None, metavar="BUS", help="Only this bus.")
@click.option("--addr", default=None, metavar="ADDR", help="Only this I2C address.")
@click.option("--ten-bit", is_flag=True, help="ADDR is a 10-bit address (implied above 0x7f).")
@click.option("--cs", type=click.IntRange(0, 255), default=None, help="Only this chip select.")
@click.option("--kind", type=click.Choice(["i2c", "spi"]), default=None,
              help="Only I2C or only SPI.")
@click.option("--count", type=click.IntRange(min=1), default=None, metavar="N",
              help="Stop after N transactions (default: until interrupted).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per transaction.")
@click.option("--output", "-o", type=click.File("w"), default=None, metavar="FILE",
              help="Write there instead of stdout.")
@connection_options
@click.pass_context
def trace(ctx: click.Context, bus: str | None, addr: str | None, ten_bit: bool,
          cs: int | None, kind: str | None, count: int | None, as_json: bool,
          output: IO[str] | None) -> None:
    """Every transaction on the board as it happens, from every client (admin only).

    One line per transaction, like a logic analyser's decoder: time, client, bus,
    START/address/bytes/STOP (I2C) or MOSI/MISO per transfer (SPI), the result.
    """
    if ten_bit and addr is None:
        raise click.UsageError("--ten-bit needs --addr")
    a = parse_target(addr, False) if addr is not None else None
    ten_bit = ten_bit or (a is not None and a > 0x7F)  # as `sim`: above 0x7f is 10-bit
    out = output or sys.stdout

    async def go(c: AsyncClient) -> None:
        n = 0
        async with c.trace(kind=kind, bus=bus, addr=a, cs=cs, ten_bit=ten_bit) as t:
            async for ev in t:
                out.write((dumps(ev) if as_json else describe_event(ev)) + "\n")
                out.flush()
                if ev.get("kind") != "dropped":
                    n += 1
                    if count is not None and n >= count:
                        return

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends a trace: not an error
        with_client(options(ctx), go)

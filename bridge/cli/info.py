"""``busbridge info``: what a server offers, its limits and each bus's capabilities.

The WELCOME a client receives is decoded into what a user asks (which SPI
modes, widths, speeds; which I2C functionality), as text or ``--json``.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
from typing import Any

import click

from protocol.handshake import SpiBusInfo, WelcomeInfo
from protocol.virtio import (
    SPI_MF_CPHA_0,
    SPI_MF_CPHA_1,
    SPI_MF_CPOL_0,
    SPI_MF_CPOL_1,
    SPI_MF_CS_HIGH,
    SPI_MF_LOOPBACK,
    SPI_MF_LSB_FIRST,
    SPI_NBITS_DUAL,
    SPI_NBITS_OCTAL,
    SPI_NBITS_QUAD,
    SpiConfig,
)

from ..client import AsyncClient
from .common import CONTEXT, connection_options, hostport, options, with_client
from .i2ctools import functionality_names

_MODE_FUNCS = [
    (SPI_MF_CS_HIGH, "CS_HIGH"),
    (SPI_MF_LSB_FIRST, "LSB_FIRST"),
    (SPI_MF_LOOPBACK, "LOOP"),
]
_NBITS = [(SPI_NBITS_DUAL, "dual"), (SPI_NBITS_QUAD, "quad"), (SPI_NBITS_OCTAL, "octal")]


def spi_modes(cfg: SpiConfig) -> list[int]:
    """SPI modes 0-3 the controller can do (mode = CPOL << 1 | CPHA)."""
    mf = cfg.mode_func_supported
    out = []
    for mode in range(4):
        cpha = SPI_MF_CPHA_1 if mode & 1 else SPI_MF_CPHA_0
        cpol = SPI_MF_CPOL_1 if mode & 2 else SPI_MF_CPOL_0
        if mf & cpha and mf & cpol:
            out.append(mode)
    return out


def spi_config_summary(cfg: SpiConfig) -> dict[str, Any]:
    """``virtio_spi_config`` decoded into what a user asks: which modes, widths, speeds."""
    return {
        "chip_selects": cfg.cs_max_number,
        "cs_change_supported": bool(cfg.cs_change_supported),
        "modes": spi_modes(cfg),
        "mode_flags": [name for bit, name in _MODE_FUNCS if cfg.mode_func_supported & bit],
        "bits_per_word": (
            [n + 1 for n in range(32) if cfg.bits_per_word_mask >> n & 1]
            if cfg.bits_per_word_mask else "any (1-32)"
        ),
        "tx_lines": ["single"] + [n for bit, n in _NBITS if cfg.tx_nbits_supported & bit],
        "rx_lines": ["single"] + [n for bit, n in _NBITS if cfg.rx_nbits_supported & bit],
        "max_freq_hz": cfg.max_freq_hz,
        "max_word_delay_ns": cfg.max_word_delay_ns,
        "max_cs_setup_ns": cfg.max_cs_setup_ns,
        "max_cs_hold_ns": cfg.max_cs_hold_ns,
        "max_cs_inactive_ns": cfg.max_cs_inactive_ns,
    }


def info_dict(w: WelcomeInfo, url: str) -> dict[str, Any]:
    return {
        "url": url,
        "board": w.board,
        "server": w.server,
        "protocol": w.version,
        "limits": w.limits.model_dump(),
        "i2c": [
            {
                "name": b.name,
                "description": b.description,
                "functionality": b.functionality,
                "functionality_names": functionality_names(b.functionality),
                "max_msg_len": b.max_msg_len,
            }
            for b in w.i2c
        ],
        "spi": [
            {"name": b.name, "description": b.description, "config": spi_raw(b),
             **spi_config_summary(b.config)}
            for b in w.spi
        ],
    }


def spi_raw(b: SpiBusInfo) -> dict[str, int]:
    return {f.name: getattr(b.config, f.name) for f in dataclasses.fields(b.config)}


def _hz(hz: int) -> str:
    if not hz:
        return "not advertised"
    for unit, scale in (("MHz", 1_000_000), ("kHz", 1_000)):
        if hz >= scale:
            return f"{hz / scale:g} {unit}"
    return f"{hz} Hz"


def _ns(ns: int) -> str:
    if not ns:
        return "none"
    for unit, scale in (("s", 10**9), ("ms", 10**6), ("µs", 10**3)):
        if ns >= scale and ns % scale == 0:
            return f"{ns // scale} {unit}"
    return f"{ns} ns"


def _wrap(label: str, text: str, indent: int = 17) -> list[str]:
    pad = " " * indent
    return textwrap.wrap(text, width=79, initial_indent=f"  {label:<{indent - 2}}",
                         subsequent_indent=pad) or [f"  {label}"]


def format_info(w: WelcomeInfo, url: str, found_as: str | None = None) -> list[str]:
    """``found_as``: the board name it was looked up by on the MQTT broker, if any."""
    lim = w.limits
    how = f"; found by name {found_as!r} on the MQTT broker" if found_as else ""
    out = [
        f"board:   {w.board}",
        f"server:  {w.server or '?'} at {url} (protocol {w.version}{how})",
        f"limits:  frames up to {lim.max_frame} B, {lim.max_requests} requests per frame, "
        f"{lim.max_in_flight} in flight,",
        f"         I2C messages up to {lim.max_i2c_len} B, "
        f"SPI transfers up to {lim.max_spi_len} B",
    ]
    for b in w.i2c:
        out += ["", f"i2c bus {b.name}" + (f"  ({b.description})" if b.description else "")]
        out += _wrap("functionality", f"{b.functionality:#010x}: "
                     + " ".join(functionality_names(b.functionality)))
        out += _wrap("max message", f"{b.max_msg_len} bytes")
    for s in w.spi:
        c = spi_config_summary(s.config)
        out += ["", f"spi bus {s.name}" + (f"  ({s.description})" if s.description else "")]
        cs_change = "supported" if c["cs_change_supported"] else "not supported"
        out += _wrap("chip selects", f"{c['chip_selects']} (0-{c['chip_selects'] - 1}), "
                     f"cs_change {cs_change}")
        modes = " ".join(str(m) for m in c["modes"]) or "none"
        out += _wrap("modes", f"SPI modes {modes}" + "".join(f", {f}" for f in c["mode_flags"]))
        bpw = c["bits_per_word"]
        out += _wrap("bits per word", " ".join(map(str, bpw)) if isinstance(bpw, list) else bpw)
        out += _wrap("data lines", f"tx {'/'.join(c['tx_lines'])}, rx {'/'.join(c['rx_lines'])}")
        out += _wrap("max frequency", _hz(c["max_freq_hz"]))
        out += _wrap("max delays", ", ".join(
            f"{name} {_ns(c[key])}" for name, key in (
                ("word", "max_word_delay_ns"), ("cs setup", "max_cs_setup_ns"),
                ("cs hold", "max_cs_hold_ns"), ("cs inactive", "max_cs_inactive_ns"))))
    return out


def local_info() -> dict[str, Any]:
    """This install: version, Python, event loop, and which hot-path modules are compiled."""
    import platform

    from .. import __version__
    from ..compiled import INTERPRETED, build_status
    from ..runtime import have_uvloop

    st = build_status()
    return {"version": __version__, "python": platform.python_version(),
            "event_loop": "uvloop" if have_uvloop() else "asyncio", "hot_path": st.state,
            "summary": st.summary(), "compiled": list(st.compiled),
            "interpreted": list(st.interpreted), "native": list(st.native),
            "always_interpreted": INTERPRETED}


def format_local(d: dict[str, Any]) -> list[str]:
    out = [f"busbridge {d['version']} on Python {d['python']}, {d['event_loop']}",
           d["summary"]]
    if d["compiled"] and d["interpreted"]:
        out += _wrap("interpreted:", ", ".join(d["interpreted"]))
    return out


@click.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--local", is_flag=True,
              help="Describe this install instead (version, event loop, whether the hot "
                   "path is compiled); connects to nothing.")
@connection_options
@click.pass_context
def info(ctx: click.Context, as_json: bool, local: bool) -> None:
    """Show the server's board, limits and each bus's capabilities."""
    if local:
        d = local_info()
        click.echo(json.dumps(d, indent=2) if as_json else "\n".join(format_local(d)))
        return
    opts = options(ctx)

    async def go(client: AsyncClient) -> WelcomeInfo:
        assert client.welcome is not None
        return client.welcome

    async def go_addr(client: AsyncClient) -> tuple[WelcomeInfo, str]:
        return await go(client), hostport(*client.address)

    w, address = with_client(opts, go_addr)
    url = address if opts.board else opts.url
    if as_json:
        out = info_dict(w, url)
        if opts.board:
            out["found_as"] = {"board": opts.board, "broker": opts.broker}
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo("\n".join(format_info(w, url, found_as=opts.board)))

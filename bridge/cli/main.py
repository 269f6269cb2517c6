"""The ``busbridge`` command: serve a board, or talk to one with i2c-tools conventions.

The ``i2c`` commands read and print what i2cdetect / i2cget / i2cset /
i2ctransfer do (same argument syntax, same output), so existing scripts and
habits work against a remote board; argument meaning and output layout live
in :mod:`bridge.cli.i2ctools`.  Errors are one line on stderr, never a traceback:
exit 1 for anything the board or server refused, 2 for a bad command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import textwrap
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

import click

from protocol.handshake import (
    I2C_FUNC_I2C,
    I2C_FUNC_SMBUS_QUICK,
    I2C_FUNC_SMBUS_READ_BYTE,
    I2CBusInfo,
    SpiBusInfo,
    WelcomeInfo,
)
from protocol.limits import MAX_TIMEOUT_MS
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
    I2CMsg,
    SpiConfig,
    SpiMode,
)

from .. import __version__, logs
from ..client import (
    AsyncClient,
    TransferError,
    parse_address,
    read,
    spi_xfer,
    write,
)
from ..client.auth import ClientAuth
from ..runtime import run
from .common import (
    DEFAULT_URL,
    CliError,
    ConfigError,
    Options,
    confirm,
    errmsg,
    hostport,
    options,
    usage_error,
    with_client,
)
from .i2ctools import (
    I2CArgError,
    detect_range,
    format_block,
    format_detect_grid,
    format_functionality,
    format_hex,
    format_msgs,
    functionality_names,
    parse_chip_address,
    parse_hex_bytes,
    parse_number,
    parse_transfer,
    probe_kind,
)

T = TypeVar("T")

#: I2C_SMBUS_BLOCK_MAX: the longest i2cget/i2cset block.
SMBUS_BLOCK_MAX = 32


WARNING = "WARNING! This program can confuse your I2C bus, cause data loss and worse!"


def _i2c_bus(client: AsyncClient, name: str) -> tuple[str, I2CBusInfo | None]:
    """Bus name as the server knows it (``i2c-1`` → ``1``) and its WELCOME entry."""
    w = client.welcome
    if w is None:
        return name, None
    info = w.i2c_bus(name)
    if info is None and name.startswith("i2c-"):
        alias = w.i2c_bus(name[4:])
        if alias is not None:
            return alias.name, alias
    return name, info


# ---------------------------------------------------------------------------
# Top level
# ---------------------------------------------------------------------------

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


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
    """
    from .boards import pick_target

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


# ---------------------------------------------------------------------------
# serve
# ---------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@click.option("--config", "config_path", metavar="BOARD.TOML", default=None,
              help="Board description; default: the built-in simulated board.")
@click.option("--listen", metavar="HOST:PORT", default=None,
              help="Address to listen on (port 0: any free port); default: the board "
                   "file's [server] listen, else 127.0.0.1:7707.")
@click.option("--request-timeout", type=click.IntRange(1, MAX_TIMEOUT_MS), metavar="MS",
              default=None, help="Deadline of a request without its own; default: the "
                                 "board file's [server] request_timeout_ms, else 1000.")
@click.option("--broker", metavar="[mqtt[s]://]HOST[:PORT]", default=None,
              help="Announce the board on this MQTT broker (overrides [mqtt] broker).")
@click.option("--advertise", metavar="HOST:PORT", default=None,
              help="Address clients should dial, as announced (overrides [mqtt] advertise).")
@click.option("--tls-cert", "cert", metavar="PEM", default=None,
              help="Server certificate (chain); default: the board file's [server.tls] cert.")
@click.option("--tls-key", "key", metavar="PEM", default=None, help="Key of --tls-cert.")
@click.option("--tls-client-ca", "client_ca", metavar="PEM", default=None,
              help="Require client certificates signed by this CA (mutual TLS).")
@click.option("--insecure", is_flag=True, default=False,
              help="Allow a non-loopback --listen without authentication (trusted networks "
                   "only).")
def serve(config_path: str | None, listen: str | None, request_timeout: int | None,
          broker: str | None, advertise: str | None, cert: str | None, key: str | None,
          client_ca: str | None, insecure: bool) -> None:
    """Serve a board's buses until SIGINT/SIGTERM, then finish in-flight requests and exit.

    With a broker ([mqtt] in the board file, or --broker) the board announces
    itself: retained status/inventory/health, offline through its last will.
    A non-loopback --listen needs authentication (client certificates or tokens,
    see docs/security.md) or --insecure.
    """
    import ssl

    from ..addresses import parse_host_port
    from ..config import BoardConfigError, load_board
    from ..server import Server
    from ..server import serve as serve_board
    from ..server.auth import InsecureListenError, is_loopback, server_policy
    from .boards import mqtt_settings, serve_announced

    if listen is not None:
        try:
            host, port = parse_host_port(listen)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--listen") from None
    try:
        board = load_board(config_path)
    except BoardConfigError as e:
        raise ConfigError(str(e)) from None
    if listen is None:
        host, port = board.server.host, board.server.port
    try:
        announce = mqtt_settings(board, broker, advertise)
    except click.ClickException:
        board.close()
        raise
    timeout_s = (request_timeout / 1000 if request_timeout is not None
                 else board.server.request_timeout)
    try:
        policy = server_policy(board.server, board.source, cert=cert, key=key,
                               client_ca=client_ca, insecure=insecure)
    except (ValueError, OSError, ssl.SSLError) as e:
        board.close()
        raise ConfigError(f"TLS: {errmsg(e)}") from None

    def ready(server: Server) -> None:
        buses = f"i2c: {', '.join(board.i2c) or '-'}; spi: {', '.join(board.spi) or '-'}"
        click.echo(f"busbridge: serving board {board.name!r} on "
                   f"{hostport(server.host, server.port)} ({buses})", err=True)
        sec = server.security
        auth = [x for x, on in (("client certificates", sec.client_certs),
                                ("tokens", bool(sec.tokens))) if on]
        click.echo(f"busbridge: {'TLS' if sec.ssl else 'no TLS'}; authentication: "
                   f"{' or '.join(auth) or 'none'}"
                   + ("; access rules: " + str(len(server.acl.rules)) if server.acl else ""),
                   err=True)
        if not auth and not is_loopback(server.host):
            click.echo("busbridge: WARNING: no authentication (insecure): anyone who can "
                       "reach this port can drive the buses", err=True)

    try:
        run(serve_announced(announce, board.description, lambda on_ready: serve_board(
            board, host=host, port=port, request_timeout=timeout_s, ready=on_ready,
            max_lease_ttl=board.server.lease_max_ttl_s, **policy), ready))
    except InsecureListenError as e:
        board.close()
        raise ConfigError(str(e)) from None
    except OSError as e:
        board.close()
        raise CliError(f"cannot listen on {hostport(host, port)}: {errmsg(e)}") from None


# ---------------------------------------------------------------------------
# info
# ---------------------------------------------------------------------------

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


def format_info(w: WelcomeInfo, url: str) -> list[str]:
    lim = w.limits
    out = [
        f"board:   {w.board}",
        f"server:  {w.server or '?'} at {url} (protocol {w.version})",
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


@cli.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def info(ctx: click.Context, as_json: bool) -> None:
    """Show the server's board, limits and each bus's capabilities."""
    opts = options(ctx)

    async def go(client: AsyncClient) -> WelcomeInfo:
        assert client.welcome is not None
        return client.welcome

    async def go_addr(client: AsyncClient) -> tuple[WelcomeInfo, str]:
        return await go(client), hostport(*client.address)

    w, address = with_client(opts, go_addr)
    url = f"{address} (board {opts.board})" if opts.board else opts.url
    if as_json:
        click.echo(json.dumps(info_dict(w, url), indent=2))
    else:
        click.echo("\n".join(format_info(w, url)))


# ---------------------------------------------------------------------------
# i2c
# ---------------------------------------------------------------------------


@cli.group(context_settings=CONTEXT)
def i2c() -> None:
    """i2c-tools over the network: detect, get, set, transfer.

    Arguments follow i2c-tools: BUS is a bus name ("1"; "i2c-1" works too),
    numbers are C syntax (0x48 hex, 072 octal, 72 decimal), chip addresses
    are 0x03-0x77 unless -a.  Without -y each command asks first, as i2c-tools do.
    """


_yes = click.option("-y", "yes", is_flag=True, help="Do not ask for confirmation.")
_all = click.option("-a", "all_addrs", is_flag=True,
                    help="Allow every address, 0x00-0x7f (default 0x03-0x77).")


@i2c.command("detect", context_settings=CONTEXT)
@_yes
@_all
@click.option("-q", "quick", is_flag=True, help="Probe with quick writes (zero-length write).")
@click.option("-r", "readbyte", is_flag=True, help="Probe with 1-byte reads.")
@click.option("-F", "funcs", is_flag=True, help="Show the bus's functionality instead.")
@click.argument("bus")
@click.argument("first", required=False)
@click.argument("last", required=False)
@click.pass_context
def i2c_detect(ctx: click.Context, yes: bool, all_addrs: bool, quick: bool, readbyte: bool,
               funcs: bool, bus: str, first: str | None, last: str | None) -> None:
    """Scan BUS for devices, like i2cdetect.

    Prints i2cdetect's grid: "--" no answer, the address where a device
    ACKed.  The range is 0x08-0x77 (0x00-0x7f with -a) or FIRST-LAST.
    Probes are quick writes, except 1-byte reads at 0x30-0x37 and
    0x50-0x5f (EEPROMs); -q / -r force one kind.  All probes are sent at
    once, pipelined on one connection.
    """
    opts = options(ctx)
    if quick and readbyte:
        raise click.UsageError("different modes specified (-q and -r)")
    mode: Literal["auto", "quick", "read"] = "quick" if quick else "read" if readbyte else "auto"
    if funcs:
        _print_functionality(opts, bus)
        return
    try:
        lo, hi = detect_range(first, last, all_addrs=all_addrs)
    except I2CArgError as e:
        raise usage_error(e) from None
    how = {"quick": " using quick write commands", "read": " using receive byte commands",
           "auto": ""}[mode]
    if not yes and not confirm([
        WARNING,
        f"I will probe i2c bus {bus} on {opts.url}{how}.",
        f"I will probe address range {lo:#04x}-{hi:#04x}.",
    ], default=True):
        return

    async def go(client: AsyncClient) -> tuple[set[int], set[int]]:
        name, binfo = _i2c_bus(client, bus)
        have = binfo.functionality if binfo is not None else ~0
        can = {"quick": bool(have & I2C_FUNC_SMBUS_QUICK),
               "read": bool(have & (I2C_FUNC_SMBUS_READ_BYTE | I2C_FUNC_I2C))}
        if mode != "auto" and not can[mode]:
            raise CliError(f"i2c bus {name} cannot do "
                           f"{'quick writes' if mode == 'quick' else 'receive byte'}")
        for kind, label in (("quick", "quick write"), ("read", "receive byte")):
            if mode == "auto" and not can[kind]:
                click.echo(f"Warning: i2c bus {name} cannot do {label}; "
                           "some addresses are skipped", err=True)
        probed = {a for a in range(lo, hi + 1) if can[probe_kind(a, mode)]}
        return probed, await scan(client, name, sorted(probed), mode)

    probed, found = with_client(opts, go)
    click.echo(format_detect_grid(probed, found))


async def scan(client: AsyncClient, bus: str, addrs: Sequence[int],
               mode: Literal["auto", "quick", "read"] = "auto") -> set[int]:
    """Probe ``addrs`` concurrently; a bus error (NACK) means absent, anything else raises."""
    limit = client.welcome.limits.max_in_flight if client.welcome is not None else 64
    sem = asyncio.Semaphore(max(1, min(limit, 128)))

    async def probe(addr: int) -> bool:
        msg = write(addr) if probe_kind(addr, mode) == "quick" else read(addr, 1)
        async with sem:
            try:
                await client.transfer(bus, [msg])
            except TransferError:
                return False
        return True

    results = await asyncio.gather(*(probe(a) for a in addrs), return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return {a for a, ok in zip(addrs, results, strict=True) if ok is True}


def _print_functionality(opts: Options, bus: str) -> None:
    async def go(client: AsyncClient) -> tuple[str, I2CBusInfo | None]:
        return _i2c_bus(client, bus)

    name, binfo = with_client(opts, go)
    if binfo is None:
        raise CliError(f"no I2C bus {bus!r} on {opts.url} (see busbridge info)")
    click.echo(f"Functionalities implemented by i2c bus {name} on {opts.url}:")
    click.echo("\n".join(format_functionality(binfo.functionality)))


def _addr(text: str, all_addrs: bool) -> int:
    try:
        return parse_chip_address(text, all_addrs=all_addrs)
    except I2CArgError as e:
        raise usage_error(e) from None


def _reg(text: str) -> int:
    try:
        return parse_number(text, "data address", 0xFF)
    except I2CArgError as e:
        raise usage_error(e) from None


def _no_pec(mode: str) -> None:
    if len(mode) == 2 and mode[1] == "p":
        raise I2CArgError(f"mode {mode!r}: PEC is not supported over virtio-i2c")


_GET_MODES = {"b": "read byte data", "w": "read word data", "c": "write byte/read byte",
              "i": "I2C block read"}


def parse_get_mode(mode: str | None, length: str | None) -> tuple[str, int]:
    """i2cget's ``[MODE [LENGTH]]`` after a REG → (mode, bytes to read for mode i)."""
    m = mode or "b"
    _no_pec(m)
    if m[:1] == "s":
        raise I2CArgError("mode 's' (SMBus block read) needs I2C_M_RECV_LEN, which "
                          "virtio-i2c cannot express; use 'i' with a LENGTH")
    if m not in _GET_MODES:
        raise I2CArgError(f"invalid mode {m!r} (b, w, c or i)")
    if length is None:
        return m, SMBUS_BLOCK_MAX
    if m != "i":
        raise I2CArgError("LENGTH is only for mode 'i'")
    n = parse_number(length, "length")
    if not 1 <= n <= SMBUS_BLOCK_MAX:
        raise I2CArgError(f"length {length!r} out of range (1-{SMBUS_BLOCK_MAX})")
    return m, n


@i2c.command("get", context_settings=CONTEXT)
@_yes
@_all
@click.argument("bus")
@click.argument("addr")
@click.argument("reg", required=False)
@click.argument("mode", required=False)
@click.argument("length", required=False)
@click.pass_context
def i2c_get(ctx: click.Context, yes: bool, all_addrs: bool, bus: str, addr: str,
            reg: str | None, mode: str | None, length: str | None) -> None:
    """Read a register, like i2cget.

    \b
    MODE  b  read byte data (default): write REG, read 1 byte, one transaction
          w  read word data: write REG, read 2 bytes, one transaction
          c  write byte, then read byte: two separate transactions
          i  I2C block read of LENGTH bytes (1-32, default 32)
    Without REG: read one byte (SMBus receive byte).

    Word data is SMBus order, little-endian, exactly as i2cget prints it:
    a big-endian 16-bit register (TMP117 reg 0x0f = 0x0117) prints as
    0x1701.  For big-endian registers use `i2c transfer BUS w1@ADDR REG r2`.
    """
    opts = options(ctx)
    a = _addr(addr, all_addrs)
    r = _reg(reg) if reg is not None else None
    m: str | None = None
    n = SMBUS_BLOCK_MAX
    if r is not None:
        try:
            m, n = parse_get_mode(mode, length)
        except I2CArgError as e:
            raise usage_error(e) from None
    what = "read byte" if m is None else _GET_MODES[m]
    where = "current data address" if r is None else f"data address {r:#04x}"
    if not yes and not confirm([
        WARNING,
        f"I will read from i2c bus {bus} on {opts.url}, chip address {a:#04x}, {where}, "
        f"using {what}.",
    ], default=True):
        return

    async def go(client: AsyncClient) -> str:
        name, _ = _i2c_bus(client, bus)
        if r is None:
            (data,) = await client.transfer(name, [read(a, 1)])
            return f"0x{data[0]:02x}"
        if m == "c":
            try:
                await client.transfer(name, [write(a, [r])])
            except TransferError as e:
                click.echo(f"Warning - write failed: {errmsg(e)}", err=True)
            (data,) = await client.transfer(name, [read(a, 1)])
            return f"0x{data[0]:02x}"
        count = {"b": 1, "w": 2, "i": n}[m or "b"]
        (data,) = await client.transfer(name, [write(a, [r]), read(a, count)])
        if m == "w":
            return f"0x{int.from_bytes(data, 'little'):04x}"
        return f"0x{data[0]:02x}" if m == "b" else format_block(data)

    click.echo(with_client(opts, go))


_SET_MODES = {"c": "short write", "b": "byte data", "w": "word data", "i": "I2C block write"}


def parse_set_args(rest: Sequence[str]) -> tuple[list[int], str]:
    """i2cset's ``[VALUE] ... [MODE]`` → (values, mode); MODE defaults from the value count."""
    args = list(rest)
    mode = None
    if args and args[-1][:1].isalpha() and args[-1][:1] not in ("0",):
        mode = args.pop()
        _no_pec(mode)
        if mode[:1] == "s":
            raise I2CArgError("mode 's' (SMBus block write) is not supported; use 'i' "
                              "(I2C block write) for the same bytes without the count")
        if mode not in _SET_MODES:
            raise I2CArgError(f"invalid mode {mode!r} (c, b, w or i)")
    if mode is None:
        mode = "c" if not args else "b" if len(args) == 1 else ""
        if not mode:
            raise I2CArgError("several values need mode 'i' (I2C block write)")
    if mode == "c" and args:
        raise I2CArgError("mode 'c' takes no value")
    if mode in ("b", "w") and len(args) != 1:
        raise I2CArgError(f"mode {mode!r} takes exactly one value")
    if mode == "i" and not 1 <= len(args) <= SMBUS_BLOCK_MAX:
        raise I2CArgError(f"mode 'i' takes 1-{SMBUS_BLOCK_MAX} values")
    top = 0xFFFF if mode == "w" else 0xFF
    return [parse_number(v, "value", top) for v in args], mode


@i2c.command("set", context_settings=CONTEXT)
@_yes
@_all
@click.option("-m", "mask", metavar="MASK", default=None,
              help="Only change the bits set in MASK (reads the register first).")
@click.option("-r", "readback", is_flag=True, help="Read the register back and compare.")
@click.argument("bus")
@click.argument("addr")
@click.argument("reg")
@click.argument("rest", nargs=-1, metavar="[VALUE]... [MODE]")
@click.pass_context
def i2c_set(ctx: click.Context, yes: bool, all_addrs: bool, mask: str | None, readback: bool,
            bus: str, addr: str, reg: str, rest: tuple[str, ...]) -> None:
    """Write a register, like i2cset; silent on success.

    \b
    MODE  b  byte data (default with one VALUE): REG VALUE
          w  word data: REG, then VALUE little-endian (SMBus order, as i2cset)
          c  short write (default without VALUE): just the byte REG
          i  I2C block write: REG VALUE VALUE ...
    Every mode is ONE write message.  -r reads back (b/w: write REG + read,
    one transaction; c: a 1-byte read) and compares; -m MASK reads first
    and keeps the bits outside MASK.
    """
    opts = options(ctx)
    a = _addr(addr, all_addrs)
    r = _reg(reg)
    try:
        values, mode = parse_set_args(rest)
        mask_v = None if mask is None else parse_number(mask, "mask",
                                                         0xFFFF if mode == "w" else 0xFF)
    except I2CArgError as e:
        raise usage_error(e) from None
    if mask_v == 0:
        raise click.UsageError("mask 0 would change nothing")
    if (mask_v is not None or readback) and mode == "i":
        raise click.UsageError("-m and -r are not supported for block writes (mode i)")
    # Mode c writes REG itself as the value (SMBus send byte), as i2cset does.
    value = r if mode == "c" else values[0] if mode in ("b", "w") else -1
    width = 4 if mode == "w" else 2
    eeprom = 0x50 <= a <= 0x57
    data_text = (" ".join(f"0x{v:02x}" for v in values) if mode == "i"
                 else f"0x{value:0{width}x}" + (" (masked)" if mask_v is not None else ""))
    if not yes and not confirm([
        WARNING,
        *(["DANGEROUS! Writing to a serial EEPROM on a memory DIMM may render your memory "
           "USELESS and make your system UNBOOTABLE!"] if eeprom else []),
        f"I will write to i2c bus {bus} on {opts.url}, chip address {a:#04x},",
        ("" if mode == "c" else f"data address {r:#04x}, ")
        + f"data {data_text}, mode {_SET_MODES[mode]}.",
    ], default=not eeprom):
        return

    async def get(client: AsyncClient, name: str) -> int:
        if mode == "c":
            (data,) = await client.transfer(name, [read(a, 1)])
        else:
            (data,) = await client.transfer(name, [write(a, [r]), read(a, width // 2)])
        return int.from_bytes(data, "little")

    async def go(client: AsyncClient) -> str | None:
        name, _ = _i2c_bus(client, bus)
        v = value
        if mask_v is not None:
            old = await get(client, name)
            v = (value & mask_v) | (old & ~mask_v)
            if not yes and not confirm([
                f"Old value 0x{old:0{width}x}, write mask 0x{mask_v:0{width}x}, "
                f"will write 0x{v:0{width}x}"
            ], default=True):
                return None
        payload = ([v] if mode == "c" else [r, *values] if mode == "i"
                   else [r, *v.to_bytes(width // 2, "little")])
        await client.transfer(name, [write(a, payload)])
        if not readback:
            return None
        try:
            back = await get(client, name)
        except TransferError as e:
            click.echo(f"Warning - readback failed: {errmsg(e)}", err=True)
            return None
        if back != v:
            return (f"Warning - data mismatch - wrote 0x{v:0{width}x}, "
                    f"read back 0x{back:0{width}x}")
        return f"Value 0x{v:0{width}x} written, readback matched"

    line = with_client(opts, go)
    if line is not None:
        click.echo(line)


@i2c.command("transfer", context_settings=CONTEXT)
@_yes
@_all
@click.option("-v", "verbose", is_flag=True, help="Print every message, written data too.")
@click.argument("bus")
@click.argument("desc", nargs=-1, required=True, metavar="DESC [DATA]...")
@click.pass_context
def i2c_transfer(ctx: click.Context, yes: bool, all_addrs: bool, verbose: bool, bus: str,
                 desc: tuple[str, ...]) -> None:
    """Send messages as ONE combined transaction, like i2ctransfer.

    \b
    DESC is {r|w}LENGTH[@ADDRESS]; ADDRESS carries over when omitted.
    A write is followed by LENGTH data bytes; a byte may end with
      =  repeat it to the end of the message    +  increment    -  decrement
      p  pseudo-random sequence seeded with it (i2ctransfer's generator)
    Each read prints one line: 0x01 0x17.
    Repeated STARTs between messages, one STOP at the end (virtio FAIL_NEXT
    chain: if one message fails, the rest do not run).

    \b
    10-bit addresses (i2ctransfer has none): an address above 0x7f is 10-bit,
    and @t0xNN forces 10-bit for a low one: r2@0x2a5, w1@t0x050 0x00.

    \b
    Example: busbridge i2c transfer -y 1 w1@0x48 0x0f r2    -> 0x01 0x17
             busbridge i2c transfer -y 1 w10@0x50 0x00 0x40 0x00+
    """
    opts = options(ctx)
    try:
        msgs = parse_transfer(desc, all_addrs=all_addrs)
    except I2CArgError as e:
        raise usage_error(e) from None
    if not yes and not confirm([
        WARNING,
        f"I will send the following messages to i2c bus {bus} on {opts.url}:",
        *format_msgs(msgs),
    ], default=False):
        return

    async def go(client: AsyncClient) -> list[bytes]:
        # Unlike i2ctransfer, no refusal for SMBus-only adapters: the server maps
        # chains with an exact SMBus shape and answers others with a precise error.
        name, _binfo = _i2c_bus(client, bus)
        return await client.transfer(name, msgs)

    lines = _transfer_lines(msgs, with_client(opts, go), verbose)
    if lines:
        click.echo("\n".join(lines))


def _transfer_lines(msgs: Sequence[I2CMsg], reads: Sequence[bytes], verbose: bool) -> list[str]:
    if verbose:
        return format_msgs(msgs, reads)
    return [format_block(d) for d in reads if d]


# ---------------------------------------------------------------------------
# spi
# ---------------------------------------------------------------------------


@cli.group(context_settings=CONTEXT)
def spi() -> None:
    """SPI messages over the network (virtio-spi semantics)."""


@spi.command("transfer", context_settings=CONTEXT)
@click.option("--speed", "speed_hz", type=click.IntRange(0, 0xFFFF_FFFF), default=0,
              metavar="HZ", help="Clock; 0 (default): the controller's default.")
@click.option("--mode", type=click.IntRange(0, 3), default=0, show_default=True, metavar="N",
              help="SPI mode: CPOL << 1 | CPHA.")
@click.option("--bits", "bits_per_word", type=click.IntRange(1, 32), default=8,
              show_default=True, metavar="N",
              help="Bits per word; wider words are little-endian in HEXBYTES.")
@click.option("--lsb-first", is_flag=True, help="Shift words out LSB first.")
@click.option("--cs-high", is_flag=True, help="Chip select is active high.")
@click.option("--loop", is_flag=True, help="Controller-internal loopback (MISO = MOSI).")
@click.option("--cs-change", is_flag=True,
              help="Set cs_change on the last transfer (spidev/virtio meaning).")
@click.option("--delay-us", type=click.IntRange(0, 4_294_967), default=0, metavar="US",
              help="Delay after the transfer before CS changes (cs_delay_hold_ns, as Linux "
                   "maps spidev's delay_usecs).")
@click.option("--word-delay-ns", type=click.IntRange(0, 0xFFFF_FFFF), default=0, metavar="NS",
              help="Delay between words.")
@click.option("--cs-setup-ns", type=click.IntRange(0, 0xFFFF_FFFF), default=0, metavar="NS",
              help="Delay after CS asserts, before the first clock.")
@click.option("--cs-inactive-ns", type=click.IntRange(0, 0xFFFF_FFFF), default=0, metavar="NS",
              help="Minimum CS-inactive time after a cs_change.")
@click.option("--rx", "rx_len", type=click.IntRange(1, None), default=None, metavar="N",
              help="After writing HEXBYTES, read N bytes in the same message (CS held).")
@click.argument("bus")
@click.argument("cs", type=click.IntRange(0, 255))
@click.argument("hexbytes", nargs=-1)
@click.pass_context
def spi_transfer(ctx: click.Context, speed_hz: int, mode: int, bits_per_word: int,
                 lsb_first: bool, cs_high: bool, loop: bool, cs_change: bool, delay_us: int,
                 word_delay_ns: int, cs_setup_ns: int, cs_inactive_ns: int,
                 rx_len: int | None, bus: str, cs: int, hexbytes: tuple[str, ...]) -> None:
    """One SPI message on chip select CS; prints the bytes clocked in, as hex.

    \b
    Full duplex by default: HEXBYTES go out while as many bytes come in.
      busbridge spi transfer 0 0 9f000000        ->  ff ef 40 16
    With --rx N: HEXBYTES are written, then N bytes read, CS held throughout.
      busbridge spi transfer 0 0 03000000 --rx 16
    HEXBYTES: 9f000000, 9f 00 00 00 or 0x9f 0x00.
    """
    opts = options(ctx)
    try:
        tx = parse_hex_bytes(hexbytes)
    except I2CArgError as e:
        raise usage_error(e) from None
    if not tx and rx_len is None:
        raise click.UsageError("give HEXBYTES to send, --rx N to read, or both")
    mbits = (mode & 3) | (SpiMode.LSB_FIRST if lsb_first else 0) | (
        SpiMode.CS_HIGH if cs_high else 0) | (SpiMode.LOOP if loop else 0)
    head: dict[str, Any] = {
        "speed_hz": speed_hz, "mode": int(mbits), "bits_per_word": bits_per_word,
        "word_delay_ns": word_delay_ns, "cs_setup_ns": cs_setup_ns,
        "cs_hold_ns": delay_us * 1000, "cs_inactive_ns": cs_inactive_ns,
    }
    transfers = []
    if tx:
        transfers.append(spi_xfer(tx, 0 if rx_len is not None else None, **head))
    if rx_len is not None:
        transfers.append(spi_xfer(None, rx_len, **head))
    if cs_change:
        t = transfers[-1]
        transfers[-1] = dataclasses.replace(t, head=dataclasses.replace(t.head, cs_change=1))

    async def go(client: AsyncClient) -> list[bytes]:
        return await client.spi_transfer(bus, cs, transfers)

    for data in with_client(opts, go):
        click.echo(format_hex(data))


# ---------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@click.option("--listen", metavar="HOST:PORT", default="127.0.0.1:0", show_default=True,
              help="Where the in-process server listens (port 0: any free port).")
@click.pass_context
def demo(ctx: click.Context, listen: str) -> None:
    """Serve the simulated board in-process and tour it over real TCP.

    Scans, sensor and EEPROM access, SPI flash and loopback, a deliberate NACK,
    then latency and pipelined throughput.  Exit 0 if every step behaved.
    """
    from ..addresses import parse_host_port
    from .demo import run_demo

    try:
        host, port = parse_host_port(listen)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--listen") from None
    try:
        ok = run_demo(host, port, echo=click.echo, quiet_server=options(ctx).verbose == 0)
    except OSError as e:
        raise CliError(f"demo failed: {errmsg(e)}") from None
    if not ok:
        ctx.exit(1)


# ---------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@click.option("--reps", type=click.IntRange(1, 50), default=5, show_default=True,
              help="Repetitions; each figure is the median.")
@click.option("--quick", is_flag=True,
              help="One short repetition: a smoke test, not a measurement.")
@click.option("--json", "json_path", metavar="FILE", help="Write the figures as JSON.")
@click.option("--plot", "plot_path", metavar="FILE.png",
              help="Write a latency-distribution plot (needs busbridge[bench]).")
@click.option("--memory", type=click.IntRange(1000), metavar="N", default=None,
              help="Also run N pipelined requests watching the server's RSS "
                   "(1000000 for the full check).")
def bench(reps: int, quick: bool, json_path: str | None, plot_path: str | None,
          memory: int | None) -> None:
    """Measure the bridge against a bare uvloop echo in the same run; print ratios."""
    from ..bench import bench_command

    bench_command(reps, quick, json_path, plot_path, memory)


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


from . import boards as _boards  # noqa: E402
from . import lease as _lease  # noqa: E402
from . import run as _run  # noqa: E402
from . import token as _token  # noqa: E402
from . import vhost as _vhost  # noqa: E402

for _command in (_vhost.vhost_user, _run.run, _lease.lease, _boards.boards, _token.token):
    cli.add_command(_command)


if __name__ == "__main__":
    main()

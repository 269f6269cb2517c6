"""``busbridge i2c detect|get|set|transfer``: i2c-tools over the network.

Each command reads and prints what i2cdetect / i2cget / i2cset / i2ctransfer
do, so existing scripts and habits work against a remote board.  What an
argument means and how output looks lives in :mod:`bridge.cli.i2ctools`;
these commands ask for confirmation, connect and send.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import click

from protocol.handshake import (
    I2C_FUNC_I2C,
    I2C_FUNC_SMBUS_QUICK,
    I2C_FUNC_SMBUS_READ_BYTE,
    I2CBusInfo,
)
from protocol.virtio import read, write

from .. import logs
from ..client import AsyncClient, TransferError
from .common import (
    CONTEXT,
    CliError,
    Options,
    confirm,
    connection_options,
    errmsg,
    options,
    usage_error,
    with_client,
)
from .i2ctools import (
    GET_MODES,
    I2CArgError,
    ProbeMode,
    detect_mode,
    detect_range,
    format_detect_grid,
    format_functionality,
    format_get,
    format_msgs,
    format_transfer,
    parse_chip_address,
    parse_get_mode,
    parse_number,
    parse_set,
    parse_transfer,
    probe_kind,
)

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


@click.group(context_settings=CONTEXT)
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
@click.option("-a", "all_addrs", is_flag=True,
              help="Scan every address, 0x00-0x7f (default 0x08-0x77).")
@click.option("-q", "quick", is_flag=True, help="Probe with quick writes (zero-length write).")
@click.option("-r", "readbyte", is_flag=True, help="Probe with 1-byte reads.")
@click.option("-F", "funcs", is_flag=True, help="Show the bus's functionality instead.")
@click.argument("bus")
@click.argument("first", required=False)
@click.argument("last", required=False)
@connection_options
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
    try:
        mode = detect_mode(quick, readbyte)
        if not funcs:
            lo, hi = detect_range(first, last, all_addrs=all_addrs)
    except I2CArgError as e:
        raise usage_error(e) from None
    if funcs:
        _print_functionality(opts, bus)
        return
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
                logs.say(f"i2c bus {name} cannot do {label}; some addresses are skipped",
                         logging.WARNING, text=f"Warning: i2c bus {name} cannot do {label}; "
                         "some addresses are skipped")
        probed = {a for a in range(lo, hi + 1) if can[probe_kind(a, mode)]}
        return probed, await scan(client, name, sorted(probed), mode)

    probed, found = with_client(opts, go)
    click.echo(format_detect_grid(probed, found))


async def scan(client: AsyncClient, bus: str, addrs: Sequence[int],
               mode: ProbeMode = "auto") -> set[int]:
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


@i2c.command("get", context_settings=CONTEXT)
@_yes
@_all
@click.argument("bus")
@click.argument("addr")
@click.argument("reg", required=False)
@click.argument("mode", required=False)
@click.argument("length", required=False)
@connection_options
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
    n = 1
    if r is not None:
        try:
            m, n = parse_get_mode(mode, length)
        except I2CArgError as e:
            raise usage_error(e) from None
    what = "read byte" if m is None else GET_MODES[m]
    where = "current data address" if r is None else f"data address {r:#04x}"
    if not yes and not confirm([
        WARNING,
        f"I will read from i2c bus {bus} on {opts.url}, chip address {a:#04x}, {where}, "
        f"using {what}.",
    ], default=True):
        return

    async def go(client: AsyncClient) -> bytes:
        name, _ = _i2c_bus(client, bus)
        if r is None:
            (data,) = await client.transfer(name, [read(a, n)])
            return data
        if m == "c":
            try:
                await client.transfer(name, [write(a, [r])])
            except TransferError as e:
                logs.say(f"write failed: {errmsg(e)}", logging.WARNING,
                         text=f"Warning - write failed: {errmsg(e)}")
            (data,) = await client.transfer(name, [read(a, n)])
            return data
        (data,) = await client.transfer(name, [write(a, [r]), read(a, n)])
        return data

    click.echo(format_get(m, with_client(opts, go)))


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
@connection_options
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
        w = parse_set(a, r, rest, mask, readback)
    except I2CArgError as e:
        raise usage_error(e) from None
    eeprom = 0x50 <= a <= 0x57
    if not yes and not confirm([
        WARNING,
        *(["DANGEROUS! Writing to a serial EEPROM on a memory DIMM may render your memory "
           "USELESS and make your system UNBOOTABLE!"] if eeprom else []),
        f"I will write to i2c bus {bus} on {opts.url}, chip address {a:#04x},",
        w.describe(),
    ], default=not eeprom):
        return

    async def get(client: AsyncClient, name: str) -> int:
        (data,) = await client.transfer(name, w.read_msgs())
        return int.from_bytes(data, "little")

    async def go(client: AsyncClient) -> str | None:
        name, _ = _i2c_bus(client, bus)
        v = w.value
        if w.mask is not None:
            old = await get(client, name)
            v = w.masked(old)
            if not yes and not confirm([w.mask_line(old, v)], default=True):
                return None
        await client.transfer(name, [w.write_msg(v)])
        if not readback:
            return None
        try:
            back = await get(client, name)
        except TransferError as e:
            logs.say(f"readback failed: {errmsg(e)}", logging.WARNING,
                     text=f"Warning - readback failed: {errmsg(e)}")
            return None
        return w.readback_line(v, back)

    line = with_client(opts, go)
    if line is not None:
        click.echo(line)


@i2c.command("transfer", context_settings=CONTEXT)
@_yes
@_all
@click.option("-v", "verbose", is_flag=True, help="Print every message, written data too.")
@click.argument("bus")
@click.argument("desc", nargs=-1, required=True, metavar="DESC [DATA]...")
@connection_options
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
    10-bit addresses (i2ctransfer has none) are written @t0xNNN: r2@t0x2a5,
    w1@t0x050 0x00.  An address above 0x7f without the t is refused: it is
    usually an 8-bit address (0x90 is 7-bit 0x48), not a 10-bit one.

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

    lines = format_transfer(msgs, with_client(opts, go), verbose)
    if lines:
        click.echo("\n".join(lines))

"""``busbridge spi transfer``: one SPI message on a chip select, with virtio-spi's options."""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from protocol.virtio import SpiMode

from ..client import AsyncClient, spi_xfer
from .common import CONTEXT, connection_options, options, usage_error, with_client
from .i2ctools import I2CArgError, format_hex, parse_hex_bytes


@click.group(context_settings=CONTEXT)
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
@connection_options
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

"""SPI validation: the fourteen PARAM_ERR rules of SPEC.md §8.2, each against WELCOME's config.

Each check sends a message of three transfers: a valid write, the transfer that breaks
exactly one rule, and a valid read.  §8.2 requires PARAM_ERR (1) for the bad one,
TRANS_ERR (2) for the valid ones (they never ran), empty reads and one failures entry
with errno 22 per invalid transfer.  A rule the advertised config cannot break SKIPs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..board import Board, spi
from ..model import (
    CPHA,
    CPOL,
    CS_HIGH,
    EINVAL,
    LOOP,
    LSB_FIRST,
    SPI_PARAM_ERR,
    SPI_TRANS_ERR,
    SpiConfig,
    Xfer,
    word_bytes,
)
from ..registry import Ctx, Fail, Skip, check


def _bus(ctx: Ctx) -> tuple[Board, str, int, SpiConfig]:
    board = Board(ctx)
    bus = board.need_spi()
    cfg = ctx.spi_config(bus)
    if cfg.cs_max_number == 0:
        raise Skip(f"SPI bus {bus!r} has no chip select")
    return board, bus, min(1, cfg.cs_max_number - 1), cfg


def _param_err(ctx: Ctx, make: Callable[[Board, str, int, SpiConfig], Xfer | list[Xfer]],
               what: str) -> str:
    board, bus, cs, cfg = _bus(ctx)
    bad = make(board, bus, cs, cfg)
    bads = bad if isinstance(bad, list) else [bad]
    frame_cs = bads[0].head.cs
    xfers = [board.xfer(bus, frame_cs, b"\x01", 0), *bads, board.xfer(bus, frame_cs, None, 1)]
    c = ctx.open()
    r = spi(ctx, c, bus, frame_cs, xfers)
    want = bytes([SPI_TRANS_ERR, *([SPI_PARAM_ERR] * len(bads)), SPI_TRANS_ERR])
    if frame_cs >= cfg.cs_max_number:
        want = bytes([SPI_PARAM_ERR] * len(xfers))
    if r.status != want:
        raise Fail(f"{what}: status {r.status.hex(' ')}, expected {want.hex(' ')}")
    idx = sorted(e[0] for e in r.failures)
    if idx != [i for i, s in enumerate(want) if s == SPI_PARAM_ERR] or \
            any(e[1] != EINVAL for e in r.failures):
        raise Fail(f"{what}: failures {r.failures}, expected one EINVAL entry per invalid "
                   "transfer")
    return f"{what}: status {r.status.hex(' ')}, failure {r.failures[0][2][:50]!r}"


def _rule(num: str, doc: str, make: Callable[[Board, str, int, SpiConfig], Xfer | list[Xfer]],
          what: str) -> None:
    def fn(ctx: Ctx) -> str:
        return _param_err(ctx, make, what)

    fn.__doc__ = doc
    check(f"spi.param-{num}", "§8.2")(fn)


def _x(board: Board, bus: str, cs: int, tx: bytes | None, rx: int, **kw: Any) -> Xfer:
    return board.xfer(bus, cs, tx, rx, **kw)


def _cs_too_big(board: Board, bus: str, cs: int, cfg: SpiConfig) -> Xfer:
    if cfg.cs_max_number > 255:
        raise Skip("cs_max_number allows every u8")
    return _x(board, bus, cfg.cs_max_number, b"\x00", 0)


def _no_mask_gap(cfg: SpiConfig) -> int:
    for bpw in range(1, 33):
        if not cfg.bpw_allowed(bpw):
            return bpw
    raise Skip("bits_per_word_mask allows every word size")


def _bpw(board: Board, bus: str, cs: int, cfg: SpiConfig) -> Xfer:
    bpw = _no_mask_gap(cfg)
    n = word_bytes(bpw)
    return _x(board, bus, cs, bytes(n), 0, bits_per_word=bpw)


def _partial_word(board: Board, bus: str, cs: int, cfg: SpiConfig) -> Xfer:
    for bpw in range(9, 33):
        if cfg.bpw_allowed(bpw):
            return _x(board, bus, cs, bytes(word_bytes(bpw) + 1), 0, bits_per_word=bpw)
    raise Skip("no word size above 8 bits is allowed, so every length is whole words")


def _cs_change_unsupported(board: Board, bus: str, cs: int, cfg: SpiConfig) -> Xfer:
    if cfg.cs_change_supported:
        raise Skip("cs_change_supported is 1")
    return _x(board, bus, cs, b"\x00", 0, cs_change=1)


def _nbits_unsupported(board: Board, bus: str, cs: int, cfg: SpiConfig) -> Xfer:
    for bit, n in ((1, 2), (2, 4), (4, 8)):
        if not cfg.tx_nbits_supported & bit:
            return _x(board, bus, cs, b"\x00", 0, tx_nbits=n)
    raise Skip("tx_nbits_supported offers dual, quad and octal")


def _cpha_cpol(board: Board, bus: str, cs: int, cfg: SpiConfig) -> Xfer:
    good = cfg.valid_mode()
    for flip in (CPHA, CPOL):
        mode = good ^ flip
        if not cfg.mode_allowed(mode):
            return _x(board, bus, cs, b"\x00", 0, mode=mode)
    raise Skip("mode_func_supported offers CPHA 0/1 and CPOL 0/1")


def _mode_extra(board: Board, bus: str, cs: int, cfg: SpiConfig) -> Xfer:
    good = cfg.valid_mode()
    for extra in (CS_HIGH, LSB_FIRST, LOOP):
        if not cfg.mode_allowed(good | extra):
            return _x(board, bus, cs, b"\x00", 0, mode=good | extra)
    raise Skip("mode_func_supported offers CS_HIGH, LSB_FIRST and LOOP")


def _freq(board: Board, bus: str, cs: int, cfg: SpiConfig) -> Xfer:
    if not cfg.max_freq_hz or cfg.max_freq_hz == 0xFFFFFFFF:
        raise Skip("max_freq_hz is 0 (no limit)")
    return _x(board, bus, cs, b"\x00", 0, freq=cfg.max_freq_hz + 1)


_DELAYS = (("word_delay_ns", "max_word_delay_ns"), ("cs_setup_ns", "max_cs_setup_ns"),
           ("cs_hold_ns", "max_cs_hold_ns"), ("cs_inactive_ns", "max_cs_inactive_ns"))


def _delays(board: Board, bus: str, cs: int, cfg: SpiConfig) -> list[Xfer]:
    out = [_x(board, bus, cs, b"\x00", 0, **{f: getattr(cfg, m) + 1})
           for f, m in _DELAYS if getattr(cfg, m) < 0xFFFFFFFF]
    if not out:
        raise Skip("every delay maximum is 0xffffffff")
    return out


_rule("01", "chip_select_id >= cs_max_number: every transfer of the message gets PARAM_ERR.",
      _cs_too_big, "cs = cs_max_number")
_rule("02", "Full duplex with len(tx) != rx_len gets PARAM_ERR.",
      lambda b, bus, cs, cfg: _x(b, bus, cs, b"\x00\x00", 3), "tx 2 bytes, rx_len 3")
_rule("02-empty-tx", "An empty tx with a non-zero rx_len gets PARAM_ERR (§4.4).",
      lambda b, bus, cs, cfg: _x(b, bus, cs, b"", 2), "tx empty, rx_len 2")
_rule("03", "A zero-length transfer (tx nil, rx_len 0) gets PARAM_ERR.",
      lambda b, bus, cs, cfg: _x(b, bus, cs, None, 0), "tx nil, rx_len 0")
_rule("03-empty-tx", "A zero-length transfer (tx empty, rx_len 0) gets PARAM_ERR.",
      lambda b, bus, cs, cfg: _x(b, bus, cs, b"", 0), "tx empty, rx_len 0")
_rule("04", "bits_per_word 0 or 33 (outside 1..32) gets PARAM_ERR.",
      lambda b, bus, cs, cfg: [_x(b, bus, cs, b"\x00", 0, bits_per_word=0),
                               _x(b, bus, cs, bytes(4), 0, bits_per_word=33)],
      "bits_per_word 0 and 33")
_rule("05", "A word size whose bit in bits_per_word_mask is clear gets PARAM_ERR.",
      _bpw, "word size outside the mask")
_rule("06", "A length that is not a whole number of words gets PARAM_ERR.",
      _partial_word, "a partial word")
_rule("07", "cs_change > 1 gets PARAM_ERR.",
      lambda b, bus, cs, cfg: _x(b, bus, cs, b"\x00", 0, cs_change=2), "cs_change 2")
_rule("08", "cs_change 1 on a controller with cs_change_supported 0 gets PARAM_ERR.",
      _cs_change_unsupported, "cs_change 1 unsupported")
_rule("09", "tx_nbits 3 (not 0/1/2/4/8) gets PARAM_ERR.",
      lambda b, bus, cs, cfg: _x(b, bus, cs, b"\x00", 0, tx_nbits=3), "tx_nbits 3")
_rule("09-unsupported", "Dual/quad/octal lines without the config bit get PARAM_ERR.",
      _nbits_unsupported, "unsupported lane width")
_rule("09-rx", "rx_nbits 5 (not 0/1/2/4/8) gets PARAM_ERR.",
      lambda b, bus, cs, cfg: _x(b, bus, cs, None, 1, rx_nbits=5), "rx_nbits 5")
_rule("10", "mode bits above bit 4 get PARAM_ERR.",
      lambda b, bus, cs, cfg: _x(b, bus, cs, b"\x00", 0,
                                 mode=cfg.valid_mode() | 0x20), "mode bit 5")
_rule("11", "A CPHA or CPOL the controller does not offer gets PARAM_ERR.",
      _cpha_cpol, "CPHA/CPOL not offered")
_rule("12", "CS_HIGH, LSB_FIRST or LOOP without its mode_func_supported bit gets PARAM_ERR.",
      _mode_extra, "mode flag not offered")
_rule("13", "freq above max_freq_hz gets PARAM_ERR.", _freq, "max_freq_hz + 1")
_rule("14", "Each delay above its maximum gets PARAM_ERR (one failures entry each).",
      _delays, "every delay at its maximum + 1")


@check("spi.param-at-max", "§8.2")
def at_max(ctx: Ctx) -> str:
    """A transfer exactly at every advertised maximum (freq, delays, last cs) is valid."""
    board, bus, _, cfg = _bus(ctx)
    cs = cfg.cs_max_number - 1
    kw = {f: getattr(cfg, m) for f, m in _DELAYS}
    if cfg.max_freq_hz:
        kw["freq"] = cfg.max_freq_hz
    c = ctx.open()
    xfers = [board.xfer(bus, cs, b"\x5a", 1, **kw)]
    r = spi(ctx, c, bus, cs, xfers)
    if r.status[0] == SPI_PARAM_ERR:
        raise Fail(f"a transfer at the maxima got PARAM_ERR: {r.failures}")
    return f"cs {cs}, freq {kw.get('freq', 0)}, delays at their maxima: status {r.status.hex()}"


@check("spi.param-two-bad", "§8.2 §4.5")
def two_bad(ctx: Ctx) -> str:
    """Two invalid transfers in one message: a failures entry for each (§8.2)."""
    return _param_err(ctx, lambda b, bus, cs, cfg: [_x(b, bus, cs, None, 0),
                                                    _x(b, bus, cs, b"\x00", 0, cs_change=2)],
                      "two invalid transfers")


@check("spi.param-nothing-runs", "§8.2")
def nothing_runs(ctx: Ctx) -> str:
    """With one PARAM_ERR transfer no transfer runs: a flash WREN before it has no effect."""
    board = Board(ctx)
    bus, cs = board.flash()
    c = ctx.open()

    def wel() -> int:
        r = spi(ctx, c, bus, cs, [board.xfer(bus, cs, b"\x05", 0), board.xfer(bus, cs, None, 1)])
        return r.reads[0][0] & 0x02 if r.status == b"\x00\x00" else -1

    spi(ctx, c, bus, cs, [board.xfer(bus, cs, b"\x04", 0)])  # WRDI: write enable latch off
    if wel() != 0:
        raise Skip("the flash's write-enable latch does not clear on WRDI")
    bad = board.xfer(bus, cs, b"\x00", 0, cs_change=2)
    r = spi(ctx, c, bus, cs, [board.xfer(bus, cs, b"\x06", 0, cs_change=1), bad])
    if r.status != b"\x02\x01":
        raise Fail(f"WREN + invalid transfer: status {r.status.hex(' ')}, expected 02 01")
    if wel() != 0:
        raise Fail("the WREN in a message with a PARAM_ERR transfer ran: the latch is set")
    spi(ctx, c, bus, cs, [board.xfer(bus, cs, b"\x06", 0)])
    if wel() == 0:
        raise Skip("the flash's write-enable latch does not set on WREN, so this proves nothing")
    spi(ctx, c, bus, cs, [board.xfer(bus, cs, b"\x04", 0)])
    return "TRANS_ERR + PARAM_ERR, and the WREN never reached the flash (WEL stayed 0)"


@check("spi.cs-change", "§5.3 §8.2")
def cs_change(ctx: Ctx) -> str:
    """cs_change 1 ends a flash command mid-message: WREN then RDSR in one message sets WEL."""
    board = Board(ctx)
    bus, cs = board.flash()
    if not ctx.spi_config(bus).cs_change_supported:
        raise Skip("cs_change_supported is 0")
    c = ctx.open()
    spi(ctx, c, bus, cs, [board.xfer(bus, cs, b"\x04", 0)])
    r = spi(ctx, c, bus, cs, [board.xfer(bus, cs, b"\x06", 0, cs_change=1),
                              board.xfer(bus, cs, b"\x05", 0), board.xfer(bus, cs, None, 1)])
    spi(ctx, c, bus, cs, [board.xfer(bus, cs, b"\x04", 0)])
    if r.status != b"\x00\x00\x00" or not r.reads[0][0] & 0x02:
        raise Fail(f"WREN (cs_change 1), RDSR, read: status {r.status.hex(' ')}, "
                   f"reads {r.reads}: WEL not set, so CS did not toggle after the WREN")
    return f"status register after WREN with cs_change 1: {r.reads[0].hex()} (WEL set)"


@check("spi.words-16", "§5.3 §8.2")
def words_16(ctx: Ctx) -> str:
    """16-bit words travel as 2 bytes each, unchanged (on a loopback)."""
    board = Board(ctx)
    bus, cs = board.loopback()
    if not ctx.spi_config(bus).bpw_allowed(16):
        raise Skip("16-bit words are not allowed on this bus")
    c = ctx.open()
    tx = bytes([0x34, 0x12, 0x78, 0x56])
    r = spi(ctx, c, bus, cs, [board.xfer(bus, cs, tx, 4, bits_per_word=16)])
    if r.reads != [tx]:
        raise Fail(f"16-bit loopback: sent {tx.hex(' ')}, got {r.reads}")
    return "two 16-bit words out and back unchanged"


@check("spi.cs-last", "§4.4 §8.2")
def cs_last(ctx: Ctx) -> str:
    """``cs`` = cs_max_number - 1 is a valid chip select (no PARAM_ERR)."""
    board, bus, _, cfg = _bus(ctx)
    cs = cfg.cs_max_number - 1
    c = ctx.open()
    r = spi(ctx, c, bus, cs, [board.xfer(bus, cs, b"\x00", 0)])
    if r.status[0] == SPI_PARAM_ERR:
        raise Fail(f"cs {cs} (< cs_max_number {cfg.cs_max_number}) got PARAM_ERR")
    return f"cs {cs}: status {r.status.hex()}"


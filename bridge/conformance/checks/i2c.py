"""FAIL_NEXT chains and 10-bit addressing (SPEC.md §5.2, §8.1), on real devices of the board."""

from __future__ import annotations

from ..board import EEPROM_SCRATCH_OFFSETS, Board, fresh_marker, holds, i2c
from ..model import (
    EOPNOTSUPP,
    I2C_FUNC_10BIT_ADDR,
    Msg,
    addr10,
    chain,
    rd,
    wr,
)
from ..registry import Ctx, Fail, Skip, check


@check("i2c.fail-next-middle", "§8.1")
def fail_next_middle(ctx: Ctx) -> str:
    """Request k of a chain fails: earlier ones stay OK with data, k and the rest ERR, unrun.

    The request after k is an EEPROM write ending the chain: had it run, the STOP that
    closes the chain would commit it (a 24Cxx commits a page write at STOP).
    """
    board = Board(ctx)
    bus = board.eeprom()[0]
    sbus, saddr, reg, want = board.sensor()
    if sbus != bus:
        raise Skip("the sensor and the EEPROM are on different buses")
    gone = board.absent(bus)
    c = ctx.open()
    where = EEPROM_SCRATCH_OFFSETS["chain-rest"]
    mark = fresh_marker(board, c, where)
    msgs = chain(wr(saddr, bytes([reg])), rd(saddr, len(want)), wr(gone, b"\x00"),
                 board.eeprom_msg(where, bytes([mark])))
    r = i2c(ctx, c, bus, msgs)
    if r.status != b"\x00\x00\x01\x01":
        raise Fail(f"chain pointer write, read, NACK, EEPROM write: status "
                   f"{r.status.hex(' ')}, expected 00 00 01 01")
    if r.reads != [want]:
        raise Fail(f"the read before the failure has {r.reads}, expected {want.hex(' ')}")
    if [e[0] for e in r.failures] != [2]:
        raise Fail(f"failures {r.failures}, expected one entry at index 2")
    if holds(board, c, where, mark):
        raise Fail("request 3 (after the failure in the same chain) reached the bus")
    return (f"00 00 01 01, read {want.hex(' ')} kept, failure [2, errno {r.failures[0][1]}]; "
            "the EEPROM write after k never ran")


@check("i2c.fail-next-first", "§8.1 §4.5")
def fail_next_first(ctx: Ctx) -> str:
    """The first request of a chain fails: the whole chain is ERR, its read entry empty."""
    board = Board(ctx)
    bus, addr, reg, _ = board.sensor()
    gone = board.absent(bus)
    c = ctx.open()
    r = i2c(ctx, c, bus, chain(wr(gone, bytes([reg])), rd(addr, 2)))
    if r.status != b"\x01\x01" or r.reads != [b""]:
        raise Fail(f"status {r.status.hex(' ')}, reads {r.reads}; expected 01 01 and one "
                   "empty read")
    return f"01 01, reads [''], failure at {r.failures[0][0]}"


@check("i2c.chains-independent", "§8.1")
def chains_independent(ctx: Ctx) -> str:
    """A failed chain does not stop the next chain of the frame, which runs in order."""
    board = Board(ctx)
    bus, addr, reg, want = board.sensor()
    gone = board.absent(bus)
    c = ctx.open()
    msgs = [*chain(wr(gone, b"\x00"), rd(gone, 1)), *chain(wr(addr, bytes([reg])), rd(addr, 2)),
            rd(gone, 0), *chain(wr(addr, bytes([reg])), rd(addr, 2))]
    r = i2c(ctx, c, bus, msgs)
    if r.status != b"\x01\x01\x00\x00\x01\x00\x00" or r.reads != [b"", want, b"", want]:
        raise Fail(f"four chains (fail, ok, fail, ok): status {r.status.hex(' ')}, reads "
                   f"{r.reads}")
    if [e[0] for e in r.failures] != [0, 4]:
        raise Fail(f"failures at {[e[0] for e in r.failures]}, expected [0, 4]")
    return "fail/ok/fail/ok chains: 01 01 00 00 01 00 00, failures at [0, 4]"


@check("i2c.reads-in-order", "§4.5")
def reads_in_order(ctx: Ctx) -> str:
    """``reads`` has one entry per read request, in request order, of the requested lengths."""
    board = Board(ctx)
    bus, addr, reg, want = board.sensor()
    c = ctx.open()
    msgs = [*chain(wr(addr, bytes([reg])), rd(addr, 1)), rd(addr, 0),
            *chain(wr(addr, bytes([reg])), rd(addr, 2))]
    r = i2c(ctx, c, bus, msgs)
    if r.status != bytes(5) or r.reads != [want[:1], b"", want]:
        raise Fail(f"reads {r.reads}, expected [{want[:1]!r}, b'', {want!r}]")
    return "reads of 1, 0 and 2 bytes in order"


def _ten(ctx: Ctx) -> tuple[str, int, int, bytes]:
    return Board(ctx).ten_bit()


@check("i2c.10bit-read", "§5.2")
def ten_bit_read(ctx: Ctx) -> str:
    """A 10-bit address (0x2A5) is encoded per §5.2 and reaches the 10-bit device."""
    bus, addr, reg, want = _ten(ctx)
    c = ctx.open()
    r = i2c(ctx, c, bus, chain(wr(addr, bytes([reg]), ten_bit=True),
                               rd(addr, len(want), ten_bit=True)))
    if r.reads != [want]:
        raise Fail(f"10-bit {addr:#x} reg {reg:#x}: {r.reads}, expected {want.hex()}")
    return f"addr field {addr10(addr):#06x}: reg {reg:#x} = {want.hex()}"


@check("i2c.10bit-distinct", "§5.2")
def ten_bit_distinct(ctx: Ctx) -> str:
    """10-bit addresses differing only in A9..A8 are different devices."""
    bus, addr, _, _ = _ten(ctx)
    others = [addr ^ 0x100, addr ^ 0x200, addr ^ 0x300]
    c = ctx.open()
    r = i2c(ctx, c, bus, [rd(addr, 0, ten_bit=True)] + [rd(a, 0, ten_bit=True) for a in others])
    if r.status != b"\x00\x01\x01\x01":
        raise Fail(f"probes of 10-bit {addr:#x} and {[hex(a) for a in others]}: "
                   f"{r.status.hex(' ')}, expected 00 01 01 01")
    return f"{addr:#x} answers, {', '.join(hex(a) for a in others)} do not"


@check("i2c.10bit-functionality", "§4.2 §8.1")
def ten_bit_functionality(ctx: Ctx) -> str:
    """A bus on which a 10-bit request succeeds advertises I2C_FUNC_10BIT_ADDR."""
    bus, _, _, _ = _ten(ctx)
    fn = Board(ctx).functionality(bus)
    if not fn & I2C_FUNC_10BIT_ADDR:
        raise Fail(f"bus {bus!r} runs 10-bit requests but functionality {fn:#x} lacks 0x2")
    return f"bus {bus!r} functionality {fn:#010x} has I2C_FUNC_10BIT_ADDR"


@check("i2c.10bit-unsupported", "§4.5 §8.1")
def ten_bit_unsupported(ctx: Ctx) -> str:
    """On a bus without I2C_FUNC_10BIT_ADDR a 10-bit chain is ERR/EOPNOTSUPP from its start."""
    board = Board(ctx)
    plain = [b for b in board.i2c_names() if not board.functionality(b) & I2C_FUNC_10BIT_ADDR]
    if not plain:
        raise Skip("every I2C bus advertises I2C_FUNC_10BIT_ADDR")
    bus = plain[0]
    c = ctx.open()
    r = i2c(ctx, c, bus, chain(wr(0x2A5, b"\x00", ten_bit=True), rd(0x2A5, 1, ten_bit=True)))
    if r.status != b"\x01\x01" or r.failures[0][:2] != [0, EOPNOTSUPP]:
        raise Fail(f"10-bit chain on bus {bus!r}: {r.status.hex(' ')} {r.failures}, expected "
                   "01 01 and [0, 95]")
    return f"bus {bus!r}: 01 01, failure [0, 95]"


@check("i2c.collision-78", "§5.2")
def collision(ctx: Ctx) -> str:
    """7-bit 0x78 encodes as 0x00F0, which is run as 10-bit 0x000: a RESULT, not bad-request."""
    board = Board(ctx)
    bus = board.need_i2c()
    c = ctx.open()
    msg = Msg(0x00F0, 0, b"")
    r = i2c(ctx, c, bus, [msg])
    has10 = board.functionality(bus) & I2C_FUNC_10BIT_ADDR
    if not has10 and (r.status != b"\x01" or r.failures[0][1] != EOPNOTSUPP):
        raise Fail(f"0x00F0 on a bus without 10-bit support: {r.failures}, expected EOPNOTSUPP")
    note = r.failures[0][2][:60] if r.failures else "OK"
    return f"addr field 0x00f0: RESULT {r.status.hex()} ({note!r})"

"""Every frame type doing its job (SPEC.md §4, §8.1, §8.2), and frames a server must refuse."""

from __future__ import annotations

from ..board import (
    EEPROM_SCRATCH_OFFSETS,
    Board,
    ask,
    fresh_marker,
    holds,
    i2c,
    next_id,
    reg_read,
    spi,
)
from ..model import chain, check_pong, out_hdr, rd, wr
from ..registry import Ctx, Fail, check
from ..wire import PING, PONG


@check("fr.i2c-register-read", "§4.3 §8.1")
def i2c_register_read(ctx: Ctx) -> str:
    """A write+read chain (repeated START) reads a known register: TMP117 0x0F = 01 17."""
    bus, addr, reg, want = Board(ctx).sensor()
    c = ctx.open()
    got = reg_read(ctx, c, bus, addr, reg, 2)
    if got != want:
        raise Fail(f"register {reg:#04x} of {addr:#x} read {got!r}, expected {want.hex(' ')}")
    return f"bus {bus} {addr:#x} reg {reg:#04x} = {got.hex(' ')}"


@check("fr.i2c-write-read-back", "§4.3 §8.1")
def i2c_write_read_back(ctx: Ctx) -> str:
    """Bytes written to the EEPROM in one frame read back in the next."""
    board = Board(ctx)
    board.eeprom()
    c = ctx.open()
    where = EEPROM_SCRATCH_OFFSETS["rw"]
    data = bytes([next_id() & 0xFF, 0x42, 0x99, 0x00])
    if not board.eeprom_write(c, where, data):
        raise Fail("EEPROM page write got ERR")
    got = board.eeprom_read(c, where, len(data))
    if got != data:
        raise Fail(f"wrote {data.hex(' ')}, read back {got!r}")
    return f"wrote and read back {data.hex(' ')}"


@check("fr.i2c-probe", "§8.1")
def i2c_probe(ctx: Ctx) -> str:
    """Zero-length write and read: OK where a device answers, ERR (one failure) where none does."""
    board = Board(ctx)
    bus = board.need_i2c()
    present = board.present(bus)
    if not present:
        raise Fail(f"no address on I2C bus {bus!r} answers a zero-length read")
    gone = board.absent(bus)
    c = ctx.open()
    msgs = [wr(present[0]), rd(present[0], 0), wr(gone), rd(gone, 0)]
    r = i2c(ctx, c, bus, msgs)
    if r.status != b"\x00\x00\x01\x01":
        raise Fail(f"probes of {present[0]:#x} (present) and {gone:#x} (absent): status "
                   f"{r.status.hex(' ')}, expected 00 00 01 01")
    if r.reads != [b"", b""]:
        raise Fail(f"reads {r.reads}, expected two empty entries")
    errnos = sorted({e[1] for e in r.failures})
    return f"present {present[0]:#x}: OK; absent {gone:#x}: ERR, errno {errnos}"


@check("fr.i2c-padding-ignored", "§4.3 §5.1")
def padding_ignored(ctx: Ctx) -> str:
    """A non-zero ``padding`` in out_hdr is ignored on receipt."""
    bus, addr, reg, want = Board(ctx).sensor()
    c = ctx.open()
    rid = next_id()
    reqs = [[out_hdr(addr << 1, 1, padding=0xBEEF), bytes([reg])],
            [out_hdr(addr << 1, 2, padding=0xFFFF), len(want)]]
    f = ask(ctx, c, [2, rid, bus, reqs, None])
    if f.type != 4 or f.obj[2] != b"\x00\x00" or f.obj[3] != [want]:
        raise Fail(f"padding 0xbeef/0xffff: expected RESULT with {want.hex(' ')}, got {f.brief()}")
    return "padding 0xbeef and 0xffff ignored"


@check("fr.spi-full-duplex", "§4.4 §8.2")
def spi_full_duplex(ctx: Ctx) -> str:
    """A full-duplex transfer (tx and rx_len equal) on a loopback reads back what it sent."""
    board = Board(ctx)
    bus, cs = board.loopback()
    c = ctx.open()
    tx = bytes(range(0x30, 0x30 + 24))
    r = spi(ctx, c, bus, cs, [board.xfer(bus, cs, tx, len(tx))])
    if r.reads != [tx]:
        raise Fail(f"loopback returned {r.reads}, expected what was sent")
    return f"{len(tx)} bytes out and back on SPI bus {bus} CS {cs}"


@check("fr.spi-half-duplex", "§4.4 §8.2 §12.8")
def spi_half_duplex(ctx: Ctx) -> str:
    """Half-duplex write then half-duplex read (tx nil) in one message: JEDEC ID ef 40 16."""
    board = Board(ctx)
    bus, cs = board.flash()
    c = ctx.open()
    r = spi(ctx, c, bus, cs, [board.xfer(bus, cs, b"\x9f", 0), board.xfer(bus, cs, None, 3)])
    if r.status != b"\x00\x00" or r.reads != [b"\xef\x40\x16"]:
        raise Fail(f"JEDEC ID: status {r.status.hex(' ')}, reads {r.reads}")
    return "9f, then 3 bytes read with CS held: ef 40 16"


@check("fr.spi-reserved-ignored", "§5.3")
def spi_reserved_ignored(ctx: Ctx) -> str:
    """Non-zero ``reserved`` bytes of spi_transfer_head are ignored on receipt."""
    board = Board(ctx)
    bus, cs = board.loopback()
    c = ctx.open()
    head = bytearray(board.head(bus, cs).pack())
    head[5:8] = b"\xff\x7f\x01"
    rid = next_id()
    f = ask(ctx, c, [3, rid, bus, cs, [[bytes(head), b"\x11\x22", 2]], None])
    if f.type != 4 or f.obj[2] != b"\x00" or f.obj[3] != [b"\x11\x22"]:
        raise Fail(f"reserved ff 7f 01: expected TRANS_OK with 11 22, got {f.brief()}")
    return "reserved bytes ff 7f 01 ignored"


@check("fr.ping", "§4.7")
def ping(ctx: Ctx) -> str:
    """PING is answered by PONG with its id, for ids 1 and 0xFFFFFFFF."""
    c = ctx.open()
    for pid in (1, 0xFFFFFFFF, 0x10000):
        c.send([PING, pid])
        check_pong(ctx.recv(c, f"PONG {pid}"), pid)
    return "PONG 1, 0xffffffff, 0x10000"


@check("fr.ping-not-in-flight", "§4.7 §7")
def ping_not_in_flight(ctx: Ctx) -> str:
    """A PING's id is independent of request ids: a PING reusing an in-flight id is fine."""
    bus, addr, reg, _ = Board(ctx).sensor()
    c = ctx.open()
    rid = next_id()
    c.send([2, rid, bus, [m.wire() for m in chain(wr(addr, bytes([reg])), rd(addr, 2))], None])
    c.send([PING, rid])
    got = {(f.type, f.id) for f in c.recv_all(2)}
    if got != {(4, rid), (PONG, rid)}:
        raise Fail(f"request {rid} and PING {rid}: expected RESULT and PONG, got {got}")
    return f"RESULT {rid} and PONG {rid}, no duplicate-id"


@check("fr.pong-unanswered", "§4.7")
def pong_unanswered(ctx: Ctx) -> str:
    """A PONG from the client is never answered."""
    c = ctx.open()
    c.send([PONG, 9])
    c.send([PING, 10])
    check_pong(ctx.recv(c, "PONG 10 as the next frame"), 10)
    return "the PONG got no answer; the next frame was PONG 10"


@check("fr.ping-id-0", "§4.7 §9")
def ping_id_0(ctx: Ctx) -> str:
    """PING id 0 is out of range (1..0xFFFFFFFF): non-fatal ``malformed``."""
    c = ctx.open()
    c.send([PING, 0])
    ctx.expect_error(c, "malformed", 0, fatal=False, what="PING id 0")
    return "ERROR malformed id 0; connection kept"


@check("fr.ping-arity", "§4.7 §9.1 §9.3 row 9")
def ping_arity(ctx: Ctx) -> str:
    """``[6, 5, 5]`` (3 items): non-fatal ``malformed`` with id 0 (PING is no request frame)."""
    return _refused_open(ctx, [PING, 5, 5], "the 3-item PING")


@check("fr.pong-arity", "§4.7 §9.1 §9.3 row 9")
def pong_arity(ctx: Ctx) -> str:
    """``[7]`` (1 item): non-fatal ``malformed`` with id 0."""
    return _refused_open(ctx, [PONG], "the 1-item PONG")


def _refused_open(ctx: Ctx, obj: object, what: str, code: str = "malformed") -> str:
    """After HELLO, ``obj`` gets a non-fatal ERROR ``code`` with id 0 (§9.1: no request id)."""
    c = ctx.open()
    c.send(obj)
    _, msg = ctx.expect_error(c, code, 0, fatal=False, what=what)
    return f"ERROR {code} id 0 ({msg[:60]!r}); connection kept"


@check("fr.unknown-type", "§4 §9.1 §9.3 row 7")
def unknown_type(ctx: Ctx) -> str:
    """After HELLO, frame type 99 (undefined): non-fatal ``malformed`` with id 0."""
    return _refused_open(ctx, [99, 5], "frame type 99")


@check("fr.client-result", "§9.1 §9.3 row 7")
def client_result(ctx: Ctx) -> str:
    """After HELLO, a client-sent RESULT: non-fatal ``malformed`` with id 0."""
    return _refused_open(ctx, [4, 6, b"\x00", [], []], "a client-sent RESULT")


@check("fr.client-lease-result", "§9.1 §9.3 row 7")
def client_lease_result(ctx: Ctx) -> str:
    """After HELLO, a client-sent LEASE_RESULT: non-fatal ``malformed`` with id 0."""
    return _refused_open(ctx, [9, 7, {"leases": []}], "a client-sent LEASE_RESULT")


@check("fr.client-error", "§4.6 §9.1 §9.3 row 7")
def client_error(ctx: Ctx) -> str:
    """After HELLO, a client-sent ERROR ``[5, 8, "internal", "x"]``: ``malformed``, id 0."""
    return _refused_open(ctx, [5, 8, "internal", "x"], "a client-sent ERROR")


@check("fr.client-welcome", "§9.1 §9.3 row 7")
def client_welcome(ctx: Ctx) -> str:
    """After HELLO, a client-sent WELCOME ``[1, 9, {}]``: non-fatal ``malformed``, id 0."""
    return _refused_open(ctx, [1, 9, {}], "a client-sent WELCOME")


@check("fr.one-item-after-hello", "§4 §9.3 row 6")
def one_item_after_hello(ctx: Ctx) -> str:
    """After HELLO, ``[0]`` and ``[2]`` are no frames (< 2 items): non-fatal ``malformed``, id 0."""
    _refused_open(ctx, [0], "[0] after HELLO")
    return _refused_open(ctx, [2], "[2] after HELLO")


@check("fr.second-hello-short", "§6 §9.2 §9.3 row 8")
def second_hello_short(ctx: Ctx) -> str:
    """After HELLO, ``[0, 0]`` (a type-0 frame, whatever its content): fatal ``malformed``, id 0."""
    c = ctx.open()
    c.send([0, 0])
    _, msg = ctx.expect_error(c, "malformed", 0, fatal=True, what="[0, 0] after HELLO")
    return f"ERROR malformed id 0 ({msg[:60]!r}), then closed"


@check("fr.timeout-given", "§4 §8.4")
def timeout_given(ctx: Ctx) -> str:
    """A frame with a generous ``timeout_ms`` runs normally (the deadline does not fire)."""
    bus, addr, reg, want = Board(ctx).sensor()
    c = ctx.open()
    r = i2c(ctx, c, bus, chain(wr(addr, bytes([reg])), rd(addr, 2)), timeout_ms=30_000)
    if r.reads != [want]:
        raise Fail(f"with timeout_ms 30000: {r}")
    return "timeout_ms 30000: RESULT OK"


@check("fr.eeprom-untouched-by-refusal", "§4.3 §8.1")
def refusal_runs_nothing(ctx: Ctx) -> str:
    """A frame refused as ``bad-request`` (last request with FAIL_NEXT) runs none of it."""
    board = Board(ctx)
    board.eeprom()
    c = ctx.open()
    where = EEPROM_SCRATCH_OFFSETS["refused"]
    mark = fresh_marker(board, c, where)
    rid = next_id()
    msgs = [board.eeprom_msg(where, bytes([mark])), wr(board.absent("1"), b"\x00", fail_next=True)]
    c.send([2, rid, "1", [m.wire() for m in msgs], None])
    ctx.expect_error(c, "bad-request", rid, fatal=False, what="a frame ending in FAIL_NEXT")
    if holds(board, c, where, mark):
        raise Fail("the refused frame's first request (an EEPROM write) reached the bus")
    return "ERROR bad-request; the EEPROM write in the same frame never happened"

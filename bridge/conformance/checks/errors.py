"""The error table of SPEC.md §9, row by row, after the handshake (§2-§4, §5.2, §7, §8.5)."""

from __future__ import annotations

import time
from typing import Any

from ..board import EEPROM_SCRATCH_OFFSETS, Board, fresh_marker, holds, next_id
from ..model import chain, check_error, i2c_frame, out_hdr, rd, wr
from ..registry import Ctx, Fail, Skip, check
from ..wire import Conn, frame, frame_body, pack


def _refuse(ctx: Ctx, payload: Any, code: str, ids: int | set[int], *, fatal: bool | None,
            what: str, raw: bool = False, c: Conn | None = None) -> str:
    c = c or ctx.open()
    c.send_bytes(payload if raw else frame(payload))
    rid, msg = ctx.expect_error(c, code, ids, fatal=fatal, what=what)
    tail = {True: "then closed", False: "connection kept", None: ""}[fatal]
    return f"ERROR {code} id {rid} ({msg[:60]!r}) {tail}".rstrip()


def _sensor_frame(ctx: Ctx, rid: int) -> list[Any]:
    bus, addr, reg, _ = Board(ctx).sensor()
    return i2c_frame(rid, bus, chain(wr(addr, bytes([reg])), rd(addr, 2)))


def _probe(ctx: Ctx, rid: int) -> list[Any]:
    bus = Board(ctx).need_i2c()
    return i2c_frame(rid, bus, [rd(0x08, 0)])


# -- malformed -----------------------------------------------------------------------


@check("err.not-msgpack", "§3 §9")
def not_msgpack(ctx: Ctx) -> str:
    """A body that is not msgpack: non-fatal ``malformed``, id 0 (no id to read)."""
    return _refuse(ctx, frame_body(b"\xc1"), "malformed", 0, fatal=False, raw=True,
                   what="body c1")


@check("err.not-an-array", "§3 §9")
def not_an_array(ctx: Ctx) -> str:
    """A body that is not an array (a map): non-fatal ``malformed``, id 0."""
    return _refuse(ctx, {"type": 2}, "malformed", 0, fatal=False, what="a map body")


@check("err.empty-frame", "§2 §9.2 §9.3 row 3")
def empty_frame(ctx: Ctx) -> str:
    """A frame of length 0 after HELLO: non-fatal ``malformed``, id 0."""
    return _refuse(ctx, b"\x00\x00\x00\x00", "malformed", 0, fatal=False, raw=True,
                   what="an empty frame")


@check("err.trailing-bytes", "§2 §9.1 §9.3 row 4")
def trailing_bytes(ctx: Ctx) -> str:
    """A valid I2C frame followed by one extra byte: non-fatal ``malformed`` with its id."""
    rid = next_id()
    body = pack(_probe(ctx, rid)) + b"\x00"
    return _refuse(ctx, frame_body(body), "malformed", rid, fatal=False, raw=True,
                   what="trailing data")


@check("err.truncated-body", "§2 §9.1 §9.3 row 4")
def truncated_body(ctx: Ctx) -> str:
    """``[2, 77, "1"`` of a 5-array (ends inside it): non-fatal ``malformed``, id 77 (head)."""
    body = b"\x95\x02\x4d\xa11"
    return _refuse(ctx, frame_body(body), "malformed", 77, fatal=False, raw=True,
                   what="a truncated body")


def _frame_variant(name: str, section: str, doc: str, build: Any) -> None:
    """Register a check: an I2C/SPI frame with one wrong item is non-fatal ``malformed``."""

    def fn(ctx: Ctx) -> str:
        rid = next_id()
        obj = build(ctx, rid)
        return _refuse(ctx, obj, "malformed", rid, fatal=False, what=doc)

    fn.__doc__ = f"{doc}: non-fatal ``malformed`` carrying the frame's id."
    check(name, section)(fn)


def _hdr7(a: int, flags: int = 0) -> bytes:
    return out_hdr(a << 1, flags)


def _i2c(ctx: Ctx, rid: int, reqs: Any, timeout: Any = None, bus: Any = None) -> list[Any]:
    return [2, rid, Board(ctx).need_i2c() if bus is None else bus, reqs, timeout]


_frame_variant("err.i2c-4-items", "§4 §9", "an I2C frame with 4 items",
               lambda ctx, rid: _probe(ctx, rid)[:4])
_frame_variant("err.i2c-6-items", "§4 §9", "an I2C frame with 6 items",
               lambda ctx, rid: [*_probe(ctx, rid), None])
_frame_variant("err.bus-not-str", "§4 §9", "an I2C frame whose bus is an int",
               lambda ctx, rid: _i2c(ctx, rid, [[_hdr7(8, 2), 0]], bus=1))
_frame_variant("err.bus-empty", "§4 §10", "an I2C frame whose bus is \"\"",
               lambda ctx, rid: _i2c(ctx, rid, [[_hdr7(8, 2), 0]], bus=""))
_frame_variant("err.bus-65", "§4 §10", "a bus name of 65 characters",
               lambda ctx, rid: _i2c(ctx, rid, [[_hdr7(8, 2), 0]], bus="b" * 65))
_frame_variant("err.timeout-bool", "§3 §9", "timeout_ms true (a bool for an int)",
               lambda ctx, rid: _i2c(ctx, rid, [[_hdr7(8, 2), 0]], timeout=True))
_frame_variant("err.timeout-float", "§3 §9", "timeout_ms 100.0 (a float for an int)",
               lambda ctx, rid: _i2c(ctx, rid, [[_hdr7(8, 2), 0]], timeout=100.0))
_frame_variant("err.timeout-0", "§4 §10", "timeout_ms 0 (range 1..3600000)",
               lambda ctx, rid: _i2c(ctx, rid, [[_hdr7(8, 2), 0]], timeout=0))
_frame_variant("err.timeout-3600001", "§4 §10", "timeout_ms 3600001",
               lambda ctx, rid: _i2c(ctx, rid, [[_hdr7(8, 2), 0]], timeout=3_600_001))
_frame_variant("err.str-for-bin", "§3 §9", "an out_hdr sent as str instead of bin",
               lambda ctx, rid: _i2c(ctx, rid, [["\x10\x00\x00\x00\x02\x00\x00\x00", 0]]))
_frame_variant("err.read-with-bin", "§4.3", "a read request (M_RD) with a bin buf",
               lambda ctx, rid: _i2c(ctx, rid, [[_hdr7(8, 2), b"\x00"]]))
_frame_variant("err.write-with-int", "§4.3", "a write request with an int buf",
               lambda ctx, rid: _i2c(ctx, rid, [[_hdr7(8, 0), 1]]))
_frame_variant("err.hdr-7-bytes", "§4.3", "an out_hdr of 7 bytes",
               lambda ctx, rid: _i2c(ctx, rid, [[_hdr7(8, 2)[:7], 0]]))
_frame_variant("err.hdr-9-bytes", "§4.3", "an out_hdr of 9 bytes",
               lambda ctx, rid: _i2c(ctx, rid, [[_hdr7(8, 2) + b"\x00", 0]]))
_frame_variant("err.request-3-items", "§4.3", "a request of 3 items",
               lambda ctx, rid: _i2c(ctx, rid, [[_hdr7(8, 2), 0, 0]]))
_frame_variant("err.no-requests", "§4.3", "an I2C frame with an empty requests array",
               lambda ctx, rid: _i2c(ctx, rid, []))
_frame_variant("err.read-negative", "§4.3", "a read length of -1",
               lambda ctx, rid: _i2c(ctx, rid, [[_hdr7(8, 2), -1]]))
_frame_variant("err.spi-5-items", "§4 §9", "an SPI frame with 5 items",
               lambda ctx, rid: [3, rid, "0", 0, [[bytes(32), None, 1]]])
_frame_variant("err.spi-head-31", "§4.4", "an SPI head of 31 bytes",
               lambda ctx, rid: [3, rid, "0", 0, [[bytes([0, 8]) + bytes(29), None, 1]], None])
_frame_variant("err.spi-tx-int", "§4.4", "an SPI tx that is an int",
               lambda ctx, rid: [3, rid, "0", 0, [[bytes([0, 8]) + bytes(30), 5, 0]], None])
_frame_variant("err.spi-cs-256", "§4.4", "an SPI cs of 256",
               lambda ctx, rid: [3, rid, "0", 256, [[bytes([0, 8]) + bytes(30), None, 1]], None])
_frame_variant("err.lease-3-items", "§4.8", "a LEASE frame with 3 items",
               lambda ctx, rid: [8, rid, "list"])


@check("err.id-0", "§4 §9")
def id_0(ctx: Ctx) -> str:
    """A request id of 0 is out of range: non-fatal ``malformed``, id 0."""
    return _refuse(ctx, _probe(ctx, 0), "malformed", 0, fatal=False, what="request id 0")


@check("err.id-2-32", "§4 §9")
def id_2_32(ctx: Ctx) -> str:
    """A request id of 2**32 is out of range: non-fatal ``malformed`` with id 0 (no valid id)."""
    return _refuse(ctx, _probe(ctx, 2**32), "malformed", 0, fatal=False, what="request id 2**32")


@check("err.invalid-utf8", "§3 §9.1 §9.3 row 4")
def invalid_utf8(ctx: Ctx) -> str:
    """A bus name that is not valid UTF-8: non-fatal ``malformed`` with the frame's id."""
    rid = next_id()
    body = b"\x95\x02" + pack(rid) + b"\xa2\xff\xfe" + pack([[_hdr7(8, 2), 0]]) + b"\xc0"
    return _refuse(ctx, frame_body(body), "malformed", rid, fatal=False, raw=True,
                   what="a bus name of bytes ff fe")


@check("err.ext-type", "§3 §9.1 §9.3 row 4")
def ext_type(ctx: Ctx) -> str:
    """An extension type inside a request: non-fatal ``malformed`` with the frame's id."""
    rid = next_id()
    body = b"\x95\x02" + pack(rid) + pack(Board(ctx).need_i2c()) + pack([[_hdr7(8, 2), 0]]) + \
        b"\xd6\xff\x00\x00\x00\x00"  # fixext 4, type -1: the timestamp extension
    return _refuse(ctx, frame_body(body), "malformed", rid, fatal=False, raw=True,
                   what="a timestamp extension as timeout_ms")


@check("err.type-not-int", "§4 §9.3 row 6")
def type_not_int(ctx: Ctx) -> str:
    """``["2", id, ...]`` (item 0 a str) is no frame: non-fatal ``malformed``, id 0."""
    rid = next_id()
    return _refuse(ctx, ["2", *_probe(ctx, rid)[1:]], "malformed", 0, fatal=False,
                   what='frame type "2"')


@check("err.head-wide-ints", "§3 §9.1 §9.3 row 4")
def head_wide_ints(ctx: Ctx) -> str:
    """Type as ``d0 02``, id as ``ce ...``, a trailing byte: ``malformed`` with that id."""
    rid = next_id()
    rest = b"".join(pack(item) for item in _probe(ctx, rid)[2:])
    body = b"\x95\xd0\x02\xce" + rid.to_bytes(4, "big") + rest + b"\x00"
    return _refuse(ctx, frame_body(body), "malformed", rid, fatal=False, raw=True,
                   what="wide head integers and a trailing byte")


@check("err.head-not-request", "§9.1 §9.3 row 4")
def head_not_request(ctx: Ctx) -> str:
    """``[6, 5]`` then a trailing byte: ``malformed``, id 0 (a PING's id is never echoed)."""
    return _refuse(ctx, frame_body(pack([6, 5]) + b"\x00"), "malformed", 0, fatal=False,
                   raw=True, what="a PING with a trailing byte")


@check("err.id-float", "§3 §9.1 §9.3 row 16")
def id_float(ctx: Ctx) -> str:
    """An I2C frame with id 5.0 (a float): non-fatal ``malformed``, id 0 (the id is wrong)."""
    obj = _probe(ctx, 5)
    obj[1] = 5.0
    return _refuse(ctx, obj, "malformed", 0, fatal=False, what="request id 5.0")


# -- precedence (§9.4) -----------------------------------------------------------------


@check("err.precedence-decode-first", "§9.4")
def precedence_decode_first(ctx: Ctx) -> str:
    """Unknown bus and reserved flags in request 0: ``bad-request`` (decoding first)."""
    rid = next_id()
    obj = _i2c(ctx, rid, [[_hdr7(8, 0x4 | 2), 0]], bus=ctx.unknown_bus())
    return _refuse(ctx, obj, "bad-request", rid, fatal=False,
                   what="reserved flags on a bus the board lacks")


@check("err.precedence-item-order", "§9.4")
def precedence_item_order(ctx: Ctx) -> str:
    """timeout_ms 0 before an over-long read; request 0's flags before request 1's length."""
    n = ctx.limits["max_i2c_len"] + 1
    rid = next_id()
    a = _refuse(ctx, _i2c(ctx, rid, [[_hdr7(8, 2), n]], timeout=0), "malformed", rid,
                fatal=False, what=f"timeout_ms 0 and a read of {n}")
    rid = next_id()
    b = _refuse(ctx, _i2c(ctx, rid, [[_hdr7(8, 0x4 | 2), 0], [_hdr7(8, 2), n]]),
                "bad-request", rid, fatal=False,
                what=f"request 0 with reserved flags, request 1 a read of {n}")
    return f"timeout_ms first: {a}; request order: {b}"


@check("err.precedence-chain-then-room", "§9.4 §10")
def precedence_chain_then_room(ctx: Ctx) -> str:
    """A frame ending in FAIL_NEXT whose reads break the RESULT-size rule: ``bad-request``."""
    lim = ctx.limits
    per = lim["max_i2c_len"]
    if per < 1:
        raise Skip("max_i2c_len is 0")
    n = 1
    while n * per <= lim["max_frame"] - 64 - 128 * n:
        n += 1
    if n > lim["max_requests"]:
        raise Skip(f"breaking the RESULT-size rule needs {n} reads, above max_requests")
    rid = next_id()
    obj = _i2c(ctx, rid, [[_hdr7(8, 2 | 1), per]] * n)
    return _refuse(ctx, obj, "bad-request", rid, fatal=False,
                   what=f"{n} reads of {per} in one unfinished chain")


# -- bad-request ---------------------------------------------------------------------


def _bad(ctx: Ctx, reqs: list[Any], what: str) -> str:
    rid = next_id()
    return _refuse(ctx, _i2c(ctx, rid, reqs), "bad-request", rid, fatal=False, what=what)


@check("err.reserved-flags", "§4.3 §5.1 §9")
def reserved_flags(ctx: Ctx) -> str:
    """Reserved flag bits (0x4, 0x80000000) give non-fatal ``bad-request``."""
    _bad(ctx, [[_hdr7(8, 0x4 | 2), 0]], "flags 0x6")
    return _bad(ctx, [[_hdr7(8, 0x80000000), b""]], "flags 0x80000000")


@check("err.addr-bit0", "§5.2 §9")
def addr_bit0(ctx: Ctx) -> str:
    """An ``addr`` field with bit 0 set is invalid: non-fatal ``bad-request``."""
    return _bad(ctx, [[out_hdr(0x0091, 2), 0]], "addr field 0x0091")


@check("err.addr-high-byte", "§5.2 §9")
def addr_high_byte(ctx: Ctx) -> str:
    """A 7-bit ``addr`` field with a non-zero high byte is invalid: ``bad-request``."""
    return _bad(ctx, [[out_hdr(0x0190, 2), 0]], "addr field 0x0190")


@check("err.last-fail-next", "§4.3 §8.1 §9")
def last_fail_next(ctx: Ctx) -> str:
    """A frame whose last request has FAIL_NEXT: non-fatal ``bad-request``."""
    return _bad(ctx, [[_hdr7(8, 2), 0], [_hdr7(8, 3), 0]], "a frame ending inside a chain")


@check("err.cs-mismatch", "§4.4 §9")
def cs_mismatch(ctx: Ctx) -> str:
    """A head whose chip_select_id differs from the frame's cs: non-fatal ``bad-request``."""
    board = Board(ctx)
    bus = board.need_spi()
    rid = next_id()
    head = board.head(bus, 1).pack()
    return _refuse(ctx, [3, rid, bus, 0, [[head, b"\x00", 0]], None], "bad-request", rid,
                   fatal=False, what="head cs 1 in a frame for cs 0")


# -- unknown-bus ---------------------------------------------------------------------


@check("err.unknown-bus", "§8.5 §9 §12.14")
def unknown_bus(ctx: Ctx) -> str:
    """An I2C frame for a bus the board lacks: non-fatal ``unknown-bus`` with its id."""
    rid = next_id()
    name = ctx.unknown_bus()
    return _refuse(ctx, i2c_frame(rid, name, [rd(0x08, 0)]), "unknown-bus", rid, fatal=False,
                   what=f"I2C bus {name!r}")


@check("err.unknown-bus-kind", "§9")
def unknown_bus_kind(ctx: Ctx) -> str:
    """An SPI frame naming an I2C bus is an unknown bus "of that kind"."""
    board = Board(ctx)
    spi_names = {b["name"] for b in ctx.spi_buses()}
    names = [n for n in board.i2c_names() if n not in spi_names]
    if not names:
        raise Skip("every I2C bus name is also an SPI bus name")
    rid = next_id()
    head = bytes([0, 8]) + bytes(30)
    return _refuse(ctx, [3, rid, names[0], 0, [[head, b"\x00", 0]], None], "unknown-bus", rid,
                   fatal=False, what=f"SPI frame for I2C bus {names[0]!r}")


@check("err.bus-64", "§4 §10")
def bus_64(ctx: Ctx) -> str:
    """A bus name of exactly 64 characters is well-formed: ``unknown-bus`` if the board lacks it."""
    rid = next_id()
    return _refuse(ctx, i2c_frame(rid, "b" * 64, [rd(0x08, 0)]), "unknown-bus", rid,
                   fatal=False, what="a 64-character bus name")


# -- duplicate-id and stream errors ----------------------------------------------------


@check("err.duplicate-id", "§7 §9")
def duplicate_id(ctx: Ctx) -> str:
    """An id reused while in flight: fatal ``duplicate-id`` (id 0); the duplicate never runs."""
    board = Board(ctx)
    bus = board.eeprom()[0]
    heavy = board.heavy(bus)
    c = ctx.open()
    probe = ctx.open()
    where = EEPROM_SCRATCH_OFFSETS["dup"]
    mark = fresh_marker(board, probe, where)
    rid = next_id()
    first = frame(i2c_frame(rid, bus, heavy.msgs, 600_000))
    second = frame(i2c_frame(rid, bus, [board.eeprom_msg(where, bytes([mark]))]))
    c.send_bytes(first + second)
    frames = []
    try:
        frames = c.wait_closed(heavy.seconds * 4 + ctx.target.timeout)
    except TimeoutError:
        frames = c.quiet(0.2)
        raise Fail("the connection stayed open after a duplicate in-flight id; got "
                   + ", ".join(f.brief()[:60] for f in frames)) from None
    errs = [f for f in frames if f.type == 5]
    if not errs:
        raise Fail("no ERROR for a duplicate id; got " + ", ".join(f.brief()[:60] for f in frames))
    eid, code, _ = check_error(errs[0])
    if code != "duplicate-id" or eid != 0:
        raise Fail(f"expected ERROR duplicate-id id 0, got {code} id {eid}")
    if holds(board, probe, where, mark):
        raise Fail("the duplicate frame (an EEPROM write) ran")
    return f"ERROR duplicate-id id 0 then closed; the duplicate never ran ({len(frames)} frames)"


@check("err.id-reuse-after-answer", "§7")
def id_reuse(ctx: Ctx) -> str:
    """An id may be reused once its answer arrived."""
    c = ctx.open()
    for _ in range(3):
        c.send(_probe(ctx, 4242))
        f = ctx.recv(c, "RESULT 4242")
        if f.type != 4 or f.id != 4242:
            raise Fail(f"reusing id 4242 after its answer: got {f.brief()}")
    return "id 4242 used three times in a row"


def _ends_inside(ctx: Ctx, data: bytes, what: str) -> str:
    c = ctx.open()
    if c.tls:
        raise Skip("over TLS a half-close is not a clean end of stream")
    c.send_bytes(data)
    time.sleep(0.05)
    c.shutdown_write()
    _, msg = ctx.expect_error(c, "malformed", 0, fatal=True, what=what)
    return f"ERROR malformed id 0 ({msg!r}), then closed"


@check("err.eof-in-prefix", "§2 §9")
def eof_in_prefix(ctx: Ctx) -> str:
    """A stream that ends inside a length prefix: fatal ``malformed``, id 0."""
    return _ends_inside(ctx, b"\x00\x00", "a stream ending inside a prefix")


@check("err.eof-in-body", "§2 §9")
def eof_in_body(ctx: Ctx) -> str:
    """A stream that ends inside a body: fatal ``malformed``, id 0."""
    data = frame(_probe(ctx, next_id()))
    return _ends_inside(ctx, data[:-3], "a stream ending inside a body")

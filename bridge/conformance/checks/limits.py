"""Limits at and one past each boundary (SPEC.md §4, §7, §10), from the limits in WELCOME."""

from __future__ import annotations

from typing import Any

from ..board import Board, ask, i2c, next_id, spi
from ..model import Msg, check_error, check_result_shape, i2c_frame, out_hdr, rd, wr
from ..registry import Ctx, Fail, Skip, check
from ..wire import Conn, frame, pack


def _over(ctx: Ctx, c: Conn, obj: Any, rid: int | set[int], what: str) -> str:
    c.send(obj)
    got, _ = ctx.expect_error(c, "limit-exceeded", rid, fatal=False, what=what)
    return f"ERROR limit-exceeded id {got}"


def _accepted(ctx: Ctx, c: Conn, obj: list[Any], what: str) -> Any:
    f = ask(ctx, c, obj, f"the RESULT for {what}")
    if f.type != 4 or f.id != obj[1]:
        raise Fail(f"{what} is within the limits but got {f.brief()}")
    if len(f.body) > ctx.limits["max_frame"]:
        raise Fail(f"the RESULT for {what} is {len(f.body)} bytes, above max_frame")
    return check_result_shape(f)


@check("lim.frame-too-large", "§2 §9 §10")
def frame_too_large(ctx: Ctx) -> str:
    """A length prefix of max_frame + 1: fatal ``frame-too-large``, before any body is sent."""
    c = ctx.open()
    n = ctx.limits["max_frame"] + 1
    c.send_bytes(n.to_bytes(4, "big"))
    ctx.expect_error(c, "frame-too-large", 0, fatal=True, what=f"a prefix of {n}")
    return f"prefix {n} (no body sent): ERROR frame-too-large id 0, then closed"


def _exact_body(ctx: Ctx, rid: int, bus: str, addr: int, size: int) -> list[Any]:
    """An I2C frame of writes whose msgpack body is exactly ``size`` bytes."""
    per = min(ctx.limits["max_i2c_len"], 65535)
    if per < 1:
        raise Skip("max_i2c_len is 0")
    n = max(1, size // (per + 16))
    if n > ctx.limits["max_requests"]:
        raise Skip(f"max_frame needs {n} writes, above max_requests")
    lens = [per] * n
    for _ in range(64):
        obj = i2c_frame(rid, bus, [wr(addr, bytes(n_)) for n_ in lens])
        diff = size - len(pack(obj))
        if diff == 0:
            return obj
        if lens[-1] + diff > per or lens[-1] + diff < 0:
            lens.append(0)
            if len(lens) > ctx.limits["max_requests"]:
                raise Skip("cannot reach max_frame within max_requests writes")
            continue
        lens[-1] += diff
    raise Fail(f"kit could not build a body of exactly {size} bytes")


@check("lim.frame-at-max", "§2 §10")
def frame_at_max(ctx: Ctx) -> str:
    """A frame whose body is exactly max_frame bytes is accepted (writes to an absent address)."""
    board = Board(ctx)
    bus = board.need_i2c()
    gone = board.absent(bus)
    size = ctx.limits["max_frame"]
    rid = next_id()
    obj = _exact_body(ctx, rid, bus, gone, size)
    c = ctx.open()
    _accepted(ctx, c, obj, f"a {size}-byte body")
    return f"body of {size} bytes ({len(obj[3])} writes): RESULT"


@check("lim.requests-i2c", "§4.3 §10")
def requests_i2c(ctx: Ctx) -> str:
    """max_requests I2C requests are accepted; max_requests + 1 get ``limit-exceeded``."""
    bus = Board(ctx).need_i2c()
    n = ctx.limits["max_requests"]
    c = ctx.open()
    r = _accepted(ctx, c, i2c_frame(next_id(), bus, [rd(0x08, 0)] * n), f"{n} requests")
    rid = next_id()
    over = _over(ctx, c, i2c_frame(rid, bus, [rd(0x08, 0)] * (n + 1)), rid, f"{n + 1} requests")
    return f"{n}: RESULT of {len(r.status)}; {n + 1}: {over}"


@check("lim.requests-spi", "§4.4 §10")
def requests_spi(ctx: Ctx) -> str:
    """max_requests SPI transfers are accepted; max_requests + 1 get ``limit-exceeded``."""
    board = Board(ctx)
    bus, cs = board.loopback()
    n = ctx.limits["max_requests"]
    c = ctx.open()
    xs = [board.xfer(bus, cs, b"\x01", 1)] * n
    r = spi(ctx, c, bus, cs, xs)
    rid = next_id()
    xs1 = [board.xfer(bus, cs, b"\x01", 1)] * (n + 1)
    over = _over(ctx, c, [3, rid, bus, cs, [x.wire() for x in xs1], None], rid,
                 f"{n + 1} transfers")
    return f"{n}: RESULT {set(r.status)}; {n + 1}: {over}"


@check("lim.i2c-read-len", "§4.3 §10")
def i2c_read_len(ctx: Ctx) -> str:
    """A read of max_i2c_len bytes is accepted; max_i2c_len + 1 is ``limit-exceeded``."""
    board = Board(ctx)
    bus, addr, _, _ = board.sensor()
    n = ctx.limits["max_i2c_len"]
    c = ctx.open()
    r = i2c(ctx, c, bus, [rd(addr, n)])
    rid = next_id()
    over = _over(ctx, c, i2c_frame(rid, bus, [rd(addr, n + 1)]), rid, f"a read of {n + 1}")
    return f"read {n}: status {r.status.hex()}; {n + 1}: {over}"


@check("lim.i2c-write-len", "§4.3 §10")
def i2c_write_len(ctx: Ctx) -> str:
    """A write of max_i2c_len bytes is accepted; max_i2c_len + 1 is ``limit-exceeded``."""
    board = Board(ctx)
    bus = board.need_i2c()
    gone = board.absent(bus)
    n = ctx.limits["max_i2c_len"]
    c = ctx.open()
    r = i2c(ctx, c, bus, [wr(gone, bytes(n))])
    rid = next_id()
    over = _over(ctx, c, i2c_frame(rid, bus, [wr(gone, bytes(n + 1))]), rid,
                 f"a write of {n + 1}")
    return f"write {n} to absent {gone:#x}: status {r.status.hex()}; {n + 1}: {over}"


@check("lim.spi-len", "§4.4 §10")
def spi_len(ctx: Ctx) -> str:
    """A transfer of max_spi_len bytes is accepted; one byte more (tx or rx_len) is refused."""
    board = Board(ctx)
    bus, cs = board.loopback()
    n = ctx.limits["max_spi_len"]
    if n + 64 + 128 > ctx.limits["max_frame"]:
        raise Skip("a full max_spi_len read would not fit max_frame")
    c = ctx.open()
    tx = bytes(range(256)) * (n // 256) + bytes(n % 256)
    r = spi(ctx, c, bus, cs, [board.xfer(bus, cs, tx, n)])
    if r.reads != [tx]:
        raise Fail(f"loopback of {n} bytes returned {len(r.reads[0]) if r.reads else 0} bytes")
    rid = next_id()
    over = _over(ctx, c, [3, rid, bus, cs, [board.xfer(bus, cs, tx + b"\x00", n + 1).wire()],
                          None], rid, f"tx of {n + 1}")
    rid = next_id()
    _over(ctx, c, [3, rid, bus, cs, [board.xfer(bus, cs, None, n + 1).wire()], None], rid,
          f"rx_len {n + 1}")
    return f"{n} bytes looped back; tx {n + 1} and rx_len {n + 1}: {over}"


@check("lim.result-room", "§10")
def result_room(ctx: Ctx) -> str:
    """Reads summing to R = max_frame - 64 - 128n are accepted; R + 1 is ``limit-exceeded``."""
    board = Board(ctx)
    bus, addr, _, _ = board.sensor()
    lim = ctx.limits
    per = board.msg_len(bus)
    if per == 0:
        raise Skip("reads of 0 bytes only")
    n = 1
    while n * per < lim["max_frame"] - 64 - 128 * n:
        n += 1
    if n > lim["max_requests"]:
        raise Skip(f"R needs {n} reads of {per}, above max_requests")
    total = lim["max_frame"] - 64 - 128 * n
    lens = [per] * (n - 1) + [total - per * (n - 1)]
    c = ctx.open()
    r = _accepted(ctx, c, i2c_frame(next_id(), bus, [rd(addr, x) for x in lens]),
                  f"{n} reads summing to {total}")
    rid = next_id()
    lens[-1] += 1
    over = _over(ctx, c, i2c_frame(rid, bus, [rd(addr, x) for x in lens]), rid,
                 f"{n} reads summing to {total + 1}")
    return f"n={n}, R={total}: RESULT ({sum(map(len, r.reads))} bytes read); R+1: {over}"


@check("lim.failures-fit", "§10 §4.5")
def failures_fit(ctx: Ctx) -> str:
    """At the RESULT-size boundary with every other read failing, the RESULT still fits."""
    board = Board(ctx)
    bus, addr, _, _ = board.sensor()
    gone = board.absent(bus)
    lim = ctx.limits
    n = lim["max_requests"]
    per = min(board.msg_len(bus), (lim["max_frame"] - 64 - 128 * n) // n)
    if per < 1:
        raise Skip("max_requests reads of 1 byte do not fit max_frame")
    msgs = [rd(gone if i % 2 else addr, per) for i in range(n)]
    c = ctx.open()
    r = _accepted(ctx, c, i2c_frame(next_id(), bus, msgs), f"{n} reads of {per}, half failing")
    longest = max((len(e[2].encode()) for e in r.failures), default=0)
    if len(r.failures) != n // 2:
        raise Fail(f"{len(r.failures)} failures entries for {n // 2} failed chains")
    return (f"{n} reads of {per} bytes, {n // 2} failing: RESULT within max_frame, longest "
            f"failure message {longest} bytes")


@check("lim.in-flight", "§7 §10")
def in_flight(ctx: Ctx) -> str:
    """max_in_flight + 1 frames in one write behind a long frame: the extra one is refused."""
    board = Board(ctx)
    bus = board.need_i2c()
    heavy = board.heavy(bus)
    n = ctx.limits["max_in_flight"]
    c = ctx.open()
    ids = [next_id() for _ in range(n + 1)]
    data = frame(i2c_frame(ids[0], bus, heavy.msgs, 600_000)) + b"".join(
        frame(i2c_frame(i, bus, [rd(0x08, 0)], 600_000)) for i in ids[1:])
    c.send_bytes(data)
    frames = c.recv_all(n + 1, heavy.seconds * 4 + ctx.target.timeout)
    refused = []
    for f in frames:
        if f.type == 5:
            rid, code, _ = check_error(f)
            if code != "limit-exceeded":
                raise Fail(f"ERROR {code} for frame {rid}")
            refused.append(rid)
        elif f.type != 4:
            raise Fail(f"unexpected {f.brief()}")
    if sorted(f.id for f in frames if f.id is not None) != sorted(ids):
        raise Fail("not every frame was answered exactly once")
    if not refused:
        raise Fail(f"{n + 1} frames sent in one write behind a {heavy.seconds * 1000:.0f} ms "
                   "frame, none refused: the server answered frames before reading the rest "
                   "(it never had max_in_flight frames accepted)")
    if refused != [ids[-1]]:
        raise Fail(f"refused {len(refused)} frames (first {refused[:3]}), expected only the "
                   f"one beyond max_in_flight ({ids[-1]})")
    ctx.alive(c)
    return (f"{n + 1} frames behind a {heavy.seconds * 1000:.0f} ms frame: the first {n} "
            "accepted, the last refused with limit-exceeded")


@check("lim.id-max", "§4 §7 §10")
def id_max(ctx: Ctx) -> str:
    """Request id 0xFFFFFFFF is valid and echoed."""
    bus = Board(ctx).need_i2c()
    c = ctx.open()
    _accepted(ctx, c, i2c_frame(0xFFFFFFFF, bus, [rd(0x08, 0)]), "id 0xffffffff")
    return "RESULT id 0xffffffff"


@check("lim.timeout-bounds", "§4 §10")
def timeout_bounds(ctx: Ctx) -> str:
    """timeout_ms 1 and 3600000 are valid (a RESULT either way)."""
    bus = Board(ctx).need_i2c()
    c = ctx.open()
    for t in (1, 3_600_000):
        _accepted(ctx, c, i2c_frame(next_id(), bus, [rd(0x08, 0)], t), f"timeout_ms {t}")
    return "timeout_ms 1 and 3600000: RESULT"


@check("lim.str-4097", "§9.1 §9.3 row 5 §10")
def str_4097(ctx: Ctx) -> str:
    """A str over 4096 bytes (a bus name): ``limit-exceeded``, not ``malformed``, its id."""
    bus = "b" * 4097
    rid = next_id()
    c = ctx.open()
    return _over(ctx, c, i2c_frame(rid, bus, [rd(0x08, 0)]), rid, "a 4097-byte str")


@check("lim.bin-over", "§9.1 §9.3 row 5 §10")
def bin_over(ctx: Ctx) -> str:
    """A bin longer than max(max_i2c_len, max_spi_len, 64) is ``limit-exceeded``."""
    lim = ctx.limits
    n = max(lim["max_i2c_len"], lim["max_spi_len"], 64) + 1
    if n + 64 > lim["max_frame"]:
        raise Skip(f"a {n}-byte bin does not fit max_frame")
    bus = Board(ctx).need_i2c()
    rid = next_id()
    c = ctx.open()
    return _over(ctx, c, [2, rid, bus, [[out_hdr(0x10, 0) + bytes(n - 8), b""]], None],
                 rid, f"an out_hdr bin of {n} bytes")


@check("lim.array-over", "§9.1 §9.3 row 5 §10")
def array_over(ctx: Ctx) -> str:
    """An array longer than max(max_requests, 8) (the frame itself) is ``limit-exceeded``."""
    n = max(ctx.limits["max_requests"], 8) + 1
    rid = next_id()
    c = ctx.open()
    obj: list[Any] = [2, rid, "1", [[out_hdr(0x10, 2), 0]], None] + [None] * (n - 5)
    return _over(ctx, c, obj, rid, f"a frame array of {n} items")


@check("lim.map-pairs", "§4.8 §9.3 row 5 §10")
def map_pairs(ctx: Ctx) -> str:
    """A map of 64 pairs is decoded (unknown keys ignored); 65 pairs are ``limit-exceeded``."""
    c = ctx.open()
    params = {f"k{i}": i for i in range(64)}
    rid = next_id()
    f = ask(ctx, c, [8, rid, "list", params])
    if f.type != 9 or f.id != rid:
        raise Fail(f"LEASE list with 64 unknown params: {f.brief()}")
    rid = next_id()
    params["k64"] = 64
    over = _over(ctx, c, [8, rid, "list", params], rid, "a map of 65 pairs")
    return f"64 pairs: LEASE_RESULT; 65: {over}"


@check("lim.msg-len", "§8.1 §4.5")
def msg_len(ctx: Ctx) -> str:
    """A message longer than the bus's max_msg_len fails whole with EMSGSIZE, nothing run."""
    board = Board(ctx)
    for b in ctx.i2c_buses():
        if b["max_msg_len"] < ctx.limits["max_i2c_len"]:
            bus, n = b["name"], b["max_msg_len"] + 1
            break
    else:
        raise Skip("every bus's max_msg_len is >= max_i2c_len")
    c = ctx.open()
    gone = board.absent(bus)
    msgs: list[Msg] = [wr(gone, b"\x00", fail_next=True), rd(gone, n)]
    r = i2c(ctx, c, bus, msgs)
    if r.status != b"\x01\x01" or r.failures[0][:2] != [0, 90]:
        raise Fail(f"a {n}-byte read: {r.status.hex()} {r.failures}, expected [0, 90]")
    return f"bus {bus!r}: read of {n}: ERR EMSGSIZE from the chain's start"

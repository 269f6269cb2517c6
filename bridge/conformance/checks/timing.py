"""Pipelining, deadlines, concurrency and the transport (SPEC.md §1, §2, §7, §8.4, §8.6).

The timed checks judge by order where they can (an answer that must come before the
frames ahead of it finish) and otherwise by bounds derived from measured bus work,
never by a fixed speed; each reports what it measured.  "Busy" frames are the
heaviest read-only frames the board offers (see :meth:`Board.heavy`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..board import EEPROM_SCRATCH_OFFSETS, Board, Heavy, fresh_marker, holds, next_id
from ..model import (
    Violation,
    check_error,
    check_i2c_result,
    check_pong,
    check_result_shape,
    check_spi_result,
    i2c_frame,
    is_deadline,
    rd,
    spi_frame,
    wr,
)
from ..registry import Ctx, Fail, Skip, check
from ..wire import PING, Conn, Frame, frame

#: Heavy frames queued to keep a bus busy while a check probes around them.
BUSY_FRAMES = 4


@dataclass
class Busy:
    """A bus kept busy by ``BUSY_FRAMES`` heavy frames from connection ``conn``."""

    conn: Conn
    heavy: Heavy
    ids: list[int]
    sent_at: float

    @property
    def work(self) -> float:
        return self.heavy.seconds * len(self.ids)

    def finish(self, ctx: Ctx) -> list[Frame]:
        """Every busy frame's answer, with its arrival time, in arrival order."""
        got = self.conn.recv_all(len(self.ids), self.work * 4 + ctx.target.timeout)
        if sorted(f.id for f in got if f.id is not None) != sorted(self.ids):
            raise Fail("the busy frames were not all answered: " +
                       ", ".join(f.brief()[:50] for f in got))
        return got


def keep_busy(ctx: Ctx, bus: str) -> Busy:
    """Queue heavy frames on ``bus``, then wait half of one frame's work.

    After the wait the first frame is surely on the bus (a server reads a frame of a few
    hundred bytes in far less than that) and at least 3.5 frames' work remains: a check
    that sends now expects an answer before the last busy answer, an order, not a speed.
    """
    heavy = Board(ctx).heavy(bus)
    c = ctx.open()
    ids = [next_id() for _ in range(BUSY_FRAMES)]
    t0 = c.send_bytes(b"".join(frame(i2c_frame(i, bus, heavy.msgs, 600_000)) for i in ids))
    time.sleep(min(heavy.seconds / 2, 0.5))
    return Busy(c, heavy, ids, t0)


def early(answer_at: float, sent_at: float, rest: list[Frame]) -> bool:
    """The answer came in the first half of the time the busy bus still needed when it was sent.

    A server that serves the answer without waiting for the busy bus answers within
    milliseconds; one that waits answers at the end.  Halfway between is a bound that
    holds on a loaded machine and still tells the two apart.
    """
    end = max(f.at for f in rest)
    return answer_at - sent_at < (end - sent_at) / 2


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# -- pipelining --------------------------------------------------------------------


@check("pipe.segments", "§2 §7")
def segments(ctx: Ctx) -> str:
    """Pipelined frames written 1-7 bytes at a time are all answered, correctly, by id."""
    board = Board(ctx)
    bus = board.need_i2c()
    present = board.present(bus)
    if not present:
        raise Skip(f"nothing answers on I2C bus {bus!r}")
    expect: dict[int, str] = {}
    data = b""
    kinds = itertools.cycle(["read", "probe", "spi", "ping"])
    try:
        sbus, scs = board.loopback()
    except Skip:
        sbus = None
    for _ in range(24):
        kind = next(kinds)
        rid = next_id()
        if kind == "read":
            data += frame(i2c_frame(rid, bus, [rd(present[0], 1)]))
        elif kind == "probe":
            data += frame(i2c_frame(rid, bus, [wr(board.absent(bus))]))
        elif kind == "spi" and sbus is not None:
            data += frame(spi_frame(rid, sbus, scs, [board.xfer(sbus, scs, bytes([rid & 0xFF]) * 3,
                                                                3)]))
        else:
            kind = "ping"
            data += frame([PING, rid])
        expect[rid] = kind
    c = ctx.open()
    c.send_bytes(data, chunks=[1, 2, 3, 4, 5, 6, 7], pause=0.0005)
    got = c.recv_all(len(expect))
    for f in got:
        kind = expect.pop(f.id if f.id is not None else -1, "")
        if not kind:
            raise Fail(f"unexpected or repeated answer {f.brief()}")
        rid = f.id or 0
        try:
            if kind == "ping":
                check_pong(f, rid)
            elif kind == "read":
                check_i2c_result(f, rid, [rd(present[0], 1)])
                if f.obj[2] != b"\x00":
                    raise Fail(f"read of present {present[0]:#x} failed: {f.brief()}")
            elif kind == "probe":
                check_i2c_result(f, rid, [wr(board.absent(bus))])
            elif sbus is not None:
                x = board.xfer(sbus, scs, bytes([rid & 0xFF]) * 3, 3)
                r = check_spi_result(f, rid, [x])
                if r.reads != [bytes([rid & 0xFF]) * 3]:
                    raise Fail(f"loopback answer of frame {rid} carries another frame's data")
        except Violation as e:
            raise Fail(f"frame {rid} ({kind}): {e}") from None
    return f"{len(got)} frames ({len(data)} bytes) in writes of 1-7 bytes: all answered by id"


@check("pipe.order-per-bus", "§7")
def order_per_bus(ctx: Ctx) -> str:
    """On one bus and one connection RESULTs come back in submission order (PARAM_ERR too)."""
    board = Board(ctx)
    bus = board.need_i2c()
    gone = board.absent(bus)
    present = board.present(bus)
    c = ctx.open()
    ids = [next_id() for _ in range(30)]
    data = b"".join(frame(i2c_frame(i, bus, [wr(gone) if i % 3 else rd(
        present[0] if present else gone, 2)])) for i in ids)
    sids: list[int] = []
    try:
        sbus, scs = board.loopback()
        for k in range(9):
            i = next_id()
            sids.append(i)
            x = board.xfer(sbus, scs, b"\x00", 1, cs_change=2 if k % 3 == 1 else 0)
            data += frame(spi_frame(i, sbus, scs, [x]))
    except Skip:
        pass
    c.send_bytes(data)
    got = [f.id for f in c.recv_all(len(ids) + len(sids))]
    i2c_order = [i for i in got if i in set(ids)]
    spi_order = [i for i in got if i in set(sids)]
    if i2c_order != ids:
        raise Fail(f"I2C answers out of submission order: {i2c_order[:10]}...")
    if spi_order != sids:
        raise Fail(f"SPI answers (every third a PARAM_ERR) out of order: {spi_order}")
    return f"{len(ids)} I2C and {len(sids)} SPI frames (3 with PARAM_ERR) answered in order"


@check("pipe.ids-any-value", "§7")
def ids_any_value(ctx: Ctx) -> str:
    """Answers carry the client's ids, whatever values it picks (matched by id)."""
    bus = Board(ctx).need_i2c()
    c = ctx.open()
    ids = [0xFFFFFFFF, 3, 0x80000000, 17, 0x10000, 255]
    c.send_bytes(b"".join(frame(i2c_frame(i, bus, [rd(0x08, 0)])) for i in ids))
    got = sorted(f.id or 0 for f in c.recv_all(len(ids)))
    if got != sorted(ids):
        raise Fail(f"sent ids {sorted(ids)}, answers carry {got}")
    return "ids 0xffffffff, 3, 0x80000000, 17, 0x10000, 255 all echoed"


# -- deadlines ---------------------------------------------------------------------


def _deadline_shape(f: Frame, rid: int, n: int, what: str) -> None:
    """§8.4: every request ERR, every reads entry empty, one failure [0, 110, ...]."""
    try:
        r = check_result_shape(f)
    except Violation as e:
        raise Fail(f"{what}: expected a RESULT, got {f.brief()} ({e})") from None
    if r.rid != rid or r.status != b"\x01" * n or not is_deadline(r):
        raise Fail(f"{what}: expected all ERR, empty reads and failures [[0, 110, ...]]; "
                   f"got status {r.status.hex(' ')}, failures {r.failures!r:.120}")


@check("dl.running", "§8.4")
def deadline_running(ctx: Ctx) -> str:
    """A frame whose deadline passes while it runs is answered at once: all ERR, [0, 110]."""
    board = Board(ctx)
    bus = board.need_i2c()
    heavy = board.heavy(bus)
    c = ctx.open()
    rid = next_id()
    t0 = c.send(i2c_frame(rid, bus, heavy.msgs, 1))
    f = ctx.recv(c, "the RESULT of a 1 ms frame", heavy.seconds * 4 + ctx.target.timeout)
    took = f.at - t0
    _deadline_shape(f, rid, len(heavy.msgs), f"a {ms(heavy.seconds)} frame with timeout_ms 1")
    if took > heavy.seconds / 2:
        raise Fail(f"the deadline RESULT came {ms(took)} after sending, not at once: the work "
                   f"takes {ms(heavy.seconds)} and the answer waited for it")
    return f"work {ms(heavy.seconds)}, timeout_ms 1: deadline RESULT after {ms(took)}"


@check("dl.queued", "§8.4")
def deadline_queued(ctx: Ctx) -> str:
    """A frame whose deadline passes while queued is answered at once and never runs.

    The frame goes behind the busy frames on their own connection: §7 orders one
    connection's frames on a bus, while another connection's frame may get the
    bus's next turn (between two chains of a busy frame) and finish in time.
    """
    board = Board(ctx)
    bus = board.eeprom()[0]
    probe = ctx.open()  # before the bus is busy: a handshake may need the loop
    where = EEPROM_SCRATCH_OFFSETS["queued"]
    mark = fresh_marker(board, probe, where)
    busy = keep_busy(ctx, bus)
    rid = next_id()
    t0 = busy.conn.send(i2c_frame(rid, bus, [board.eeprom_msg(where, bytes([mark]))], 1))
    got = busy.conn.recv_all(len(busy.ids) + 1, busy.work * 4 + ctx.target.timeout)
    mine = [x for x in got if x.id == rid]
    rest = [x for x in got if x.id != rid]
    if not mine or sorted(x.id or 0 for x in rest) != sorted(busy.ids):
        raise Fail("the busy frames and the queued one were not each answered once: " +
                   ", ".join(x.brief()[:50] for x in got))
    f = mine[0]
    took = f.at - t0
    ran = holds(board, probe, where, mark)
    _deadline_shape(f, rid, 1, f"a 1 ms frame queued behind {ms(busy.work)} of work")
    if ran:
        raise Fail("the queued frame ran after its deadline (its EEPROM write landed)")
    if not early(f.at, t0, rest):
        raise Fail(f"the deadline RESULT came {ms(took)} after sending, when the frames ahead "
                   f"of it ended {ms(max(x.at for x in rest) - t0)} after sending: not at once")
    return (f"queued behind {ms(busy.work)} of work: deadline RESULT after {ms(took)}, "
            "the write never ran")


# -- concurrency -------------------------------------------------------------------


@check("cc.cross-bus", "§7")
def cross_bus(ctx: Ctx) -> str:
    """While one bus is busy, other buses, PING and HELLO are answered long before it ends.

    §7 bounds the delay as "small" with a server-specific figure; the kit cannot know
    another server's, so it judges by order and reports what it measured.
    """
    board = Board(ctx)
    names = board.i2c_names()
    bus = names[0] if names else board.need_i2c()
    board.heavy(bus)
    frames: list[tuple[str, int, list[object]]] = []
    if len(names) > 1:
        rid = next_id()
        frames.append((f"I2C bus {names[1]}", rid, i2c_frame(rid, names[1], [rd(0x08, 0)])))
    try:
        sbus, scs = board.loopback()
        rid = next_id()
        frames.append((f"SPI bus {sbus}", rid,
                       spi_frame(rid, sbus, scs, [board.xfer(sbus, scs, b"\x01", 1)])))
    except Skip:
        pass
    if not frames:
        raise Skip("the board has a single bus")
    # Everything that needs a handshake or a board fact happens before the bus is busy;
    # the TCP connection for the HELLO is made then too (§7 names HELLO frames).
    other, pinger, newcomer = ctx.open(), ctx.open(), ctx.raw()
    busy = keep_busy(ctx, bus)
    probes = [(name, rid, other.send(obj)) for name, rid, obj in frames]
    ping_t = pinger.send([PING, 99])
    hello_t = newcomer.send([0, 0, ctx.hello_map()])
    answers = {f.id: f for f in other.recv_all(len(probes), busy.work * 4 + 10)}
    pong = ctx.recv(pinger, "PONG", busy.work * 4 + 10)
    welcome = ctx.recv(newcomer, "WELCOME", busy.work * 4 + 10)
    rest = busy.finish(ctx)
    if welcome.type != 1:
        raise Fail(f"HELLO while bus {bus} was busy: {welcome.brief()}")
    end = max(x.at for x in rest)
    timed = [(name, answers[rid].at, t) for name, rid, t in probes]
    timed += [("PING", pong.at, ping_t), ("HELLO", welcome.at, hello_t)]
    report = [f"{name} {ms(at - t)}" for name, at, t in timed]
    report.append(f"bus {bus} done after {ms(end - probes[0][2])}")
    late = [name for name, at, t in timed if not early(at, t, rest)]
    if late:
        raise Fail(f"{', '.join(late)} not answered in the first half of the time bus {bus} "
                   "was still busy (" + "; ".join(report) + ")")
    return (f"while bus {bus} ran {ms(busy.work)} of work: " + "; ".join(report)
            + " (§7: a small bounded time; judged by order, figures measured)")


@check("cc.lease-not-queued", "§8.6")
def lease_not_queued(ctx: Ctx) -> str:
    """LEASE frames are not queued behind bus work: ``list`` is answered while a bus is busy."""
    bus = Board(ctx).need_i2c()
    y = ctx.open()  # before the bus is busy
    busy = keep_busy(ctx, bus)
    rid = next_id()
    t0 = y.send([8, rid, "list", {}])
    f = ctx.recv(y, "LEASE_RESULT", busy.work * 4 + 10)
    rest = busy.finish(ctx)
    if f.type != 9:
        raise Fail(f"LEASE list: {f.brief()}")
    if not early(f.at, t0, rest):
        raise Fail(f"LEASE list answered after {ms(f.at - t0)}; the bus work it was sent "
                   f"during ended after {ms(max(x.at for x in rest) - t0)}")
    return f"LEASE list answered after {ms(f.at - t0)} while bus {bus} was busy"


# -- transport ---------------------------------------------------------------------


@check("tr.half-close", "§1 §2")
def half_close(ctx: Ctx) -> str:
    """FIN with frames in flight: one PING at once, every answer, then the close.

    The frames go behind a heavy frame on their bus, so they are surely in flight when
    the FIN arrives; "at once" is judged by order: the PING comes before the heavy
    frame's answer.
    """
    board = Board(ctx)
    bus = board.need_i2c()
    heavy = board.heavy(bus)
    c = ctx.open()
    if c.tls:
        raise Skip("TLS has no half-close (§1)")
    ids = [next_id(), next_id()]
    c.send_bytes(frame(i2c_frame(ids[0], bus, heavy.msgs, 600_000)) +
                 frame(i2c_frame(ids[1], bus, [rd(0x08, 0)], 600_000)))
    fin = time.perf_counter()
    c.shutdown_write()
    try:
        frames = c.wait_closed(heavy.seconds * 4 + ctx.target.timeout)
    except TimeoutError:
        raise Fail("the server kept the connection open after answering (§1: it closes "
                   "after the last answer)") from None
    seen = ", ".join(f.brief()[:40] for f in frames)
    pings = [f for f in frames if f.type == PING]
    answers = [f for f in frames if f.type == 4]
    if len(pings) != 1 or not (isinstance(pings[0].id, int) and 1 <= pings[0].id <= 0xFFFFFFFF
                               and len(pings[0].obj) == 2):
        raise Fail(f"§1: expected exactly one PING [6, 1..0xFFFFFFFF] after the FIN; got {seen}")
    if sorted(f.id or 0 for f in answers) != sorted(ids) or len(frames) != 3:
        raise Fail(f"§1: expected the PING and a RESULT for each of {ids}; got {seen}")
    if frames.index(pings[0]) != 0:
        raise Fail(f"§1: the PING is not sent at once: it came after an answer ({seen})")
    closed = c.closed.at if c.closed else time.perf_counter()
    return (f"PING {pings[0].id} after {ms(pings[0].at - fin)}, both answers (the last after "
            f"{ms(max(f.at for f in answers) - fin)}), closed after {ms(closed - fin)}")


@check("tr.half-close-idle", "§1")
def half_close_idle(ctx: Ctx) -> str:
    """FIN with nothing in flight: no frame (no PING), the server closes."""
    c = ctx.open()
    if c.tls:
        raise Skip("TLS has no half-close (§1)")
    ctx.alive(c)
    fin = time.perf_counter()
    c.shutdown_write()
    try:
        frames = c.wait_closed(ctx.target.timeout)
    except TimeoutError:
        raise Fail("§1: the server kept an idle half-closed connection open") from None
    if frames:
        raise Fail(f"§1: frames after a FIN with nothing in flight: {frames[0].brief()}")
    closed = c.closed.at if c.closed else time.perf_counter()
    return f"no frame; closed after {ms(closed - fin)}"


def _write_behind_heavy(ctx: Ctx, key: str) -> tuple[Conn, bytes, Heavy,
                                                      Callable[[], bool]]:
    """A connection, the bytes of a heavy frame and an EEPROM write queued behind it on the
    same bus (§7: one connection's frames run in order), and a test of whether it ran."""
    board = Board(ctx)
    bus = board.eeprom()[0]
    heavy = board.heavy(bus)
    probe = ctx.open()
    where = EEPROM_SCRATCH_OFFSETS[key]
    mark = fresh_marker(board, probe, where)
    data = (frame(i2c_frame(next_id(), bus, heavy.msgs, 600_000)) +
            frame(i2c_frame(next_id(), bus, [board.eeprom_msg(where, bytes([mark]))])))
    return ctx.open(), data, heavy, lambda: holds(board, probe, where, mark)


@check("tr.eof-inside-frame-in-flight", "§9.2 §9.3 row 2")
def eof_inside_frame_in_flight(ctx: Ctx) -> str:
    """A stream ending inside a frame with frames in flight: one fatal ERROR, nothing after.

    §9.2 handles the frames in flight as for a drop: the queued EEPROM write never runs
    and no RESULT follows the ERROR.
    """
    c, data, heavy, ran = _write_behind_heavy(ctx, "eof-in-flight")
    if c.tls:
        raise Skip("over TLS the server sends nothing after the end of the stream (§1)")
    c.send_bytes(data + b"\x00\x00")
    c.shutdown_write()
    try:
        frames = c.wait_closed(heavy.seconds * 4 + ctx.target.timeout)
    except TimeoutError:
        raise Fail("the connection stayed open after the stream ended inside a frame") \
            from None
    seen = ", ".join(f.brief()[:50] for f in frames)
    errs = [k for k, f in enumerate(frames) if f.type == 5]
    if len(errs) != 1:
        raise Fail(f"expected exactly one ERROR malformed id 0; got {seen or 'nothing'}")
    eid, code, _ = check_error(frames[errs[0]])
    if (eid, code) != (0, "malformed"):
        raise Fail(f"expected ERROR malformed id 0, got {code} id {eid}")
    if frames[errs[0] + 1:]:
        raise Fail(f"frames after the fatal ERROR: {seen}")
    if any(f.type == PING for f in frames):
        raise Fail(f"a PING although the stream ended inside a frame (no half-close): {seen}")
    if ran():
        raise Fail("the EEPROM write queued behind the heavy frame ran after the fatal ERROR")
    before = len(frames) - 1
    return (f"ERROR malformed id 0 ({before} answer(s) before it), closed; the queued write "
            "never ran")


@check("tr.tls-close-notify", "§1")
def tls_close_notify(ctx: Ctx) -> str:
    """TLS: ``close_notify`` with frames in flight: nothing more arrives, the server closes.

    TLS has no half-close (§1): no PING, no answer; the queued write is withdrawn.
    """
    c, data, heavy, ran = _write_behind_heavy(ctx, "tls-close")
    if not c.tls:
        raise Skip("the target is not TLS (give --tls-ca)")
    c.send_bytes(data)
    time.sleep(min(heavy.seconds / 4, 0.1))
    c.close_notify()
    try:
        frames = c.wait_closed(heavy.seconds * 4 + ctx.target.timeout)
    except TimeoutError:
        raise Fail("§1: the server kept the connection open after close_notify") from None
    if frames:
        raise Fail("§1: frames after close_notify: " + ", ".join(f.brief()[:50] for f in frames))
    if ran():
        raise Fail("§1: the write queued behind the heavy frame ran after close_notify")
    return "nothing after close_notify, then the close; the queued write never ran"


@check("tr.drop-withdraws", "§1")
def drop_withdraws(ctx: Ctx) -> str:
    """A dropped connection's frames that had not started never run."""
    board = Board(ctx)
    bus = board.eeprom()[0]
    heavy = board.heavy(bus)
    probe = ctx.open()
    where = EEPROM_SCRATCH_OFFSETS["drop"]
    mark = fresh_marker(board, probe, where)
    c = ctx.open()
    c.send_bytes(b"".join(frame(i2c_frame(next_id(), bus, heavy.msgs, 600_000))
                          for _ in range(BUSY_FRAMES - 1)) +
                 frame(i2c_frame(next_id(), bus, [board.eeprom_msg(where, bytes([mark]))])))
    c.close()
    time.sleep(0.01)
    probe.send(i2c_frame(next_id(), bus, [rd(0x08, 0)], 600_000))
    ctx.recv(probe, "a frame queued after the dropped ones",
             heavy.seconds * BUSY_FRAMES * 4 + ctx.target.timeout)
    if holds(board, probe, where, mark):
        raise Fail("the EEPROM write queued behind "
                   f"{BUSY_FRAMES - 1} x {ms(heavy.seconds)} ran although its connection "
                   "had dropped")
    return (f"connection closed with a write queued behind {BUSY_FRAMES - 1} x "
            f"{ms(heavy.seconds)}: the write never ran")


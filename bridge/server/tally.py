"""Per connection: what each bus request's answer says, added to its bus's counters.

A :class:`RequestTally` notes a request frame when it arrives on a bus the board
has (its :class:`~.stats.BusCounts`, the frame and the time) and settles it when
the connection answers it, whichever way: a RESULT (:meth:`result`: latency,
bytes moved, the errno of a failure) or an ERROR (:meth:`error`: latency, the
refusal's code).  Both are the session's answer path, the one place every request
leaves the server, so the numbers agree with what clients saw.  The bus's
``in_flight`` (its queue depth) and ``busy_s`` (time with anything in flight)
follow from the same two calls.

Cost per request: two ``perf_counter`` calls and a few integer additions.  The
request that arrived last waits in fields of its own (``_last_*``), not in the
dict: most are answered before the next one arrives (run inline), and a dict
insert, lookup and delete with the tuple they hold cost about as much as the
rest of the tally.  An arrival moves the one before it, still unanswered, to the
dict; the pending requests are always the dict and that slot.  A connection
that goes hands its unanswered requests to :meth:`close`.
"""

from __future__ import annotations

from errno import ENXIO
from time import perf_counter
from typing import Final

from protocol.events import Error, Failure, I2CRequest, SpiRequest
from protocol.virtio import I2C_FLAGS_M_RD

from .stats import LATENCY_BOUNDS, BusCounts, ServerStats, errno_name

_ENXIO_NAME = errno_name(ENXIO)
#: Final: compiled, a C static rather than a lookup in the module's dict per call.
_clock: Final = perf_counter


class RequestTally:
    """The bus requests of one connection between arrival and answer."""

    __slots__ = ("_i2c", "_last_counts", "_last_ev", "_last_id", "_last_t0", "_pending",
                 "_spi", "_stats")

    def __init__(self, stats: ServerStats) -> None:
        self._stats = stats
        self._i2c = stats.by_kind.setdefault("i2c", {})
        self._spi = stats.by_kind.setdefault("spi", {})
        self._pending: dict[int, tuple[BusCounts, I2CRequest | SpiRequest, float]] = {}
        #: The request that arrived last, while unanswered (``_last_counts`` not None).
        self._last_counts: BusCounts | None = None
        self._last_id = 0
        self._last_ev: I2CRequest | SpiRequest | None = None
        self._last_t0 = 0.0

    def arrived(self, ev: I2CRequest | SpiRequest) -> None:
        """A request frame was decoded (before any check): its bus is busy from now."""
        counts = (self._i2c if type(ev) is I2CRequest else self._spi).get(ev.bus)
        if counts is None:  # no such bus: refused, counted as unknown_bus
            return
        now = _clock()
        if not counts.in_flight:
            counts.busy_since = now
        counts.in_flight += 1
        last = self._last_counts
        if last is not None:  # the one before is still unanswered: it waits in the dict
            ev0 = self._last_ev
            assert ev0 is not None
            self._pending[self._last_id] = (last, ev0, self._last_t0)
        self._last_counts = counts
        self._last_id = ev.id
        self._last_ev = ev
        self._last_t0 = now

    def _take(self, rid: int) -> tuple[BusCounts, I2CRequest | SpiRequest, float] | None:
        """Take ``rid`` off the pending (the slot or the dict), if it is there."""
        last = self._last_counts
        if last is not None and self._last_id == rid:
            ev = self._last_ev
            assert ev is not None
            self._last_counts = None
            self._last_ev = None
            return last, ev, self._last_t0
        pending = self._pending
        noted = pending.get(rid)  # get and del: compiled, cheaper than pop(rid, None)
        if noted is not None:
            del pending[rid]
        return noted

    def _settle(self, rid: int) -> tuple[BusCounts, I2CRequest | SpiRequest] | None:
        """Take ``rid`` off the pending: its latency, and the bus's queue and busy time."""
        noted = self._take(rid)
        if noted is None:
            return None
        counts, ev, t0 = noted
        if t0 < 0:  # its connection is gone (close): bytes and outcome still count
            return counts, ev
        now = _clock()
        took = now - t0
        counts.latency[bucket(took)] += 1
        counts.latency_s += took
        left = counts.in_flight = counts.in_flight - 1
        if not left:
            counts.busy_s += now - counts.busy_since
        return counts, ev

    def result(self, rid: int, status: bytes, reads: list[bytes],
               failures: list[Failure]) -> None:
        """Request ``rid`` is answered with a RESULT: count what it moved and how it failed.

        The hot path: :meth:`_settle` is written out here rather than called, and the
        request that arrived last is taken from its slot without a tuple.
        """
        counts = self._last_counts
        if counts is not None and self._last_id == rid:
            ev = self._last_ev
            assert ev is not None
            t0 = self._last_t0
            self._last_counts = None
            self._last_ev = None
        else:
            pending = self._pending
            noted = pending.get(rid)  # get and del: compiled, cheaper than pop(rid, None)
            if noted is None:
                return
            del pending[rid]
            counts, ev, t0 = noted
        if t0 >= 0:  # else its connection is gone (close): bytes and outcome still count
            now = _clock()
            took = now - t0
            counts.latency[bucket(took)] += 1
            counts.latency_s += took
            left = counts.in_flight = counts.in_flight - 1
            if not left:
                counts.busy_s += now - counts.busy_since
        written = 0
        if not failures:  # the common case: everything moved (reads carry what was read)
            nread = 0
            for r in reads:  # not sum(map(len, reads)): two calls fewer, compiled
                nread += len(r)
            counts.bytes_read += nread
            if type(ev) is I2CRequest:
                for m in ev.msgs:  # a read's data is b""
                    written += len(m.data)
            elif isinstance(ev, SpiRequest):
                for t in ev.transfers:
                    if t.tx is not None:
                        written += len(t.tx)
            counts.bytes_written += written
            return
        if type(ev) is I2CRequest:  # some messages completed: those moved their bytes
            for m, st in zip(ev.msgs, status, strict=False):
                if not st:
                    if m.flags & I2C_FLAGS_M_RD:
                        counts.bytes_read += m.length
                    else:
                        written += len(m.data)
            counts.bytes_written += written
        name = next((errno_name(f.errno) for f in failures if f.errno != ENXIO), _ENXIO_NAME)
        counts.by_errno[name] = counts.by_errno.get(name, 0) + 1

    def error(self, ev: Error) -> None:
        """An ERROR frame is sent: count its code, and settle the request it answers."""
        code = str(ev.code)
        frames = self._stats.error_frames
        frames[code] = frames.get(code, 0) + 1
        if ev.id:
            settled = self._settle(ev.id)
            if settled is not None:
                # ``internal`` (a bug of the server's own) is counted in ``errors`` by the
                # scheduler, so it goes with the errnos, which sum to ``errors``.
                by = settled[0].by_errno if code == "internal" else settled[0].by_code
                by[code] = by.get(code, 0) + 1

    def close(self) -> None:
        """The connection is gone: what it left unanswered no longer waits for it.

        Its requests leave the queue depth and the latency histogram now (nobody
        waits for their answers).  One already on a bus is still answered, to
        nobody, and its bytes and errno still count, like its outcome does in
        the scheduler's counters; one withdrawn from the queue never is.
        """
        now = _clock()
        pending = self._pending
        last = self._last_counts
        if last is not None:  # the slot joins the dict: one place for what is left
            ev0 = self._last_ev
            assert ev0 is not None
            pending[self._last_id] = (last, ev0, self._last_t0)
            self._last_counts = None
            self._last_ev = None
        for rid, (counts, ev, _t0) in list(pending.items()):
            left = counts.in_flight = counts.in_flight - 1
            if not left:
                counts.busy_s += now - counts.busy_since
            pending[rid] = (counts, ev, -1.0)


def bucket(took: float) -> int:
    """``bisect_left(LATENCY_BOUNDS, took)``, written out: no call, and most latencies stop
    at the first bound.  The bounds are typed ``tuple[float, ...]``: as a fixed-length
    tuple, mypyc unboxed all 15 and boxed them again on every use."""
    i = 0
    for bound in LATENCY_BOUNDS:
        if bound >= took:
            return i
        i += 1
    return i

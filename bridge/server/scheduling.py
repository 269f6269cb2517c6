"""How admitted requests reach the buses: inline or on a bus worker, deadlines, withdrawal.

Concurrency model.  Every bus has one worker thread (:mod:`.buswork`), so a
bus runs one transaction at a time; different buses run in parallel.  Each
bus's queue is fair between clients by bus time, one transaction (an I2C
chain, an SPI message) at a time, and keeps each client's own order.

A frame runs inline on the event loop instead, saving two thread hand-offs,
only when all of these hold: its bus has nothing queued or running, its
backend cannot block (``may_block`` false: the simulated buses without
timing), its estimated work is at most ``INLINE_CLOCKS`` (about 0.1 ms of
simulator CPU at most), the read it came in has not used up
``INLINE_CLOCKS_PER_READ``, and its ``timeout_ms`` (if any) is at least
``INLINE_MIN_TIMEOUT_MS``.  That bounds what one frame, and one read of a
connection, can hold the loop (every other bus, connection, PING, handshake
and LEASE frame) for.  Everything else goes to the worker, which yields the
GIL after every transaction; the scheduler also lowers the interpreter's
switch interval, so simulated work on a worker holds the loop for at most
about that long at a time.

Every queued frame has a deadline from the moment it is accepted here: its
``timeout_ms``, else the server's request timeout, capped at ``max_timeout_ms``
(SPEC §8.4).  At the deadline it is answered at once with ERR/ETIMEDOUT: a
frame still queued is withdrawn and never runs; one on its bus starts no
further transaction and is reported as unknown, never retried.  A transaction
whose wire time (on a bus that knows its clock) cannot fit before the deadline
is not started either.  When a client goes, its frames still queued are
withdrawn.

:class:`Scheduler` decides, inline or queued, for every request; nothing else
submits to a worker.  Everything here runs on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from time import perf_counter
from typing import Any, Final, Protocol

from protocol.admin import AdminRequest
from protocol.errors import ErrorCode
from protocol.events import Error, I2CRequest, SpiRequest
from protocol.virtio import SpiTransfer

from ..buses.base import I2CBackend, SpiBackend
from ..logs import event
from .answers import Answers
from .buswork import DONE, QUEUED, BusWorker, Job, Requester
from .execute import (
    INLINE_CLOCKS,
    REQUEST_CLOCKS,
    Answered,
    Backlog,
    I2CWork,
    Outcome,
    SpiWork,
    Work,
    check_spi,
    run_i2c_within,
    run_spi,
)
from .observe import Hook
from .settings import DEFAULT_MAX_TIMEOUT_MS
from .stats import BusCounts, ServerStats

log = logging.getLogger("busbridge.server")

#: Inline work per read of one connection; past it, that read's frames queue.
INLINE_CLOCKS_PER_READ: Final = 8 * INLINE_CLOCKS
#: A frame with a deadline shorter than this is never inline: its worker watches it.
INLINE_MIN_TIMEOUT_MS: Final = 10
#: The interpreter's GIL switch interval while a server runs (seconds).  A bus
#: worker running simulated (Python) bus work holds the GIL until the loop
#: thread has waited this long, at each of the loop's few GIL hand-backs per
#: wake-up; CPython's default 5 ms would make it the loop's latency.
SWITCH_INTERVAL = 0.0002


class BoardLike(Protocol):
    """What the server needs of a board: its name and its buses by name."""

    name: str

    @property
    def i2c(self) -> Mapping[str, I2CBackend]: ...

    @property
    def spi(self) -> Mapping[str, SpiBackend]: ...

    def close(self) -> None: ...


def unknown_bus(board: BoardLike, rid: int, kind: str, bus: str,
                known: Mapping[str, object]) -> Error:
    """The ERROR for a request or lease naming a bus the board does not have."""
    have = ", ".join(repr(k) for k in known) or "none"
    return Error(rid, ErrorCode.UNKNOWN_BUS,
                 f"no {kind} bus {bus!r} on board {board.name!r} ({kind} buses: {have})")



class Scheduler:
    """The board's bus workers, and every admitted request until it is answered."""

    def __init__(self, board: BoardLike, stats: ServerStats, request_timeout: float,
                 max_timeout: float = DEFAULT_MAX_TIMEOUT_MS / 1000) -> None:
        self.board = board
        self.stats = stats
        #: The longest deadline any request gets, in seconds (``max_timeout_ms``).
        self.max_timeout = max_timeout
        #: Deadline of a request that sets no ``timeout_ms``, in seconds.
        self.request_timeout = min(request_timeout, max_timeout)
        self.workers: dict[tuple[str, str], BusWorker] = {}
        for name in board.i2c:
            self.workers["i2c", name] = BusWorker("i2c", name, stats.bus("i2c", name))
        for name in board.spi:
            self.workers["spi", name] = BusWorker("spi", name, stats.bus("spi", name))
        for w in self.workers.values():
            w.on_done = self._settle
        #: Bus name -> (backend, worker, its counts, its backlog): one lookup on the hot
        #: path (the worker is not a native object: each of its attributes is a dict lookup).
        self.i2c_routes: dict[str, tuple[I2CBackend, BusWorker, BusCounts, Backlog]] = {
            name: (b, w, w.counts, w.backlog)
            for name, b in board.i2c.items() for w in (self.workers["i2c", name],)
        }
        #: Requests on a worker, not yet settled on the loop.
        self.jobs: set[Job] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        #: Set when the server shuts down: new requests are refused.
        self.closing = False
        #: Clocks of inline work the read being handled may still spend; the
        #: session sets it to INLINE_CLOCKS_PER_READ before each read's frames.
        self.inline_left = INLINE_CLOCKS_PER_READ
        if sys.getswitchinterval() > SWITCH_INTERVAL:
            sys.setswitchinterval(SWITCH_INTERVAL)
        #: The observation hook (:mod:`.observe`): called for every request answered
        #: here while anyone observes; None (one test per request) otherwise.
        self.observe: Hook | None = None

    # -- requests ----------------------------------------------------------------

    def i2c(self, requester: Requester, ev: I2CRequest, answers: Answers | None = None) -> None:
        """The hot path: an I2C frame, inline when its bus is idle and it is cheap.

        ``answers`` is the requester's own answer path (the session's), called
        directly for an inline answer: compiled, a native call, where the
        requester's ``answer`` is a generic one.
        """
        route = self.i2c_routes.get(ev.bus)
        if route is None:
            self.stats.unknown_bus += 1
            requester.send(unknown_bus(self.board, ev.id, "I2C", ev.bus, self.board.i2c))
            return
        backend, worker, counts, backlog = route
        counts.requests += 1
        if self.closing:
            counts.refused += 1
            requester.send(Error(ev.id, ErrorCode.SHUTTING_DOWN, "server is shutting down"))
            return
        timeout = ev.timeout_ms
        if (not backlog.jobs and not backend.may_block
                and (timeout is None or timeout >= INLINE_MIN_TIMEOUT_MS)):
            left = self.inline_left
            obs = self.observe
            t0 = perf_counter() if obs is not None else 0.0
            done = run_i2c_within(backend, ev.msgs, left)
            if done is not None:
                status, reads, failures, clocks = done
                self.inline_left = left - clocks
                if failures:
                    counts.failed(failures)
                if obs is not None:
                    obs(requester, ev, (status, reads, failures), t0, perf_counter() - t0, True)
                if answers is not None:
                    answers.answer(ev.id, status, reads, failures)
                else:
                    requester.answer(ev.id, status, reads, failures)
                return
        self._submit(requester, ev, worker, I2CWork(backend, ev.msgs))

    def spi(self, requester: Requester, ev: SpiRequest) -> None:
        """An SPI message: refused whole if any transfer is invalid, else run or queued."""
        spi_backend = self.board.spi.get(ev.bus)
        if spi_backend is None:
            self.stats.unknown_bus += 1
            requester.send(unknown_bus(self.board, ev.id, "SPI", ev.bus, self.board.spi))
            return
        worker = self.workers["spi", ev.bus]
        worker.counts.requests += 1
        if self.closing:
            worker.counts.refused += 1
            requester.send(Error(ev.id, ErrorCode.SHUTTING_DOWN, "server is shutting down"))
            return
        refused = check_spi(spi_backend, ev.cs, ev.transfers)
        if refused is not None:
            # Touches no bus, but waits for this client's earlier frames on the bus.
            if requester in worker.outstanding:
                self._submit(requester, ev, worker, Answered(refused))
            else:
                self._answer(requester, ev, refused, worker, ran=False)
            return
        if not worker.pending and not spi_backend.may_block:
            clocks = spi_clocks(ev.transfers, spi_backend.bulk(ev.cs))
            timeout = ev.timeout_ms
            if (clocks <= INLINE_CLOCKS and clocks <= self.inline_left
                    and (timeout is None or timeout >= INLINE_MIN_TIMEOUT_MS)):
                self.inline_left -= clocks
                t0 = perf_counter()
                out = run_spi(spi_backend, ev.cs, ev.transfers)
                self._answer(requester, ev, out, worker, t0, perf_counter() - t0)
                return
        self._submit(requester, ev, worker, SpiWork(spi_backend, ev.cs, ev.transfers))

    def _answer(self, requester: Requester, request: I2CRequest | SpiRequest | AdminRequest,
                outcome: Outcome, worker: BusWorker, t0: float = 0.0, dur: float = 0.0,
                ran: bool | None = True) -> None:
        """Answer a request; observers see it first (``ran``: see :class:`.observe.Observed`)."""
        status, reads, failures = outcome
        if failures:
            worker.counts.failed(failures)
        obs = self.observe
        if obs is not None and not isinstance(request, AdminRequest):
            obs(requester, request, outcome, t0 or perf_counter(), dur, ran)
        requester.answer(request.id, status, reads, failures)

    def run_on_bus(self, requester: Requester, request: AdminRequest, bus: str,
                   fn: Callable[[], Any]) -> asyncio.Future[Any]:
        """Run ``fn`` on the worker of ``request``'s bus, in ``requester``'s order there.

        It is queued now in the client's own queue on the bus, behind the client's
        earlier frames and before its later ones (what an admin op that touches a
        simulated device's state needs: a value set before a read is seen by that
        read), and nothing of the bus runs inline until it is done.  No deadline.
        KeyError if the board has no such bus.
        """
        worker = self.workers[request.params.get("kind") or "i2c", bus]
        work = CallWork(fn, requester.loop.create_future())
        job = Job(requester, request, worker, work, math.inf)
        self.jobs.add(job)
        self._idle.clear()
        worker.submit(job)
        return work.future

    # -- the workers' queues and deadlines -------------------------------------------

    def _submit(self, requester: Requester, ev: I2CRequest | SpiRequest, worker: BusWorker,
                work: Work) -> None:
        """Queue on the bus's worker, behind this client's earlier frames, with a deadline.

        The deadline starts now, when the frame is accepted (SPEC §8.4).
        """
        timeout = ev.timeout_ms / 1000 if ev.timeout_ms else self.request_timeout
        timeout = min(timeout, self.max_timeout)
        job = Job(requester, ev, worker, work, time.monotonic() + timeout)
        self.jobs.add(job)
        self._idle.clear()
        job.timer = requester.loop.call_later(timeout, self._timeout, job)
        worker.submit(job)

    def _settle(self, job: Job) -> None:
        """On the loop: a job left its bus (finished, stopped or doomed); answer it."""
        if job.settled:
            return
        if isinstance(job.work, CallWork):
            job.work.resolve(job.error)
        elif not job.answered:
            job.answered = True
            if job.error is not None:
                log.error("bus job failed", exc_info=job.error,
                          extra={"fields": {"where": job.where, "id": job.request.id}})
                job.worker.counts.errors += 1
                job.requester.send(Error(job.request.id, ErrorCode.INTERNAL,
                                         f"{job.where}: internal error: {job.error!r}"[:200]))
            elif job.doomed:
                self._expired(job, "cannot end before its deadline")
            elif job.expired or job.finished_at > job.deadline:
                # The thread saw the deadline first, or finished after it while the
                # loop's timer waited (a busy machine): not completed by then (§8.4).
                self._expired(job, "deadline passed")
            else:
                self._answer(job.requester, job.request, job.work.outcome(), job.worker,
                             job.began, job.ended - job.began, type(job.work) is not Answered)
        self._release(job)

    def _release(self, job: Job) -> None:
        job.settled = True
        if job.timer is not None:
            job.timer.cancel()
        job.worker.settled(job)
        self.jobs.discard(job)
        if not self.jobs:
            self._idle.set()

    def _timeout(self, job: Job) -> None:
        if job.answered:
            return
        left = job.deadline - time.monotonic()
        if left > 0:  # early: uvloop's timers run on a cached, millisecond clock
            job.timer = job.requester.loop.call_later(left, self._timeout, job)
            return
        state = job.worker.withdraw(job)
        if state == DONE:  # finished on its bus just now: its own answer is on its way
            self._settle(job)
            return
        job.answered = True
        self._expired(job, "deadline passed")
        if state == QUEUED:  # withdrawn: it never runs
            self._release(job)

    def _expired(self, job: Job, why: str) -> None:
        job.worker.counts.timeouts += 1
        event(log, logging.WARNING, "request deadline passed", where=job.where,
              id=job.request.id, peer=job.requester.peer, started=job.started, reason=why)
        self._answer(job.requester, job.request, job.timed_out(), job.worker, job.began,
                     perf_counter() - job.began if job.began else 0.0,
                     None if job.started else False)

    def withdraw(self, requester: Requester) -> int:
        """Withdraw a gone client's requests that have not reached a bus yet.

        Nobody can receive their answers any more, so they must not hold the
        bus (or write to it) after the client died; one already on the bus
        finishes, as it would at a deadline.  Returns how many were withdrawn.
        """
        n = 0
        for worker in self.workers.values():
            for job in worker.forget(requester):
                if isinstance(job.work, CallWork):
                    job.work.future.cancel()  # nobody to answer: the admin op never runs
                job.answered = True
                self._release(job)
                n += 1
        return n

    # -- shutdown ------------------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Refuse new requests and wait up to ``grace`` seconds for the queued ones."""
        self.closing = True
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            event(log, logging.WARNING, "shutdown grace expired", pending=len(self.jobs))

    def shutdown(self) -> None:
        """Stop every worker; what is still queued never runs."""
        for w in self.workers.values():
            w.close()


def spi_clocks(transfers: Sequence[SpiTransfer], bulk: bool = False) -> int:
    """The inline work estimate of one SPI message, in clocks: 8 per byte, CS edges, and
    ``REQUEST_CLOCKS`` per transfer (like :func:`~.execute.run_i2c_within` for I2C).

    For a ``bulk`` chip select (:meth:`~bridge.buses.base.SpiBackend.bulk`) a byte
    costs 1/64 clock: a 4 KiB transfer to the simulated loopback is about 10 µs.
    """
    clocks = 0
    for t in transfers:
        n = t.length
        clocks += 2 + REQUEST_CLOCKS + (n >> 6 if bulk else 8 * n)
    return clocks


class CallWork(Work):
    """An admin op's function, run on a bus worker as one step in its client's order."""

    def __init__(self, fn: Callable[[], Any], future: asyncio.Future[Any]) -> None:
        self.fn = fn
        self.future = future
        self.result: Any = None
        self.exc: BaseException | None = None

    def step(self) -> bool:
        try:
            self.result = self.fn()
        except Exception as e:  # the op's own refusal (ValueError ...): the caller's to say
            self.exc = e
        return True

    def resolve(self, error: BaseException | None) -> None:
        """On the loop: hand the outcome to whoever awaits it."""
        if self.future.done():
            return
        exc = error or self.exc
        if exc is not None:
            self.future.set_exception(exc)
        else:
            self.future.set_result(self.result)

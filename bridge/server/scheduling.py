"""How admitted requests reach the buses: bus workers, inline runs, deadlines, withdrawal.

Concurrency model.  Every bus has one worker thread (a single-thread executor),
so a bus runs one transaction at a time, in arrival order; different buses run
in parallel on their workers.  A request whose bus has nothing queued and whose
backend cannot block (``may_block`` false: the simulated buses without timing)
runs inline on the event loop instead, which saves two thread hand-offs; it
keeps the bus's order because it only happens when nothing of that bus waits,
but while it runs, the loop (every other bus and connection) waits too.

A queued request's deadline (its ``timeout_ms``, or the server's request
timeout) answers it with ERR/ETIMEDOUT if the bus does not finish in time: a
request still queued is withdrawn and never runs, one already on the bus is
reported as unknown and never retried.  An inline request has no deadline: it
is answered when it returns.  When a client goes, its requests still queued are
withdrawn.

:class:`Scheduler` decides, inline or queued, for every request; nothing else
submits to a worker.  Everything here runs on the event loop except the
functions handed to a worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from protocol.errors import ErrorCode
from protocol.events import Error, Event, Failure, I2CRequest, SpiRequest

from ..buses.base import I2CBackend, SpiBackend
from ..logs import event
from .execute import Outcome, check_spi, run_i2c, run_spi, timed_out
from .stats import BusCounts, ServerStats

log = logging.getLogger("busbridge.server")


class BoardLike(Protocol):
    """What the server needs of a board: its name and its buses by name."""

    name: str

    @property
    def i2c(self) -> Mapping[str, I2CBackend]: ...

    @property
    def spi(self) -> Mapping[str, SpiBackend]: ...

    def close(self) -> None: ...


class Requester(Protocol):
    """The connection a request came from, as the scheduler answers it."""

    peer: str
    loop: asyncio.AbstractEventLoop

    def send(self, ev: Event) -> None: ...

    def answer(self, rid: int, status: bytes, reads: list[bytes],
               failures: list[Failure]) -> None: ...


class BusWorker:
    """One thread per bus: serialises it and keeps blocking ioctls off the loop."""

    def __init__(self, kind: str, name: str, counts: BusCounts | None = None) -> None:
        self.label = f"{kind} bus {name}"
        #: Jobs submitted and not yet settled on the loop; inline runs wait for 0.
        self.pending = 0
        #: This bus's requests and their outcomes (held by the server's ServerStats).
        self.counts = counts if counts is not None else BusCounts()
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{kind}-{name}")

    def submit(self, fn: Callable[..., Outcome], *args: Any) -> cf.Future[Outcome]:
        return self._pool.submit(fn, *args)

    def shutdown(self, wait: bool) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)


@dataclass(eq=False)
class Job:
    """A request handed to a bus worker thread, until it is answered."""

    requester: Requester
    request: I2CRequest | SpiRequest
    worker: BusWorker
    future: cf.Future[Outcome] | None = None
    timer: asyncio.TimerHandle | None = None
    answered: bool = False

    @property
    def where(self) -> str:
        r = self.request
        return f"i2c bus {r.bus}" if isinstance(r, I2CRequest) else f"spi bus {r.bus} cs {r.cs}"

    def expired(self, started: bool) -> Outcome:
        r = self.request
        if isinstance(r, I2CRequest):
            n, n_reads = len(r.msgs), sum(1 for m in r.msgs if m.is_read)
        else:
            n, n_reads = len(r.transfers), sum(1 for t in r.transfers if t.rx_len)
        return timed_out(n, n_reads, isinstance(r, SpiRequest), self.where, started)


def unknown_bus(board: BoardLike, rid: int, kind: str, bus: str,
                known: Mapping[str, object]) -> Error:
    """The ERROR for a request or lease naming a bus the board does not have."""
    have = ", ".join(repr(k) for k in known) or "none"
    return Error(rid, ErrorCode.UNKNOWN_BUS,
                 f"no {kind} bus {bus!r} on board {board.name!r} ({kind} buses: {have})")


class Scheduler:
    """The board's bus workers, and every admitted request until it is answered."""

    def __init__(self, board: BoardLike, stats: ServerStats, request_timeout: float) -> None:
        self.board = board
        self.stats = stats
        #: Deadline of a request that sets no ``timeout_ms``, in seconds.
        self.request_timeout = request_timeout
        self.workers: dict[tuple[str, str], BusWorker] = {}
        for name in board.i2c:
            self.workers["i2c", name] = BusWorker("i2c", name, stats.bus("i2c", name))
        for name in board.spi:
            self.workers["spi", name] = BusWorker("spi", name, stats.bus("spi", name))
        #: Bus name -> (backend, worker): one lookup on the hot path.
        self.i2c_routes: dict[str, tuple[I2CBackend, BusWorker]] = {
            name: (b, self.workers["i2c", name]) for name, b in board.i2c.items()
        }
        #: Requests on a worker, not yet settled on the loop.
        self.jobs: set[Job] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        #: Set when the server shuts down: new requests are refused.
        self.closing = False

    # -- requests ----------------------------------------------------------------

    def i2c(self, requester: Requester, ev: I2CRequest) -> None:
        """The hot path: an I2C frame, run inline when its bus is idle and cannot block."""
        route = self.i2c_routes.get(ev.bus)
        if route is None:
            self.stats.unknown_bus += 1
            requester.send(unknown_bus(self.board, ev.id, "I2C", ev.bus, self.board.i2c))
            return
        backend, worker = route
        counts = worker.counts
        counts.requests += 1
        if self.closing:
            counts.refused += 1
            requester.send(Error(ev.id, ErrorCode.SHUTTING_DOWN, "server is shutting down"))
        elif not worker.pending and not backend.may_block:
            status, reads, failures = run_i2c(backend, ev.msgs)
            if failures:
                counts.failed(failures)
            requester.answer(ev.id, status, reads, failures)
        else:
            self._submit(requester, ev, worker, run_i2c, (backend, ev.msgs))

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
            # Touches no bus, but queues behind earlier requests to keep their order.
            if worker.pending:
                self._submit(requester, ev, worker, _refusal, (refused,))
            else:
                self._answer(requester, ev.id, refused, worker)
        elif not worker.pending and not spi_backend.may_block:
            self._answer(requester, ev.id, run_spi(spi_backend, ev.cs, ev.transfers), worker)
        else:
            self._submit(requester, ev, worker, run_spi, (spi_backend, ev.cs, ev.transfers))

    def _answer(self, requester: Requester, rid: int, outcome: Outcome,
                worker: BusWorker) -> None:
        status, reads, failures = outcome
        if failures:
            worker.counts.failed(failures)
        requester.answer(rid, status, reads, failures)

    # -- the workers' queues and deadlines -------------------------------------------

    def _submit(self, requester: Requester, ev: I2CRequest | SpiRequest, worker: BusWorker,
                fn: Callable[..., Outcome], args: tuple[Any, ...]) -> None:
        """Queue on the bus's worker thread, behind what it already has, with a deadline."""
        job = Job(requester, ev, worker)
        self.jobs.add(job)
        self._idle.clear()
        worker.pending += 1
        job.future = worker.submit(fn, *args)
        timeout = ev.timeout_ms / 1000 if ev.timeout_ms else self.request_timeout
        job.timer = requester.loop.call_later(timeout, self._timeout, job)
        job.future.add_done_callback(lambda _f: self._notify(job))

    def _notify(self, job: Job) -> None:
        """On the bus's thread: hand a finished job back to the loop, if it still runs."""
        try:
            job.requester.loop.call_soon_threadsafe(self._done, job)
        except RuntimeError:  # loop closed: the server stopped before the bus finished
            event(log, logging.WARNING, "completion after shutdown", where=job.where,
                  id=job.request.id, peer=job.requester.peer)

    def _done(self, job: Job) -> None:
        assert job.future is not None
        job.worker.pending -= 1
        if job.timer is not None:
            job.timer.cancel()
        if not job.answered:
            job.answered = True
            # Only the deadline cancels futures, and it answers first.
            outcome = job.expired(False) if job.future.cancelled() else job.future.result()
            self._answer(job.requester, job.request.id, outcome, job.worker)
        elif not job.future.cancelled():
            event(log, logging.WARNING, "late completion after deadline", where=job.where,
                  id=job.request.id, peer=job.requester.peer)
        self.jobs.discard(job)
        if not self.jobs:
            self._idle.set()

    def _timeout(self, job: Job) -> None:
        if job.answered:
            return
        assert job.future is not None
        started = not job.future.cancel()
        job.answered = True
        job.worker.counts.timeouts += 1
        event(log, logging.WARNING, "request deadline passed", where=job.where,
              id=job.request.id, peer=job.requester.peer, started=started)
        self._answer(job.requester, job.request.id, job.expired(started), job.worker)

    def withdraw(self, requester: Requester) -> int:
        """Withdraw a gone client's requests that have not reached a bus yet.

        Nobody can receive their answers any more, so they must not hold the
        bus (or write to it) after the client died; one already on the bus
        finishes, as it would at a deadline.  Returns how many were withdrawn.
        """
        n = 0
        for job in list(self.jobs):
            if job.requester is requester and job.future is not None and job.future.cancel():
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
            w.shutdown(wait=False)


def _refusal(outcome: Outcome) -> Outcome:
    return outcome

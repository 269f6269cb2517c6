"""One bus's worker thread and its queue, shared fairly between the clients.

Each bus has one thread, so a bus runs one transaction at a time and a
blocking ioctl never holds the event loop.  Its queue is one FIFO per client
(connection), and the thread takes turns between them by **bus time**: the
next step goes to the client with work queued that has used the least bus
time (start-time fair queueing; a client that starts queueing again begins
at the current virtual time, so it has no credit from being idle but keeps
the debt of what it just used).  A step is one transaction: one chain of an
I2C frame or one SPI message, so another client's frame may run between two
chains of a long frame (§8.1 promises atomicity per chain), and a client's
own frames on a bus stay in its order.

The loop submits jobs and withdraws queued ones (deadline, disconnect); the
thread picks and runs them; both under the queue's lock.  A finished job is
handed back to the loop with ``call_soon_threadsafe``; the
:class:`~.scheduling.Scheduler` answers it there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from protocol.admin import AdminRequest
from protocol.events import Event, Failure, I2CRequest, SpiRequest

from .execute import Backlog, Outcome, Work, timed_out
from .stats import BusCounts

#: Job states.  QUEUED -> RUNNING -> DONE, or QUEUED -> WITHDRAWN (never ran).
QUEUED, RUNNING, DONE, WITHDRAWN = range(4)


class Requester(Protocol):
    """The connection a request came from, as the scheduler answers it."""

    peer: str
    loop: asyncio.AbstractEventLoop

    def send(self, ev: Event) -> None: ...

    def answer(self, rid: int, status: bytes, reads: list[bytes],
               failures: list[Failure]) -> None: ...


@dataclass(eq=False)
class Job:
    """A request handed to a bus worker, until it is answered."""

    requester: Requester
    #: An ADMIN request's job runs an admin op's function in the client's order.
    request: I2CRequest | SpiRequest | AdminRequest
    worker: BusWorker
    work: Work
    #: ``time.monotonic()`` by which it must have completed.
    deadline: float
    state: int = QUEUED
    #: The deadline passed (seen by the loop's timer or by the thread): no step starts.
    expired: bool = False
    #: Set by the thread when its next transaction could not end before the deadline.
    doomed: bool = False
    #: Whether any step ran (for the deadline's "effect unknown").
    started: bool = False
    #: ``time.monotonic()`` when it left the bus (DONE).
    finished_at: float = 0.0
    #: ``time.perf_counter()`` when its first step began and its last one ended (observers).
    began: float = 0.0
    ended: float = 0.0
    #: A bug in the server's own code while it ran (answered ``internal``).
    error: BaseException | None = None
    timer: asyncio.TimerHandle | None = None
    answered: bool = False
    settled: bool = False
    flow: Flow | None = None

    @property
    def where(self) -> str:
        r = self.request
        if isinstance(r, AdminRequest):
            return f"{r.params.get('kind', 'i2c')} bus {r.params.get('bus')} (admin {r.op})"
        return f"i2c bus {r.bus}" if isinstance(r, I2CRequest) else f"spi bus {r.bus} cs {r.cs}"

    def timed_out(self) -> Outcome:
        """The §8.4 answer: every request ERR, one failure [0, ETIMEDOUT]."""
        r = self.request
        if isinstance(r, I2CRequest):
            n, n_reads = len(r.msgs), sum(1 for m in r.msgs if m.is_read)
        elif isinstance(r, SpiRequest):
            n, n_reads = len(r.transfers), sum(1 for t in r.transfers if t.rx_len)
        else:  # an admin op has no deadline: never here
            n, n_reads = 1, 0
        return timed_out(n, n_reads, isinstance(r, SpiRequest), self.where, self.started,
                         self.doomed)


@dataclass(eq=False)
class Flow:
    """One client's jobs on one bus, in its order, and the bus time it used."""

    jobs: deque[Job] = field(default_factory=deque)
    used: float = 0.0


class BusWorker:
    """One bus: a thread that runs its jobs, fairly between clients, one step at a time."""

    def __init__(self, kind: str, name: str, counts: BusCounts | None = None) -> None:
        self.label = f"{kind} bus {name}"
        self._thread_name = f"{kind}-{name}"
        #: Jobs submitted and not yet settled on the loop (loop only): ``pending``.
        self.backlog = Backlog()
        #: Per client, its jobs submitted and not settled (loop only): PARAM_ERR keeps its turn.
        self.outstanding: dict[Requester, int] = {}
        #: This bus's requests and their outcomes (held by the server's ServerStats).
        self.counts = counts if counts is not None else BusCounts()
        self._cond = threading.Condition(threading.Lock())
        self._flows: dict[Requester, Flow] = {}
        self._active: dict[Requester, Flow] = {}  # flows with jobs queued or running
        self._vtime = 0.0
        self._closed = False
        self._thread: threading.Thread | None = None
        #: Called on the loop with each job the thread finished (the scheduler's settle).
        self.on_done: Callable[[Job], None] = lambda job: None

    @property
    def pending(self) -> int:
        """Jobs submitted and not yet settled on the loop (loop only); inline runs wait
        for 0."""
        return self.backlog.jobs

    @pending.setter
    def pending(self, n: int) -> None:
        self.backlog.jobs = n

    # -- the loop's side ----------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue ``job`` behind its client's earlier jobs on this bus."""
        req = job.requester
        self.pending += 1
        self.outstanding[req] = self.outstanding.get(req, 0) + 1
        with self._cond:
            flow = self._active.get(req)
            if flow is None:
                flow = self._flows.get(req)
                if flow is None:
                    flow = self._flows[req] = Flow()
                flow.used = max(flow.used, self._vtime)
                self._active[req] = flow
            job.flow = flow
            flow.jobs.append(job)
            self._cond.notify()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._thread_name,
                                            daemon=True)
            self._thread.start()

    def withdraw(self, job: Job) -> int:
        """Take ``job`` off the queue if it has not started; returns its state before."""
        with self._cond:
            state = job.state
            if state == QUEUED:
                job.state = WITHDRAWN
                self._unqueue(job)
            elif state == RUNNING:
                job.expired = True  # the thread starts no further step of it
        return state

    def forget(self, requester: Requester) -> list[Job]:
        """A client is gone: withdraw its queued jobs (returned) and its fair-share state."""
        with self._cond:
            flow = self._flows.pop(requester, None)
            if flow is None:
                return []
            gone = [j for j in flow.jobs if j.state == QUEUED]
            for j in gone:
                j.state = WITHDRAWN
                self._unqueue(j)
        return gone

    def settled(self, job: Job) -> None:
        """Loop bookkeeping once a submitted job is answered and off the bus."""
        self.pending -= 1
        req = job.requester
        left = self.outstanding[req] - 1
        if left:
            self.outstanding[req] = left
        else:
            del self.outstanding[req]

    def close(self) -> None:
        """Stop the thread after its current step; what is still queued never runs."""
        with self._cond:
            self._closed = True
            for flow in self._active.values():
                for j in flow.jobs:
                    if j.state == QUEUED:
                        j.state = WITHDRAWN
            self._active.clear()
            self._cond.notify_all()

    # -- the thread's side ----------------------------------------------------------

    def _unqueue(self, job: Job) -> None:
        """Remove ``job`` from its flow (lock held)."""
        flow = job.flow
        assert flow is not None
        flow.jobs.remove(job)
        if not flow.jobs and self._active.get(job.requester) is flow:
            del self._active[job.requester]

    def _pick(self, now: float) -> Job | None:
        """The next step's job (lock held): the head of the flow with the least bus time.

        A job whose deadline passed while it ran, or whose next transaction
        cannot end before its deadline, is finished here instead (``doomed``).
        """
        while self._active:
            flow = min(self._active.values(), key=_used)
            job = flow.jobs[0]
            if now >= job.deadline:
                job.expired = True  # the loop's timer has not run yet; it never starts
            if not job.expired:
                wire = job.work.wire_time()
                if wire is None or now + wire <= job.deadline:
                    self._vtime = flow.used
                    job.state = RUNNING
                    job.started = True
                    return job
                job.doomed = True
            self._finish(job)
        return None

    def _finish(self, job: Job) -> None:
        """The job leaves the bus (lock held); the loop settles it."""
        job.finished_at = time.monotonic()
        job.state = DONE
        self._unqueue(job)
        # RuntimeError: the loop closed, the server stopped before the bus finished.
        with contextlib.suppress(RuntimeError):
            job.requester.loop.call_soon_threadsafe(self.on_done, job)

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                job = self._pick(time.monotonic())
                while job is None:
                    if self._closed:
                        return
                    cond.wait()
                    job = self._pick(time.monotonic())
            wire = job.work.wire_time()
            cpu0 = time.thread_time()
            t0 = time.perf_counter()
            if not job.began:
                job.began = t0
            try:
                last = job.work.step()
            except Exception as e:  # a bug in the server's own code: never leave it unanswered
                job.error = e
                last = True
            job.ended = time.perf_counter()
            with cond:
                assert job.flow is not None
                job.flow.used += _charge(job.ended - t0, time.thread_time() - cpu0, wire)
                if last or job.expired:
                    self._finish(job)
            # Let the loop thread take the GIL now if it waits for it (a simulated
            # bus's transaction is Python code that otherwise holds it for a whole
            # switch interval): it is what the loop's latency is bounded by.
            os.sched_yield()


def _used(flow: Flow) -> float:
    return flow.used


def _charge(wall: float, cpu: float, wire: float | None) -> float:
    """The bus time a step is charged: its wall time, but never more than its own CPU
    time plus its wire time when the bus knows its clock.

    Wall time alone counts the time the thread waited for the GIL or the CPU (the
    event loop's turn, a busy machine): one step descheduled for a second would put
    its client a second of bus time behind every other, and on a bus shared by 32
    clients that client would wait for 31 s of their work — past its deadlines.
    """
    return wall if wire is None else min(wall, cpu + wire)


__all__ = ["DONE", "QUEUED", "RUNNING", "WITHDRAWN", "BusWorker", "Flow", "Job", "Requester"]

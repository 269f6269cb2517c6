"""A bus worker's fair share is by bus time, not by the wall clock of a busy machine.

A step that is descheduled (the GIL, the CPU taken by something else) must not
cost its client the turns of every other client: with wall time as the charge,
one stalled step put a client seconds behind 31 others and its requests then
waited past their deadlines (found by tests/reliability/test_load.py in CI).
"""

from __future__ import annotations

import asyncio
import time
from typing import cast

from bridge.server.buswork import BusWorker, Job
from bridge.server.execute import Outcome, Work
from protocol.events import Event, Failure, I2CRequest
from protocol.virtio import write


class Client:
    """A requester that only needs a loop and a name (the worker answers via on_done)."""

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop) -> None:
        self.peer = name
        self.loop = loop

    def send(self, ev: Event) -> None:  # pragma: no cover - not used here
        pass

    def answer(self, rid: int, status: bytes, reads: list[bytes],
               failures: list[Failure]) -> None:  # pragma: no cover - not used here
        pass


class Step:
    """One transaction of 50 µs on the wire, run as 50 µs of CPU (a simulated bus does its
    work in Python); ``stall`` sleeps first, off CPU, like a descheduled thread would, so
    its wall time is far longer than its bus time.  Not a subclass of ``Work``: the
    compiled build (mypyc) lets no interpreted class inherit from a compiled one."""

    def __init__(self, order: list[str], name: str, stall: float = 0.0) -> None:
        self.order, self.name, self.stall = order, name, stall

    def wire_time(self) -> float | None:
        return 50e-6

    def step(self) -> bool:
        if self.stall:
            time.sleep(self.stall)
        end = time.thread_time() + 50e-6
        while time.thread_time() < end:
            pass
        self.order.append(self.name)
        return True

    def outcome(self) -> Outcome:  # pragma: no cover - not used here
        return b"\x00", [], []


async def test_a_descheduled_step_does_not_cost_its_client_the_other_clients_turns() -> None:
    loop = asyncio.get_running_loop()
    worker = BusWorker("i2c", "1")
    done: list[Job] = []
    worker.on_done = done.append
    order: list[str] = []
    a, b = Client("a", loop), Client("b", loop)
    far = time.monotonic() + 60
    req = I2CRequest(1, "1", (write(0x48),))
    # a's first step stalls 0.3 s of wall time; then a and b each queue 20 more steps.
    jobs = [Job(a, req, worker, cast(Work, Step(order, "a", stall=0.3)), far)]
    jobs += [Job(b, req, worker, cast(Work, Step(order, "b")), far) for _ in range(20)]
    jobs += [Job(a, req, worker, cast(Work, Step(order, "a")), far) for _ in range(20)]
    for j in jobs:
        worker.submit(j)
    try:
        for _ in range(600):  # bounded: 60 s
            if len(done) == len(jobs):
                break
            await asyncio.sleep(0.1)
    finally:
        worker.close()
    assert len(done) == len(jobs)
    # Charged by wall time, a waits for all 20 of b's steps (0.3 s of debt against 50 µs
    # steps: 0 of the next 20 are a's); charged by bus time the two take turns (about 9
    # of 20 on an idle machine; a busy one charges b's descheduled steps more, never less).
    first_twenty = order[1:21]
    assert first_twenty.count("a") >= 4, order

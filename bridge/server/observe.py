"""The one place every finished transaction passes: the server's observation hook.

The scheduler calls :attr:`Scheduler.observe <.scheduling.Scheduler.observe>`
once per request frame it answers (run inline, on a worker, refused with
PARAM_ERR, or expired), with the request, its outcome and its time on the bus.
That attribute is ``None`` while nobody observes, so an unobserved server pays
one attribute test per request and builds nothing; :class:`Observers` sets it
when its first observer attaches and clears it when the last one leaves.

Everything that wants to see transactions attaches here rather than hooking
the scheduler itself: the live trace (``trace.start``, :mod:`.admin`), a
recording (``busbridge serve --record``, :mod:`.record`), and metrics.  So
they all count the same transactions: one source of truth.  Observers run on
the event loop, inside the request's answer path: they must be quick and must
not raise (an observer that raises is logged and detached, the request is
answered regardless).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from protocol.events import Failure, I2CRequest, SpiRequest

Outcome = tuple[bytes, list[bytes], list[Failure]]

log = logging.getLogger("busbridge.server")


class Observed:
    """One finished request frame, as observers see it.

    ``t`` is the server's wall clock (UNIX seconds) when it started on its bus
    (when it was answered, if it never ran), ``dur`` its seconds on the bus.
    ``ran`` is True when the backend ran it, False when it never reached the bus
    (PARAM_ERR, a deadline before it started), None when its deadline passed
    while it was on the bus (its effect is unknown).  ``client`` is the
    connection's identity (token name, certificate CN or ``anonymous``),
    ``name`` its HELLO ``client`` string, ``peer`` its address.
    """

    __slots__ = ("client", "dur", "failures", "name", "peer", "ran", "reads", "request",
                 "status", "t")

    def __init__(self, request: I2CRequest | SpiRequest, outcome: Outcome, t: float,
                 dur: float, ran: bool | None, client: str, name: str, peer: str) -> None:
        self.request = request
        self.status, self.reads, self.failures = outcome
        self.t = t
        self.dur = dur
        self.ran = ran
        self.client = client
        self.name = name
        self.peer = peer

    @property
    def kind(self) -> str:
        return "i2c" if isinstance(self.request, I2CRequest) else "spi"

    @property
    def bus(self) -> str:
        return self.request.bus

    @property
    def ok(self) -> bool:
        return not any(self.status)


Observer = Callable[[Observed], None]


class Hook(Protocol):
    """What the scheduler calls: ``hook(requester, request, outcome, t0, dur, ran)``.

    ``t0`` is ``time.perf_counter()`` when the request started on its bus
    (or was answered), ``dur`` its seconds there.
    """

    def __call__(self, requester: Any, request: I2CRequest | SpiRequest, outcome: Outcome,
                 t0: float, dur: float, ran: bool | None) -> None: ...


class Target(Protocol):
    """Where the hook is installed (the scheduler): ``observe`` is None when unobserved."""

    observe: Hook | None


class Observers:
    """The observers of one server, and the hook the scheduler calls while there are any."""

    def __init__(self, target: Target) -> None:
        self._target = target
        self._observers: list[Observer] = []

    def __len__(self) -> int:
        return len(self._observers)

    def attach(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer(observed)`` for every finished request; returns the detacher."""
        self._observers.append(observer)
        self._target.observe = self.finished

        def detach() -> None:
            self.detach(observer)

        return detach

    def detach(self, observer: Observer) -> None:
        if observer in self._observers:
            self._observers.remove(observer)
        if not self._observers:
            self._target.observe = None

    def finished(self, requester: Any, request: I2CRequest | SpiRequest, outcome: Outcome,
                 t0: float, dur: float, ran: bool | None) -> None:
        """The hook: one :class:`Observed` for all observers of this request."""
        wall = time.time() - (time.perf_counter() - t0)
        obs = Observed(request, outcome, wall, dur, ran, getattr(requester, "client", ""),
                       getattr(requester, "client_name", ""), getattr(requester, "peer", ""))
        for observer in list(self._observers):
            try:
                observer(obs)
            except Exception:
                log.exception("transaction observer failed; detached")
                self.detach(observer)

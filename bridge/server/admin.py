"""The admin channel's server side: one ADMIN frame, many ops, under the access rules.

A session hands every :class:`~protocol.admin.AdminRequest` to :meth:`Admin.handle`,
which checks who may (``admin = true`` access rules, :mod:`.acl`), then answers
it exactly once with an ADMIN_RESULT or an ERROR (SPEC.md §4.10):

* ``sim.*``: test control of simulated chips.  Ops that touch a device's state
  (``get``, ``set``, ``fault``, ``screenshot``, ``log``) run on that bus's worker
  through :meth:`Scheduler.run_on_bus <.scheduling.Scheduler.run_on_bus>`, so they
  are ordered with the bus's transactions; ``sim.devices`` (descriptions only)
  is answered at once.  The board does the simulator's part (:class:`SimBoard`):
  the server never imports the simulator.
* ``trace.start`` / ``trace.stop``: the live trace (:mod:`.trace`).
* ``lease.release``: force release by public lease id, logged with who did it.

Every op is logged with the admin's identity; refusals like any other request.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import msgpack

from protocol.admin import DEFAULT_LOG_LIMIT, AdminRequest, AdminResult
from protocol.connection import Connection
from protocol.errors import ErrorCode
from protocol.events import Error, Event, Failure
from protocol.limits import Limits

from ..logs import AUDIT_LOGGER, LogGate, event
from .acl import ClientAcl
from .budget import AnswerBudget
from .leases import LeaseTable
from .scheduling import BoardLike, Scheduler, unknown_bus
from .trace import TraceFilter, Tracer, cut_data

log = logging.getLogger("busbridge.server")
#: State changes are logged here with ``event``, never through a session's log gate: a
#: burst of harmless changes must not hide the one that matters from the audit trail.
audit = logging.getLogger(AUDIT_LOGGER)

#: Ops that read or change a simulated device's state: run on the bus's worker.
ON_BUS = ("sim.get", "sim.set", "sim.fault", "sim.screenshot", "sim.log")
#: An answer that may be large (a log page, a screenshot, the device list) needs at
#: least this much of the connection's answer budget, as a lease ``list`` page does.
MIN_ADMIN_ROOM = 4096
#: Bytes of an ADMIN_RESULT frame around its payload (header, keys, ``next``, ``more``).
RESULT_SLACK = 256


class Controllable(Protocol):
    """What the sim ops use of a simulated device (``bridge.buses.sim.control``)."""

    name: str

    def set(self, **values: Any) -> dict[str, Any]: ...
    def get(self) -> dict[str, Any]: ...
    def inject(self, fault: str, **params: object) -> None: ...


@runtime_checkable
class SimBoard(Protocol):
    """A board whose simulated buses can be controlled (``bridge.config.Board`` is one).

    ``sim_device`` raises KeyError when there is no such bus or device and
    ValueError when the bus is not simulated; ``sim_log`` answers a page of a
    bus's transaction log and whether more follows.
    """

    def sim_device(self, kind: Any, bus: str, where: int, ten_bit: bool = False
                   ) -> Controllable: ...

    def sim_devices(self, bus: str | None = None) -> list[dict[str, Any]]: ...

    def sim_log(self, kind: Any, bus: str, since: int = 0, limit: int = 100
                ) -> tuple[list[dict[str, Any]], bool]: ...


class AdminSession(Protocol):
    """What the admin channel uses of a connection (a :class:`~.session.Session`)."""

    peer: str
    client: str
    client_name: str
    conn: Connection

    @property
    def paused(self) -> bool: ...
    #: The client's access rules; None when the server has none (everything is open).
    acl: ClientAcl | None

    loop: asyncio.AbstractEventLoop
    gate: LogGate
    budget: AnswerBudget

    @property
    def owed(self) -> int: ...
    @property
    def buffered(self) -> int: ...

    def note_buffer(self) -> None: ...
    def charge(self, rid: int, cost: int) -> str | None: ...

    def send(self, ev: Event) -> None: ...

    def answer(self, rid: int, status: bytes, reads: list[bytes],
               failures: list[Failure]) -> None: ...


class AdminRefusal(Exception):
    """An op refused: ``code`` and ``message`` go in the ERROR frame."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _bad(msg: str) -> AdminRefusal:
    return AdminRefusal(ErrorCode.BAD_REQUEST, msg)


def _where(p: Mapping[str, Any]) -> str:
    if p.get("kind", "i2c") == "i2c" and p.get("addr") is not None:
        return f"{p.get('kind', 'i2c')} bus {p['bus']} address {p['addr']:#04x}"
    return f"{p.get('kind')} bus {p['bus']} cs {p.get('cs')}"


def _room(s: AdminSession, ev: AdminRequest, limits: Limits) -> int:
    """Reserve the room a large answer may take in the answer budget (like a RESULT's,
    released when it is sent) and return it: at most ``max_frame``, less when the
    connection's answers wait unread.  ``limit-exceeded`` when there is too little."""
    s.note_buffer()
    room = min(limits.max_frame, s.budget.per_client - s.owed - s.buffered)
    if room < MIN_ADMIN_ROOM:
        raise AdminRefusal(ErrorCode.LIMIT_EXCEEDED,
                           "answers to this connection wait unread; read them, then ask "
                           "again (client_answer_budget)")
    why = s.charge(ev.id, room)
    if why is not None:
        raise AdminRefusal(ErrorCode.LIMIT_EXCEEDED, why)
    return room


class Admin:
    """The admin ops of one server (see the module docstring)."""

    def __init__(self, board: BoardLike, scheduler: Scheduler, leases: LeaseTable,
                 tracer: Tracer, limits: Limits) -> None:
        self.board = board
        self.scheduler = scheduler
        self.leases = leases
        self.tracer = tracer
        self.limits = limits
        self._tasks: set[asyncio.Task[None]] = set()
        self._ops: dict[str, Callable[[AdminSession, AdminRequest], Any]] = {
            "sim.devices": self._sim_devices, "sim.get": self._sim_get,
            "sim.set": self._sim_set, "sim.fault": self._sim_fault,
            "sim.screenshot": self._sim_screenshot, "sim.log": self._sim_log,
            "trace.start": self._trace_start, "trace.stop": self._trace_stop,
            "lease.release": self._lease_release,
        }

    # -- dispatch ---------------------------------------------------------------

    def handle(self, s: AdminSession, ev: AdminRequest) -> None:
        """Answer ``ev`` exactly once: now, or (ops on a bus) when its worker has run it."""
        try:
            if self.scheduler.closing:
                raise AdminRefusal(ErrorCode.SHUTTING_DOWN, "server is shutting down")
            op = self._ops[ev.op]  # the decoder refused unknown ops
            self._allow(s, ev)
            event(log, logging.INFO, "admin op", peer=s.peer, client=s.client, id=ev.id,
                  op=ev.op, **{k: v for k, v in ev.params.items()
                               if k in ("kind", "bus", "addr", "cs", "fault", "lease")})
            answer = op(s, ev)
        except AdminRefusal as e:
            self._refuse(s, ev, e)
            return
        if inspect.isawaitable(answer):
            task = asyncio.ensure_future(self._finish(s, ev, answer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif answer is not None:
            s.send(AdminResult(ev.id, answer))

    async def _finish(self, s: AdminSession, ev: AdminRequest, answer: Any) -> None:
        try:
            result = await answer
        except AdminRefusal as e:
            self._refuse(s, ev, e)
        except (ValueError, KeyError) as e:  # the device's word on the client's values
            self._refuse(s, ev, _bad(str(e.args[0]) if e.args else repr(e)))
        except asyncio.CancelledError:
            s.send(Error(ev.id, ErrorCode.SHUTTING_DOWN, "server is shutting down"))
            raise
        except Exception as e:
            log.exception("admin op failed", extra={"fields": {"op": ev.op, "id": ev.id}})
            s.send(Error(ev.id, ErrorCode.INTERNAL, f"{ev.op}: internal error: {e!r}"[:200]))
        else:
            s.send(AdminResult(ev.id, result))

    def _refuse(self, s: AdminSession, ev: AdminRequest, e: AdminRefusal) -> None:
        level = logging.WARNING if e.code is ErrorCode.DENIED else logging.INFO
        event(log, level, "request denied" if e.code is ErrorCode.DENIED else "admin op refused",
              peer=s.peer, client=s.client, id=ev.id, op=ev.op, code=str(e.code),
              reason=e.message)
        s.send(Error(ev.id, e.code, e.message))

    # -- who may ----------------------------------------------------------------------

    def _buses(self, kind: str | None = None) -> list[tuple[str, str]]:
        b = self.board
        return ([("i2c", n) for n in b.i2c] if kind in (None, "i2c") else []) + \
            ([("spi", n) for n in b.spi] if kind in (None, "spi") else [])

    def _allow(self, s: AdminSession, ev: AdminRequest) -> None:
        """Refuse ``denied`` unless an admin rule covers the op's buses (SPEC.md §8.7)."""
        acl = s.acl
        if acl is None or ev.op == "trace.stop":
            return  # no access rules: open; a stop concerns the client's own trace
        p = ev.params
        scopes: Iterable[tuple[str, str]]
        if ev.op == "sim.devices":
            if not acl.has_admin():
                raise AdminRefusal(ErrorCode.DENIED, f"no access rule grants client "
                                   f"{s.client!r} the admin ops (admin = true)")
            return  # answered with the devices of the buses it covers
        if ev.op == "lease.release":
            scopes = self._buses()  # a lease administrator administers the whole board
        elif ev.op == "trace.start":
            flt = TraceFilter.from_params(p)
            scopes = [x for x in self._buses(flt.kind) if flt.bus in (None, x[1])]
        else:
            scopes = [(p.get("kind") or "i2c", p["bus"])]
        why = acl.admin_denial(scopes)
        if why is not None:
            raise AdminRefusal(ErrorCode.DENIED, why)

    # -- sim ----------------------------------------------------------------------------

    def _sim(self) -> SimBoard:
        if not isinstance(self.board, SimBoard):
            raise _bad(f"board {self.board.name!r} has no simulated buses")
        return self.board

    def _device(self, p: Mapping[str, Any]) -> tuple[str, str, Controllable]:
        kind: str = p.get("kind") or "i2c"
        bus: str = p["bus"]
        buses: Mapping[str, object] = self.board.i2c if kind == "i2c" else self.board.spi
        if bus not in buses:
            e = unknown_bus(self.board, 0, kind.upper(), bus, buses)
            raise AdminRefusal(e.code, e.message)
        where = p.get("addr") if kind == "i2c" else p.get("cs")
        assert where is not None  # the decoder requires it
        try:
            return kind, bus, self._sim().sim_device(kind, bus, where, bool(p.get("ten_bit")))
        except KeyError as e:
            raise _bad(f"{_where(p)}: {e.args[0] if e.args else 'no such device'}") from None
        except ValueError as e:
            raise _bad(str(e)) from None

    def _on_bus(self, s: AdminSession, ev: AdminRequest, bus: str, fn: Callable[[], Any],
                then: Callable[[Any], dict[str, Any]]) -> Awaitable[dict[str, Any]]:
        """Queue ``fn`` on the bus's worker NOW, in this client's order there (its frames
        decoded after this one run after it); the answer is ``then(what fn returned)``."""
        fut = self.scheduler.run_on_bus(s, ev, bus, fn)

        async def answer() -> dict[str, Any]:
            return then(await fut)

        return answer()

    def _sim_devices(self, s: AdminSession, ev: AdminRequest) -> dict[str, Any]:
        bus = ev.params.get("bus")
        if bus is not None and bus not in self.board.i2c and bus not in self.board.spi:
            raise AdminRefusal(ErrorCode.UNKNOWN_BUS,
                               f"no bus {bus!r} on board {self.board.name!r}")
        found = self._sim().sim_devices(bus)
        if s.acl is not None:
            acl = s.acl
            found = [d for d in found if acl.admin_denial([(d["kind"], d["bus"])]) is None]
        if len(msgpack.packb(found, use_bin_type=True)) + RESULT_SLACK > _room(s, ev, self.limits):
            raise AdminRefusal(ErrorCode.LIMIT_EXCEEDED, "the device list does not fit in the "
                               "room this connection has: read your answers, or ask for one bus")
        return {"devices": found}

    def _sim_get(self, s: AdminSession, ev: AdminRequest) -> Awaitable[dict[str, Any]]:
        _, bus, dev = self._device(ev.params)
        return self._on_bus(s, ev, bus, dev.get, lambda v: {"values": v})

    def _sim_set(self, s: AdminSession, ev: AdminRequest) -> Awaitable[dict[str, Any]]:
        _, bus, dev = self._device(ev.params)
        values = ev.params["values"]

        def done(got: dict[str, Any]) -> dict[str, Any]:
            event(audit, logging.INFO, "sim values set", peer=s.peer, client=s.client,
                  where=_where(ev.params), device=dev.name, values=values)
            return {"values": got}

        return self._on_bus(s, ev, bus, functools.partial(dev.set, **values), done)

    def _sim_fault(self, s: AdminSession, ev: AdminRequest) -> Awaitable[dict[str, Any]]:
        _, bus, dev = self._device(ev.params)
        p = ev.params
        params = {k: v for k, v in p.items()
                  if k not in ("kind", "bus", "addr", "cs", "ten_bit", "fault")}

        def done(_: object) -> dict[str, Any]:
            event(audit, logging.INFO, "sim fault injected", peer=s.peer,
                  client=s.client, where=_where(p), device=dev.name, fault=p["fault"],
                  params=params)
            return {}

        return self._on_bus(s, ev, bus, functools.partial(dev.inject, p["fault"], **params),
                            done)

    def _sim_screenshot(self, s: AdminSession, ev: AdminRequest) -> Awaitable[dict[str, Any]]:
        _, bus, dev = self._device(ev.params)
        shot = getattr(dev, "screenshot", None)
        if not callable(shot):
            raise _bad(f"{_where(ev.params)} ({dev.name}) is not a display: nothing to "
                       "screenshot")
        most = max(self.limits.max_i2c_len, self.limits.max_spi_len)
        room = _room(s, ev, self.limits) - RESULT_SLACK

        def done(png: bytes) -> dict[str, Any]:
            if len(png) > most:
                raise _bad(f"the screenshot is {len(png)} bytes, over this server's {most}: "
                           "ask for a smaller scale")
            if len(png) > room:
                raise AdminRefusal(ErrorCode.LIMIT_EXCEEDED, f"the screenshot is {len(png)} "
                                   f"bytes, over the {room} left: read your answers")
            return {"png": png}

        return self._on_bus(s, ev, bus, functools.partial(shot, ev.params.get("scale", 4)), done)

    def _sim_log(self, s: AdminSession, ev: AdminRequest) -> Awaitable[dict[str, Any]]:
        p = ev.params
        kind, bus = p["kind"], p["bus"]
        buses: Mapping[str, object] = self.board.i2c if kind == "i2c" else self.board.spi
        if bus not in buses:
            e = unknown_bus(self.board, 0, kind.upper(), bus, buses)
            raise AdminRefusal(e.code, e.message)
        since = p.get("since", 0)
        room = _room(s, ev, self.limits) - RESULT_SLACK  # a page is sized to what is left

        return self._on_bus(s, ev, bus, functools.partial(
            self._sim().sim_log, kind, bus, since, p.get("limit", DEFAULT_LOG_LIMIT)),
            lambda page: _log_page(page[0], page[1], room,
                                   self.limits.max_frame - RESULT_SLACK, since))

    # -- trace ----------------------------------------------------------------------------

    def _trace_start(self, s: AdminSession, ev: AdminRequest) -> None:
        p = ev.params
        flt = TraceFilter.from_params(p)
        if flt.bus is not None and not any(b == flt.bus for _, b in self._buses(flt.kind)):
            raise AdminRefusal(ErrorCode.UNKNOWN_BUS,
                               f"no {flt.kind or 'i2c or spi'} bus {flt.bus!r} on board "
                               f"{self.board.name!r}")
        if (why := self.tracer.refusal(s)) is not None:
            raise AdminRefusal(ErrorCode.LIMIT_EXCEEDED, why)
        s.send(AdminResult(ev.id, {"queue": self.tracer.max_events}))
        if ev.id in s.conn.subscriptions:  # the answer went out: the client expects events
            self.tracer.start(s, ev.id, flt)
        return None

    def _trace_stop(self, s: AdminSession, ev: AdminRequest) -> dict[str, Any]:
        sid = ev.params["id"]
        sub = self.tracer.find(s, sid)
        if sub is None:
            raise _bad(f"no trace {sid} on this connection (never started, or stopped)")
        self.tracer.stop(sub)
        return {}

    def forget(self, s: AdminSession) -> None:
        """The connection is gone: its traces end."""
        self.tracer.forget(s)

    # -- leases -----------------------------------------------------------------------------

    def _lease_release(self, s: AdminSession, ev: AdminRequest) -> dict[str, Any]:
        lease_id = ev.params["lease"]
        held = self.leases.force_release(lease_id, by=f"{s.client} at {s.peer}")
        if held is None:
            return {"released": False}
        return {"released": True, "lease": held.to_map()}

    def close(self) -> None:
        """Shutdown: the traces end; ops waiting for a bus are answered ``shutting-down``."""
        self.tracer.close()
        for task in list(self._tasks):
            task.cancel()


def _log_page(entries: list[dict[str, Any]], more: bool, room: int, frame_room: int,
              since: int) -> dict[str, Any]:
    """``sim.log``'s answer: entries within ``room`` bytes (one frame, or what the
    budget leaves); what does not fit is the next page.  An entry that could not fit
    even alone in a frame has its data cut as a trace event's is (``truncated``), so
    every entry can be paged; one that fits a frame but not the room left is refused
    ``limit-exceeded`` rather than answered with an empty page that never advances."""
    used, kept = 0, 0
    for entry in entries:
        size = len(msgpack.packb(entry, use_bin_type=True))
        if size > frame_room:
            cut_data(entry)
            size = len(msgpack.packb(entry, use_bin_type=True))
        if used + size > room:
            if kept == 0:
                raise AdminRefusal(ErrorCode.LIMIT_EXCEEDED,
                                   f"log entry {entry['seq']} is {size} bytes, over the "
                                   f"{room} this connection has room for: read the answers "
                                   "waiting for you, then ask again")
            more = True
            break
        used += size
        kept += 1
    entries = entries[:kept]
    return {"entries": entries, "next": entries[-1]["seq"] if entries else since, "more": more}

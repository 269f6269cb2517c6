"""The admin channel from the client side: test control of simulated chips, the live trace.

``client.admin(op, params)`` sends one ADMIN frame and returns its result map
(SPEC.md §4.10); on top of it:

* :class:`AsyncSimControl` (``AsyncClient.sim``) and :class:`SimControl`
  (``Client.sim``, ``BlockingClient.sim``): ``set(bus, addr, **values)``,
  ``get``, ``fault``, ``log``, ``screenshot``, ``devices``;
* :class:`Trace` (``AsyncClient.trace(...)``): the board's transactions as they
  happen, an async iterator of event maps (§4.12); :func:`describe_event` turns
  one into a line a logic analyser's I2C/SPI decoder would print.

A simulated device is named like in i2c-tools: bus and address for I2C, or
``cs=`` for SPI.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from protocol.admin import DEFAULT_LOG_LIMIT

__all__ = ["AsyncSimControl", "LogPage", "SimControl", "Trace", "describe_event",
           "device_params", "escape"]


def device_params(bus: str | int, addr: int | None = None, *, cs: int | None = None,
                  kind: str | None = None, ten_bit: bool = False) -> dict[str, Any]:
    """The params naming one simulated device: ``addr`` for I2C, ``cs`` for SPI."""
    kind = kind or ("spi" if cs is not None else "i2c")
    p: dict[str, Any] = {"kind": kind, "bus": str(bus)}
    if kind == "i2c":
        if addr is None:
            raise ValueError("an I2C device is named by its address")
        p["addr"] = addr
        if ten_bit:
            p["ten_bit"] = True
    else:
        if cs is None:
            raise ValueError("an SPI device is named by its chip select (cs=)")
        p["cs"] = cs
    return p


@dataclass(frozen=True)
class LogPage:
    """A page of a simulated bus's transaction log: pass ``next`` as ``since`` for more."""

    entries: list[dict[str, Any]]
    next: int
    more: bool


def _page(r: Mapping[str, Any]) -> LogPage:
    return LogPage(list(r.get("entries", [])), int(r.get("next", 0)), bool(r.get("more")))


class _AsyncAdmin(Protocol):
    def admin(self, op: str, params: Mapping[str, Any] | None = None,
              timeout: float | None = None) -> Awaitable[dict[str, Any]]: ...


class _SyncAdmin(Protocol):
    def admin(self, op: str, params: Mapping[str, Any] | None = None,
              timeout: float | None = None) -> dict[str, Any]: ...


class AsyncSimControl:
    """Test control of a simulated board through :meth:`AsyncClient.admin`.

    ``await client.sim.set(1, 0x48, temperature=31.25)`` makes the TMP117 on
    bus 1 measure 31.25 °C: the next read through any driver sees it.
    """

    def __init__(self, client: _AsyncAdmin) -> None:
        self._client = client

    async def devices(self, bus: str | int | None = None) -> list[dict[str, Any]]:
        """Every simulated device (of ``bus``): kind, bus, addr/cs, model, quantities, faults."""
        p = {} if bus is None else {"bus": str(bus)}
        return list((await self._client.admin("sim.devices", p)).get("devices", []))

    async def get(self, bus: str | int, addr: int | None = None, *, cs: int | None = None,
                  kind: str | None = None, ten_bit: bool = False) -> dict[str, Any]:
        """What the device measures or holds now, by quantity name."""
        p = device_params(bus, addr, cs=cs, kind=kind, ten_bit=ten_bit)
        return dict((await self._client.admin("sim.get", p))["values"])

    async def set(self, bus: str | int, addr: int | None = None, *, cs: int | None = None,
                  kind: str | None = None, ten_bit: bool = False, **values: Any
                  ) -> dict[str, Any]:
        """Make the device measure ``values`` from now on; returns all its values."""
        p = device_params(bus, addr, cs=cs, kind=kind, ten_bit=ten_bit)
        p["values"] = values
        return dict((await self._client.admin("sim.set", p))["values"])

    async def fault(self, bus: str | int, addr: int | None, fault: str, *,
                    cs: int | None = None, kind: str | None = None, ten_bit: bool = False,
                    **params: Any) -> None:
        """Inject ``fault`` (``nack-next``, ``stall``, ``clear``, ...) with its ``params``."""
        p = {**params, **device_params(bus, addr, cs=cs, kind=kind, ten_bit=ten_bit),
             "fault": fault}
        await self._client.admin("sim.fault", p)

    async def log(self, bus: str | int, *, kind: str = "i2c", since: int = 0,
                  limit: int = DEFAULT_LOG_LIMIT) -> LogPage:
        """The bus's transactions after sequence number ``since`` (one page)."""
        return _page(await self._client.admin(
            "sim.log", {"kind": kind, "bus": str(bus), "since": since, "limit": limit}))

    async def screenshot(self, bus: str | int, addr: int = 0x3C, *, scale: int = 4) -> bytes:
        """What a simulated display shows, as a PNG."""
        r = await self._client.admin("sim.screenshot",
                                     {"kind": "i2c", "bus": str(bus), "addr": addr,
                                      "scale": scale})
        return bytes(r["png"])


class SimControl:
    """:class:`AsyncSimControl` for the synchronous clients (``Client.sim``,
    ``BlockingClient.sim``): the same calls, without ``await``."""

    def __init__(self, client: _SyncAdmin) -> None:
        self._client = client

    def devices(self, bus: str | int | None = None) -> list[dict[str, Any]]:
        p = {} if bus is None else {"bus": str(bus)}
        return list(self._client.admin("sim.devices", p).get("devices", []))

    def get(self, bus: str | int, addr: int | None = None, *, cs: int | None = None,
            kind: str | None = None, ten_bit: bool = False) -> dict[str, Any]:
        p = device_params(bus, addr, cs=cs, kind=kind, ten_bit=ten_bit)
        return dict(self._client.admin("sim.get", p)["values"])

    def set(self, bus: str | int, addr: int | None = None, *, cs: int | None = None,
            kind: str | None = None, ten_bit: bool = False, **values: Any) -> dict[str, Any]:
        p = device_params(bus, addr, cs=cs, kind=kind, ten_bit=ten_bit)
        p["values"] = values
        return dict(self._client.admin("sim.set", p)["values"])

    def fault(self, bus: str | int, addr: int | None, fault: str, *, cs: int | None = None,
              kind: str | None = None, ten_bit: bool = False, **params: Any) -> None:
        p = {**params, **device_params(bus, addr, cs=cs, kind=kind, ten_bit=ten_bit),
             "fault": fault}
        self._client.admin("sim.fault", p)

    def log(self, bus: str | int, *, kind: str = "i2c", since: int = 0,
            limit: int = DEFAULT_LOG_LIMIT) -> LogPage:
        return _page(self._client.admin(
            "sim.log", {"kind": kind, "bus": str(bus), "since": since, "limit": limit}))

    def screenshot(self, bus: str | int, addr: int = 0x3C, *, scale: int = 4) -> bytes:
        r = self._client.admin("sim.screenshot", {"kind": "i2c", "bus": str(bus),
                                                  "addr": addr, "scale": scale})
        return bytes(r["png"])


class Trace:
    """A live trace: ``async with client.trace(bus="1") as t: async for ev in t: ...``.

    Entering sends ``trace.start``; leaving sends ``trace.stop``.  Events are
    SPEC.md §4.12's maps.  The client keeps at most ``queue`` events that the
    caller has not taken; beyond that it drops them and yields one
    ``{"kind": "dropped", "count": k}`` in their place, as the server does.
    """

    def __init__(self, start: Callable[[Trace], Awaitable[int]],
                 stop: Callable[[int], Awaitable[None]], queue: int = 4096) -> None:
        self._start, self._stop = start, stop
        self._max = queue
        self._q: deque[dict[str, Any]] = deque()
        self._dropped = 0
        self._wake: asyncio.Event | None = None
        self._ended: BaseException | None = None
        self.id = 0

    # -- fed by the client's connection --------------------------------------------

    def push(self, ev: dict[str, Any]) -> None:
        if len(self._q) >= self._max:
            self._dropped += int(ev.get("count", 1)) if ev.get("kind") == "dropped" else 1
        else:
            if self._dropped:
                self._q.append({"kind": "dropped", "count": self._dropped})
                self._dropped = 0
            self._q.append(ev)
        if self._wake is not None:
            self._wake.set()

    def end(self, exc: BaseException) -> None:
        """The connection is gone: the iterator raises ``exc`` once the queue is empty."""
        self._ended = exc
        if self._wake is not None:
            self._wake.set()

    # -- the caller's side ------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Events received and not yet taken."""
        return len(self._q) + (1 if self._dropped else 0)

    async def __aenter__(self) -> Trace:
        self._wake = asyncio.Event()
        self.id = await self._start(self)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """End the trace (events already received stay readable)."""
        if self.id and self._ended is None:
            sid, self.id = self.id, 0
            with contextlib.suppress(OSError):  # connection gone: the trace ended with it
                await self._stop(sid)

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self

    async def __anext__(self) -> dict[str, Any]:
        assert self._wake is not None, "use `async with client.trace(...)`"
        while True:
            if self._q:
                return self._q.popleft()
            if self._dropped:
                n, self._dropped = self._dropped, 0
                return {"kind": "dropped", "count": n}
            if self._ended is not None or not self.id:
                if self._ended is not None and self.id:
                    raise self._ended
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()


# -- one line per transaction --------------------------------------------------------


def escape(text: str) -> str:
    """A client-supplied string made safe to print: no control characters, no newlines."""
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


def _hex(data: bytes | None) -> str:
    return (data or b"").hex(" ")


def describe_event(ev: Mapping[str, Any]) -> str:
    """One line, like a logic analyser's I2C/SPI decoder: time, who, bus, the bytes, result.

    I2C: ``S`` START, ``Sr`` repeated START, ``P`` STOP, address with ``W``/``R``,
    the bytes written or read, ``NACK`` where a message failed; SPI: chip
    select, MOSI/MISO per transfer, ``|`` where CS toggles.
    """
    kind = ev.get("kind")
    if kind == "dropped":
        return f"... {ev.get('count', 0)} transaction(s) dropped (the trace fell behind)"
    t = datetime.fromtimestamp(float(ev.get("t", 0.0))).strftime("%H:%M:%S.%f")
    who = escape(str(ev.get("client", "")))
    name = str(ev.get("name", ""))
    if name:
        who += f"/{escape(name)}"
    head = f"{t} {who} {kind} {escape(str(ev.get('bus', '')))}"
    if kind == "i2c":
        parts: list[str] = []
        start = "S"
        for m in ev.get("msgs", []):
            a = f"{m['addr']:03x}" if m.get("ten_bit") else f"{m['addr']:02x}"
            rw = "R" if m.get("rw") == "r" else "W"
            part = f"{start} {a} {rw}"
            if m.get("status"):
                part += " NACK"
            elif m.get("data"):
                part += " " + _hex(m["data"])
            parts.append(part)
            if m.get("end", True):
                parts.append("P")
                start = "S"
            else:
                start = "Sr"
        body = " ".join(parts)
    else:
        xs = []
        for x in ev.get("transfers", []):
            s = f"mosi {_hex(x.get('tx'))}" if x.get("tx") is not None else "mosi -"
            s += f" miso {_hex(x.get('rx'))}" if x.get("rx_len") else ""
            if x.get("status"):
                s += " FAILED"
            xs.append(s + (" |" if x.get("cs_change") else ""))
        body = f"cs{ev.get('cs')} " + "; ".join(xs)
    fails = ev.get("failures") or []
    status = "ok" if not fails else "; ".join(
        f"errno {f[1]}: {escape(str(f[2]))}" for f in fails)
    dur = ev.get("dur_us", 0)
    return f"{head} {body} -> {status} ({dur} us)"

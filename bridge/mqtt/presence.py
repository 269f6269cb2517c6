"""A board server announcing itself: retained status, inventory and health, with a last will.

The publisher is a task beside the server, never in the request path: the server
does not know it exists, a broker that is down only delays announcements, and
:meth:`Presence.stop` gives up on the broker after a bounded wait.  While
connected it watches its own status topic, so a stale "offline" (e.g. the last
will of a previous connection with the same client id) is overwritten at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import socket
import time
from collections.abc import Callable
from typing import Any

import aiomqtt

from .. import __version__
from ..addresses import format_address, parse_host_port
from ..config import MqttSettings
from ..logs import event
from ..server import Server
from .topics import SCHEMA, BrokerAddress, Topics, decode, encode, utc_iso

log = logging.getLogger("busbridge.mqtt")

#: Every hold on the broker at shutdown is bounded by this.
STOP_TIMEOUT = 2.0


def backoff_delay(attempt: int, low: float, high: float) -> float:
    """Full-jitter exponential backoff: uniform in [low, min(high, low·2^attempt)].

    The jitter keeps a room full of boards from reconnecting in lockstep after
    the broker restarts.
    """
    return random.uniform(low, max(low, min(high, low * 2 ** min(attempt, 30))))


def advertised_addresses(settings: MqttSettings | None, host: str, port: int) -> list[str]:
    """The HOST:PORTs clients should dial, in order: ``advertise``, else the listen address.

    A wildcard listen address (0.0.0.0, ::, "") is not dialable, so this host's
    name stands in for it.  Several advertised addresses serve clients on
    different networks (a container network and the host, a LAN and a VPN).
    """
    if settings is not None and settings.advertise:
        out = []
        for part in settings.advertise.split(","):
            adv_host, adv_port = parse_host_port(part.strip())
            out.append(format_address(adv_host, adv_port or port))
        return out
    if host in ("", "0.0.0.0", "::"):
        host = socket.getfqdn()
    return [format_address(host, port)]


def advertised_address(settings: MqttSettings | None, host: str, port: int) -> str:
    """The first of :func:`advertised_addresses`: what ``address`` in the payloads says."""
    return advertised_addresses(settings, host, port)[0]


def _devices(backend: object) -> list[dict[str, Any]] | None:
    """The devices a simulated bus holds (None for a real bus: scanning would touch it)."""
    devices = getattr(backend, "devices", None)
    if not callable(devices):
        return None
    found = devices()
    if isinstance(found, dict):  # SPI: chip select -> device
        return [{"cs": cs, "type": type(d).__name__, "name": d.name} for cs, d in found.items()]
    return [{"address": d.address, "ten_bit": d.ten_bit, "type": type(d).__name__,
             "name": d.name} for d in found]


def inventory(server: Server, address: str, description: str = "",
              addresses: list[str] | None = None) -> dict[str, Any]:
    """What the board offers, as WELCOME tells it, plus where to dial and what is attached."""
    w = server.welcome
    i2c = []
    for b in w.i2c:
        entry: dict[str, Any] = b.model_dump()
        entry["devices"] = _devices(server.board.i2c[b.name])
        i2c.append(entry)
    spi = []
    for s in w.spi:
        entry = {"name": s.name, "description": s.description,
                 "config": dataclasses.asdict(s.config)}
        entry["devices"] = _devices(server.board.spi[s.name])
        spi.append(entry)
    return {
        "schema": SCHEMA, "board": w.board, "description": description,
        "version": __version__, "server": w.server, "protocol": w.version,
        "address": address, "addresses": addresses or [address],
        "listen": format_address(server.host, server.port),
        "limits": w.limits.model_dump(), "i2c": i2c, "spi": spi, "at": utc_iso(),
    }


def health(server: Server, started: float) -> dict[str, Any]:
    """Counters since start (:class:`~bridge.server.stats.ServerStats`): totals, then per bus."""
    return {
        "schema": SCHEMA, "board": server.board.name, "at": utc_iso(),
        "uptime_s": round(time.monotonic() - started, 3),
        **server.stats.snapshot(),
    }


def leases_payload(server: Server) -> dict[str, Any] | None:
    """The server's lease table, if this server has leases (``server.leases``), else None.

    Expected of ``server.leases``: ``snapshot()`` returning the current leases
    (dicts, pydantic models or dataclasses) and ``add_listener(fn)`` calling
    ``fn(snapshot)`` after every change (``remove_listener(fn)`` undoes it).
    """
    table = getattr(server, "leases", None)
    if table is None or not callable(getattr(table, "snapshot", None)):
        return None
    items = []
    for lease in table.snapshot():
        if hasattr(lease, "model_dump"):
            items.append(lease.model_dump(mode="json"))
        elif dataclasses.is_dataclass(lease) and not isinstance(lease, type):
            items.append(dataclasses.asdict(lease))
        else:
            items.append(dict(lease))
    return {"schema": SCHEMA, "board": server.board.name, "at": utc_iso(), "leases": items}


class Presence:
    """Publish one server's presence to a broker until :meth:`stop`; reconnect forever."""

    def __init__(self, server: Server, settings: MqttSettings, *,
                 broker: BrokerAddress | None = None, description: str = "") -> None:
        self.server = server
        self.settings = settings
        self.broker = broker or BrokerAddress.parse(settings.broker)
        if settings.username:
            self.broker = dataclasses.replace(self.broker, username=settings.username,
                                              password=settings.password or None)
        self.topics = Topics(settings.prefix)
        self.board = server.board.name
        self.description = description
        self.client_id = settings.client_id or f"busbridge-{self.board}"
        self.addresses = advertised_addresses(settings, server.host, server.port)
        self.address = self.addresses[0]
        self.started = time.monotonic()
        self.online_since = ""
        #: Connections made so far (tests and logs: a reconnect increments it).
        self.connects = 0
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._listener: Callable[..., None] | None = None

    # -- payloads -------------------------------------------------------------

    def topic(self, kind: str) -> str:
        return self.topics.board(self.board, kind)

    def status(self, state: str, reason: str = "") -> dict[str, Any]:
        p: dict[str, Any] = {"schema": SCHEMA, "board": self.board, "state": state,
                             "address": self.address, "addresses": self.addresses,
                             "at": utc_iso()}
        if state == "online":
            p["since"] = self.online_since
        else:
            p["reason"] = reason
            p["online_since"] = self.online_since
        return p

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"mqtt-presence-{self.board}")
        table = getattr(self.server, "leases", None)
        add = getattr(table, "add_listener", None)
        if callable(add):
            # Only a wake-up: the publisher reads the table itself, off the data path.
            self._listener = lambda *_snapshot: self._wake.set()
            add(self._listener)

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def stop(self) -> None:
        """Say "offline" (reason shutdown) if connected, then disconnect; bounded in time."""
        self._stopping = True
        remove = getattr(getattr(self.server, "leases", None), "remove_listener", None)
        if self._listener is not None and callable(remove):
            with contextlib.suppress(ValueError):
                remove(self._listener)
            self._listener = None
        client = self._client
        if client is not None:
            try:
                await asyncio.wait_for(client.publish(
                    self.topic("status"), encode(self.status("offline", "shutdown")),
                    qos=1, retain=True), STOP_TIMEOUT)
            except (aiomqtt.MqttError, TimeoutError) as e:
                event(log, logging.WARNING, "could not announce shutdown", board=self.board,
                      broker=str(self.broker), error=str(e))
        if self._task is not None:
            self._task.cancel()
            # Disconnecting waits for the broker too: bounded, like everything at shutdown.
            await asyncio.wait({self._task}, timeout=STOP_TIMEOUT)
            if self._task.done() and not self._task.cancelled():
                with contextlib.suppress(Exception):
                    self._task.result()

    # -- the connection loop ------------------------------------------------

    def _make_client(self) -> aiomqtt.Client:
        will = aiomqtt.Will(self.topic("status"),
                            encode(self.status("offline", "connection lost")),
                            qos=1, retain=True)
        return aiomqtt.Client(identifier=self.client_id, will=will,
                              keepalive=self.settings.keepalive_s,
                              timeout=max(2.0, min(10.0, float(self.settings.keepalive_s))),
                              clean_session=True, logger=logging.getLogger("busbridge.mqtt.paho"),
                              **self.broker.client_kwargs(self.settings.ca_file))

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping:
            try:
                # Before the client: the last will carries it, to tie "offline" to this run.
                self.online_since = utc_iso()
                client = self._make_client()
                async with client:
                    attempt = 0
                    await self._session(client)
            except aiomqtt.MqttError as e:
                level = logging.WARNING if attempt == 0 else logging.DEBUG
                event(log, level, "broker unreachable; the board keeps serving",
                      board=self.board, broker=str(self.broker), error=str(e))
            except Exception:
                # A bug here must not end announcing for good, nor touch the server.
                log.exception("presence publisher failed; retrying",
                              extra={"fields": {"board": self.board}})
            finally:
                self._client = None
            if self._stopping:
                return
            delay = backoff_delay(attempt, self.settings.reconnect_min_s,
                                  self.settings.reconnect_max_s)
            attempt += 1
            await asyncio.sleep(delay)

    async def _session(self, client: aiomqtt.Client) -> None:
        await client.subscribe(self.topic("status"), qos=1)
        await self._announce(client)
        self._client = client
        self.connects += 1
        event(log, logging.INFO, "announced on broker", board=self.board,
              broker=str(self.broker), address=self.address, connects=self.connects)
        tasks = [asyncio.create_task(self._health_loop(client)),
                 asyncio.create_task(self._watch(client))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _announce(self, client: aiomqtt.Client) -> None:
        await client.publish(self.topic("inventory"), encode(
            inventory(self.server, self.address, self.description, self.addresses)),
            qos=1, retain=True)
        await client.publish(self.topic("health"), encode(health(self.server, self.started)),
                             qos=1, retain=True)
        await self._publish_leases(client)
        await client.publish(self.topic("status"), encode(self.status("online")),
                             qos=1, retain=True)

    async def _publish_leases(self, client: aiomqtt.Client) -> None:
        payload = leases_payload(self.server)
        if payload is not None:
            await client.publish(self.topic("leases"), encode(payload), qos=1, retain=True)

    async def _health_loop(self, client: aiomqtt.Client) -> None:
        interval = self.settings.health_interval_s
        next_health = time.monotonic() + interval
        while True:
            # Woken early by a lease change; health keeps its own period.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(),
                                       max(0.0, next_health - time.monotonic()))
            if self._wake.is_set():
                self._wake.clear()
                await self._publish_leases(client)
            now = time.monotonic()
            if now >= next_health:
                # After a stall (a suspended host) resume the period; never a burst.
                next_health = max(next_health + interval, now)
                await client.publish(self.topic("health"),
                                     encode(health(self.server, self.started)),
                                     qos=0, retain=True)

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Overwrite a live "offline" on our status topic; end when the connection drops."""
        async for message in client.messages:
            payload = decode(message.payload if isinstance(message.payload, bytes | str)
                             else b"")
            if (not message.retain and payload is not None
                    and payload.get("state") != "online" and not self._stopping):
                event(log, logging.INFO, "status overwritten; announcing again",
                      board=self.board, seen=payload.get("reason", ""))
                await client.publish(self.topic("status"), encode(self.status("online")),
                                     qos=1, retain=True)

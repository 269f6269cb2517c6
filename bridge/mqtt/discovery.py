"""Find boards by name through the broker's retained messages.

A lookup connects, subscribes to the boards' retained topics and then to a
private probe topic it publishes to: the broker delivers one client's messages
in order, so the probe arriving means every retained message already has —
no guessing how long to wait.  (Where an ACL forbids the probe, a lookup ends
after :data:`QUIET` seconds without a message instead.)  A board whose status is online but whose
inventory has not arrived yet (it is announcing right now) is waited for, up to
the timeout.  Errors are ``OSError``s with an errno, so callers that expect a
connection failure (drop-in drivers, the CLI) handle them unchanged.

Connecting by name is :func:`connect_board` (an :class:`~bridge.client.AsyncClient`)
or :func:`connect_board_sync` (a thread-backed :class:`~bridge.client.Client`); any
other client takes the address :func:`resolve_sync` returns.  The client does not
know about the broker: this module depends on it, not the reverse.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import errno
import os
import socket
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiomqtt

from .. import env
from ..addresses import format_address, parse_address
from ..client import AsyncClient, BusBridgeError, Client, ClientAuth
from .topics import DEFAULT_PREFIX, BrokerAddress, Topics, decode

T = TypeVar("T")

DEFAULT_BROKER = "localhost:1883"
DEFAULT_TIMEOUT = 5.0
#: Silence after which a lookup whose probe never came back takes what it has.
QUIET = 0.5


class DiscoveryError(BusBridgeError, OSError):
    """A board name that cannot be turned into an address (or no broker to ask)."""


@dataclass
class BoardRecord:
    """What the broker retains about one board."""

    name: str
    status: dict[str, Any] | None = None
    inventory: dict[str, Any] | None = None
    health: dict[str, Any] | None = None
    leases: dict[str, Any] | None = None

    @property
    def online(self) -> bool:
        return self.status is not None and self.status.get("state") == "online"

    @property
    def address(self) -> str:
        for p in (self.inventory, self.status):
            if p is not None and isinstance(p.get("address"), str):
                return str(p["address"])
        return ""

    @property
    def addresses(self) -> list[str]:
        """Every address the board advertises, in its order (``address`` is the first)."""
        for p in (self.inventory, self.status):
            many = p.get("addresses") if p is not None else None
            if isinstance(many, list) and many and all(isinstance(a, str) for a in many):
                return [str(a) for a in many]
        return [self.address] if self.address else []

    @property
    def last_seen(self) -> str:
        """Latest time the board said anything (health is periodic, so it is the best clue)."""
        times = [str(p["at"]) for p in (self.status, self.health, self.inventory)
                 if p is not None and p.get("at")]
        return max(times, default="never")

    def buses(self) -> dict[str, list[str]]:
        inv = self.inventory or {}
        return {kind: [str(b.get("name")) for b in inv.get(kind, []) if isinstance(b, dict)]
                for kind in ("i2c", "spi")}

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "online": self.online, "address": self.address,
                "addresses": self.addresses, "last_seen": self.last_seen, "buses": self.buses(),
                "status": self.status,
                "inventory": self.inventory, "health": self.health, "leases": self.leases}


def broker_from_env(broker: str | BrokerAddress | None = None) -> BrokerAddress:
    """``broker``, else ``$BUSBRIDGE_BROKER``, else localhost:1883."""
    if isinstance(broker, BrokerAddress):
        return broker
    return BrokerAddress.parse(broker or os.environ.get(env.BROKER) or DEFAULT_BROKER)


def prefix_from_env(prefix: str | None = None) -> str:
    return prefix or os.environ.get(env.MQTT_PREFIX) or DEFAULT_PREFIX


async def snapshot(broker: str | BrokerAddress | None = None, *, prefix: str | None = None,
                   board: str | None = None, timeout: float = DEFAULT_TIMEOUT
                   ) -> dict[str, BoardRecord]:
    """Every board the broker knows of (or just ``board``), as retained right now."""
    addr = broker_from_env(broker)
    topics = Topics(prefix_from_env(prefix))
    records: dict[str, BoardRecord] = {}
    wanted = topics.board(board, "+") if board else topics.all_boards()
    probe = f"{topics.prefix}/_probe/{uuid.uuid4().hex}"
    try:
        async with asyncio.timeout(timeout):
            client = aiomqtt.Client(identifier=f"busbridge-lookup-{uuid.uuid4().hex[:12]}",
                                    timeout=timeout, clean_session=True,
                                    **addr.client_kwargs())
            async with client:
                await client.subscribe(wanted, qos=0)
                await client.subscribe(probe, qos=0)
                await client.publish(probe, b"probe", qos=0)
                probed = False
                messages = client.messages
                loop = asyncio.get_running_loop()
                quiet_at = loop.time() + QUIET
                while not (probed and not _announcing(records, board)):
                    try:
                        message = await asyncio.wait_for(anext(messages),
                                                         max(0.0, quiet_at - loop.time()))
                    except TimeoutError:
                        # No probe (an ACL may forbid publishing it): retained messages
                        # come right after the SUBACK, so a spell without one means all
                        # are in.  Live messages (health) do not count as retained.
                        probed = True
                        quiet_at = loop.time() + QUIET
                        continue
                    if message.topic.value == probe:
                        probed = True
                    else:
                        if message.retain:
                            quiet_at = loop.time() + QUIET
                        _record(records, topics, message)
    except aiomqtt.MqttError as e:
        raise DiscoveryError(errno.ECONNREFUSED,
                             f"cannot reach the MQTT broker at {addr}: {e}") from None
    except TimeoutError:
        if board is None or not _announcing(records, board):
            raise DiscoveryError(errno.ETIMEDOUT,
                                 f"the MQTT broker at {addr} did not answer within "
                                 f"{timeout:g} s") from None
    return records


def _announcing(records: dict[str, BoardRecord], board: str | None) -> bool:
    """True while the board asked for is online without an inventory yet."""
    r = records.get(board) if board else None
    return r is not None and r.online and r.inventory is None


def _record(records: dict[str, BoardRecord], topics: Topics, message: aiomqtt.Message) -> None:
    where = topics.parse(message.topic.value)
    if where is None:
        return
    name, kind = where
    if kind not in ("status", "inventory", "health", "leases"):
        return
    raw = message.payload
    payload = decode(raw) if isinstance(raw, bytes | bytearray | str) else None
    rec = records.setdefault(name, BoardRecord(name))
    setattr(rec, kind, payload)


async def resolve(name: str, broker: str | BrokerAddress | None = None, *,
                  prefix: str | None = None, timeout: float = DEFAULT_TIMEOUT
                  ) -> tuple[str, int]:
    """``(host, port)`` of the online board ``name``; a clear ``DiscoveryError`` otherwise."""
    addr = broker_from_env(broker)
    found = await snapshot(addr, prefix=prefix, board=name, timeout=timeout)
    rec = found.get(name)
    if rec is None or rec.status is None:
        everyone = await snapshot(addr, prefix=prefix, timeout=timeout)
        online = sorted(n for n, r in everyone.items() if r.online)
        raise DiscoveryError(errno.ENODEV, f"no board named {name!r} on the MQTT broker at "
                             f"{addr}; online boards: {', '.join(online) or 'none'}")
    if not rec.online:
        reason = rec.status.get("reason") or rec.status.get("state")
        raise DiscoveryError(errno.EHOSTDOWN, f"board {name!r} is offline (last seen "
                             f"{rec.last_seen}; {reason})")
    if not rec.address:
        raise DiscoveryError(errno.ENODEV, f"board {name!r} is online but has not published "
                             f"its address yet (broker {addr})")
    return await _reachable_name(name, rec.addresses, timeout)


async def _reachable_name(name: str, addresses: list[str], timeout: float
                          ) -> tuple[str, int]:
    """The first advertised address whose host name resolves here.

    A board on two networks (a compose network and its host, a LAN and a VPN)
    advertises one address per network; the names of the others usually do not
    resolve where this client runs.  One address is returned as it is: dialling
    it says what fails, naming it.
    """
    parsed = []
    for text in addresses:
        try:
            parsed.append(parse_address(text))
        except ValueError as e:
            raise DiscoveryError(errno.EINVAL,
                                 f"board {name!r} published a bad address: {e}") from None
    if len(parsed) == 1:
        return parsed[0]
    loop = asyncio.get_running_loop()
    why = []
    for (host, port), text in zip(parsed, addresses, strict=True):
        try:
            await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM),
                                   timeout)
            return host, port
        except (OSError, TimeoutError) as e:
            why.append(f"{text}: {getattr(e, 'strerror', None) or e or 'timed out'}")
    raise DiscoveryError(errno.EHOSTUNREACH, f"board {name!r} advertises "
                         f"{', '.join(addresses)}; none resolves here ({'; '.join(why)})")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a lookup from synchronous code, even from inside a running event loop."""
    from ..runtime import run

    with cf.ThreadPoolExecutor(1, thread_name_prefix="busbridge-lookup") as pool:
        return pool.submit(run, coro).result()


def resolve_sync(name: str, broker: str | BrokerAddress | None = None, *,
                 prefix: str | None = None, timeout: float = DEFAULT_TIMEOUT
                 ) -> tuple[str, int]:
    return run_sync(resolve(name, broker, prefix=prefix, timeout=timeout))


def resolve_url(name: str, broker: str | BrokerAddress | None = None, *,
                prefix: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> str:
    """``HOST:PORT`` of board ``name``, from synchronous code."""
    host, port = resolve_sync(name, broker, prefix=prefix, timeout=timeout)
    return format_address(host, port)


async def connect_board(board: str, broker: str | BrokerAddress | None = None, *,
                        prefix: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                        name: str = "", leases: Sequence[str] = (),
                        auth: ClientAuth | None = None) -> AsyncClient:
    """:meth:`AsyncClient.connect <bridge.client.AsyncClient.connect>` to the board
    named ``board``, found in the broker's retained inventory.

    ``broker`` defaults to ``$BUSBRIDGE_BROKER``, else localhost:1883; an unknown
    or offline board raises :class:`DiscoveryError` (an ``OSError``).
    """
    host, port = await resolve(board, broker, prefix=prefix, timeout=timeout)
    return await AsyncClient.connect(host, port, timeout=timeout, name=name, leases=leases,
                                     auth=auth)


def connect_board_sync(board: str, broker: str | BrokerAddress | None = None, *,
                       prefix: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                       name: str = "", leases: Sequence[str] = (),
                       auth: ClientAuth | None = None) -> Client:
    """:func:`connect_board` for synchronous code: a thread-backed
    :class:`~bridge.client.Client` (for a ``BlockingClient``, pass it the address
    :func:`resolve_sync` returns)."""
    host, port = resolve_sync(board, broker, prefix=prefix, timeout=timeout)
    return Client(host, port, timeout=timeout, name=name, leases=leases, auth=auth)

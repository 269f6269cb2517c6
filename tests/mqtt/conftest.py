"""Boards announcing themselves on the real Mosquitto of tests/conftest.py, and a watcher."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

aiomqtt = pytest.importorskip("aiomqtt", reason="the mqtt extra is not installed "
                              "(pip install -e '.[dev]' brings it)")

from conftest import Mosquitto  # noqa: E402  (tests/conftest.py: the broker process)

from bridge.config import Board, MqttSettings, load_board  # noqa: E402
from bridge.mqtt.presence import Presence  # noqa: E402
from bridge.mqtt.topics import decode  # noqa: E402
from bridge.runtime import new_event_loop  # noqa: E402
from bridge.server import Server  # noqa: E402


def fast_settings(broker: str, **kw: Any) -> MqttSettings:
    """Short keepalive, health period and backoff, so the suite takes seconds."""
    base: dict[str, Any] = {"broker": broker, "keepalive_s": 2, "health_interval_s": 0.2,
                            "reconnect_min_s": 0.05, "reconnect_max_s": 0.3}
    return MqttSettings(**{**base, **kw})


async def wait_for(pred: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or pred}")
        await asyncio.sleep(0.02)


@dataclass
class Watcher:
    """A second MQTT client recording every message under a filter (retained ones first)."""

    messages: list[tuple[str, dict[str, Any] | None, bool]] = field(default_factory=list)

    def last(self, topic_end: str) -> dict[str, Any] | None:
        for topic, payload, _retain in reversed(self.messages):
            if topic.endswith(topic_end):
                return payload
        return None

    def find(self, topic_end: str, pred: Callable[[dict[str, Any]], bool]
             ) -> dict[str, Any] | None:
        for topic, payload, _retain in self.messages:
            if topic.endswith(topic_end) and payload is not None and pred(payload):
                return payload
        return None

    async def until(self, topic_end: str, pred: Callable[[dict[str, Any]], bool],
                    timeout: float = 10.0) -> dict[str, Any]:
        await wait_for(lambda: self.find(topic_end, pred) is not None, timeout,
                       f"a message on …{topic_end} matching {pred}")
        found = self.find(topic_end, pred)
        assert found is not None
        return found


@pytest.fixture
async def watch(mosquitto: Mosquitto) -> AsyncIterator[Callable[[str], Any]]:
    """``await watch("busbridge/#")`` → a :class:`Watcher` fed by a real subscriber."""
    tasks: list[asyncio.Task[None]] = []

    async def start(topic: str) -> Watcher:
        w = Watcher()
        subscribed = asyncio.Event()

        async def run() -> None:
            async with aiomqtt.Client("127.0.0.1", mosquitto.port,
                                      identifier=f"watcher-{len(tasks)}") as c:
                await c.subscribe(topic, qos=1)
                subscribed.set()
                async for m in c.messages:
                    raw = m.payload if isinstance(m.payload, bytes | str) else b""
                    w.messages.append((m.topic.value, decode(raw), m.retain))

        tasks.append(asyncio.create_task(run()))
        await asyncio.wait_for(subscribed.wait(), 5)
        return w

    yield start
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def announced(mosquitto: Mosquitto, board: Board) -> AsyncIterator[tuple[Server, Presence]]:
    """The default simulated board served on the test's loop and announced on the broker."""
    server = Server(board, host="127.0.0.1", port=0)
    await server.start()
    presence = Presence(server, fast_settings(mosquitto.url))
    presence.start()
    try:
        await wait_for(lambda: presence.connects >= 1, what="the board to announce itself")
        yield server, presence
    finally:
        await presence.stop()
        await server.close(grace=2.0)


@dataclass
class ThreadBoard:
    server: Server
    presence: Presence
    loop: asyncio.AbstractEventLoop

    @property
    def name(self) -> str:
        return self.server.board.name


@pytest.fixture
def board_thread(mosquitto: Mosquitto) -> Iterator[ThreadBoard]:
    """An announced board on its own thread and loop, for synchronous clients and the CLI."""
    with announced_board_thread(mosquitto) as board:
        yield board


@contextlib.contextmanager
def announced_board_thread(mosquitto: Mosquitto) -> Iterator[ThreadBoard]:
    """The default simulated board, served and announced until the block ends."""
    loop = new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}
    async def main() -> None:
        stop = holder["stop"] = asyncio.Event()
        server = Server(load_board(None), host="127.0.0.1", port=0)
        await server.start()
        presence = Presence(server, fast_settings(mosquitto.url))
        presence.start()
        await wait_for(lambda: presence.connects >= 1, what="the board to announce itself")
        holder.update(server=server, presence=presence)
        ready.set()
        await stop.wait()
        await presence.stop()
        await server.close(grace=2.0)

    t = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    t.start()
    assert ready.wait(15), "the announced board did not come up"
    try:
        yield ThreadBoard(holder["server"], holder["presence"], loop)
    finally:
        loop.call_soon_threadsafe(holder["stop"].set)
        t.join(15)
        loop.close()

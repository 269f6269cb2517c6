"""A real Mosquitto broker per test, on a free 127.0.0.1 port, and boards announcing on it.

Mosquitto is the Debian package ``mosquitto`` (``.ci/run`` installs it).  Without
it these tests skip and say why, except under BUSBRIDGE_E2E_REQUIRED=1 (CI),
where they fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

aiomqtt = pytest.importorskip("aiomqtt", reason="the mqtt extra is not installed "
                              "(pip install -e '.[dev]' brings it)")

from bridge.config import Board, MqttSettings, load_board  # noqa: E402
from bridge.mqtt.presence import Presence  # noqa: E402
from bridge.mqtt.topics import decode  # noqa: E402
from bridge.runtime import new_event_loop  # noqa: E402
from bridge.server import Server  # noqa: E402

MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """One ``mosquitto -c <conf>`` process; :meth:`stop`/:meth:`start` keep the same port."""

    def __init__(self, exe: str, workdir: Path) -> None:
        self.exe = exe
        self.port = _free_port()
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        # No persistence: a restarted broker has forgotten every retained message,
        # so whatever is there after a restart was published again.
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                             "persistence false\nlog_dest stderr\nlog_type error\n"
                             "log_type warning\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited ({self.proc.returncode}): "
                                   f"{self.log.read_text(errors='replace')[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.url} within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    if MOSQUITTO is None:
        why = "mosquitto is not installed (apt-get install mosquitto; .ci/run installs it)"
        if os.environ.get("BUSBRIDGE_E2E_REQUIRED") == "1":
            pytest.fail(f"BUSBRIDGE_E2E_REQUIRED=1 but {why}")
        pytest.skip(why)
    broker = Mosquitto(MOSQUITTO, tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


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

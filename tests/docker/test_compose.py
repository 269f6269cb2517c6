"""deploy/docker-compose.yml with Debian's docker-compose: Mosquitto, the board, the CI job.

The compose file runs as it is; only its variables move the host ports to free
ones and name the image this session built.  From the host, a real MQTT client
watches the board's status while the board is killed (its last will says
"offline") and started again ("online"); the CI job runs its unchanged smbus2
test; and the project's CLI finds the board by name from the host, which only
works because the board advertises an address per network (issue 17 item 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from .engine import BUSBRIDGE, REPO, Engine, free_port, missing

pytestmark = pytest.mark.slow

COMPOSE = REPO / "deploy" / "docker-compose.yml"
BOARD = "lab-sim-1"


@dataclass
class Project:
    """One docker-compose project of this session, on free loopback ports."""

    exe: str
    name: str
    env: dict[str, str]
    board_port: int
    mqtt_port: int

    def compose(self, *args: str, timeout: float = 300,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([self.exe, "-p", self.name, "-f", str(COMPOSE), *args],
                           capture_output=True, text=True, timeout=timeout, env=self.env,
                           check=False)
        if check and p.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} exited {p.returncode}:\n"
                                 f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        return p

    def container(self, service: str) -> str:
        out = self.compose("ps", "-q", service).stdout.split()
        assert len(out) == 1, out
        return out[0]


@dataclass
class StatusWatch:
    """Every message on the board's status topic, from a subscriber on the host (its own
    thread and loop, stopped by :meth:`stop`)."""

    port: int
    messages: list[dict[str, Any]] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._task = self._loop.create_task(self._main())
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._task)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(30)
        self._loop.close()

    async def _main(self) -> None:
        import aiomqtt

        while True:  # the broker may still be starting
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier="bbtest-watch"
                                          ) as c:
                    await c.subscribe(f"busbridge/boards/{BOARD}/status", qos=1)
                    self.ready.set()
                    async for m in c.messages:
                        raw = m.payload if isinstance(m.payload, bytes | str) else b"{}"
                        self.messages.append(json.loads(raw))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.5)

    def until(self, pred: Any, after: int = 0, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.messages[after:]:
                if pred(m):
                    return m
            time.sleep(0.2)
        raise AssertionError(f"no matching status in {timeout:g} s: {self.messages}")


@pytest.fixture
def project(engine: Engine, image: str) -> Iterator[Project]:
    exe = "/usr/bin/docker-compose" if os.path.exists("/usr/bin/docker-compose") else None
    if exe is None:
        missing("docker-compose (Debian's 1.x) is not installed (scripts/docker/prepare.sh)")
        raise AssertionError
    p = Project(exe, f"bbtest{engine.session}", {**os.environ, "BUSBRIDGE_IMAGE": image},
                free_port(), free_port())
    p.env.update(BUSBRIDGE_PORT=str(p.board_port), MQTT_PORT=str(p.mqtt_port))
    try:
        yield p
    finally:
        # Containers, the project's network and its volume; images stay (the session's).
        p.compose("--profile", "ci", "down", "-v", "--remove-orphans", check=False)


def test_compose_lab_board_ci_job_last_will_and_discovery_from_the_host(
        engine: Engine, project: Project) -> None:
    pytest.importorskip("aiomqtt", reason="the mqtt extra is not installed")
    project.compose("up", "-d", "mosquitto", "board")
    watch = StatusWatch(project.mqtt_port)
    try:
        assert watch.ready.wait(120), "the broker did not accept a subscriber"
        online = watch.until(lambda m: m.get("state") == "online")
        assert online["addresses"] == ["board:7707", f"127.0.0.1:{project.board_port}"]

        # Issue 17 item 3: nothing beyond loopback.
        for service, port in (("board", "7707/tcp"), ("mosquitto", "1883/tcp")):
            published = engine.published(project.container(service), port)
            assert published
            assert {ip for ip, _ in published} == {"127.0.0.1"}, published

        # The CI job: waits for the board to be healthy, then runs its smbus2 test.
        job = project.compose("--profile", "ci", "run", "--rm", "ci-job", timeout=600)
        assert job.stdout.strip().splitlines()[-1] == "device id ok: 0x1701", job.stderr

        # Item 4: found by name from the host, through the broker's published port.
        found = subprocess.run([*BUSBRIDGE, "--broker", f"127.0.0.1:{project.mqtt_port}",
                                "--board", BOARD, "i2c", "get", "-y", "1", "0x48", "0x0f", "w"],
                               capture_output=True, text=True, timeout=60)
        assert (found.returncode, found.stdout) == (0, "0x1701\n"), found.stderr

        # A killed board: the broker publishes its last will; started again: online.
        n = len(watch.messages)
        project.compose("kill", "board")
        offline = watch.until(lambda m: m.get("state") == "offline", after=n)
        assert offline["reason"] == "connection lost"
        n = len(watch.messages)
        project.compose("start", "board")
        back = watch.until(lambda m: m.get("state") == "online", after=n)
        assert back["since"] > online["since"]
    finally:
        watch.stop()

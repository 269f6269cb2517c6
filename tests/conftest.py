"""Shared fixtures: a real server on 127.0.0.1 with an ephemeral port; a real Mosquitto."""

from __future__ import annotations

import asyncio
import atexit
import getpass
import io
import logging
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from click.testing import CliRunner

from bridge.buses.sim.i2c import SimI2CBus
from bridge.buses.sim.spi import SimSpiBus
from bridge.client import AsyncClient
from bridge.config import Board, load_board, load_board_config
from bridge.server import Server, ServerPolicy
from bridge.server.acl import AccessRule, Acl
from bridge.server.auth import (
    TlsSettings,
    TokenSpec,
    build_server_security,
    hash_token,
)
from bridge.testing import _start_server_thread


@dataclass
class Running:
    """A server running on its own thread and loop, as a separate board would."""

    server: Server
    board: Board
    loop: asyncio.AbstractEventLoop

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"



def default_bus_addresses(bus: str = "1") -> list[int]:
    """The 7-bit addresses a scan of ``bus`` on the embedded default board must find."""
    spec = next(b for b in load_board_config(None).i2c if b.name == bus)
    found = {a for d in getattr(spec, "devices", []) if not d.ten_bit for a in d.addresses()}
    return sorted(found)

def start_server_thread(board: Board, **kw: object) -> tuple[Running, threading.Thread]:
    """``board`` served on a thread and loop of its own, as the busbridge_board fixture
    serves it; ``kw`` are Server options (policy, request_timeout, ...)."""
    server, loop, t = _start_server_thread(board, "test-server", **kw)
    return Running(server, board, loop), t


def stop_server_thread(running: Running, t: threading.Thread) -> None:
    fut = asyncio.run_coroutine_threadsafe(running.server.close(grace=2.0), running.loop)
    fut.result(10)
    t.join(10)
    running.loop.close()


@pytest.fixture
def board() -> Board:
    """A fresh default simulated board (the embedded default)."""
    return load_board(None)


@pytest.fixture
def server_thread(board: Board) -> Iterator[Running]:
    """The default board served on a background thread (for sync clients and the CLI)."""
    running, t = start_server_thread(board)
    try:
        yield running
    finally:
        stop_server_thread(running, t)


DROPIN_BOARD = Path(__file__).parent / "boards" / "dropin.toml"


def i2c_log(sim: Board, bus: str = "1") -> list[object]:
    """What the simulated I2C ``bus`` of ``sim`` saw, oldest first: what reached the chips."""
    b = sim.i2c[bus]
    assert isinstance(b, SimI2CBus)
    return list(b.log_snapshot())


def spi_log(sim: Board, bus: str = "0") -> list[object]:
    """What the simulated SPI ``bus`` of ``sim`` saw, oldest first."""
    b = sim.spi[bus]
    assert isinstance(b, SimSpiBus)
    return list(b.log_snapshot())


@pytest.fixture
def sim() -> Board:
    """The simulated chips the third-party drivers of the drop-in tests talk to."""
    return load_board(str(DROPIN_BOARD))


@pytest.fixture
def remote(sim: Board) -> Iterator[Running]:
    """``sim`` served on a thread, with the drop-in layer connected to it."""
    from bridge import dropin

    running, t = start_server_thread(sim)
    dropin.connect(running.url)
    try:
        yield running
    finally:
        dropin.disconnect()
        stop_server_thread(running, t)


@pytest.fixture
async def server(board: Board) -> AsyncIterator[Server]:
    """The default board served on the test's own loop."""
    s = Server(board, host="127.0.0.1", port=0, request_timeout=1.0)
    await s.start()
    try:
        yield s
    finally:
        await s.close(grace=2.0)


@pytest.fixture
async def client(server: Server) -> AsyncIterator[AsyncClient]:
    c = await AsyncClient.connect(server.host, server.port, timeout=5.0)
    try:
        yield c
    finally:
        await c.close()


@contextmanager
def busbridge_log(formatter: logging.Formatter, level: int) -> Iterator[io.StringIO]:
    """What busbridge's loggers write at ``level`` and above while the block runs, formatted
    as ``formatter`` formats it for a log file: what an operator would read."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger("busbridge")
    old = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


def cli_runner() -> CliRunner:
    """A click runner that keeps the command's stderr apart from its stdout."""
    try:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]  # click < 8.2
    except TypeError:
        return CliRunner()  # click >= 8.2 keeps stderr apart


@pytest.fixture
def restore_busbridge_logging() -> Iterator[None]:
    """The CLI run in-process points the busbridge logger at CliRunner's stderr; undo that
    afterwards (``pytestmark = pytest.mark.usefixtures("restore_busbridge_logging")``)."""
    log = logging.getLogger("busbridge")
    saved = (log.handlers[:], log.level, log.propagate)
    yield
    log.handlers[:], log.level, log.propagate = saved


# ---------------------------------------------------------------------------
# ``busbridge serve`` as a user starts it: a subprocess of this checkout.
# ---------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def cli_env() -> dict[str, str]:
    """This environment with this checkout first on PYTHONPATH (the build under test, even
    from a copy of the tree) and no BUSBRIDGE_URL, so a child talks to no stray board."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("BUSBRIDGE_URL", None)
    return env


@dataclass
class ServeProcess:
    """A running ``busbridge serve``; its stderr read line by line on a thread of its own,
    so a test can wait for a log line without blocking on a pipe for ever."""

    proc: subprocess.Popen[str]
    lines: queue.Queue[str]
    seen: list[str] = field(default_factory=list)  # every line :meth:`wait_for` has read

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first line from now on that ``re.search`` finds ``pattern`` in."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            self.seen.append(line)
            m = re.search(pattern, line)
            if m is not None:
                return m

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, as a service manager stops it: the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


@contextmanager
def serve_process(*args: str) -> Iterator[ServeProcess]:
    """``busbridge serve --listen 127.0.0.1:0 ARGS`` in a subprocess; killed afterwards if
    the test did not stop it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "serve", "--listen", "127.0.0.1:0", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, env=cli_env(), cwd=ROOT)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        yield ServeProcess(proc, lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------
# A real MQTT broker: Mosquitto (the Debian package; .ci/run installs it).
# Without it the tests that need it skip and say why, except under
# BUSBRIDGE_E2E_REQUIRED=1 (CI), where they fail.
# ---------------------------------------------------------------------------

MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """One ``mosquitto -c <conf>`` process; :meth:`stop`/:meth:`start` keep the same port."""

    def __init__(self, exe: str, workdir: Path, extra: str = "") -> None:
        self.exe = exe
        self.port = _free_port()
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        # No persistence: a restarted broker has forgotten every retained message,
        # so whatever is there after a restart was published again.
        # ``extra`` may carry TLS files and a password file (then allow_anonymous false).
        anonymous = "false" if "password_file" in extra else "true"
        # As root, mosquitto drops to user "mosquitto", who cannot read pytest's files.
        extra += f"user {getpass.getuser()}\n"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous {anonymous}\n"
                             "persistence false\nlog_dest stderr\nlog_type error\n"
                             f"log_type warning\n{extra}")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        atexit.register(self.stop)  # never outlives the test run, whatever a test skipped
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


def mosquitto_exe() -> str:
    if MOSQUITTO is None:
        why = "mosquitto is not installed (apt-get install mosquitto; .ci/run installs it)"
        if os.environ.get("BUSBRIDGE_E2E_REQUIRED") == "1":
            pytest.fail(f"BUSBRIDGE_E2E_REQUIRED=1 but {why}")
        pytest.skip(why)
    return MOSQUITTO


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(mosquitto_exe(), tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


# ---------------------------------------------------------------------------
# TLS and tokens: throwaway CAs made by trustme, and servers that require them.
# ---------------------------------------------------------------------------

TOKEN = "tok-" + "x" * 40
OTHER_TOKEN = "tok-" + "y" * 40


@dataclass(frozen=True)
class Pki:
    """A server CA + certificate, and a separate client CA with one client certificate."""

    dir: Path
    ca: Path  # signs the server's certificate: what clients trust
    server: Path  # key + chain
    client_ca: Path  # signs client certificates: what the server trusts
    client: Path  # key + chain of a client with CN "ci-runner"
    stranger: Path  # a client certificate from a CA the server does not trust


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, client_ca, other_ca = trustme.CA(), trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(d / "server.pem"))
    client_ca.cert_pem.write_to_path(str(d / "client-ca.pem"))
    client_ca.issue_cert("ci-runner@lab", common_name="ci-runner") \
        .private_key_and_cert_chain_pem.write_to_path(str(d / "client.pem"))
    other_ca.issue_cert("mallory@lab", common_name="mallory") \
        .private_key_and_cert_chain_pem.write_to_path(str(d / "stranger.pem"))
    return Pki(d, d / "ca.pem", d / "server.pem", d / "client-ca.pem", d / "client.pem",
               d / "stranger.pem")


@pytest.fixture
async def tls_server(board: Board, pki: Pki) -> AsyncIterator[Server]:
    """TLS with the ``pki`` server certificate; no client authentication."""
    tls = TlsSettings(cert=str(pki.server), key=str(pki.server))
    s = Server(board, host="127.0.0.1", port=0,
               policy=ServerPolicy(security=build_server_security(tls, [], False)))
    await s.start()
    yield s
    await s.close(grace=1.0)


@pytest.fixture
async def token_server(board: Board) -> AsyncIterator[Server]:
    """Plain TCP; clients "ci" (TOKEN) and "alice" (OTHER_TOKEN) must present their token."""
    specs = [TokenSpec(name="ci", hash=hash_token(TOKEN)),
             TokenSpec(name="alice", hash=hash_token(OTHER_TOKEN))]
    s = Server(board, host="127.0.0.1", port=0,
               policy=ServerPolicy(security=build_server_security(None, specs, False)))
    await s.start()
    yield s
    await s.close(grace=1.0)


@asynccontextmanager
async def serve_with_access_rules(board: Board, tokens: dict[str, str],
                                  rules: list[AccessRule]) -> AsyncIterator[Server]:
    """Plain TCP on this loop; each client NAME of ``tokens`` presents its token and is held
    to ``rules``."""
    specs = [TokenSpec(name=name, hash=hash_token(token)) for name, token in tokens.items()]
    sec = build_server_security(None, specs, False)
    s = Server(board, host="127.0.0.1", port=0, policy=ServerPolicy(sec, acl=Acl(rules)))
    await s.start()
    try:
        yield s
    finally:
        await s.close(grace=1.0)

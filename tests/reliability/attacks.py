"""Attack tools for the hardening tests (issue 14): swarms of sockets, raw frames, probes.

Everything talks to 127.0.0.1 only; a "source address" is one of 127.0.0.2.. (Linux
answers the whole 127/8 on loopback), so per-source bounds can be tried from one
machine.  Every loop is bounded in count and in time.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack

HOST = "127.0.0.1"


def sources(n: int, first: int = 2) -> list[str]:
    """``n`` loopback source addresses other than 127.0.0.1."""
    return [f"127.0.0.{first + k}" for k in range(n)]


def connect_from(source: str, port: int, timeout: float = 5.0) -> socket.socket:
    """A TCP connection to 127.0.0.1:``port`` from ``source``."""
    return socket.create_connection((HOST, port), timeout, source_address=(source, 0))


def frame(obj: object) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


def hello(name: str = "attacker", token: str | None = None) -> bytes:
    info: dict[str, Any] = {"version": 1, "client": name}
    if token is not None:
        info["token"] = token
    return frame([0, 0, info])


def read_frame(sock: socket.socket, timeout: float = 5.0) -> list[Any] | None:
    """The next frame, or None if the peer closed first."""
    sock.settimeout(timeout)
    buf = b""
    while len(buf) < 4 or len(buf) < 4 + int.from_bytes(buf[:4], "big"):
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            return None
        if not chunk:
            return None
        buf += chunk
    n = int.from_bytes(buf[:4], "big")
    out: list[Any] = msgpack.unpackb(buf[4:4 + n])
    return out


def rss_kib(pid: int | None = None) -> int:
    """Resident set size of ``pid`` (default: this process) in KiB, from /proc."""
    with open(f"/proc/{pid or os.getpid()}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Swarm:
    """Idle connections from several sources that never start TLS nor send HELLO.

    With ``churn`` a thread keeps reopening the ones the server closed, for at most
    ``seconds``, so the swarm keeps pressing on the slots like the squatters of the
    review did.
    """

    def __init__(self, port: int, per_source: int, srcs: list[str], *, send: bytes = b"",
                 churn: bool = False, seconds: float = 10.0) -> None:
        self.port = port
        self.per_source = per_source
        self.srcs = srcs
        self.send = send
        self.churn = churn
        self.seconds = seconds
        self.socks: list[socket.socket] = []
        self.opened = 0
        self.refused = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _open(self, src: str) -> None:
        try:
            s = connect_from(src, self.port, 2.0)
            if self.send:
                s.sendall(self.send)
            s.setblocking(False)
            self.socks.append(s)
            self.opened += 1
        except OSError:
            self.refused += 1

    def start(self) -> Swarm:
        for _ in range(self.per_source):
            for src in self.srcs:
                self._open(src)
        if self.churn:
            self._thread = threading.Thread(target=self._churn, daemon=True)
            self._thread.start()
        return self

    def _churn(self) -> None:
        deadline = time.monotonic() + self.seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            alive: list[socket.socket] = []
            for s in list(self.socks):
                try:
                    gone = s.recv(4096) == b""
                except BlockingIOError:
                    gone = False
                except OSError:
                    gone = True
                if gone:
                    s.close()
                else:
                    alive.append(s)
            lost = len(self.socks) - len(alive)
            self.socks = alive
            for k in range(lost):  # reconnect as many as the server closed
                self._open(self.srcs[k % len(self.srcs)])
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.close()
        self.socks = []

    def __enter__(self) -> Swarm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Probe:
    """What a legitimate client saw: requests tried and served, and each one's latency."""

    tried: int = 0
    served: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def p99_ms(self) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return 1000 * xs[min(len(xs) - 1, int(0.99 * len(xs)))]

    def run(self, call: Callable[[], object], count: int, seconds: float,
            pause: float = 0.02) -> Probe:
        """Call ``call`` up to ``count`` times in at most ``seconds``, timing each."""
        deadline = time.monotonic() + seconds
        for _ in range(count):
            if time.monotonic() > deadline:
                break
            self.tried += 1
            t0 = time.perf_counter()
            try:
                call()
            except Exception as e:  # counted, not raised: the table shows it
                self.errors.append(f"{type(e).__name__}: {e}")
            else:
                self.latencies.append(time.perf_counter() - t0)
                self.served += 1
            time.sleep(pause)
        return self


@contextlib.contextmanager
def background(fn: Callable[[], object]) -> Iterator[threading.Thread]:
    """Run ``fn`` on a daemon thread for the block; joined (bounded) at its end."""
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    try:
        yield t
    finally:
        t.join(30)


def tls_client_context(cafile: str, certfile: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile)
    if certfile:
        ctx.load_cert_chain(certfile)
    return ctx

"""Shared pieces of the reliability suites: raw frames, subprocesses, bounded waits."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import msgpack

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def frame(obj: object) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


def hello(version: int = 1, client: str = "reliability") -> bytes:
    return frame([0, 0, {"version": version, "client": client}])


def read_frames(sock: socket.socket, timeout: float = 5.0) -> tuple[list[list[Any]], bool]:
    """Every frame the server sends until it closes (True) or ``timeout`` passes (False)."""
    sock.settimeout(timeout)
    data = b""
    closed = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    return split_frames(data), closed


def split_frames(data: bytes) -> list[list[Any]]:
    out: list[list[Any]] = []
    pos = 0
    while pos + 4 <= len(data):
        n = int.from_bytes(data[pos : pos + 4], "big")
        if pos + 4 + n > len(data):
            raise AssertionError(f"server sent a truncated frame at byte {pos}")
        out.append(msgpack.unpackb(data[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    assert pos == len(data), "trailing bytes after the server's last frame"
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(pred: Any, timeout: float, what: str, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


def python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


@contextlib.contextmanager
def child(*args: str, ready: str | None = "READY", timeout: float = 15.0
          ) -> Iterator[subprocess.Popen[str]]:
    """A Python helper process; waits for its ``ready`` line, always reaped at exit."""
    p = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=python_env(), cwd=REPO)
    try:
        if ready is not None:
            assert p.stdout is not None
            line = _readline(p.stdout, timeout)
            assert line.strip() == ready, f"{args[0]} said {line!r}"
        yield p
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(10)
        for f in (p.stdout, p.stderr):
            if f is not None:
                f.close()


def _readline(stream: IO[str], timeout: float) -> str:
    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise AssertionError(f"no output from a child process in {timeout} s")
        return stream.readline()
    finally:
        sel.close()


class ServeProcess:
    """``busbridge serve`` in a subprocess, recording every bus transaction to ``record``."""

    def __init__(self, record: Path, port: int, *extra: str) -> None:
        self.record = record
        self.port = port
        self.extra = extra
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 20.0) -> None:
        args = [sys.executable, str(HERE / "recorded_serve.py"), str(self.record),
                "--listen", f"127.0.0.1:{self.port}", *self.extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env=python_env(), cwd=REPO)
        assert self.proc.stderr is not None
        line = _readline(self.proc.stderr, timeout)
        assert "serving board" in line, f"busbridge serve said {line!r}"

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        rc = self.proc.wait(15)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return rc

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill(signal.SIGKILL)

    def entries(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

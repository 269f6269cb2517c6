"""Where the bench runs things: server processes pinned to one core, the client on another.

A board and a guest are two machines; two processes on two cores are the
nearest a single host gets, and pinning keeps the scheduler from moving them
onto one core in the middle of a figure.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, NamedTuple

from ..runtime import new_event_loop


def pin(pid: int, core: int) -> None:
    """Pin ``pid`` to the ``core``-th usable core (modulo their number); a no-op on one core."""
    with contextlib.suppress(AttributeError, OSError):
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) > 1:
            os.sched_setaffinity(pid, {cores[core % len(cores)]})


class Served(NamedTuple):
    """A server process the bench started: the port it listens on, its pid."""

    port: int
    pid: int


@contextlib.contextmanager
def server_process(module: str, *args: str, wrapper: Sequence[str] = (),
                   exit_timeout: float = 5.0, cwd: str | None = None) -> Iterator[Served]:
    """Run ``python -m module args`` on the other core (under ``wrapper``, e.g. valgrind,
    in ``cwd``); yield its port and pid.  On the way out its stdin is closed, so it exits
    cleanly."""
    proc = subprocess.Popen([*wrapper, sys.executable, "-m", module, *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd)
    try:
        pin(proc.pid, 1)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.strip():
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"benchmark server failed to start: {err.strip()}")
        yield Served(int(line.split()[-1]), proc.pid)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(exit_timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def echo_server_process(reply_size: int, *, buffered: bool = False, uv: bool = True,
                        msgpack: bool = False) -> Iterator[Served]:
    """The baseline (:mod:`bridge.bench.echo_server`) in its own process."""
    mode = "msgpack" if msgpack else "buffered" if buffered else "plain"
    with server_process("bridge.bench.echo_server", str(reply_size), mode,
                        "uv" if uv else "asyncio") as served:
        yield served


@contextlib.contextmanager
def bridge_server_process(uv: bool = True) -> Iterator[Served]:
    """The bridge (:mod:`bridge.bench.bridge_server`) in its own process."""
    with server_process("bridge.bench.bridge_server", "uv" if uv else "asyncio") as served:
        yield served


def run_client(coro_fn: Callable[[], Awaitable[Any]], uv: bool = True) -> Any:
    """Run one measurement on a fresh event loop in this (the client's) process."""
    loop = new_event_loop(uv)
    try:
        return loop.run_until_complete(coro_fn())
    finally:
        loop.close()

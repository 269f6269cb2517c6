"""Real drivers from PyPI against the default board's chips, each under ``busbridge run``.

The board runs in this process (so a test sets what a chip measures through the
model's control API); the driver runs unmodified in a child under ``busbridge
run``, which resolves ``smbus``, ``smbus2``, ``board``, ``busio`` to busbridge's
drop-ins.  Each driver in the child gets a hard timeout: a driver that hangs
(waiting for a status bit that never comes, say) fails within seconds, and the
test's failure shows the stack it hung in.  A watchdog thread prints that stack
(``faulthandler.dump_traceback_later`` alone reads the frames without the GIL
and printed garbage for a driver polling the network) and
faulthandler is the backstop for a hang that never releases the GIL.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import Running, start_server_thread, stop_server_thread

from bridge.buses.sim.control import Controllable, find
from bridge.config import Board, load_board

#: Seconds a driver may take before its traceback is dumped and the child exits.
DRIVER_TIMEOUT_S = 30
BUSBRIDGE = [sys.executable, "-c", "from bridge.cli.main import main; main()"]

PRELUDE = '''\
import contextlib, faulthandler, json, os, sys, threading, traceback
out = {}
_main = threading.main_thread().ident


@contextlib.contextmanager
def driver(name):
    """One driver's part, with a hard timeout that prints where it hangs and exits.

    A watchdog thread prints the main thread's stack (taken with the GIL, so it is
    whole) and ends the process; faulthandler is the backstop for a hang that
    never releases the GIL.
    """
    print(f"--- driver {name}", file=sys.stderr, flush=True)
    done = threading.Event()

    def watchdog():
        if not done.wait(DRIVER_TIMEOUT_S):
            stack = "".join(traceback.format_stack(sys._current_frames()[_main]))
            print(f"Timeout: {name} still running after {DRIVER_TIMEOUT_S} s, at\\n{stack}",
                  file=sys.stderr, flush=True)
            os._exit(3)

    threading.Thread(target=watchdog, daemon=True).start()
    faulthandler.dump_traceback_later(DRIVER_TIMEOUT_S + 10, exit=True)
    try:
        yield
    finally:
        done.set()
        faulthandler.cancel_dump_traceback_later()

'''


@dataclass
class Bench:
    """The default board served in-process, and a way to run driver code against it."""

    running: Running
    board: Board

    def chip(self, bus: str, addr: int) -> Controllable:
        """The test-control API of the chip at ``addr`` on I2C bus ``bus``."""
        return find(self.board.i2c, self.board.spi, "i2c", bus, addr)

    def child(self, body: str, *, bus: str = "1",
              timeout_s: float = DRIVER_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """Run ``body`` under ``busbridge run``, local I2C bus 1 mapped to ``bus``."""
        script = (f"DRIVER_TIMEOUT_S = {timeout_s}\n" + PRELUDE + textwrap.dedent(body)
                  + "\nprint(json.dumps(out))\n")
        return subprocess.run(
            [*BUSBRIDGE, "run", "--connect", self.running.url, "--map", f"i2c:1={bus}",
             "--", sys.executable, "-c", script],
            capture_output=True, text=True, timeout=timeout_s * 4 + 30, check=False)

    def run(self, body: str, *, bus: str = "1") -> dict[str, Any]:
        """Run ``body`` (it fills ``out``) and return ``out``; a failure or hang fails the
        test with the child's stderr (the traceback of where it hung)."""
        proc = self.child(body, bus=bus)
        assert proc.returncode == 0, f"driver failed or hung:\n{proc.stderr[-4000:]}"
        return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture
def bench() -> Iterator[Bench]:
    board = load_board(None)
    running, t = start_server_thread(board)
    try:
        yield Bench(running, board)
    finally:
        stop_server_thread(running, t)

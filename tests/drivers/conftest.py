"""Real drivers from PyPI against the default board's chips, each under ``busbridge run``.

The board runs in this process (so a test sets what a chip measures through the
model's control API); the driver runs unmodified in a child under ``busbridge
run``, which resolves ``smbus``, ``smbus2``, ``board``, ``busio`` to busbridge's
drop-ins.  Each driver in the child gets a hard timeout from
``faulthandler.dump_traceback_later``: a driver that hangs (waiting for a
status bit that never comes, say) fails within seconds, and the traceback in
the test's failure shows the line it hung on.
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

PRELUDE = f"DRIVER_TIMEOUT_S = {DRIVER_TIMEOUT_S}\n" + '''\
import contextlib, faulthandler, json, sys
out = {}

@contextlib.contextmanager
def driver(name):
    """One driver's part: a hard timeout that dumps where it hangs."""
    print(f"--- driver {name}", file=sys.stderr, flush=True)
    faulthandler.dump_traceback_later(DRIVER_TIMEOUT_S, exit=True)
    try:
        yield
    finally:
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

    def run(self, body: str, *, bus: str = "1") -> dict[str, Any]:
        """Run ``body`` (it fills ``out``) with local I2C bus 1 mapped to ``bus``."""
        script = PRELUDE + textwrap.dedent(body) + "\nprint(json.dumps(out))\n"
        proc = subprocess.run(
            [*BUSBRIDGE, "run", "--connect", self.running.url, "--map", f"i2c:1={bus}",
             "--", sys.executable, "-c", script],
            capture_output=True, text=True, timeout=DRIVER_TIMEOUT_S * 4, check=False)
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

"""``busbridge serve`` with a logic analyser on every simulated bus.

Runs the real CLI (``bridge.cli.main``) after wrapping the simulated buses'
``transfer`` so that each transaction is appended to a JSON-lines file, with
one ``os.write`` on an ``O_APPEND`` descriptor, BEFORE it touches the bus.  The
record therefore survives a SIGKILL of this process and is a superset of what
reached the bus, which is what a "never sent twice" proof needs.

Usage: ``python recorded_serve.py RECORD.jsonl [busbridge serve options...]``
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from bridge.buses.sim.i2c import SimI2CBus
from bridge.buses.sim.spi import SimSpiBus
from bridge.cli.main import main
from protocol.virtio import I2CMsg, SpiTransfer


def install(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pid = os.getpid()
    i2c_transfer = SimI2CBus.transfer
    spi_transfer = SimSpiBus.transfer

    def record(entry: dict[str, Any]) -> None:
        os.write(fd, (json.dumps(entry) + "\n").encode())

    def i2c(self: SimI2CBus, msgs: Sequence[I2CMsg]) -> list[bytes]:
        record({"pid": pid, "kind": "i2c", "bus": self.name,
                "msgs": [[m.addr, m.flags, m.data.hex(), m.length] for m in msgs]})
        return i2c_transfer(self, msgs)

    def spi(self: SimSpiBus, cs: int, transfers: Sequence[SpiTransfer]) -> list[bytes]:
        record({"pid": pid, "kind": "spi", "bus": self.name, "cs": cs,
                "tx": [(t.tx or b"").hex() for t in transfers]})
        return spi_transfer(self, cs, transfers)

    SimI2CBus.transfer = i2c  # type: ignore[method-assign]
    SimSpiBus.transfer = spi  # type: ignore[method-assign]


if __name__ == "__main__":
    install(sys.argv[1])
    sys.exit(main(["serve", *sys.argv[2:]]))

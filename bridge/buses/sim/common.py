"""What the simulated I2C and SPI buses share: the stall check and the transaction log.

Both log entries live here, beside their common base, because the I2C side is
compiled with mypyc (setup.py) and an interpreted class cannot inherit from a
compiled one: the SPI bus uses these classes, it does not subclass them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol

from protocol.virtio import I2CMsg, SpiTransfer

from ..base import BusError

#: Transactions a simulated bus remembers by default (``log_size``; 0 turns the log off).
DEFAULT_LOG_SIZE = 1024

#: A simulated I2C bus offers the GIL to other threads after each read longer than
#: this (reads are the costly direction: a register map latches value by value).
YIELD_BYTES: Final = 128


def let_others_run() -> None:
    """Offer the GIL to other threads (the server's event loop) for a moment.

    A simulated transaction is Python code on the bus's worker thread; compiled
    with mypyc it never reaches the interpreter's switch-interval check, so a
    long one would keep the event loop waiting for the GIL until it ends.
    """
    os.sched_yield()


class Stalling(Protocol):
    """A simulated device with the ``stall_s`` fault knob (I2C and SPI alike)."""

    stall_s: float


def may_stall(timing: bool, devices: Iterable[Stalling]) -> bool:
    """A bus's ``may_block``: only simulated wire time and device stalls sleep.

    Asked for every request the server may run inline, so a plain loop: a
    generator for ``any()`` costs more than the scan.
    """
    if timing:
        return True
    for d in devices:  # noqa: SIM110
        if d.stall_s > 0:
            return True
    return False


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One transaction as a simulated bus saw it: its number, time and outcome.

    ``errno`` 0 is success; otherwise ``index`` is the first request that
    failed (see :class:`~bridge.buses.base.BusError`) and ``error`` says why.
    ``t`` is when it ended, on the host's wall clock (UNIX seconds).
    """

    seq: int
    t: float = field(default=0.0, kw_only=True)
    errno: int = field(default=0, kw_only=True)
    index: int | None = field(default=None, kw_only=True)
    error: str = field(default="", kw_only=True)

    @property
    def ok(self) -> bool:
        return self.errno == 0


def outcome(failure: BusError | None) -> tuple[int, int | None, str]:
    """``(errno, index, error)`` of a log entry for a transaction that raised ``failure``."""
    if failure is None:
        return 0, None, ""
    return failure.errno, failure.index, failure.message


@dataclass(frozen=True, slots=True)
class I2CLogEntry(LogEntry):
    """``msgs`` are the messages handed to the bus (a whole chain, even if it
    failed part-way); ``reads`` the data of the reads that completed."""

    msgs: tuple[I2CMsg, ...]
    reads: tuple[bytes, ...]

    def describe(self) -> list[str]:
        """One line per message, i2ctransfer style, with the bytes moved."""
        out: list[str] = []
        reads = iter(self.reads)
        for i, m in enumerate(self.msgs):
            if self.index is not None and i >= self.index:
                out.append(f"{m.describe()} {'FAILED' if i == self.index else 'not run'}")
            elif m.is_read:
                out.append(f"{m.describe()} -> {next(reads, b'').hex(' ')}")
            else:
                out.append(f"{m.describe()} {m.data.hex(' ')}".rstrip())
        return out


@dataclass(frozen=True, slots=True)
class SpiLogEntry(LogEntry):
    """One SPI message on chip select ``cs``; ``rx`` the data of the transfers that read."""

    cs: int
    transfers: tuple[SpiTransfer, ...]
    rx: tuple[bytes, ...]

    def describe(self) -> list[str]:
        out: list[str] = []
        rx = iter(self.rx)
        for i, t in enumerate(self.transfers):
            line = f"cs{self.cs} t{i}"
            if t.tx is not None:
                line += f" tx {t.tx.hex(' ')}"
            if self.index is not None and i >= self.index:
                line += " FAILED" if i == self.index else " not run"
            elif t.rx_len:
                line += f" rx {next(rx, b'').hex(' ')}"
            if t.head.cs_change:
                line += " cs_change"
            out.append(line)
        return out

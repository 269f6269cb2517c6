"""``busbridge serve --record FILE``: every transaction the board executes, to a file.

A :class:`Recorder` is an observer (:mod:`.observe`): it sees each answered
request frame and writes one record per transaction that reached a backend
(an I2C chain, an SPI message), in the format of :mod:`bridge.recording`
(docs/record.md).  What it skips: requests that never reached the bus (PARAM_ERR,
a deadline that passed while queued) and I2C chains the server refused before
the bus (10-bit or over-long messages the adapter cannot do): a replay bus
advertises the recorded capabilities, so its server refuses those itself.
Requests whose deadline passed while on the bus are recorded with ``"u"``
(outcome unknown).

A frame's records go out with one unbuffered ``write`` as it is answered: a crash
loses at most the record (the frame's records) being written; the OS holds what was
written, and the file is fsync'ed when the recording ends.  A size limit ends the
recording (with an ``"end"`` record) instead of filling the disk, and so does a write
that fails (without one); the server keeps serving either way.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from protocol.events import Failure, I2CRequest
from protocol.handshake import I2C_FUNC_10BIT_ADDR, I2CBusInfo, SpiBusInfo
from protocol.virtio import I2C_FLAGS_M_RD, I2CMsg, split_chains

from .. import __version__
from ..logs import event
from ..recording import MAGIC, frame, header, i2c_record, spi_record
from .observe import Observed, Observers

log = logging.getLogger("busbridge.server")

#: Default size limit of a recording, in bytes.
DEFAULT_MAX_BYTES = 1 << 30


class RecordError(OSError):
    """The recording cannot be started (its file cannot be created or written)."""


class _Board(Protocol):
    name: str

    @property
    def i2c(self) -> Mapping[str, Any]: ...

    @property
    def spi(self) -> Mapping[str, Any]: ...


class Recorder:
    """Writes a board's transactions to ``path``; attach it with :meth:`attach`."""

    def __init__(self, path: str, board: _Board, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        i2c: list[I2CBusInfo] = [b.info() for b in board.i2c.values()]
        spi: list[SpiBusInfo] = [b.info() for b in board.spi.values()]
        self._i2c = {b.name: b for b in i2c}
        self._fd: int | None = None
        try:  # truncating: a recording is one server run
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as e:
            raise RecordError(e.errno, f"cannot write recording {path}: {e.strerror}") from None
        self.written = 0
        self.transactions = 0
        self._detach: Callable[[], None] | None = None
        try:
            self._write(MAGIC + frame(header(board.name, f"busbridge {__version__}",
                                             time.time(), i2c, spi)))
        except OSError as e:
            self._stop()
            raise RecordError(e.errno, f"cannot write recording {path}: {e.strerror}") from None

    def attach(self, observers: Observers) -> Recorder:
        self._detach = observers.attach(self.observe)
        event(log, logging.INFO, "recording", file=self.path)
        return self

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.written += len(data)

    def observe(self, obs: Observed) -> None:
        """The observer: one record per transaction of ``obs`` that reached its backend."""
        if self._fd is None or obs.ran is False:
            return
        unknown = obs.ran is None
        us = int(obs.dur * 1_000_000)
        r = obs.request
        records: list[bytes] = []
        if isinstance(r, I2CRequest):
            info = self._i2c.get(r.bus)
            if info is None:
                return
            for rec in i2c_transactions(info, r.msgs, obs.reads, obs.failures, unknown):
                records.append(frame(i2c_record(r.bus, obs.t, us, *rec)))
        else:
            err = None
            if obs.failures and not unknown:
                f = obs.failures[0]
                err = (f.index, f.errno, _strip(f.message,
                                                f"spi bus {r.bus} cs {r.cs}, transfer {f.index}: "))
            records.append(frame(spi_record(r.bus, obs.t, us, r.cs, r.transfers,
                                            [] if err or unknown else obs.reads, err, unknown)))
        if not records:
            return
        out = b"".join(records)
        if self.written + len(out) > self.max_bytes:
            event(log, logging.WARNING, "recording stopped: size limit reached",
                  file=self.path, max_bytes=self.max_bytes, transactions=self.transactions)
            self.close("size limit")
            return
        try:
            self._write(out)
        except OSError as e:  # a full disk: stop recording, keep serving
            event(log, logging.ERROR, "recording stopped: cannot write", file=self.path,
                  error=str(e), transactions=self.transactions)
            self._stop()
            return
        self.transactions += len(records)

    def _stop(self) -> None:
        """Detach and close the file, writing nothing more."""
        if self._detach is not None:
            self._detach()
            self._detach = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self, why: str = "closed") -> None:
        """End the recording: an ``"end"`` record, fsync, close.  Idempotent."""
        if self._fd is None:
            return
        try:
            self._write(frame({"k": "end", "why": why, "transactions": self.transactions}))
            os.fsync(self._fd)
        except OSError as e:
            event(log, logging.ERROR, "recording not ended cleanly", file=self.path,
                  error=str(e))
        finally:
            self._stop()
        event(log, logging.INFO, "recording ended", file=self.path, reason=why,
              transactions=self.transactions, bytes=self.written)


def _strip(message: str, prefix: str) -> str:
    """The backend's own words: the server put ``prefix`` (where it failed) before them."""
    return message[len(prefix):] if message.startswith(prefix) else message


def i2c_transactions(info: I2CBusInfo, msgs: Sequence[I2CMsg], reads: Sequence[bytes],
                     failures: Sequence[Failure], unknown: bool
                     ) -> list[tuple[list[I2CMsg], list[bytes], tuple[int, int, str] | None,
                                     bool]]:
    """Split a frame's outcome into its chains' ``(msgs, reads, error, unknown)``.

    Chains the server refuses before the bus (what :func:`.execute._precheck_chain`
    refuses) are left out: they never reached the backend.
    """
    out: list[tuple[list[I2CMsg], list[bytes], tuple[int, int, str] | None, bool]] = []
    it = iter(reads)
    by_index = {f.index: f for f in failures}
    ten_ok = info.functionality & I2C_FUNC_10BIT_ADDR
    for start, chain in split_chains(msgs):
        n_reads = sum(1 for m in chain if m.flags & I2C_FLAGS_M_RD)
        got = [next(it, b"") for _ in range(n_reads)]
        if any((m.ten_bit and not ten_ok) or m.size > info.max_msg_len for m in chain):
            continue
        if unknown:
            out.append((list(chain), [], None, True))
            continue
        f = next((by_index[i] for i in range(start, start + len(chain)) if i in by_index),
                 None)
        error = None
        if f is not None:
            k = f.index - start
            where = f"i2c bus {info.name}, message {f.index} ({msgs[f.index].describe()}): "
            error = (k, f.errno, _strip(f.message, where))
            done = sum(1 for m in chain[:k] if m.flags & I2C_FLAGS_M_RD)
            got = got[:done]
        out.append((list(chain), got, error, False))
    return out

"""Turning decoded requests into bus transactions and RESULT frames.

This is where virtio semantics are enforced: FAIL_NEXT chains as single
combined transactions with the failure rule of virtio-i2c, and whole-message
PARAM_ERR for virtio-spi.  The functions that touch a bus run on the bus's
worker thread; the checks that must not touch it run on the event loop.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Sequence
from typing import Final

from protocol.events import Failure
from protocol.handshake import I2C_FUNC_10BIT_ADDR
from protocol.virtio import (
    I2C_FLAGS_FAIL_NEXT,
    I2C_FLAGS_M_RD,
    I2CMsg,
    I2CStatus,
    SpiResult,
    SpiTransfer,
    check_spi_transfer,
)

from ..buses.base import BusError, I2CBackend, SpiBackend, i2c_clocks
from ..logs import event

log = logging.getLogger("busbridge.bus")

Outcome = tuple[bytes, list[bytes], list[Failure]]

#: A request's fixed cost in the work estimate of an inline run, in bus clocks: the
#: simulator spends about as long on each request (checks, hooks, log) as on 3 bytes.
REQUEST_CLOCKS: Final = 32

#: A frame runs inline on the event loop only if its estimated work is at most this
#: many clocks: its bus clock cycles (:func:`~bridge.buses.base.i2c_clocks`; SPI: 8 per byte)
#: plus ``REQUEST_CLOCKS`` per request.  The costliest frames within it take the
#: simulator about 90 µs of CPU (24 probes, or a 100-byte read of a register map,
#: measured on a loaded 2-core VM), so an inline frame holds the loop about 0.1 ms.
INLINE_CLOCKS: Final = 1024

# Final: compiled, constants rather than lookups in the module's dict.
_ERR: Final = int(I2CStatus.ERR)
FAIL_NEXT: Final = I2C_FLAGS_FAIL_NEXT
M_RD: Final = I2C_FLAGS_M_RD
_TEN_BIT_OK: Final = I2C_FUNC_10BIT_ADDR
#: The all-OK status of 0..15 messages (``bytes(n)`` is a generic call, compiled).
_OK: Final[tuple[bytes, ...]] = tuple(bytes(n) for n in range(16))


def _where(bus: str, msgs: Sequence[I2CMsg], k: int) -> str:
    return f"i2c bus {bus}, message {k} ({msgs[k].describe()})"


def _precheck_chain(backend: I2CBackend, chain: Sequence[I2CMsg]) -> tuple[int, int, str] | None:
    """Refuse a chain the adapter cannot run at all, before it reaches the bus."""
    ten_ok = backend.functionality & I2C_FUNC_10BIT_ADDR
    limit = backend.max_msg_len
    for i, m in enumerate(chain):
        if m.ten_bit and not ten_ok:
            return i, errno.EOPNOTSUPP, "adapter has no 10-bit addressing (I2C_FUNC_10BIT_ADDR)"
        size = m.length if m.flags & M_RD else len(m.data)
        if size > limit:
            return i, errno.EMSGSIZE, f"{size} bytes; adapter limit {limit}"
    return None


def run_i2c(backend: I2CBackend, msgs: Sequence[I2CMsg]) -> Outcome:
    """Run every chain of a frame, in order; blocking.

    Rule (virtio-i2c): if request k of a chain fails, k and the rest of that
    chain get ERR and never reach the bus; earlier requests of the chain
    completed and stay OK.  Other chains of the frame are unaffected.
    """
    done = run_i2c_within(backend, tuple(msgs), 0)
    assert done is not None
    return done[0], done[1], done[2]


def run_i2c_within(backend: I2CBackend, msgs: tuple[I2CMsg, ...],
                   max_clocks: int) -> tuple[bytes, list[bytes], list[Failure], int] | None:
    """:func:`run_i2c` and the frame's estimated work, unless that exceeds ``max_clocks``
    or ``INLINE_CLOCKS`` (``max_clocks`` 0: no limit at all): then nothing runs and the
    answer is None.

    The work is the frame's bus clock cycles (:func:`~bridge.buses.base.i2c_clocks`)
    plus ``REQUEST_CLOCKS`` per request.  The event loop's inline runs call this: the
    estimate shares the fast path's one pass over the messages.  ``msgs`` is a tuple
    (a request's): compiled, iterating it is native, a ``Sequence`` is not.
    """
    n = len(msgs)
    # The common case first: the frame is one chain the adapter can run, and it succeeds.
    limit = backend.max_msg_len
    one_chain = True
    last = n - 1
    # The work estimate, on the way: i2c_clocks() (a START and the address per message,
    # a STOP) and REQUEST_CLOCKS per message.
    clocks = 1
    for i, m in enumerate(msgs):
        flags = m.flags
        size = m.length if flags & M_RD else len(m.data)
        clocks += 42 + 9 * size  # 10 + REQUEST_CLOCKS, folded: the hot path
        if (size > limit or (i < last and not flags & FAIL_NEXT)
                or (m.ten_bit and not backend.functionality & _TEN_BIT_OK)):
            one_chain = False
            break
    if max_clocks:
        if not one_chain:
            clocks = i2c_clocks(msgs) + REQUEST_CLOCKS * n
        if clocks > max_clocks or clocks > INLINE_CLOCKS:
            return None
    if one_chain:
        try:
            data = backend.transfer(msgs)
        except Exception as e:
            status = bytearray(n)
            reads: list[bytes] = []
            failures: list[Failure] = []
            _settle(backend, msgs, msgs, 0, status, reads, failures, None, e)
            return bytes(status), reads, failures, clocks
        if _read_lengths_fit(msgs, data):
            return (_OK[n] if n < len(_OK) else bytes(n)), data, [], clocks
        status = bytearray(n)
        reads = []
        failures = []
        _settle(backend, msgs, msgs, 0, status, reads, failures, data, None)
        return bytes(status), reads, failures, clocks
    status = bytearray(n)
    reads = []
    failures = []
    for start, end in i2c_chains(msgs):
        chain = msgs[start:end] if start or end < n else msgs
        _run_chain(backend, msgs, chain, start, status, reads, failures)
    return bytes(status), reads, failures, clocks


def _read_lengths_fit(msgs: tuple[I2CMsg, ...], data: list[bytes]) -> bool:
    """``[len(d) for d in data] == [m.length for m in msgs if m.flags & M_RD]``, without
    the two lists."""
    j = 0
    k = len(data)
    for m in msgs:
        if m.flags & M_RD:
            if j == k or len(data[j]) != m.length:
                return False
            j += 1
    return j == k


def _run_chain(backend: I2CBackend, msgs: Sequence[I2CMsg], chain: Sequence[I2CMsg],
               start: int, status: bytearray, reads: list[bytes],
               failures: list[Failure]) -> None:
    bus = backend.name
    end = start + len(chain)
    read_msgs = [m for m in chain if m.flags & M_RD]
    refused = _precheck_chain(backend, chain)
    if refused is not None:
        # Nothing of the chain ran: the whole chain is ERR, from its start.
        i, err, why = refused
        status[start:end] = bytes([_ERR]) * len(chain)
        failures.append(Failure(start, err, f"{_where(bus, msgs, start + i)}: {why}"))
        reads.extend(b"" for _ in read_msgs)
        return
    try:
        data = backend.transfer(chain)
    except Exception as e:
        _settle(backend, msgs, chain, start, status, reads, failures, None, e)
    else:
        _settle(backend, msgs, chain, start, status, reads, failures, data, None)


def _settle(backend: I2CBackend, msgs: Sequence[I2CMsg], chain: Sequence[I2CMsg],
            start: int, status: bytearray, reads: list[bytes], failures: list[Failure],
            data: list[bytes] | None, exc: Exception | None) -> None:
    """Record what one chain that reached the backend did: ``data`` or ``exc``."""
    bus = backend.name
    end = start + len(chain)
    read_msgs = [m for m in chain if m.flags & M_RD]
    if isinstance(exc, BusError):
        e = exc
        k = min(max(e.index, 0), len(chain) - 1)
        # Reads before k are only OK if the backend handed their data back.
        got = e.reads
        before = [j for j in range(k) if chain[j].flags & M_RD]
        if len(got) < len(before):
            k = before[len(got)]
        n_ok_reads = sum(1 for j in range(k) if chain[j].flags & M_RD)
        status[start + k : end] = bytes([_ERR]) * (len(chain) - k)
        reads.extend(got[:n_ok_reads])
        reads.extend(b"" for _ in range(len(read_msgs) - n_ok_reads))
        failures.append(Failure(start + k, e.errno, f"{_where(bus, msgs, start + k)}: "
                                                    f"{e.message}"))
        event(log, logging.INFO, "i2c transaction failed", bus=bus, index=start + k,
              request=msgs[start + k].describe(), errno=e.errno, reason=e.message)
        return
    if exc is not None:  # a backend bug must still answer every request
        log.error("i2c backend raised", exc_info=exc, extra={"fields": {"bus": bus}})
        status[start:end] = bytes([_ERR]) * len(chain)
        reads.extend(b"" for _ in read_msgs)
        failures.append(Failure(start, errno.EIO, f"{_where(bus, msgs, start)}: "
                                                  f"internal error: {exc!r}"))
        return
    assert data is not None
    if len(data) != len(read_msgs) or [len(d) for d in data] != [m.length for m in read_msgs]:
        status[start:end] = bytes([_ERR]) * len(chain)
        reads.extend(b"" for _ in read_msgs)
        failures.append(Failure(start, errno.EIO, f"{_where(bus, msgs, start)}: "
                                                  "backend returned the wrong read lengths"))
        return
    reads.extend(data)


def check_spi(backend: SpiBackend, cs: int, transfers: Sequence[SpiTransfer]) -> Outcome | None:
    """PARAM_ERR outcome if any transfer is invalid (then none runs), else None."""
    cfg = backend.config
    if len(transfers) == 1:  # the common case, without the lists
        reasons: list[str | None] = [check_spi_transfer(transfers[0], cfg)]
    else:
        reasons = [check_spi_transfer(t, cfg) for t in transfers]
    if not any(reasons):
        reasons = backend.check(cs, transfers)
        if not any(reasons):
            return None
    status = bytes(
        int(SpiResult.PARAM_ERR) if r else int(SpiResult.TRANS_ERR) for r in reasons
    )
    failures = [
        Failure(i, errno.EINVAL, f"spi bus {backend.name} cs {cs}, transfer {i}: {r}")
        for i, r in enumerate(reasons)
        if r
    ]
    return status, [b"" for t in transfers if t.rx_len], failures


def run_spi(backend: SpiBackend, cs: int, transfers: Sequence[SpiTransfer]) -> Outcome:
    """Run one already-checked SPI message; blocking.  A failure fails all of it."""
    n_reads = sum(1 for t in transfers if t.rx_len)
    try:
        data = backend.transfer(cs, transfers)
    except BusError as e:
        k = min(max(e.index, 0), len(transfers) - 1)
        event(log, logging.INFO, "spi message failed", bus=backend.name, cs=cs, index=k,
              errno=e.errno, reason=e.message)
        msg = f"spi bus {backend.name} cs {cs}, transfer {k}: {e.message}"
        return (bytes([int(SpiResult.TRANS_ERR)]) * len(transfers), [b""] * n_reads,
                [Failure(k, e.errno, msg)])
    except Exception as e:
        log.exception("spi backend raised", extra={"fields": {"bus": backend.name}})
        msg = f"spi bus {backend.name} cs {cs}: internal error: {e!r}"
        return (bytes([int(SpiResult.TRANS_ERR)]) * len(transfers), [b""] * n_reads,
                [Failure(0, errno.EIO, msg)])
    return bytes(len(transfers)), data, []


class Backlog:
    """How many jobs a bus worker holds (submitted, not yet settled on the loop).

    A native object (compiled): the scheduler reads it for every request it may
    run inline, and the worker (interpreted) would be a dict lookup.
    """

    def __init__(self) -> None:
        self.jobs = 0


class Work:
    """A request as a bus worker runs it: in steps, each one transaction.

    Between two steps the worker may run another client's work (§8.1 promises
    atomicity per chain, not per frame) and checks the frame's deadline.  Runs
    on the bus's worker thread, one step at a time.
    """


    def wire_time(self) -> float | None:
        """The next step's wire time, if the bus knows its clock."""
        return None

    def step(self) -> bool:
        """Run the next step; True when there is none left."""
        return True

    def outcome(self) -> Outcome:
        raise NotImplementedError


class Answered(Work):
    """An outcome known without the bus (an SPI PARAM_ERR) that waits its turn."""


    def __init__(self, outcome: Outcome) -> None:
        self._outcome = outcome

    def outcome(self) -> Outcome:
        return self._outcome


class I2CWork(Work):
    """An I2C frame, one chain per step; a frame of one chain takes the fast path."""


    def __init__(self, backend: I2CBackend, msgs: Sequence[I2CMsg]) -> None:
        self.backend = backend
        self.msgs = msgs
        self.chains = i2c_chains(msgs)
        self.status = bytearray(len(msgs))
        self.reads: list[bytes] = []
        self.failures: list[Failure] = []
        self._next = 0
        self._done: Outcome | None = None

    def wire_time(self) -> float | None:
        start, end = self.chains[self._next]
        return self.backend.wire_time(self.msgs[start:end])

    def step(self) -> bool:
        if len(self.chains) == 1:
            self._done = run_i2c(self.backend, self.msgs)
            return True
        start, end = self.chains[self._next]
        _run_chain(self.backend, self.msgs, self.msgs[start:end], start, self.status,
                   self.reads, self.failures)
        self._next += 1
        return self._next == len(self.chains)

    def outcome(self) -> Outcome:
        if self._done is not None:
            return self._done
        return bytes(self.status), self.reads, self.failures


class SpiWork(Work):
    """An SPI message (already checked): one step."""


    def __init__(self, backend: SpiBackend, cs: int, transfers: Sequence[SpiTransfer]) -> None:
        self.backend = backend
        self.cs = cs
        self.transfers = transfers
        self._done: Outcome | None = None

    def wire_time(self) -> float | None:
        return self.backend.wire_time(self.transfers)

    def step(self) -> bool:
        self._done = run_spi(self.backend, self.cs, self.transfers)
        return True

    def outcome(self) -> Outcome:
        assert self._done is not None
        return self._done


def i2c_chains(msgs: Sequence[I2CMsg]) -> list[tuple[int, int]]:
    """``(start, end)`` of each chain: it runs to the first message without FAIL_NEXT."""
    chains = []
    start = 0
    for i, m in enumerate(msgs):
        if not m.flags & FAIL_NEXT:
            chains.append((start, i + 1))
            start = i + 1
    if start < len(msgs):  # the decoder refuses a frame that ends inside a chain
        chains.append((start, len(msgs)))
    return chains


def timed_out(n: int, n_reads: int, spi: bool, where: str, started: bool,
              doomed: bool = False) -> Outcome:
    """The answer for a request whose deadline passed, or that could not end before it
    (``doomed``: its next transaction's wire time exceeds what is left)."""
    st = int(SpiResult.TRANS_ERR) if spi else _ERR
    if doomed:
        why = ("its next transaction needs longer on the wire than is left before its deadline"
               + ("; what ran before is not retried" if started else "; it never runs"))
    elif started:
        why = "deadline passed while on the bus; its effect is unknown and it is not retried"
    else:
        why = "deadline passed before it reached the bus; it never will"
    return bytes([st]) * n, [b""] * n_reads, [Failure(0, errno.ETIMEDOUT, f"{where}: {why}")]


__all__ = ["INLINE_CLOCKS", "REQUEST_CLOCKS", "Answered", "Backlog", "I2CWork", "Outcome",
           "SpiWork", "Work", "check_spi", "i2c_chains", "run_i2c", "run_i2c_within", "run_spi",
           "timed_out"]

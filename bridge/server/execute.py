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

from ..buses.base import BusError, I2CBackend, SpiBackend
from ..logs import event

log = logging.getLogger("busbridge.bus")

Outcome = tuple[bytes, list[bytes], list[Failure]]

_ERR = int(I2CStatus.ERR)
FAIL_NEXT = I2C_FLAGS_FAIL_NEXT
M_RD = I2C_FLAGS_M_RD


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
    n = len(msgs)
    # The common case first: the frame is one chain the adapter can run, and it succeeds.
    ten_ok = backend.functionality & I2C_FUNC_10BIT_ADDR
    limit = backend.max_msg_len
    want: list[int] = []
    one_chain = True
    last = n - 1
    for i, m in enumerate(msgs):
        flags = m.flags
        if flags & M_RD:
            size = m.length
            want.append(size)
        else:
            size = len(m.data)
        if size > limit or (m.ten_bit and not ten_ok) or (i < last and not flags & FAIL_NEXT):
            one_chain = False
            break
    if one_chain:
        try:
            data = backend.transfer(msgs)
        except Exception as e:
            status = bytearray(n)
            reads: list[bytes] = []
            failures: list[Failure] = []
            _settle(backend, msgs, msgs, 0, status, reads, failures, None, e)
            return bytes(status), reads, failures
        if [len(d) for d in data] == want:
            return bytes(n), data, []
        status = bytearray(n)
        reads = []
        failures = []
        _settle(backend, msgs, msgs, 0, status, reads, failures, data, None)
        return bytes(status), reads, failures
    status = bytearray(n)
    reads = []
    failures = []
    start = 0
    while start < n:
        # The chain runs to the first message without FAIL_NEXT (the decoder
        # guarantees the frame's last message closes one).
        end = start
        while end < n - 1 and msgs[end].flags & FAIL_NEXT:
            end += 1
        end += 1
        chain = msgs[start:end] if start or end < n else msgs
        _run_chain(backend, msgs, chain, start, status, reads, failures)
        start = end
    return bytes(status), reads, failures


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


def timed_out(n: int, n_reads: int, spi: bool, where: str, started: bool) -> Outcome:
    """The answer for a request whose deadline passed."""
    st = int(SpiResult.TRANS_ERR) if spi else _ERR
    why = ("deadline passed while on the bus; its effect is unknown and it is not retried"
           if started else "deadline passed before it reached the bus; it never will")
    return bytes([st]) * n, [b""] * n_reads, [Failure(0, errno.ETIMEDOUT, f"{where}: {why}")]


__all__ = ["Outcome", "check_spi", "run_i2c", "run_spi", "timed_out"]

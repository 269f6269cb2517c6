"""Replay backends: a bus that answers from a recording (``serve --record``) instead of chips.

So a CI job with no hardware runs a driver's tests against what a real chip
once said.  Each replay bus advertises the recorded bus's capabilities
(functionality, ``max_msg_len``, ``virtio_spi_config``), so the server refuses
what the recorded board refused before any request reaches it.  Two modes
(docs/record.md has the full rules):

* ``strict``: the bus's requests must be the recorded ones, in the recorded
  order; each gets exactly its recorded answer (data, NACK, errno).  The first
  request that differs gets an I/O error naming the transaction number and the
  expected and received requests, and so does every later request on that bus:
  a test that strays fails loudly, not by chance.
* ``lenient``: answers by lookup.  The same request (same messages, same write
  bytes) gets its recorded answers in recorded order, the last repeating; a
  lone I2C read is looked up with the bytes last written to that address (the
  register pointer); an SPI message not recorded as such is answered from a
  recorded message on the same chip select whose MOSI bytes it is a prefix of.
  Writes not recorded are ACKed at an address that ACKed in the recording; an
  address that never did NACKs (ENXIO), like an absent chip.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Sequence
from typing import Literal

from protocol.handshake import I2CBusInfo, SpiBusInfo
from protocol.virtio import I2C_FLAGS_M_RD, I2CMsg, SpiTransfer, format_i2c_addr

from ..logs import event
from ..recording import Recording, Transaction
from .base import BusError, I2CBackend, SpiBackend

log = logging.getLogger("busbridge.bus")

Mode = Literal["strict", "lenient"]

# -- describing requests, for divergence messages ---------------------------------------


def describe_i2c(msgs: Sequence[I2CMsg]) -> str:
    """``w2@0x50 [00 10] r4@0x50``: i2ctransfer-like, with the bytes written."""
    parts = []
    for m in msgs:
        parts.append(m.describe() if m.flags & I2C_FLAGS_M_RD
                     else f"{m.describe()} [{m.data[:16].hex(' ')}"
                          f"{' ...' if len(m.data) > 16 else ''}]")
    return " ".join(parts)


def describe_spi(cs: int, transfers: Sequence[SpiTransfer]) -> str:
    parts = []
    for t in transfers:
        tx = "" if t.tx is None else f" tx [{t.tx[:16].hex(' ')}{' ...' if len(t.tx) > 16 else ''}]"
        parts.append(f"{{len {t.length}{tx} rx {t.rx_len} mode {t.head.mode} "
                     f"bpw {t.head.bits_per_word} cs_change {t.head.cs_change}}}")
    return f"cs {cs}: " + " ".join(parts)


def _i2c_key(msgs: Sequence[I2CMsg]) -> tuple[tuple[int, bool, bool, bytes, int], ...]:
    return tuple((m.addr, m.ten_bit, bool(m.flags & I2C_FLAGS_M_RD), bytes(m.data), m.length)
                 for m in msgs)


def _spi_key(cs: int, transfers: Sequence[SpiTransfer]) -> tuple[object, ...]:
    """What strict replay compares: the bytes and the framing, not clock or delays."""
    return (cs, *((t.tx, t.rx_len, t.head.bits_per_word, t.head.cs_change, t.head.mode,
                   t.head.tx_nbits, t.head.rx_nbits) for t in transfers))


def _answer(txn: Transaction, what: str) -> list[bytes]:
    """The recorded answer: its reads, or its failure raised as the backend raised it."""
    if txn.unknown:
        raise BusError(errno.ETIMEDOUT, f"replay: recorded transaction #{txn.number} passed "
                                        f"its deadline on the bus; what the {what} answered "
                                        "is unknown")
    if txn.error is not None:
        index, err, message = txn.error
        raise BusError(err, message, index, txn.reads)
    return list(txn.reads)


class _Strict:
    """The recorded transactions of one bus, consumed in order; diverged for good at a miss."""

    def __init__(self, kind: str, bus: str, txns: list[Transaction]) -> None:
        self.kind = kind
        self.bus = bus
        self.txns = txns
        self.next = 0
        self.diverged: str | None = None

    def take(self, matches: bool | None, received: str, expected: str) -> Transaction:
        """The next transaction if ``matches`` (None: there is none); else diverge."""
        if self.diverged is not None:
            raise BusError(errno.EIO, f"replay diverged earlier ({self.diverged}); every "
                                      "later request on this bus fails")
        if matches is None:
            why = (f"request after the end of the recording ({len(self.txns)} transactions "
                   f"on {self.kind} bus {self.bus}): received {received}")
        elif not matches:
            txn = self.txns[self.next]
            why = (f"at recorded transaction #{txn.number} ({self.kind} bus {self.bus}'s "
                   f"#{self.next + 1}): expected {expected}, received {received}")
        else:
            txn = self.txns[self.next]
            self.next += 1
            return txn
        self.diverged = why
        event(log, logging.WARNING, "replay diverged", kind=self.kind, bus=self.bus,
              reason=why)
        raise BusError(errno.EIO, f"replay diverged {why}")

    def peek(self) -> Transaction | None:
        return self.txns[self.next] if self.next < len(self.txns) else None


class _Answers:
    """Lenient lookup: each key's recorded answers, served in order, the last repeating."""

    def __init__(self) -> None:
        self.answers: dict[object, list[Transaction]] = {}
        self.served: dict[object, int] = {}

    def add(self, key: object, txn: Transaction) -> None:
        self.answers.setdefault(key, []).append(txn)

    def get(self, key: object) -> Transaction | None:
        got = self.answers.get(key)
        if not got:
            return None
        i = self.served.get(key, 0)
        self.served[key] = i + 1
        return got[min(i, len(got) - 1)]


class ReplayI2CBus(I2CBackend):
    """An I2C adapter that answers from the recording of bus ``source`` (strict or lenient)."""

    def __init__(self, name: str, recording: Recording, source: str, mode: Mode = "strict",
                 description: str = "") -> None:
        info = recording.i2c_info(source)
        if info is None:
            raise ValueError(f"the recording has no i2c bus {source!r} "
                             f"(it has: {', '.join(recording.buses('i2c')) or 'none'})")
        self.name = name
        self.description = description or f"replay ({mode}) of i2c bus {source}"
        self.functionality = info.functionality
        self.max_msg_len = info.max_msg_len
        self.mode = mode
        txns = recording.of("i2c", source)
        self._strict = _Strict("i2c", name, txns)
        self._answers = _Answers()
        #: Addresses that ACKed in the recording (any transaction that got past them).
        self._acked: set[tuple[int, bool]] = set()
        self._pointer: dict[tuple[int, bool], bytes] = {}
        for t in txns:
            self._index(t)
        self._pointer.clear()

    @property
    def may_block(self) -> bool:
        return False  # a lookup in memory

    def info(self) -> I2CBusInfo:
        return I2CBusInfo(name=self.name, functionality=self.functionality,
                          max_msg_len=self.max_msg_len, description=self.description)

    def _lone_read(self, msgs: Sequence[I2CMsg]) -> tuple[object, ...] | None:
        """The pointer key of a chain of reads from one address, else None."""
        a = (msgs[0].addr, msgs[0].ten_bit)
        if all(m.flags & I2C_FLAGS_M_RD and (m.addr, m.ten_bit) == a for m in msgs):
            return ("ptr", a, self._pointer.get(a, b""), tuple(m.length for m in msgs))
        return None

    def _index(self, t: Transaction) -> None:
        msgs = t.msgs
        if t.unknown:  # nothing known to answer with; its writes may have moved a pointer
            self._track(msgs)
            return
        failed = len(msgs) if t.error is None else t.error[0]
        for m in msgs[:failed]:
            self._acked.add((m.addr, m.ten_bit))
        if t.error is not None and t.error[1] != errno.ENXIO:
            self._acked.add((msgs[failed].addr, msgs[failed].ten_bit))
        ptr = self._lone_read(msgs)
        if ptr is None and len(msgs) > 1 and not msgs[0].flags & I2C_FLAGS_M_RD:
            # write [reg] + read(n) in one chain also answers a write, then a lone read
            a = (msgs[0].addr, msgs[0].ten_bit)
            rest = msgs[1:]
            if all(m.flags & I2C_FLAGS_M_RD and (m.addr, m.ten_bit) == a for m in rest):
                ptr = ("ptr", a, bytes(msgs[0].data), tuple(m.length for m in rest))
        if ptr is not None:
            self._answers.add(ptr, t)
        self._answers.add(_i2c_key(msgs), t)
        self._track(msgs)

    def _track(self, msgs: Sequence[I2CMsg]) -> None:
        for m in msgs:
            if not m.flags & I2C_FLAGS_M_RD:
                self._pointer[m.addr, m.ten_bit] = bytes(m.data)

    def transfer(self, msgs: Sequence[I2CMsg]) -> list[bytes]:
        if self.mode == "strict":
            nxt = self._strict.peek()
            matches = None if nxt is None else _i2c_key(nxt.msgs) == _i2c_key(msgs)
            txn = self._strict.take(matches, describe_i2c(msgs),
                                    describe_i2c(nxt.msgs) if nxt is not None else "")
            return _answer(txn, "chip")
        return self._lenient(msgs)

    def _lenient(self, msgs: Sequence[I2CMsg]) -> list[bytes]:
        ptr = self._lone_read(msgs)
        txn = self._answers.get(ptr) if ptr is not None else None
        if txn is None:
            txn = self._answers.get(_i2c_key(msgs))
        self._track(msgs)
        if txn is not None:
            return _answer(txn, "chip")
        for i, m in enumerate(msgs):
            if (m.addr, m.ten_bit) not in self._acked:
                raise BusError(errno.ENXIO, f"replay: {format_i2c_addr(m.addr, m.ten_bit)} "
                                            "never answered in the recording: no ACK", i)
        reads = [m for m in msgs if m.flags & I2C_FLAGS_M_RD]
        if not reads:
            return []  # a write the recording did not have, to a chip that ACKs: ACK
        k = next(i for i, m in enumerate(msgs) if m.flags & I2C_FLAGS_M_RD)
        after = "" if ptr is None else f" after writing [{self._pointer_hex(msgs[0])}]"
        raise BusError(errno.EIO, f"replay (lenient): no recorded answer for "
                                  f"{describe_i2c(msgs)}{after}", k)

    def _pointer_hex(self, m: I2CMsg) -> str:
        return self._pointer.get((m.addr, m.ten_bit), b"").hex(" ")


class ReplaySpiBus(SpiBackend):
    """An SPI controller that answers from the recording of bus ``source``."""

    def __init__(self, name: str, recording: Recording, source: str, mode: Mode = "strict",
                 description: str = "") -> None:
        info = recording.spi_info(source)
        if info is None:
            raise ValueError(f"the recording has no spi bus {source!r} "
                             f"(it has: {', '.join(recording.buses('spi')) or 'none'})")
        self.name = name
        self.description = description or f"replay ({mode}) of spi bus {source}"
        self.config = info.config
        self.mode = mode
        txns = recording.of("spi", source)
        self._strict = _Strict("spi", name, txns)
        self._answers = _Answers()
        self._by_cs: dict[int, list[Transaction]] = {}
        for t in txns:
            if t.unknown:  # lenient answers only with what is known
                continue
            self._answers.add(_spi_key(t.cs, t.transfers), t)
            if t.error is None:
                self._by_cs.setdefault(t.cs, []).append(t)

    @property
    def may_block(self) -> bool:
        return False

    def info(self) -> SpiBusInfo:
        return SpiBusInfo(name=self.name, config=self.config, description=self.description)

    def transfer(self, cs: int, transfers: Sequence[SpiTransfer]) -> list[bytes]:
        key = _spi_key(cs, transfers)
        if self.mode == "strict":
            nxt = self._strict.peek()
            matches = None if nxt is None else _spi_key(nxt.cs, nxt.transfers) == key
            txn = self._strict.take(matches, describe_spi(cs, transfers),
                                    describe_spi(nxt.cs, nxt.transfers) if nxt else "")
            return _answer(txn, "device")
        got = self._answers.get(key)
        if got is not None:
            return _answer(got, "device")
        if cs not in self._by_cs:
            raise BusError(errno.EIO, f"replay (lenient): nothing was recorded on cs {cs}")
        if not any(t.rx_len for t in transfers):
            return []  # a write not recorded: the device takes it
        for rec in reversed(self._by_cs[cs]):
            rx = _prefix_answer(rec, transfers)
            if rx is not None:
                return rx
        raise BusError(errno.EIO, f"replay (lenient): no recorded answer for "
                                  f"{describe_spi(cs, transfers)}")


def _stream(transfers: Sequence[SpiTransfer], reads: Sequence[bytes] | None
            ) -> tuple[list[int | None], list[int | None]]:
    """The message as clocked bytes: MOSI (None where no tx) and MISO (None where not read)."""
    mosi: list[int | None] = []
    miso: list[int | None] = []
    it = iter(reads or ())
    for t in transfers:
        n = t.length
        mosi.extend(t.tx if t.tx is not None else [None] * n)
        rx = next(it, None) if t.rx_len else None
        miso.extend(rx if rx is not None else [None] * n)
    return mosi, miso


def _prefix_answer(rec: Transaction, transfers: Sequence[SpiTransfer]) -> list[bytes] | None:
    """Answer ``transfers`` from ``rec`` if its MOSI bytes are a prefix of ``rec``'s.

    Every byte the request sends must be what ``rec`` sent at that position, and
    every byte it reads must have been read there by ``rec``.
    """
    r_mosi, r_miso = _stream(rec.transfers, rec.reads)
    q_mosi, _ = _stream(transfers, None)
    if len(q_mosi) > len(r_mosi):
        return None
    for q, r in zip(q_mosi, r_mosi, strict=False):
        if q is not None and q != r:
            return None
    out = []
    pos = 0
    for t in transfers:
        n = t.length
        if t.rx_len:
            got = r_miso[pos:pos + n]
            if any(b is None for b in got):
                return None
            out.append(bytes(b for b in got if b is not None))
        pos += n
    return out

"""The recording file format (docs/record.md): what ``serve --record`` writes and ``replay`` reads.

Pure data, no sockets: the server's recorder (:mod:`bridge.server.record`) writes
with it and the replay backends (:mod:`bridge.buses.replay`) read with it, so
both sides share one definition, and docs/record.md is precise enough for a
second implementation.

A file is the 8-byte magic ``BBRECORD``, then records.  A record is a
little-endian u32 length and that many bytes of one msgpack map.  The first
record is the header (``"format"``, ``"version"``, the board's buses); then one
record per *transaction* (one I2C chain or one SPI message, what a backend runs
in one call); a clean stop ends with an ``"end"`` record.  Each record is
written whole with one ``write``, so a crashed server leaves at most one
partial record at the end, which readers drop (:attr:`Recording.truncated`).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import msgpack

from protocol.handshake import I2CBusInfo, SpiBusInfo
from protocol.virtio import I2C_FLAGS_FAIL_NEXT, I2C_FLAGS_M_RD, I2CMsg, SpiConfig, SpiTransfer
from protocol.virtio import SpiTransferHead as Head

MAGIC = b"BBRECORD"
FORMAT = "busbridge-recording"
VERSION = 1
LENGTH = struct.Struct("<I")
#: A record longer than this is refused by readers (a corrupt length, not data).
MAX_RECORD = 64 << 20
#: The transfer-head fields of an SPI transfer record, in this order.
HEAD_FIELDS = tuple(f.name for f in dataclasses.fields(Head))
_CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(SpiConfig))


class RecordingError(ValueError):
    """A file that is not a readable recording."""


@dataclass
class Transaction:
    """One recorded backend call: an I2C chain or an SPI message, and what it did.

    ``number`` is its position among the file's transaction records (from 1,
    all buses counted).  ``reads`` holds the data of the reads that completed;
    ``error`` is ``(index, errno, message)`` of the failed request (index within
    the chain/message; reads before it completed), ``unknown`` marks one whose
    deadline passed on the bus (what it did is not known).
    """

    kind: str
    bus: str
    t: float
    us: int
    msgs: list[I2CMsg] = field(default_factory=list)
    cs: int = 0
    transfers: list[SpiTransfer] = field(default_factory=list)
    reads: list[bytes] = field(default_factory=list)
    error: tuple[int, int, str] | None = None
    unknown: bool = False
    number: int = 0


def frame(m: dict[str, Any]) -> bytes:
    """One record: its length, then its msgpack map."""
    body: bytes = msgpack.packb(m, use_bin_type=True)
    return LENGTH.pack(len(body)) + body


def header(board: str, server: str, t: float, i2c: Sequence[I2CBusInfo],
           spi: Sequence[SpiBusInfo]) -> dict[str, Any]:
    """The header record's map: names and capabilities of every bus the board serves."""
    return {
        "k": "header", "format": FORMAT, "version": VERSION, "t": t, "server": server,
        "board": board,
        "i2c": [{"name": b.name, "description": b.description,
                 "functionality": b.functionality, "max_msg_len": b.max_msg_len} for b in i2c],
        "spi": [{"name": b.name, "description": b.description,
                 "config": {n: getattr(b.config, n) for n in _CONFIG_FIELDS}} for b in spi],
    }


def i2c_record(bus: str, t: float, us: int, msgs: Sequence[I2CMsg], reads: Sequence[bytes],
               error: tuple[int, int, str] | None, unknown: bool) -> dict[str, Any]:
    """An I2C transaction record: ``m`` is ``[addr, ten_bit, bin data | int read length]``."""
    m: dict[str, Any] = {"k": "i2c", "bus": bus, "t": t, "us": us,
                         "m": [[x.addr, x.ten_bit, x.length if x.flags & I2C_FLAGS_M_RD
                                else bytes(x.data)] for x in msgs],
                         "r": [bytes(r) for r in reads]}
    _outcome(m, error, unknown)
    return m


def spi_record(bus: str, t: float, us: int, cs: int, transfers: Sequence[SpiTransfer],
               reads: Sequence[bytes], error: tuple[int, int, str] | None,
               unknown: bool) -> dict[str, Any]:
    """An SPI transaction record: ``x`` is ``[bin tx | nil, rx_len, [head fields]]``."""
    m: dict[str, Any] = {"k": "spi", "bus": bus, "t": t, "us": us, "cs": cs,
                         "x": [[None if x.tx is None else bytes(x.tx), x.rx_len,
                                [getattr(x.head, n) for n in HEAD_FIELDS]] for x in transfers],
                         "r": [bytes(r) for r in reads]}
    _outcome(m, error, unknown)
    return m


def _outcome(m: dict[str, Any], error: tuple[int, int, str] | None, unknown: bool) -> None:
    if unknown:
        m["u"] = True
    elif error is not None:
        m["e"] = list(error)


# -- reading ------------------------------------------------------------------------------


def iter_maps(f: BinaryIO) -> Iterator[dict[str, Any] | None]:
    """Every record's map in order; a final None if the last record is cut short."""
    if f.read(len(MAGIC)) != MAGIC:
        raise RecordingError("not a busbridge recording (no BBRECORD magic)")
    while True:
        head = f.read(LENGTH.size)
        if not head:
            return
        if len(head) < LENGTH.size:
            yield None
            return
        (n,) = LENGTH.unpack(head)
        if n > MAX_RECORD:
            raise RecordingError(f"record of {n} bytes: corrupt length")
        body = f.read(n)
        if len(body) < n:
            yield None
            return
        try:
            m = msgpack.unpackb(body, raw=False, strict_map_key=False)
        except (ValueError, msgpack.ExtraData) as e:
            raise RecordingError(f"record is not msgpack: {e}") from None
        if not isinstance(m, dict):
            raise RecordingError("record is not a map")
        yield m


@dataclass
class Recording:
    """A whole recording read into memory: header, transactions, and how it ended."""

    header: dict[str, Any]
    transactions: list[Transaction]
    #: The ``"end"`` record's ``why`` (``"closed"``, ``"size limit"``), None if it has none.
    ended: str | None
    #: True when the file ends inside a record (the server died while writing it).
    truncated: bool

    def i2c_info(self, bus: str) -> I2CBusInfo | None:
        for b in self.header.get("i2c", []):
            if b["name"] == bus:
                return I2CBusInfo(name=bus, functionality=b["functionality"],
                                  max_msg_len=b["max_msg_len"],
                                  description=b.get("description", ""))
        return None

    def spi_info(self, bus: str) -> SpiBusInfo | None:
        for b in self.header.get("spi", []):
            if b["name"] == bus:
                return SpiBusInfo(name=bus, config=SpiConfig(**b["config"]),
                                  description=b.get("description", ""))
        return None

    def buses(self, kind: str) -> list[str]:
        return [b["name"] for b in self.header.get(kind, [])]

    def of(self, kind: str, bus: str) -> list[Transaction]:
        return [t for t in self.transactions if t.kind == kind and t.bus == bus]


def read_recording(path: str) -> Recording:
    """Read and decode a recording file; :class:`RecordingError` (or OSError) if it cannot be."""
    with open(path, "rb") as f:
        maps = list(iter_maps(f))
    truncated = bool(maps) and maps[-1] is None
    if truncated:
        maps.pop()
    if not maps:
        raise RecordingError("recording has no header record")
    hdr = maps[0]
    assert hdr is not None
    if hdr.get("format") != FORMAT:
        raise RecordingError(f"first record is not a {FORMAT} header")
    if hdr.get("version") != VERSION:
        raise RecordingError(f"recording version {hdr.get('version')!r}; this reader knows "
                             f"version {VERSION}")
    txns: list[Transaction] = []
    ended = None
    for m in maps[1:]:
        assert m is not None
        k = m.get("k")
        try:
            if k == "i2c" or k == "spi":
                txn = decode_transaction(m)
                txn.number = len(txns) + 1
                txns.append(txn)
            elif k == "end":
                ended = str(m.get("why", ""))
        except (KeyError, TypeError, ValueError) as e:
            raise RecordingError(f"transaction #{len(txns) + 1}: malformed ({e!r})") from None
        # other kinds: a later minor addition; readers skip records they do not know
    return Recording(hdr, txns, ended, truncated)


def decode_transaction(m: dict[str, Any]) -> Transaction:
    err = m.get("e")
    error = (int(err[0]), int(err[1]), str(err[2])) if err is not None else None
    txn = Transaction(m["k"], m["bus"], float(m["t"]), int(m["us"]),
                      reads=[bytes(r) for r in m["r"]], error=error, unknown=bool(m.get("u")))
    if txn.kind == "i2c":
        last = len(m["m"]) - 1
        for i, (addr, ten, p) in enumerate(m["m"]):
            flags = I2C_FLAGS_FAIL_NEXT if i < last else 0
            if isinstance(p, int):
                txn.msgs.append(I2CMsg(addr, flags | I2C_FLAGS_M_RD, b"", p, bool(ten)))
            else:
                txn.msgs.append(I2CMsg(addr, flags, bytes(p), 0, bool(ten)))
    else:
        txn.cs = int(m["cs"])
        for tx, rx_len, head in m["x"]:
            txn.transfers.append(SpiTransfer(Head(*head), None if tx is None else bytes(tx),
                                             int(rx_len)))
    return txn

"""The virtio structures and the shape rules of server frames, from SPEC.md §4 and §5.

Encoders build what a client sends (out_hdr, address field, spi_transfer_head); the
``check_*`` functions hold a server frame against the rules a client may rely on and
raise :class:`Violation` naming the rule.  They are written from the document alone.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from .wire import ERROR, LEASE_RESULT, PONG, RESULT, WELCOME, Frame

# §5.1 flags
FAIL_NEXT = 0x1
M_RD = 0x2

# §5.5 status values
I2C_OK, I2C_ERR = 0, 1
SPI_OK, SPI_PARAM_ERR, SPI_TRANS_ERR = 0, 1, 2

# §4.5 errno values
ENXIO, EIO, EINVAL, EMSGSIZE, EOPNOTSUPP, ETIMEDOUT, EREMOTEIO = 6, 5, 22, 90, 95, 110, 121

# Linux <uapi/linux/i2c.h>, named in §4.2
I2C_FUNC_I2C = 0x1
I2C_FUNC_10BIT_ADDR = 0x2

# §5.3 mode bits
CPHA, CPOL, CS_HIGH, LSB_FIRST, LOOP = 0x1, 0x2, 0x4, 0x8, 0x10

#: §9: every code a server may send.
ERROR_CODES = frozenset({
    "malformed", "frame-too-large", "limit-exceeded", "bad-request", "unsupported-version",
    "handshake-required", "unknown-bus", "duplicate-id", "timeout", "shutting-down",
    "internal", "busy", "no-lease", "unauthorized", "denied", "rate-limited",
    "too-many-clients", "handshake-timeout", "idle-timeout",
})

MAX_ID = 0xFFFFFFFF
MAX_TIMEOUT_MS = 3_600_000


class Violation(Exception):
    """A server frame breaks a rule of SPEC.md (the message names the rule)."""


# ---------------------------------------------------------------------------
# Encoders (§5)
# ---------------------------------------------------------------------------


def addr7(a: int) -> int:
    """§5.2: a 7-bit address ``a`` is ``a << 1``."""
    return a << 1


def addr10(a: int) -> int:
    """§5.2: ``(a & 0xFF) << 8 | 0xF0 | ((a >> 8) & 3) << 1``."""
    return (a & 0xFF) << 8 | 0xF0 | ((a >> 8) & 3) << 1


def out_hdr(addr_field: int, flags: int = 0, padding: int = 0) -> bytes:
    """``virtio_i2c_out_hdr``: le16 addr, le16 padding, le32 flags."""
    return struct.pack("<HHI", addr_field, padding, flags)


@dataclass(frozen=True)
class Msg:
    """One I2C request as the kit builds it: encoded address, flags and buffer."""

    addr_field: int
    flags: int
    buf: bytes | int

    @property
    def is_read(self) -> bool:
        return bool(self.flags & M_RD)

    def wire(self) -> list[Any]:
        return [out_hdr(self.addr_field, self.flags), self.buf]


def wr(addr: int, data: bytes = b"", *, fail_next: bool = False, ten_bit: bool = False) -> Msg:
    field = addr10(addr) if ten_bit else addr7(addr)
    return Msg(field, FAIL_NEXT if fail_next else 0, bytes(data))


def rd(addr: int, n: int, *, fail_next: bool = False, ten_bit: bool = False) -> Msg:
    field = addr10(addr) if ten_bit else addr7(addr)
    return Msg(field, M_RD | (FAIL_NEXT if fail_next else 0), n)


def chain(*msgs: Msg) -> list[Msg]:
    """Set FAIL_NEXT on every request but the last: one chain (§8.1)."""
    out = []
    for i, m in enumerate(msgs):
        last = i == len(msgs) - 1
        out.append(Msg(m.addr_field, (m.flags & ~FAIL_NEXT) | (0 if last else FAIL_NEXT), m.buf))
    return out


def i2c_frame(rid: int, bus: str, msgs: list[Msg], timeout_ms: int | None = None) -> list[Any]:
    return [2, rid, bus, [m.wire() for m in msgs], timeout_ms]


@dataclass(frozen=True)
class Head:
    """``spi_transfer_head`` fields (§5.3)."""

    cs: int = 0
    bits_per_word: int = 8
    cs_change: int = 0
    tx_nbits: int = 0
    rx_nbits: int = 0
    mode: int = 0
    freq: int = 0
    word_delay_ns: int = 0
    cs_setup_ns: int = 0
    cs_hold_ns: int = 0
    cs_inactive_ns: int = 0

    @classmethod
    def unpack(cls, raw: bytes) -> Head:
        if len(raw) != 32:
            raise Violation(f"§5.3: spi_transfer_head is {len(raw)} bytes, not 32")
        return cls(*struct.unpack("<BBBBB3xIIIIII", raw))

    def pack(self) -> bytes:
        return struct.pack("<BBBBB3xIIIIII", self.cs, self.bits_per_word, self.cs_change,
                           self.tx_nbits, self.rx_nbits, self.mode, self.freq,
                           self.word_delay_ns, self.cs_setup_ns, self.cs_hold_ns,
                           self.cs_inactive_ns)


@dataclass(frozen=True)
class Xfer:
    head: Head
    tx: bytes | None
    rx_len: int

    def wire(self) -> list[Any]:
        return [self.head.pack(), self.tx, self.rx_len]


def spi_frame(rid: int, bus: str, cs: int, xfers: list[Xfer],
              timeout_ms: int | None = None) -> list[Any]:
    return [3, rid, bus, cs, [x.wire() for x in xfers], timeout_ms]


@dataclass(frozen=True)
class SpiConfig:
    """``virtio_spi_config`` (§5.4), decoded from WELCOME's 32-byte ``config``."""

    cs_max_number: int
    cs_change_supported: int
    tx_nbits_supported: int
    rx_nbits_supported: int
    bits_per_word_mask: int
    mode_func_supported: int
    max_freq_hz: int
    max_word_delay_ns: int
    max_cs_setup_ns: int
    max_cs_hold_ns: int
    max_cs_inactive_ns: int

    @classmethod
    def unpack(cls, raw: bytes) -> SpiConfig:
        if len(raw) != 32:
            raise Violation(f"§4.2: SPI config is {len(raw)} bytes, not 32")
        return cls(*struct.unpack("<BBBBIIIIIII", raw))

    def bpw_allowed(self, bpw: int) -> bool:
        if not 1 <= bpw <= 32:
            return False
        return self.bits_per_word_mask == 0 or bool(self.bits_per_word_mask >> (bpw - 1) & 1)

    def mode_allowed(self, mode: int) -> bool:
        """Whether §8.2 rules 10-12 accept ``mode`` under this config."""
        mf = self.mode_func_supported
        if mode >> 5:
            return False
        cpha_ok = mf & (0x2 if mode & CPHA else 0x1)
        cpol_ok = mf & (0x8 if mode & CPOL else 0x4)
        extras = [(CS_HIGH, 0x10), (LSB_FIRST, 0x20), (LOOP, 0x40)]
        return bool(cpha_ok and cpol_ok) and all(mf & b for m, b in extras if mode & m)

    def valid_mode(self) -> int:
        """A mode (0..3) this controller offers: rule 11 needs one to build valid heads."""
        for mode in range(4):
            if self.mode_allowed(mode):
                return mode
        raise Violation("§5.4: mode_func_supported offers no CPHA/CPOL combination")

    def valid_bpw(self) -> int:
        for bpw in [8, *range(1, 33)]:
            if self.bpw_allowed(bpw):
                return int(bpw)
        raise Violation("§5.4: bits_per_word_mask allows no word size")


def word_bytes(bpw: int) -> int:
    """§8.2 rule 6: bytes per word in the buffers."""
    return 1 if bpw <= 8 else 2 if bpw <= 16 else 4


# ---------------------------------------------------------------------------
# Shape rules for server frames
# ---------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return type(v) is int


def frame_ok(f: Frame) -> list[Any]:
    """§2/§3: the body is exactly one msgpack array."""
    if f.problem:
        raise Violation(f"§2/§3: {f.brief()}")
    return list(f.obj)


def check_error(f: Frame) -> tuple[int, str, str]:
    """§4.6: ``[5, id, code, message]``; returns (id, code, message)."""
    o = frame_ok(f)
    if o[0] != ERROR or len(o) != 4:
        raise Violation(f"§4.6: not an ERROR of 4 items: {f.brief()}")
    _, rid, code, msg = o
    if not _is_int(rid) or not 0 <= rid <= MAX_ID:
        raise Violation(f"§4.6: ERROR id {rid!r} is not 0..0xFFFFFFFF")
    if not isinstance(code, str) or not isinstance(msg, str):
        raise Violation(f"§4.6: ERROR code/message not str: {f.brief()}")
    if code not in ERROR_CODES:
        raise Violation(f"§9: unknown ERROR code {code!r}")
    return rid, code, msg


def check_pong(f: Frame, rid: int) -> None:
    o = frame_ok(f)
    if o != [PONG, rid] or type(o[1]) is not int:
        raise Violation(f"§4.7: expected PONG [7, {rid}], got {f.brief()}")


@dataclass(frozen=True)
class Result:
    rid: int
    status: bytes
    reads: list[bytes]
    failures: list[list[Any]]


def check_result_shape(f: Frame) -> Result:
    """§4.5: ``[4, id, status bin, reads [bin...], failures [[int, int, str]...]]``."""
    o = frame_ok(f)
    if o[0] != RESULT:
        raise Violation(f"expected a RESULT, got {f.brief()}")
    if len(o) != 5:
        raise Violation(f"§4.5: RESULT has {len(o)} items, not 5")
    _, rid, status, reads, failures = o
    if not _is_int(rid) or not 1 <= rid <= MAX_ID:
        raise Violation(f"§4: RESULT id {rid!r} out of 1..0xFFFFFFFF")
    if not isinstance(status, bytes):
        raise Violation("§4.5: status is not bin")
    if not isinstance(reads, list) or not all(isinstance(r, bytes) for r in reads):
        raise Violation("§4.5: reads is not an array of bin")
    if not isinstance(failures, list):
        raise Violation("§4.5: failures is not an array")
    for e in failures:
        if not (isinstance(e, list) and len(e) == 3 and _is_int(e[0]) and _is_int(e[1])
                and isinstance(e[2], str)):
            raise Violation(f"§4.5: failure entry {e!r} is not [int, int, str]")
        if not 0 <= e[0] < max(len(status), 1):
            raise Violation(f"§4.5: failure index {e[0]} outside the frame")
    return Result(rid, status, reads, failures)


def _answer_to(f: Frame, rid: int, n: int, noun: str) -> Result:
    """The RESULT of frame ``rid``, with one status byte for each of its ``n`` requests."""
    r = check_result_shape(f)
    if r.rid != rid:
        raise Violation(f"RESULT id {r.rid}, expected {rid}")
    if len(r.status) != n:
        raise Violation(f"§4.5: {len(r.status)} status bytes for {n} {noun}")
    return r


def check_i2c_result(f: Frame, rid: int, msgs: list[Msg]) -> Result:
    """§4.5 and §8.1 for an I2C frame: statuses, reads and one failure per failed chain."""
    r = _answer_to(f, rid, len(msgs), "requests")
    if any(s not in (I2C_OK, I2C_ERR) for s in r.status):
        raise Violation(f"§4.5: I2C status {r.status.hex(' ')} not 0/1")
    reads = [m for m in msgs if m.is_read]
    if len(r.reads) != len(reads):
        raise Violation(f"§4.5: {len(r.reads)} reads entries for {len(reads)} read requests")
    k = 0
    for i, m in enumerate(msgs):
        if not m.is_read:
            continue
        want = m.buf if r.status[i] == I2C_OK and isinstance(m.buf, int) else 0
        if len(r.reads[k]) != want:
            raise Violation(f"§4.5: reads entry of request {i} has {len(r.reads[k])} bytes, "
                            f"expected {want} (status {r.status[i]})")
        k += 1
    if is_deadline(r):
        return r
    # §8.1: per chain, OK* then ERR*; one failures entry per failed chain at its first ERR.
    expect: list[int] = []
    start = 0
    for i, m in enumerate(msgs):
        if m.flags & FAIL_NEXT and i < len(msgs) - 1:
            continue
        st = r.status[start:i + 1]
        if I2C_ERR in st:
            first = st.index(I2C_ERR)
            if any(s != I2C_ERR for s in st[first:]):
                raise Violation(f"§8.1: chain {start}..{i} has OK after ERR: {st.hex(' ')}")
            expect.append(start + first)
        start = i + 1
    got = [e[0] for e in r.failures]
    if got != expect:
        raise Violation(f"§8.1: failures at {got}, expected one per failed chain at {expect}")
    return r


def is_deadline(r: Result) -> bool:
    """§8.4: every request failed, one failure at index 0 with errno 110."""
    return (len(r.failures) == 1 and r.failures[0][0] == 0 and r.failures[0][1] == ETIMEDOUT
            and all(s != 0 for s in r.status) and not any(r.reads))


def check_spi_result(f: Frame, rid: int, xfers: list[Xfer]) -> Result:
    """§4.5, §8.2: OK, PARAM_ERR (invalid 1, valid 2), bus failure or deadline."""
    r = _answer_to(f, rid, len(xfers), "transfers")
    reading = [i for i, x in enumerate(xfers) if x.rx_len > 0]
    if len(r.reads) != len(reading):
        raise Violation(f"§4.5: {len(r.reads)} reads entries for {len(reading)} transfers "
                        "with rx_len > 0")
    st = set(r.status)
    if st == {SPI_OK}:
        for k, i in enumerate(reading):
            if len(r.reads[k]) != xfers[i].rx_len:
                raise Violation(f"§4.5: transfer {i} read {len(r.reads[k])} bytes, "
                                f"expected {xfers[i].rx_len}")
        if r.failures:
            raise Violation(f"§4.5: failures {r.failures} although all TRANS_OK")
        return r
    if SPI_OK in st:
        raise Violation(f"§8.2: TRANS_OK mixed with failures: {r.status.hex(' ')}")
    if any(r.reads):
        raise Violation("§8.2: a failed message has a non-empty reads entry")
    if not st <= {SPI_PARAM_ERR, SPI_TRANS_ERR}:
        raise Violation(f"§4.5: SPI status {r.status.hex(' ')} not 0/1/2")
    if SPI_PARAM_ERR in st:
        bad = [i for i, s in enumerate(r.status) if s == SPI_PARAM_ERR]
        got = sorted(e[0] for e in r.failures)
        if got != bad or any(e[1] != EINVAL for e in r.failures):
            raise Violation(f"§8.2: PARAM_ERR at {bad} but failures {r.failures}")
    elif len(r.failures) != 1:
        raise Violation(f"§8.2: a failed message needs one failures entry, got {r.failures}")
    return r


def check_welcome(f: Frame) -> dict[str, Any]:
    """§4.2: ``[1, 0, map]`` with version 1, typed bus lists and the limits map."""
    o = frame_ok(f)
    if o[0] != WELCOME or len(o) != 3 or not isinstance(o[2], dict):
        raise Violation(f"§4.2: expected WELCOME [1, 0, map], got {f.brief()}")
    w = o[2]
    if w.get("version") != 1 or type(w.get("version")) is not int:
        raise Violation(f"§6: WELCOME version {w.get('version')!r}, not 1")
    for key in ("server", "board"):
        if key in w and not isinstance(w[key], str):
            raise Violation(f"§4.2: WELCOME {key} is not str")
    lim = w.get("limits")
    if not isinstance(lim, dict):
        raise Violation("§4.2: WELCOME has no limits map")
    for key, low in (("max_frame", 1), ("max_requests", 1), ("max_i2c_len", 0),
                     ("max_spi_len", 0), ("max_in_flight", 1)):
        v = lim.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise Violation(f"§4.2: limits.{key} = {v!r}, must be an int >= {low}")
    for b in w.get("i2c", []):
        _bus_name(b)
        fn, ml = b.get("functionality"), b.get("max_msg_len")
        if not _is_int(fn) or not 0 <= fn <= MAX_ID:
            raise Violation(f"§4.2: I2C bus {b.get('name')!r} functionality {fn!r}")
        if not _is_int(ml) or ml < 0:
            raise Violation(f"§4.2: I2C bus {b.get('name')!r} max_msg_len {ml!r}")
    for b in w.get("spi", []):
        _bus_name(b)
        cfg = b.get("config")
        if not isinstance(cfg, bytes) or len(cfg) != 32:
            raise Violation(f"§4.2: SPI bus {b.get('name')!r} config is not bin of 32 bytes")
    return w


def _bus_name(b: Any) -> None:
    if not isinstance(b, dict):
        raise Violation("§4.2: a bus entry is not a map")
    name = b.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 64:
        raise Violation(f"§4.2: bus name {name!r} is not a str of 1..64 characters")
    if "description" in b and not isinstance(b["description"], str):
        raise Violation(f"§4.2: bus {name!r} description is not str")


LEASE_KEYS = {"id": str, "kind": str, "bus": str, "holder": str, "peer": str, "ttl": int,
              "expires": str, "remaining_ms": int}


def check_lease_result(f: Frame, rid: int) -> dict[str, Any]:
    """§4.9: ``[9, id, map]`` with ``leases`` and complete lease maps, never a token in them."""
    o = frame_ok(f)
    if o[0] != LEASE_RESULT or len(o) != 3 or not isinstance(o[2], dict):
        raise Violation(f"§4.9: expected LEASE_RESULT [9, {rid}, map], got {f.brief()}")
    if o[1] != rid:
        raise Violation(f"§4.9: LEASE_RESULT id {o[1]}, expected {rid}")
    m = o[2]
    leases = m.get("leases")
    if not isinstance(leases, list):
        raise Violation("§4.9: no leases array")
    for lease in leases:
        if not isinstance(lease, dict):
            raise Violation("§4.9: a lease is not a map")
        for key, typ in LEASE_KEYS.items():
            if not isinstance(lease.get(key), typ) or isinstance(lease.get(key), bool):
                raise Violation(f"§4.9: lease key {key!r} = {lease.get(key)!r}, not {typ.__name__}")
        for key in ("address", "cs"):
            if key not in lease or not (lease[key] is None or _is_int(lease[key])):
                raise Violation(f"§4.9: lease key {key!r} missing or not int/nil")
        if "token" in lease:
            raise Violation("§4.9: a lease map carries a token")
    return m

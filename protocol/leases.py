"""LEASE / LEASE_RESULT frames: exclusive use of a bus, an I2C address or an SPI chip select.

Leases travel on the data path (never through the MQTT broker) so that the
server that executes the requests is also the one authority on who may send
them.  Their frames are hand-checked here like the other request frames (which
are in :mod:`protocol.codec`, which also encodes these), with one precise
message per mistake; the semantics (conflicts, expiry) live with the server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .errors import ErrorCode, ProtocolError
from .limits import MAX_BUS_NAME, MAX_REQUEST_ID

#: Longest TTL any server accepts (a server may advertise a lower maximum in its errors).
MAX_LEASE_TTL = 86_400
#: Lease tokens are opaque strs of this many characters (the HELLO's access token
#: is ``limits.MAX_ACCESS_TOKEN``).
MIN_LEASE_TOKEN, MAX_LEASE_TOKEN = 16, 128
MAX_HOLDER = 256
#: Tokens a HELLO may present.
MAX_HELLO_LEASES = 16
#: Longest ``list`` cursor (``after``).
MAX_CURSOR = 64

KINDS = ("i2c", "spi")


class LeaseOp(StrEnum):
    TAKE = "take"
    RENEW = "renew"
    RELEASE = "release"
    LIST = "list"

    def __str__(self) -> str:
        return self.value


@dataclass(slots=True)
class LeaseRequest:
    """``[8, id, op, params]``: which fields matter depends on ``op`` (SPEC.md §4.8)."""

    id: int
    op: LeaseOp
    kind: str = ""
    bus: str = ""
    address: int | None = None
    cs: int | None = None
    ttl: int | None = None
    token: str = ""
    holder: str = ""
    #: take: ``address`` is a 10-bit address (a 7-bit 0x50 and a 10-bit 0x050 differ).
    ten_bit: bool = False
    #: list: continue after this cursor (the ``next`` of the previous page).
    after: str = ""

    def __post_init__(self) -> None:
        if self.address is not None and self.address > 0x7F:
            self.ten_bit = True  # it cannot be a 7-bit address

    def params(self) -> dict[str, Any]:
        """The params map, keys in SPEC order, only those the op uses."""
        p: dict[str, Any] = {}
        if self.op is LeaseOp.TAKE:
            p["kind"] = self.kind
            p["bus"] = self.bus
            if self.address is not None:
                p["address"] = self.address
                if self.ten_bit:
                    p["ten_bit"] = True
            if self.cs is not None:
                p["cs"] = self.cs
            p["ttl"] = self.ttl
            if self.holder:
                p["holder"] = self.holder
        elif self.op is LeaseOp.RENEW:
            p["token"] = self.token
            if self.ttl is not None:
                p["ttl"] = self.ttl
        elif self.op is LeaseOp.RELEASE:
            p["token"] = self.token
        elif self.after:
            p["after"] = self.after
        return p


@dataclass(slots=True)
class LeaseInfo:
    """A lease as anyone may see it: never its token.

    ``holder`` is what the taker said about itself; ``client`` is who the
    server authenticated it as (``token:NAME``, ``cn:NAME`` or ``anonymous``),
    so a holder text cannot pose as somebody else.
    """

    id: str
    kind: str
    bus: str
    address: int | None
    cs: int | None
    holder: str
    peer: str
    ttl: int
    expires: str  # ISO 8601 UTC, server clock, e.g. 2026-12-01T08:00:00.250Z
    remaining_ms: int
    ten_bit: bool = False
    client: str = ""

    def to_map(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "bus": self.bus, "address": self.address,
                "ten_bit": self.ten_bit, "cs": self.cs, "holder": self.holder,
                "client": self.client, "peer": self.peer, "ttl": self.ttl,
                "expires": self.expires, "remaining_ms": self.remaining_ms}

    @property
    def scope(self) -> str:
        """``i2c bus 1 address 0x50`` / ``spi bus 0 cs 1`` / ``i2c bus 1``."""
        return describe_scope(self.kind, self.bus, self.address, self.cs, self.ten_bit)


@dataclass(slots=True)
class LeaseResult:
    """``[9, id, map]``: the leases the op concerns; ``token`` only answers a take."""

    id: int
    leases: list[LeaseInfo] = field(default_factory=list)
    token: str | None = None
    released: bool | None = None
    #: list: how many live leases the board has (all pages together).
    total: int | None = None
    #: list: the cursor of the next page (``after``), absent on the last page.
    next: str | None = None

    def to_map(self) -> dict[str, Any]:
        m: dict[str, Any] = {"leases": [x.to_map() for x in self.leases]}
        if self.token is not None:
            m["token"] = self.token
        if self.released is not None:
            m["released"] = self.released
        if self.total is not None:
            m["total"] = self.total
        if self.next is not None:
            m["next"] = self.next
        return m


def describe_scope(kind: str, bus: str, address: int | None, cs: int | None,
                   ten_bit: bool = False) -> str:
    where = f"{kind} bus {bus}"
    if address is not None:
        return f"{where} address {address:#05x} (10-bit)" if ten_bit else \
            f"{where} address {address:#04x}"
    if cs is not None:
        return f"{where} cs {cs}"
    return where


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------


def _bad(code: ErrorCode, msg: str, rid: int, fatal: bool = False) -> ProtocolError:
    return ProtocolError(code, msg, request_id=rid, fatal=fatal)


def _int(p: dict[str, Any], key: str, lo: int, hi: int, rid: int) -> int | None:
    v = p.get(key)
    if v is None:
        return None
    if type(v) is not int:
        raise _bad(ErrorCode.MALFORMED, f"LEASE {key} must be an integer", rid)
    if not lo <= v <= hi:
        raise _bad(ErrorCode.BAD_REQUEST, f"LEASE {key} {v} out of range {lo}..{hi}", rid)
    return v


def _str(p: dict[str, Any], key: str, rid: int) -> str:
    v = p.get(key, "")
    if type(v) is not str:
        raise _bad(ErrorCode.MALFORMED, f"LEASE {key} must be a string", rid)
    return v


def check_token(v: Any) -> str | None:
    """Why ``v`` cannot be a lease token, or ``None``."""
    if type(v) is not str:
        return "a lease token must be a string"
    if not MIN_LEASE_TOKEN <= len(v) <= MAX_LEASE_TOKEN or not v.isascii() or not v.isprintable():
        return (f"a lease token is {MIN_LEASE_TOKEN}..{MAX_LEASE_TOKEN} printable ASCII "
                "characters")
    return None


def decode_lease(f: list[Any]) -> LeaseRequest:
    """A LEASE frame body (already unpacked) as a :class:`LeaseRequest`; no refusal is fatal."""
    rid = f[1] if type(f[1]) is int and 0 < f[1] <= MAX_REQUEST_ID else 0
    if len(f) != 4:
        raise _bad(ErrorCode.MALFORMED, "LEASE frame must be [8, id, op, params]", rid)
    if not rid:
        raise _bad(ErrorCode.MALFORMED, f"request id must be an integer 1..{MAX_REQUEST_ID}", 0)
    op_text, p = f[2], f[3]
    if type(op_text) is not str or type(p) is not dict:
        raise _bad(ErrorCode.MALFORMED, "LEASE op must be a string and params a map", rid)
    try:
        op = LeaseOp(op_text)
    except ValueError:
        raise _bad(ErrorCode.BAD_REQUEST, f"unknown LEASE op {op_text!r} "
                   f"(ops: {', '.join(o.value for o in LeaseOp)})", rid) from None
    if op is LeaseOp.LIST:
        after = _str(p, "after", rid)
        if len(after) > MAX_CURSOR:
            raise _bad(ErrorCode.BAD_REQUEST, f"LEASE list: after longer than {MAX_CURSOR}", rid)
        return LeaseRequest(rid, op, after=after)
    if op in (LeaseOp.RENEW, LeaseOp.RELEASE):
        why = check_token(p.get("token"))
        if why is not None:
            code = ErrorCode.MALFORMED if type(p.get("token")) is not str else \
                ErrorCode.BAD_REQUEST
            raise _bad(code, f"LEASE {op}: {why}", rid)
        ttl = _int(p, "ttl", 1, MAX_LEASE_TTL, rid) if op is LeaseOp.RENEW else None
        return LeaseRequest(rid, op, token=p["token"], ttl=ttl)
    kind = _str(p, "kind", rid)
    if kind not in KINDS:
        raise _bad(ErrorCode.BAD_REQUEST, f"LEASE take: kind must be 'i2c' or 'spi', not "
                   f"{kind!r}", rid)
    bus = p.get("bus")
    if type(bus) is not str or not 0 < len(bus) <= MAX_BUS_NAME:
        raise _bad(ErrorCode.MALFORMED,
                   f"LEASE take: bus must be a string of 1..{MAX_BUS_NAME} chars", rid)
    address = _int(p, "address", 0, 0x3FF, rid)
    cs = _int(p, "cs", 0, 0xFF, rid)
    if kind == "i2c" and cs is not None:
        raise _bad(ErrorCode.BAD_REQUEST, "LEASE take: an I2C lease has no cs", rid)
    if kind == "spi" and address is not None:
        raise _bad(ErrorCode.BAD_REQUEST, "LEASE take: an SPI lease has no address", rid)
    ten = p.get("ten_bit")
    if ten is not None and type(ten) is not bool:
        raise _bad(ErrorCode.MALFORMED, "LEASE ten_bit must be a boolean", rid)
    if ten is not None and address is None:
        raise _bad(ErrorCode.BAD_REQUEST, "LEASE take: ten_bit without an address", rid)
    if ten is None:
        ten = address is not None and address > 0x7F  # cannot be a 7-bit address
    elif not ten and address is not None and address > 0x7F:
        raise _bad(ErrorCode.BAD_REQUEST,
                   f"LEASE take: address {address:#x} is not a 7-bit address (0..0x7f)", rid)
    ttl = _int(p, "ttl", 1, MAX_LEASE_TTL, rid)
    if ttl is None:
        raise _bad(ErrorCode.MALFORMED, "LEASE take: ttl (seconds) is required", rid)
    holder = _str(p, "holder", rid)
    if len(holder) > MAX_HOLDER:
        raise _bad(ErrorCode.BAD_REQUEST, f"LEASE take: holder longer than {MAX_HOLDER}", rid)
    return LeaseRequest(rid, op, kind=kind, bus=bus, address=address, cs=cs, ttl=ttl,
                        holder=holder, ten_bit=ten)


def _lease_info(m: Any) -> LeaseInfo:
    if type(m) is not dict:
        raise ValueError("a lease must be a map")
    try:
        address = m.get("address")
        # Servers before ten_bit leased a number in both forms; above 0x7f it is 10-bit.
        ten = m.get("ten_bit", type(address) is int and address > 0x7F)
        info = LeaseInfo(m["id"], m["kind"], m["bus"], address, m.get("cs"),
                         m.get("holder", ""), m.get("peer", ""), m["ttl"], m["expires"],
                         m["remaining_ms"], ten, m.get("client", ""))
    except KeyError as e:
        raise ValueError(f"a lease map lacks {e}") from None
    for name, typ, opt in (("id", str, False), ("kind", str, False), ("bus", str, False),
                           ("address", int, True), ("cs", int, True), ("holder", str, False),
                           ("peer", str, False), ("ttl", int, False), ("expires", str, False),
                           ("remaining_ms", int, False), ("ten_bit", bool, False),
                           ("client", str, False)):
        v = getattr(info, name)
        if not (opt and v is None) and type(v) is not typ:
            raise ValueError(f"lease {name} has the wrong type")
    return info


def decode_lease_result(f: list[Any]) -> LeaseResult:
    """A LEASE_RESULT body; anything wrong is a fatal protocol violation by the server."""
    if len(f) != 3 or type(f[1]) is not int or not 0 < f[1] <= MAX_REQUEST_ID \
            or type(f[2]) is not dict:
        raise _bad(ErrorCode.MALFORMED, "LEASE_RESULT frame must be [9, id, map]", 0, True)
    rid, m = f[1], f[2]
    leases, token, released = m.get("leases"), m.get("token"), m.get("released")
    total, nxt = m.get("total"), m.get("next")
    try:
        if type(leases) is not list:
            raise ValueError("leases must be an array")
        infos = [_lease_info(x) for x in leases]
        if token is not None and check_token(token) is not None:
            raise ValueError("bad token")
        if released is not None and type(released) is not bool:
            raise ValueError("released must be a boolean")
        if total is not None and (type(total) is not int or total < 0):
            raise ValueError("total must be an integer >= 0")
        if nxt is not None and (type(nxt) is not str or not 0 < len(nxt) <= MAX_CURSOR):
            raise ValueError(f"next must be a string of 1..{MAX_CURSOR} chars")
    except ValueError as e:
        raise _bad(ErrorCode.MALFORMED, f"LEASE_RESULT: {e}", rid, True) from None
    return LeaseResult(rid, infos, token, released, total, nxt)

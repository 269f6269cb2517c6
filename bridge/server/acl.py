"""Per-client access rules: which buses, I2C addresses and SPI chip selects, read or write.

Rules come from the board file (``[[server.access]]``). With no rules at all
the server allows everything and never calls in here. With rules, access is
default-deny: a request runs only if, for every one of its messages, some rule
of that client (or of ``client = "*"``) matches the bus and the address / chip
select and allows the direction.

What counts as a write: an I2C request with ``M_RD`` clear and at least one data
byte, and any SPI transfer with a non-empty ``tx``. A zero-length I2C request
(a probe, SMBus quick) carries no data and counts as a read, so ``i2c detect``
works for read-only clients (see docs/security.md for the caveat).

Taking a lease locks others out, so it needs read-write access to the whole
leased scope: the address or chip select, or — for a bus-wide lease — a rule
that covers the entire bus.

A rule with ``admin = true`` grants the admin channel's ops (test control of
simulated chips, the live trace, lease administration; SPEC.md §4.10) on the
buses it covers, and nothing else: reads and writes need a rule of their own.
With no rules the server is open, admin ops included; once any rule exists,
admin ops need an admin rule (default deny, like everything else).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from protocol.events import I2CRequest, SpiRequest
from protocol.leases import LeaseOp, LeaseRequest
from protocol.virtio import I2C_FLAGS_M_RD

#: The client name of a connection that presented neither a token nor a certificate.
ANONYMOUS = "anonymous"


def _address_range(v: Any) -> Any:
    """``0x48``, ``"0x48"`` or ``"0x50-0x57"`` -> ``(lo, hi)``."""
    if isinstance(v, bool):
        raise ValueError("expected an address, not a boolean")
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, str):
        lo, sep, hi = v.partition("-")
        try:
            a = int(lo.strip(), 0)
            b = int(hi.strip(), 0) if sep else a
        except ValueError:
            raise ValueError(f"{v!r} is not an address or a range like \"0x50-0x57\"") from None
        return (a, b)
    return v


AddressRange = Annotated[tuple[int, int], BeforeValidator(_address_range)]


class AccessRule(BaseModel):
    """One ``[[server.access]]`` entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client: str = Field(min_length=1)
    bus: str = Field(min_length=1)
    addresses: list[AddressRange] | None = None
    ten_bit: bool = False
    chip_selects: list[Annotated[int, Field(ge=0, le=255)]] | None = None
    access: Literal["read-only", "read-write"] = "read-write"
    #: Grants the admin ops (SPEC.md §4.10) on the buses this rule covers; only those.
    admin: bool = False

    @model_validator(mode="after")
    def _check(self) -> AccessRule:
        if self.admin and self.model_fields_set & {"access", "addresses", "chip_selects",
                                                    "ten_bit"}:
            raise ValueError("an admin rule grants the admin ops on whole buses and nothing "
                             "else: leave out access, addresses and chip_selects, and give "
                             "reads and writes in a rule of their own")
        kind, sep, name = self.bus.partition(":")
        if self.bus != "*" and (not sep or kind not in ("i2c", "spi") or not name):
            raise ValueError(f"bus {self.bus!r} must be \"i2c:NAME\", \"spi:NAME\", "
                             "\"i2c:*\", \"spi:*\" or \"*\"")
        if self.addresses is not None:
            if kind != "i2c":
                raise ValueError("addresses apply to I2C buses only (bus = \"i2c:...\")")
            top = 0x3FF if self.ten_bit else 0x7F
            for lo, hi in self.addresses:
                if not 0 <= lo <= hi <= top:
                    raise ValueError(f"address range {lo:#x}-{hi:#x} is not within "
                                     f"0x00-{top:#x}")
        if self.chip_selects is not None and kind != "spi":
            raise ValueError("chip_selects apply to SPI buses only (bus = \"spi:...\")")
        return self

    @property
    def read_only(self) -> bool:
        return self.access == "read-only"

    def matches_bus(self, kind: str, bus: str) -> bool:
        if self.bus == "*":
            return True
        k, _, name = self.bus.partition(":")
        return k == kind and name in ("*", bus)

    def matches_target(self, kind: str, target: int, ten_bit: bool) -> bool:
        if kind == "i2c":
            if self.addresses is None:
                return True
            return ten_bit == self.ten_bit and any(lo <= target <= hi
                                                   for lo, hi in self.addresses)
        return self.chip_selects is None or target in self.chip_selects

    def describe(self, index: int) -> str:
        where = self.bus
        if self.addresses is not None:
            where += " " + ",".join(f"{lo:#04x}" if lo == hi else f"{lo:#04x}-{hi:#04x}"
                                    for lo, hi in self.addresses)
            if self.ten_bit:
                where += " (10-bit)"
        if self.chip_selects is not None:
            where += " cs " + ",".join(str(c) for c in self.chip_selects)
        what = "admin" if self.admin else self.access
        return f"access rule {index} (client {self.client!r}, {where}, {what})"


class Acl:
    """All rules of a board, compiled per client when that client's handshake succeeds."""

    def __init__(self, rules: list[AccessRule]) -> None:
        self.rules = list(enumerate(rules))

    def for_client(self, client: str) -> ClientAcl:
        return ClientAcl(client, [(i, r) for i, r in self.rules if r.client in ("*", client)])


class ClientAcl:
    """One client's rules; answers "may this request run?" with ``None`` or the reason."""

    def __init__(self, client: str, rules: list[tuple[int, AccessRule]]) -> None:
        self.client = client
        self.rules = rules
        #: (kind, bus, target, ten_bit) -> (may read, may write, rule that forbids writes)
        self._cache: dict[tuple[str, str, int, bool], tuple[bool, bool, str]] = {}

    def _verdict(self, kind: str, bus: str, target: int, ten_bit: bool) -> tuple[bool, bool, str]:
        key = (kind, bus, target, ten_bit)
        v = self._cache.get(key)
        if v is None:
            hits = [(i, r) for i, r in self.rules if not r.admin
                    and r.matches_bus(kind, bus) and r.matches_target(kind, target, ten_bit)]
            may_write = any(not r.read_only for _, r in hits)
            why = hits[0][1].describe(hits[0][0]) if hits and not may_write else ""
            v = self._cache[key] = (bool(hits), may_write, why)
        return v

    def check(self, ev: I2CRequest | SpiRequest | LeaseRequest) -> str | None:
        """``None`` if ``ev`` may run, else a message naming the rule (or its absence)."""
        who = f"client {self.client!r}"
        if isinstance(ev, LeaseRequest):
            return self._check_lease(ev, who)
        if isinstance(ev, I2CRequest):
            for i, m in enumerate(ev.msgs):
                is_write = not m.flags & I2C_FLAGS_M_RD and len(m.data) > 0
                may_read, may_write, why = self._verdict("i2c", ev.bus, m.addr, m.ten_bit)
                what = f"i2c bus {ev.bus!r} address {m.addr:#04x}" + (
                    " (10-bit)" if m.ten_bit else "")
                if not may_read:
                    return f"no access rule lets {who} use {what} (message {i})"
                if is_write and not may_write:
                    return f"{why} forbids writes: {what} (message {i})"
            return None
        may_read, may_write, why = self._verdict("spi", ev.bus, ev.cs, False)
        what = f"spi bus {ev.bus!r} cs {ev.cs}"
        if not may_read:
            return f"no access rule lets {who} use {what}"
        if not may_write:
            for i, t in enumerate(ev.transfers):
                if t.tx:
                    return f"{why} forbids writes: {what} (transfer {i} sends data)"
        return None

    def admin_denial(self, scopes: Iterable[tuple[str, str]]) -> str | None:
        """``None`` if an admin rule of this client covers every ``(kind, bus)`` of
        ``scopes``, else a message naming the first bus none covers."""
        admin = [r for _, r in self.rules if r.admin]
        for kind, bus in scopes:
            if not any(r.matches_bus(kind, bus) for r in admin):
                return (f"no access rule grants client {self.client!r} the admin ops on "
                        f"{kind} bus {bus!r} (an admin = true rule covering it)")
        return None

    def has_admin(self) -> bool:
        """Whether any admin rule applies to this client."""
        return any(r.admin for _, r in self.rules)

    def _check_lease(self, ev: LeaseRequest, who: str) -> str | None:
        if ev.op is not LeaseOp.TAKE:
            return None  # renew, release, list: only about leases the token already holds
        target = ev.address if ev.kind == "i2c" else ev.cs
        if target is None:
            ok = any(not r.read_only and not r.admin and r.matches_bus(ev.kind, ev.bus)
                     and (r.addresses if ev.kind == "i2c" else r.chip_selects) is None
                     for _, r in self.rules)
            what = f"{ev.kind} bus {ev.bus!r}"
        else:
            ok = self._verdict(ev.kind, ev.bus, target, target > 0x7F)[1]
            what = (f"i2c bus {ev.bus!r} address {target:#04x}" if ev.kind == "i2c"
                    else f"spi bus {ev.bus!r} cs {target}")
        if ok:
            return None
        return (f"no access rule lets {who} lease {what}: a lease needs read-write access "
                "to all of its scope")

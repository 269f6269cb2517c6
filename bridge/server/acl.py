"""Per-client access rules: which buses, I2C addresses and SPI chip selects, read or write.

Rules come from the board file (``[[server.access]]``). With no rules at all
the server allows everything and never calls in here. With rules, access is
default-deny: a request runs only if, for every one of its messages, some rule
of that client (or of ``client = "*"``) matches the bus and the address / chip
select and allows the direction.

Who a rule is for: ``token:NAME`` (a token of that name), ``cn:NAME`` (a
client certificate with that subject CN), ``anonymous`` (a client with
neither), ``*`` (everyone), or a bare ``NAME``: a token or a CN of that name.
A connection's identity is spelled the same way (:func:`token_identity`,
:func:`cert_identity`), so a certificate whose CN is ``anonymous`` or ``*`` is
``cn:anonymous`` / ``cn:*`` and can never pass for an unauthenticated client.

What counts as a write on I2C: a request with ``M_RD`` clear and at least one
data byte; a zero-length request (a probe, SMBus quick) counts as a read, so
``i2c detect`` works for read-only clients (see docs/security.md for the caveat).

SPI is full duplex: every transfer clocks bytes out on MOSI, a receive-only one
zeros (what Linux's SPI core sends without a tx buffer), and to a register chip
the first byte is a command whatever the client meant.  So a read-only rule
lets an SPI message run only if it lists ``read_commands`` and each chip-select
assertion of the message clocks out one of those commands followed by zeros
alone, in the rule's SPI mode, 8 bits per word, one wire: the only bytes that
reach the device are those the board's owner wrote down (:class:`ReadCommands`).

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

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from protocol.events import I2CRequest, SpiRequest
from protocol.leases import LeaseOp, LeaseRequest
from protocol.virtio import I2C_FLAGS_M_RD, SpiTransfer

#: The identity of a connection that presented neither a token nor a certificate.
ANONYMOUS = "anonymous"
TOKEN_PREFIX, CN_PREFIX = "token:", "cn:"

#: Verdicts a connection keeps; past this many the cache starts over (it is a cache).
MAX_CACHED_VERDICTS = 256


def token_identity(name: str) -> str:
    return TOKEN_PREFIX + name


def cert_identity(cn: str) -> str:
    return CN_PREFIX + cn


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


@dataclass(frozen=True)
class ReadCommands:
    """The MOSI patterns a read-only SPI rule admits, each a list of ``(mask, value)`` bytes.

    A pattern is written as bytes separated by spaces: two hex digits (``03``),
    ``xx`` for any byte (an address byte), or eight of ``0``/``1``/``x`` for a
    byte with some bits fixed (``1xxxxxxx``: bit 7 set, the read bit of ST and
    Bosch sensors).  A chip-select assertion matches if its MOSI bytes start
    with a whole pattern and every byte after it is 0x00.
    """

    patterns: tuple[tuple[tuple[int, int], ...], ...]

    @classmethod
    def parse(cls, texts: Sequence[str]) -> ReadCommands:
        out = []
        for text in texts:
            pat = []
            for tok in text.split():
                t = tok.lower().removeprefix("0x")
                if len(t) == 2 and t == "xx":
                    pat.append((0, 0))
                elif len(t) == 2 and all(c in "0123456789abcdef" for c in t):
                    pat.append((0xFF, int(t, 16)))
                elif len(t) == 8 and set(t) <= set("01x"):
                    pat.append((int(t.replace("0", "1").replace("x", "0"), 2),
                                int(t.replace("x", "0"), 2)))
                else:
                    raise ValueError(f"read command {text!r}: {tok!r} is not a byte (\"03\"), "
                                     "\"xx\" or eight bits of 0/1/x (\"1xxxxxxx\")")
            if not pat:
                raise ValueError("a read command has at least one byte")
            out.append(tuple(pat))
        return cls(tuple(out))

    def admits(self, mosi: bytes) -> bool:
        for pat in self.patterns:
            n = len(pat)
            if len(mosi) >= n and all(mosi[i] & m == v for i, (m, v) in enumerate(pat)) \
                    and not any(mosi[n:]):
                return True
        return False


def mosi_segments(transfers: Sequence[SpiTransfer]) -> list[tuple[int, bytes]]:
    """The bytes clocked out per chip-select assertion, with each one's first transfer.

    A receive-only transfer clocks zeros; ``cs_change`` on any but the last
    transfer ends an assertion (the last one's is dropped: the message ends).
    """
    segs: list[tuple[int, bytes]] = []
    cur, first = bytearray(), 0
    last = len(transfers) - 1
    for i, t in enumerate(transfers):
        cur += t.tx if t.tx is not None else bytes(t.rx_len)
        if t.head.cs_change and i < last:
            segs.append((first, bytes(cur)))
            cur, first = bytearray(), i + 1
    segs.append((first, bytes(cur)))
    return segs


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
    #: SPI, read-only: the commands a read may clock out (see :class:`ReadCommands`).
    read_commands: list[str] | None = None
    #: SPI, read-only: the devices' mode (CPOL << 1 | CPHA) reads must use.
    spi_mode: Annotated[int, Field(ge=0, le=3)] = 0

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
        for prefix in (TOKEN_PREFIX, CN_PREFIX):
            if self.client.startswith(prefix) and len(self.client) == len(prefix):
                raise ValueError(f"client {self.client!r} names no {prefix[:-1]}")
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
        if self.read_commands is not None:
            if kind != "spi" or self.access != "read-only":
                raise ValueError("read_commands belong to read-only rules of SPI buses "
                                 "(bus = \"spi:...\", access = \"read-only\")")
            ReadCommands.parse(self.read_commands)
        return self

    @property
    def read_only(self) -> bool:
        return self.access == "read-only"

    def commands(self) -> ReadCommands | None:
        return ReadCommands.parse(self.read_commands) if self.read_commands else None

    def matches_client(self, identity: str) -> bool:
        """Is this rule for a connection of ``identity`` (``token:X``, ``cn:X``, anonymous)?"""
        c = self.client
        if c == "*" or c == identity:
            return True
        if c == ANONYMOUS or c.startswith((TOKEN_PREFIX, CN_PREFIX)):
            return False
        return identity in (TOKEN_PREFIX + c, CN_PREFIX + c)  # a bare name: token or CN

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


@dataclass(frozen=True)
class Verdict:
    """What a client may do with one target: read, write, and which read-only rules apply."""

    may_read: bool
    may_write: bool
    #: The first matching rule, described, when it forbids writes.
    why: str
    #: Matching read-only SPI rules that list read commands: (description, commands, mode).
    reads: tuple[tuple[str, ReadCommands, int], ...] = ()


class Acl:
    """All rules of a board, compiled per client when that client's handshake succeeds."""

    def __init__(self, rules: list[AccessRule]) -> None:
        self.rules = list(enumerate(rules))

    def for_client(self, identity: str, buses: Collection[tuple[str, str]] | None = None
                   ) -> ClientAcl:
        """``identity``'s rules; ``buses`` (kind, name) are the board's, whose verdicts are
        cached (a bus name the client made up is judged, never remembered)."""
        return ClientAcl(identity, [(i, r) for i, r in self.rules if r.matches_client(identity)],
                         buses)


class ClientAcl:
    """One client's rules; answers "may this request run?" with ``None`` or the reason."""

    def __init__(self, client: str, rules: list[tuple[int, AccessRule]],
                 buses: Collection[tuple[str, str]] | None = None) -> None:
        self.client = client
        self.rules = rules
        self._commands = {i: r.commands() for i, r in rules}
        self._buses = frozenset(buses) if buses is not None else None
        #: (kind, bus, target, ten_bit) -> verdict, for the board's buses only, bounded.
        self._cache: dict[tuple[str, str, int, bool], Verdict] = {}

    def _verdict(self, kind: str, bus: str, target: int, ten_bit: bool) -> Verdict:
        key = (kind, bus, target, ten_bit)
        v = self._cache.get(key)
        if v is not None:
            return v
        hits = [(i, r) for i, r in self.rules
                if not r.admin and r.matches_bus(kind, bus)
                and r.matches_target(kind, target, ten_bit)]
        may_write = any(not r.read_only for _, r in hits)
        why = hits[0][1].describe(hits[0][0]) if hits and not may_write else ""
        reads = tuple((r.describe(i), c, r.spi_mode) for i, r in hits
                      if kind == "spi" and (c := self._commands[i]) is not None)
        v = Verdict(bool(hits), may_write, why, reads)
        if self._buses is None or (kind, bus) in self._buses:
            if len(self._cache) >= MAX_CACHED_VERDICTS:
                self._cache.clear()
            self._cache[key] = v
        return v

    def check(self, ev: I2CRequest | SpiRequest | LeaseRequest) -> str | None:
        """``None`` if ``ev`` may run, else a message naming the rule (or its absence)."""
        who = f"client {self.client!r}"
        if isinstance(ev, LeaseRequest):
            return self._check_lease(ev, who)
        if isinstance(ev, I2CRequest):
            for i, m in enumerate(ev.msgs):
                is_write = not m.flags & I2C_FLAGS_M_RD and len(m.data) > 0
                v = self._verdict("i2c", ev.bus, m.addr, m.ten_bit)
                if not v.may_read or (is_write and not v.may_write):
                    what = f"i2c bus {ev.bus!r} address {m.addr:#04x}" + (
                        " (10-bit)" if m.ten_bit else "")
                    if not v.may_read:
                        return f"no access rule lets {who} use {what} (message {i})"
                    return f"{v.why} forbids writes: {what} (message {i})"
            return None
        v = self._verdict("spi", ev.bus, ev.cs, False)
        what = f"spi bus {ev.bus!r} cs {ev.cs}"
        if not v.may_read:
            return f"no access rule lets {who} use {what}"
        if v.may_write:
            return None
        return _spi_read_only(v, ev, what)

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
            ten = ev.ten_bit
            ok = self._verdict(ev.kind, ev.bus, target, ten).may_write
            what = (f"i2c bus {ev.bus!r} address {target:#04x}" + (" (10-bit)" if ten else "")
                    if ev.kind == "i2c" else f"spi bus {ev.bus!r} cs {target}")
        if ok:
            return None
        return (f"no access rule lets {who} lease {what}: a lease needs read-write access "
                "to all of its scope")


def _spi_read_only(v: Verdict, ev: SpiRequest, what: str) -> str | None:
    """``None`` if some read-only rule's commands admit every assertion of ``ev``."""
    if not v.reads:
        return (f"{v.why} forbids writes: {what}: on SPI every transfer clocks bytes out on "
                "MOSI, and the rule lists no read_commands")
    for i, t in enumerate(ev.transfers):
        h = t.head
        if h.bits_per_word != 8 or h.tx_nbits > 1 or h.rx_nbits > 1 \
                or all(h.mode != mode for _, _, mode in v.reads):
            modes = "/".join(sorted({str(m) for _, _, m in v.reads}))
            return (f"{v.why} forbids writes: {what} (transfer {i}): a read-only transfer "
                    f"uses SPI mode {modes}, 8 bits per word and one wire")
    segments = mosi_segments(ev.transfers)
    for _rule, commands, mode in v.reads:
        if all(t.head.mode == mode for t in ev.transfers) \
                and all(commands.admits(mosi) for _, mosi in segments):
            return None
    for first, mosi in segments:
        if not any(c.admits(mosi) for _, c, _ in v.reads):
            shown = mosi[:8].hex(" ") + (" ..." if len(mosi) > 8 else "")
            return (f"{v.why} forbids writes: {what} (transfer {first}): MOSI {shown or 'empty'} "
                    "is none of its read_commands followed by zeros")
    return f"{v.why} forbids writes: {what}: no single read-only rule admits every transfer"

"""Leases (SPEC.md §4.8, §4.9, §8.6): take, busy, renew, release, list and their refusals.

Every lease the kit takes covers an address nothing answers at (or the loopback's chip
select), lives 30 s at most and is released before the check ends, so a shared board
is disturbed as little as possible.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..board import Board, ask, next_id
from ..model import check_lease_result, i2c_frame, rd, wr
from ..registry import Ctx, Fail, Skip, check
from ..wire import Conn


def lease(ctx: Ctx, c: Conn, op: str, params: dict[str, Any]) -> dict[str, Any]:
    rid = next_id()
    f = ask(ctx, c, [8, rid, op, params], f"LEASE_RESULT for {op}")
    if f.type == 5:
        raise Fail(f"LEASE {op} {params}: {f.brief()}")
    return check_lease_result(f, rid)


@contextmanager
def taken(ctx: Ctx, c: Conn, **params: Any) -> Iterator[dict[str, Any]]:
    """Take a lease for the duration of the block; always release it."""
    params.setdefault("ttl", 30)
    params.setdefault("holder", "busbridge conformance kit")
    res = lease(ctx, c, "take", params)
    token = res.get("token")
    if not isinstance(token, str) or len(res["leases"]) != 1:
        raise Fail(f"§4.9: take answered {res!r:.120}, expected one lease and a str token")
    try:
        yield res
    finally:
        try:
            lease(ctx, c, "release", {"token": token})
        except Exception:  # the check's own outcome matters more than the cleanup's
            with ctx.open() as c2:
                lease(ctx, c2, "release", {"token": token})


def _scope(ctx: Ctx) -> tuple[str, int]:
    board = Board(ctx)
    bus = board.need_i2c()
    return bus, board.absent(bus)


@check("ls.take-release", "§4.8 §4.9 §8.6")
def take_release(ctx: Ctx) -> str:
    """``take`` answers the lease and a token; ``release`` says true, then false (idempotent)."""
    bus, addr = _scope(ctx)
    c = ctx.open()
    res = lease(ctx, c, "take", {"kind": "i2c", "bus": bus, "address": addr, "ttl": 30,
                                 "holder": "kit"})
    token = res.get("token")
    if not isinstance(token, str):
        raise Fail(f"take answered no token: {res!r:.100}")
    (lz,) = res["leases"]
    want = {"kind": "i2c", "bus": bus, "address": addr, "cs": None, "holder": "kit", "ttl": 30}
    wrong = {k: lz[k] for k in want if lz[k] != want[k]}
    if wrong or not 0 < lz["remaining_ms"] <= 30_000:
        raise Fail(f"lease map differs from the take: {wrong}, remaining_ms {lz['remaining_ms']}")
    first = lease(ctx, c, "release", {"token": token})
    again = lease(ctx, c, "release", {"token": token})
    if first.get("released") is not True or again.get("released") is not False:
        raise Fail(f"release: {first.get('released')!r}, again: {again.get('released')!r}; "
                   "expected true then false")
    return f"lease {lz['id']} taken ({lz['expires']}), released: true, again: false"


@check("ls.busy", "§4.6 §8.6 §9.3 row 23")
def busy(ctx: Ctx) -> str:
    """Another connection's frame touching a leased address is refused whole with ``busy``."""
    bus, addr = _scope(ctx)
    holder = ctx.open()
    other = ctx.open()
    with taken(ctx, holder, kind="i2c", bus=bus, address=addr) as res:
        rid = next_id()
        other.send(i2c_frame(rid, bus, [rd(0x08, 0), wr(addr)]))
        _, msg = ctx.expect_error(other, "busy", rid, fatal=False, what="a frame on a leased addr")
        lease_id = res["leases"][0]["id"]
        # §4.6: the message is for people; only the token's absence is a MUST (§8.6).
        named = "names" if lease_id in msg else "does not name"
        if res["token"] in msg:
            raise Fail("the busy message publishes the lease's token (§8.6 MUST NOT)")
        mine = ask(ctx, holder, i2c_frame(next_id(), bus, [wr(addr)]))
        if mine.type != 4:
            raise Fail(f"the holder's own frame was refused: {mine.brief()}")
        token = res["token"]
        child = ctx.open(leases=[token])
        theirs = ask(ctx, child, i2c_frame(next_id(), bus, [wr(addr)]))
        if theirs.type != 4:
            raise Fail(f"a connection presenting the token in HELLO was refused: {theirs.brief()}")
    return (f"ERROR busy ({msg[:70]!r}, {named} lease {lease_id}, no token); holder and "
            "token-presenting connection run")


@check("ls.busy-spi", "§8.6")
def busy_spi(ctx: Ctx) -> str:
    """An SPI frame on a leased chip select is refused with ``busy``."""
    board = Board(ctx)
    bus, cs = board.loopback()
    holder, other = ctx.open(), ctx.open()
    with taken(ctx, holder, kind="spi", bus=bus, cs=cs):
        rid = next_id()
        other.send([3, rid, bus, cs, [board.xfer(bus, cs, b"\x00", 1).wire()], None])
        ctx.expect_error(other, "busy", rid, fatal=False, what="an SPI frame on a leased cs")
    return f"SPI bus {bus} cs {cs} leased: ERROR busy for another connection"


@check("ls.conflict", "§8.6")
def conflict(ctx: Ctx) -> str:
    """``take`` of a scope overlapping another's live lease is refused with ``busy``."""
    bus, addr = _scope(ctx)
    holder, other = ctx.open(), ctx.open()
    with taken(ctx, holder, kind="i2c", bus=bus, address=addr):
        for params in ({"address": addr}, {}):
            rid = next_id()
            other.send([8, rid, "take", {"kind": "i2c", "bus": bus, "ttl": 5, **params}])
            ctx.expect_error(other, "busy", rid, fatal=False, what=f"take {params or 'bus'}")
    return "the same address and the whole bus: ERROR busy"


@check("ls.renew", "§4.8 §8.6 §9")
def renew(ctx: Ctx) -> str:
    """``renew`` sets a new TTL; renewing a token no lease has is ``no-lease`` (non-fatal)."""
    bus, addr = _scope(ctx)
    c = ctx.open()
    with taken(ctx, c, kind="i2c", bus=bus, address=addr, ttl=5) as res:
        r = lease(ctx, c, "renew", {"token": res["token"], "ttl": 20})
        (lz,) = r["leases"]
        if lz["ttl"] != 20 or not 5_000 < lz["remaining_ms"] <= 20_000:
            raise Fail(f"renew ttl 20: ttl {lz['ttl']}, remaining_ms {lz['remaining_ms']}")
    rid = next_id()
    c.send([8, rid, "renew", {"token": "x" * 32}])
    ctx.expect_error(c, "no-lease", rid, fatal=False, what="renew of an unknown token")
    return "renew to 20 s: remaining_ms in (5000, 20000]; unknown token: ERROR no-lease"


@check("ls.list", "§4.8 §4.9")
def list_leases(ctx: Ctx) -> str:
    """``list`` shows every live lease, to anyone, and never a token."""
    bus, addr = _scope(ctx)
    holder, other = ctx.open(), ctx.open()
    with taken(ctx, holder, kind="i2c", bus=bus, address=addr) as res:
        got = lease(ctx, other, "list", {})
        ids = [x["id"] for x in got["leases"]]
        if res["leases"][0]["id"] not in ids:
            raise Fail(f"list from another connection lacks lease {res['leases'][0]['id']}")
        if res["token"] in repr(got):
            raise Fail("list shows the lease's token")
        if "token" in got:
            raise Fail("a list answer carries a token key")
    return f"list shows {len(ids)} lease(s), no token"


@check("ls.expiry", "§8.6")
def expiry(ctx: Ctx) -> str:
    """A lease dies at its TTL: 1.5 s after a 1 s take nobody is refused; renew is no-lease."""
    bus, addr = _scope(ctx)
    holder, other = ctx.open(), ctx.open()
    res = lease(ctx, holder, "take", {"kind": "i2c", "bus": bus, "address": addr, "ttl": 1})
    time.sleep(1.5)
    f = ask(ctx, other, i2c_frame(next_id(), bus, [wr(addr)]))
    if f.type != 4:
        raise Fail(f"1.5 s after a 1 s lease: {f.brief()}")
    rid = next_id()
    holder.send([8, rid, "renew", {"token": res["token"]}])
    ctx.expect_error(holder, "no-lease", rid, fatal=False, what="renew of an expired lease")
    return "frame accepted 1.5 s after a 1 s take; renew: ERROR no-lease"


def _bad(ctx: Ctx, op: Any, params: Any, code: str, what: str) -> str:
    c = ctx.open()
    rid = next_id()
    c.send([8, rid, op, params])
    ctx.expect_error(c, code, rid, fatal=False, what=what)
    return f"{what}: ERROR {code}"


def _lease_refusal(name: str, doc: str, code: str, params_fn: Any, op: Any = "take") -> None:
    def fn(ctx: Ctx) -> str:
        return _bad(ctx, op, params_fn(ctx), code, doc)

    fn.__doc__ = f"LEASE {doc}: non-fatal ``{code}``."
    check(name, "§4.8")(fn)


def _i2c(ctx: Ctx, **kw: Any) -> dict[str, Any]:
    bus, addr = _scope(ctx)
    return {"kind": "i2c", "bus": bus, "address": addr, "ttl": 5, **kw}


def _spi(ctx: Ctx, **kw: Any) -> dict[str, Any]:
    bus = Board(ctx).need_spi()
    return {"kind": "spi", "bus": bus, "ttl": 5, **kw}


def _cs_max(ctx: Ctx) -> dict[str, Any]:
    cfg = ctx.spi_config(Board(ctx).need_spi())
    if cfg.cs_max_number > 255:
        raise Skip("every cs is valid")
    return _spi(ctx, cs=cfg.cs_max_number)


_lease_refusal("ls.unknown-op", "op 'grab'", "bad-request", lambda ctx: {}, op="grab")
_lease_refusal("ls.op-not-str", "op 1 (not a str)", "malformed", lambda ctx: {}, op=1)
_lease_refusal("ls.params-not-map", "params as an array", "malformed", lambda ctx: [])
_lease_refusal("ls.unknown-kind", "kind 'usb'", "bad-request", lambda ctx: _i2c(ctx, kind="usb"))
_lease_refusal("ls.address-on-spi", "an address on an SPI lease", "bad-request",
               lambda ctx: _spi(ctx, address=0x10))
_lease_refusal("ls.cs-on-i2c", "a cs on an I2C lease", "bad-request",
               lambda ctx: _i2c(ctx, cs=0))
_lease_refusal("ls.ttl-0", "ttl 0", "bad-request", lambda ctx: _i2c(ctx, ttl=0))
_lease_refusal("ls.ttl-86401", "ttl 86401", "bad-request", lambda ctx: _i2c(ctx, ttl=86401))
_lease_refusal("ls.ttl-str", "ttl '5' (wrong type)", "malformed", lambda ctx: _i2c(ctx, ttl="5"))
_lease_refusal("ls.address-0x400", "address 0x400", "bad-request",
               lambda ctx: _i2c(ctx, address=0x400))
_lease_refusal("ls.holder-257", "a holder of 257 characters", "bad-request",
               lambda ctx: _i2c(ctx, holder="h" * 257))
_lease_refusal("ls.unknown-bus", "an unknown bus", "unknown-bus",
               lambda ctx: _i2c(ctx, bus=ctx.unknown_bus()))
_lease_refusal("ls.cs-too-big", "cs = cs_max_number", "bad-request", _cs_max)
_lease_refusal("ls.bad-token", "release of a badly formed token", "bad-request",
               lambda ctx: {"token": "short"}, op="release")

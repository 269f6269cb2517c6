"""The admin channel (SPEC.md §4.10-4.11) and its rows of the error table (§9.3).

ADMIN frames are an optional capability: the checks after HELLO run only against a
server whose WELCOME lists ``"admin"`` (§4.2) and SKIP otherwise.  They send only ops
that change nothing (``sim.devices``, refused ``sim.get``), so a shared board is not
disturbed.  ADMIN before HELLO is a request frame on every server (§9.3 row 10).
"""

from __future__ import annotations

from typing import Any

from ..board import Board, ask, next_id
from ..registry import Ctx, Fail, Skip, check
from ..wire import ADMIN, ADMIN_RESULT, Conn


def _admin_conn(ctx: Ctx) -> Conn:
    c = ctx.open()
    if "admin" not in (c.welcome or {}).get("capabilities", []):
        raise Skip("the server does not list the admin capability (§4.2)")
    return c


def _admin_refusal(name: str, section: str, doc: str, code: str, build: Any,
                   ruled: bool = False) -> None:
    """Register a check: an ADMIN frame gets a non-fatal ERROR ``code`` with its id.

    ``ruled``: §9.4 may put ``denied`` first on a server with access rules (the kit
    cannot see its admin rules), so the check SKIPs when the operator states rules.
    """

    def fn(ctx: Ctx) -> str:
        if ruled and ctx.policy.denied:
            raise Skip("access rules stated: denied may precede this refusal (§9.4)")
        c = _admin_conn(ctx)
        rid = next_id()
        c.send(build(ctx, rid))
        _, msg = ctx.expect_error(c, code, rid, fatal=False, what=doc)
        return f"ERROR {code} id {rid} ({msg[:60]!r}); connection kept"

    fn.__doc__ = f"ADMIN {doc}: non-fatal ``{code}`` with the frame's id."
    check(name, section)(fn)


def _device(ctx: Ctx, **kw: Any) -> dict[str, Any]:
    bus = Board(ctx).need_i2c()
    return {"kind": "i2c", "bus": bus, "addr": 0x48, **kw}


_admin_refusal("adm.item-count", "§4.10 §9.3 row 16", "[10, id, op] (3 items)", "malformed",
               lambda ctx, rid: [ADMIN, rid, "sim.devices"])
_admin_refusal("adm.op-not-str", "§4.10 §9.3 row 16", "op 5 (not a str)", "malformed",
               lambda ctx, rid: [ADMIN, rid, 5, {}])
_admin_refusal("adm.params-not-map", "§4.10 §9.3 row 16", "params as an array", "malformed",
               lambda ctx, rid: [ADMIN, rid, "sim.devices", []])
_admin_refusal("adm.param-type", "§3 §4.10 §9.3 row 16", "sim.devices with bus 5 (an int)",
               "malformed", lambda ctx, rid: [ADMIN, rid, "sim.devices", {"bus": 5}])
_admin_refusal("adm.missing-param", "§4.10 §9.3 row 16", "sim.get without kind",
               "malformed", lambda ctx, rid: [ADMIN, rid, "sim.get",
                                              {k: v for k, v in _device(ctx).items()
                                               if k != "kind"}])
_admin_refusal("adm.unknown-op", "§4.10 §9.3 row 20", "op 'sim.nope'", "bad-request",
               lambda ctx, rid: [ADMIN, rid, "sim.nope", {}], ruled=True)
_admin_refusal("adm.addr-and-cs", "§4.10 §9.3 row 20", "sim.get with both addr and cs",
               "bad-request", lambda ctx, rid: [ADMIN, rid, "sim.get", _device(ctx, cs=0)],
               ruled=True)
_admin_refusal("adm.unknown-bus", "§4.10 §9.3 row 25", "sim.get on a bus the board lacks",
               "unknown-bus", lambda ctx, rid: [ADMIN, rid, "sim.get",
                                                _device(ctx, bus=ctx.unknown_bus())],
               ruled=True)


@check("adm.devices", "§4.10 §4.11")
def devices(ctx: Ctx) -> str:
    """``sim.devices`` is answered by one ADMIN_RESULT with its id and a ``devices`` array."""
    c = _admin_conn(ctx)
    rid = next_id()
    f = ask(ctx, c, [ADMIN, rid, "sim.devices", {}], "ADMIN_RESULT for sim.devices")
    o = f.obj
    if f.type != ADMIN_RESULT or len(o) != 3 or o[1] != rid or not isinstance(o[2], dict):
        if f.type == 5 and len(o) == 4 and o[2] in ("denied", "bad-request"):
            raise Skip(f"sim.devices refused here: {f.brief()} (§4.10, §8.7)")
        raise Fail(f"expected ADMIN_RESULT [11, {rid}, map], got {f.brief()}")
    devs = o[2].get("devices")
    if not isinstance(devs, list) or not all(isinstance(d, dict) for d in devs):
        raise Fail(f"§4.10: sim.devices result has no devices array of maps: {f.brief()}")
    ctx.alive(c)
    return f"ADMIN_RESULT {rid}: {len(devs)} simulated devices"

"""Every test vector of SPEC.md §12, parsed from the document at run time and replayed.

Client-to-server vectors are sent to the live server byte for byte and the answers
judged (against the paired server-to-client vector where the board allows a
comparison).  Server-to-client vectors are held against the kit's own frame rules
(so the kit and the document agree) and, where the condition can be provoked, against
what the live server sends in the same situation, messages aside: clients MUST NOT
parse them (§4.5).  Struct vectors are rebuilt with the kit's encoders.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..board import Board, ask, next_id
from ..model import (
    FAIL_NEXT,
    M_RD,
    Head,
    Msg,
    SpiConfig,
    Violation,
    Xfer,
    addr7,
    addr10,
    check_error,
    check_i2c_result,
    check_lease_result,
    check_pong,
    check_result_shape,
    check_spi_result,
    check_welcome,
    out_hdr,
)
from ..registry import PROVIDERS, Check, Ctx, Fail, Skip
from ..spec import Vector, parse_vectors
from ..wire import ADMIN_RESULT, ERROR, EVENT, decode_body, frame
from .leases import taken


def _vectors(ctx: Ctx) -> dict[str, Vector]:
    vs, _ = parse_vectors(ctx.spec_text)
    return {v.name: v for v in vs}


def _obj(v: Vector) -> Any:
    f = decode_body(v.body)
    if f.problem:
        raise Fail(f"vector {v.name} does not decode: {f.problem}")
    return f.obj


def _event_agrees(v: Vector, obj: Any) -> None:
    """The ``event`` line's id= and code= say what the bytes say."""
    ev = v.fields.get("event", "")
    m = re.search(r"\bid=(\d+)", ev)
    if m and isinstance(obj, list) and obj[1] != int(m.group(1)):
        raise Fail(f"vector {v.name}: event says id={m.group(1)}, bytes say {obj[1]}")
    m = re.search(r'\bcode="([^"]+)"', ev)
    if m and obj[2] != m.group(1):
        raise Fail(f"vector {v.name}: event says code {m.group(1)}, bytes say {obj[2]}")


def _shape(obj: Any) -> Any:
    """Keys and value types, recursively: what two WELCOMEs/LEASE_RESULTs must share."""
    if isinstance(obj, dict):
        return {k: _shape(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_shape(obj[0])] if obj else []
    return type(obj).__name__


def _same_shape(vec: Any, live: Any, path: str = "") -> None:
    if isinstance(vec, dict):
        if not isinstance(live, dict):
            raise Fail(f"{path or 'map'}: the server sent {live!r}, the vector a map")
        for k in vec:
            if k not in live:
                raise Fail(f"{path}{k}: in the vector, missing from the server's answer")
            _same_shape(vec[k], live[k], f"{path}{k}.")
    elif isinstance(vec, list):
        if vec and live and isinstance(live, list):
            _same_shape(vec[0], live[0], path)
    elif vec != live and {vec, live} != {"NoneType", "int"}:
        raise Fail(f"{path.rstrip('.')}: {live} in the server's answer, {vec} in the vector")


def _msgs(obj: list[Any]) -> list[Msg]:
    return [Msg(int.from_bytes(r[0][:2], "little"), int.from_bytes(r[0][4:], "little"), r[1])
            for r in obj[3]]


def _xfers(obj: list[Any]) -> list[Xfer]:
    return [Xfer(Head.unpack(t[0]), t[1], t[2]) for t in obj[4]]


def _pair(ctx: Ctx, rid: int) -> Any:
    for v in _vectors(ctx).values():
        if v.role == "server-to-client" and v.body[1:2] == b"\x04" and _obj(v)[1] == rid:
            return _obj(v)
    return None


# -- client-to-server --------------------------------------------------------------


def _replay_hello(ctx: Ctx, v: Vector, obj: Any) -> str:
    c = ctx.raw()
    c.send_bytes(v.data)
    has_token = "token" in obj[2]
    refused = ctx.target.token is not None and (has_token or not ctx.target.certfile)
    if refused:
        _, msg = ctx.expect_error(c, "unauthorized", 0, fatal=True, what=v.name)
        ref = _obj(_vectors(ctx)["error-unauthorized"])
        return f"server with tokens: ERROR unauthorized id 0 like {ref[:3]} ({msg!r})"
    f = ctx.recv(c, "WELCOME")
    w = check_welcome(f)
    small = _vectors(ctx).get("welcome-small-board")
    if small is not None:
        _same_shape(_shape(_obj(small)[2]), _shape(w))
    return "WELCOME, with the keys and types of vector welcome-small-board"


def _replay_request(ctx: Ctx, v: Vector, obj: Any) -> str:
    c = ctx.open()
    kind = obj[0]
    buses = ctx.i2c_buses() if kind == 2 else ctx.spi_buses()
    f = ask(ctx, c, obj, f"the answer to vector {v.name}")
    rid = obj[1]
    if obj[2] not in {b["name"] for b in buses}:
        got_id, code, _ = check_error(f)
        if (got_id, code) != (rid, "unknown-bus"):
            raise Fail(f"bus {obj[2]!r} is not on this board: expected ERROR unknown-bus {rid}")
        return f"bus {obj[2]!r} not on this board: ERROR unknown-bus {rid}"
    try:
        r = (check_i2c_result(f, rid, _msgs(obj)) if kind == 2
             else check_spi_result(f, rid, _xfers(obj)))
    except Violation as e:
        raise Fail(f"{v.name}: {e}; got {f.brief()}") from None
    pair = _pair(ctx, rid)
    note = ""
    if pair is not None and set(pair[2]) == {0} and set(r.status) == {0}:
        if (len(pair[2]), [len(x) for x in pair[3]]) != (len(r.status), [len(x) for x in r.reads]):
            raise Fail(f"{v.name}: RESULT {r} does not have the shape of {pair}")
        note = f"; same shape as its RESULT vector (data {[x.hex() for x in r.reads]})"
    return f"RESULT {rid}: status {r.status.hex(' ')}{note}"


def _replay_ping(ctx: Ctx, v: Vector, obj: Any) -> str:
    c = ctx.open()
    c.send_bytes(v.data)
    f = ctx.recv(c, "PONG")
    check_pong(f, obj[1])
    pong = _vectors(ctx).get("pong")
    if pong is not None and frame(f.obj) != pong.data:
        raise Fail(f"PONG bytes {frame(f.obj).hex(' ')} differ from vector pong")
    return "PONG, byte for byte the vector pong"


def _replay_lease(ctx: Ctx, v: Vector, obj: Any) -> str:
    c = ctx.open()
    f = ask(ctx, c, obj, f"the answer to {v.name}")
    op = obj[2]
    bus = obj[3].get("bus")
    if op == "take" and bus not in {b["name"] for b in ctx.i2c_buses() + ctx.spi_buses()}:
        got_id, code, _ = check_error(f)
        if (got_id, code) != (obj[1], "unknown-bus"):
            raise Fail(f"bus {bus!r} is not on this board: expected ERROR unknown-bus {obj[1]}")
        return f"bus {bus!r} not on this board: ERROR unknown-bus {obj[1]}"
    if op == "renew":
        ctx_id, code, _ = check_error(f)
        if (ctx_id, code) != (obj[1], "no-lease"):
            raise Fail(f"renew of the example token: expected ERROR no-lease, got {f.brief()}")
        return "example token unknown here: ERROR no-lease (§8.6)"
    if f.type == 5:
        raise Fail(f"{v.name}: {f.brief()}")
    m = check_lease_result(f, obj[1])
    paired = {"take": "lease-result-take", "release": "lease-result-release"}.get(op)
    if op == "take":
        c2 = ctx.open()
        ask(ctx, c2, [8, next_id(), "release", {"token": m["token"]}])
    if paired and paired in _vectors(ctx):
        ref = _obj(_vectors(ctx)[paired])[2]
        if op == "release":
            ref = {**ref, "released": False}
        _same_shape(_shape(ref), _shape(m))
    return f"LEASE_RESULT for {op}" + (f", with the keys and types of {paired}" if paired else "")


def _replay_admin(ctx: Ctx, v: Vector, obj: Any) -> str:
    """§4.10: an ADMIN frame is answered once, ADMIN_RESULT or a permitted ERROR."""
    c = ctx.open()
    if "admin" not in (c.welcome or {}).get("capabilities", []):
        raise Skip("the server does not list the admin capability (§4.2)")
    f = ask(ctx, c, obj, f"the answer to vector {v.name}")
    if f.type == ERROR:
        rid, code, msg = check_error(f)
        allowed = {"denied", "bad-request", "unknown-bus"}
        if rid != obj[1] or code not in allowed:
            raise Fail(f"{v.name}: expected ADMIN_RESULT or ERROR {sorted(allowed)} with id "
                       f"{obj[1]}, got {f.brief()}")
        return f"ERROR {code} id {rid} ({msg[:60]!r}): a refusal §4.10/§8.7 allow here"
    o = f.obj
    if f.type != ADMIN_RESULT or len(o) != 3 or o[1] != obj[1] or not isinstance(o[2], dict):
        raise Fail(f"{v.name}: expected ADMIN_RESULT [11, {obj[1]}, map], got {f.brief()}")
    pair = {"sim.set": "admin-result-sim-set", "trace.start": "admin-result-trace-start"}.get(
        obj[2])
    if pair is not None and pair in _vectors(ctx):
        _same_shape(_shape(_obj(_vectors(ctx)[pair])[2]), _shape(o[2]))
        return f"ADMIN_RESULT {obj[1]} with the keys and types of vector {pair}"
    return f"ADMIN_RESULT {obj[1]}"


# -- server-to-client --------------------------------------------------------------


def _judge_server_vector(ctx: Ctx, v: Vector, obj: Any) -> str:
    f = decode_body(v.body)
    t = obj[0]
    try:
        if t == 1:
            w = check_welcome(f)
            live = ctx.open().welcome
            if "capabilities" in w and "capabilities" not in (live or {}):
                raise Skip("valid WELCOME; the live server lists no capabilities (§4.2)")
            _same_shape(_shape(w), _shape(live))
            return "valid WELCOME; the live WELCOME has its keys and types"
        if t == 4:
            check_result_shape(f)
            return "valid RESULT (§4.5); live counterparts: the request vectors, dl.*, spi.*"
        if t == 5:
            return _judge_error(ctx, v, obj)
        if t == 7:
            check_pong(f, obj[1])
            return "valid PONG (replayed by vector ping)"
        if t == 9:
            check_lease_result(f, obj[1])
            return "valid LEASE_RESULT (replayed by the lease vectors)"
        if t in (ADMIN_RESULT, EVENT) and len(obj) == 3 and isinstance(obj[1], int) \
                and isinstance(obj[2], dict):
            return (f"valid {'ADMIN_RESULT' if t == ADMIN_RESULT else 'EVENT'} "
                    f"[{t}, id, map] (§4.11, §4.12)")
    except Violation as e:
        raise Fail(f"the kit's rules reject vector {v.name}: {e}") from None
    raise Fail(f"vector {v.name}: frame type {t} is not server-to-client")


def _judge_error(ctx: Ctx, v: Vector, obj: Any) -> str:
    check_error(decode_body(v.body))
    code = obj[2]
    if code == "unknown-bus":
        c = ctx.open()
        bus = ctx.unknown_bus()
        live = ask(ctx, c, [2, obj[1], bus, [[out_hdr(0x10, M_RD), 0]], None])
    elif code == "handshake-required":
        c = ctx.raw()
        c.send_bytes(frame([2, next_id(), "1", [[out_hdr(0x10, M_RD), 0]], None]))
        live = ctx.recv(c, "ERROR handshake-required")
    elif code == "unauthorized":
        if ctx.target.token is None:
            raise Skip("valid ERROR; the server has no tokens, so it cannot be provoked")
        c = ctx.raw()
        c.send([0, 0, ctx.hello_map(token="s3cret-t0ken")])
        live = ctx.recv(c, "ERROR unauthorized")
    elif code == "busy":
        return _live_busy(ctx, obj)
    elif code == "denied" and ctx.policy.denied:
        bus, _, addr = ctx.policy.denied.partition("@")
        c = ctx.open()
        live = ask(ctx, c, [2, obj[1], bus, [[out_hdr(addr7(int(addr, 0)), 0), b"\x00"]], None])
    elif _refusers(ctx, v.name):
        ref = _refusers(ctx, v.name)[0]
        return f"valid; live: {_replay_refused(ctx, ref)} (through vector {ref.name})"
    else:
        raise Skip(f"valid ERROR {code}; pol.{code} provokes it when the policy is stated")
    lid, lcode, _ = check_error(live)
    if [lid, lcode] != obj[1:3]:
        raise Fail(f"live answer {live.brief()} differs from vector {v.name} in id or code")
    return f"valid; the live server sent ERROR {lcode} id {lid} in the same situation"


def _live_busy(ctx: Ctx, obj: Any) -> str:
    board = Board(ctx)
    bus = board.need_i2c()
    addr = board.absent(bus)
    holder, other = ctx.open(), ctx.open()
    with taken(ctx, holder, kind="i2c", bus=bus, address=addr):
        live = ask(ctx, other, [2, obj[1], bus, [[out_hdr(addr7(addr), 0), b""]], None])
    lid, lcode, msg = check_error(live)
    if [lid, lcode] != obj[1:3]:
        raise Fail(f"live answer {live.brief()} differs from the vector in id or code")
    return f"valid; live: ERROR busy id {lid} ({msg[:60]!r})"


# -- refused (§12, §12.19) ------------------------------------------------------------


def _refused_keys(v: Vector, by_name: dict[str, Vector]) -> tuple[str, Vector, bool]:
    """A refused vector's normative keys: (state, the ERROR vector it names, fatal)."""
    state = v.fields.get("state", "").strip()
    fatal = v.fields.get("fatal", "").strip()
    answer = by_name.get(v.fields.get("answer", "").strip())
    if state not in ("before-hello", "open"):
        raise Fail(f"vector {v.name}: state {state!r} is not before-hello or open (§12)")
    if fatal not in ("yes", "no"):
        raise Fail(f"vector {v.name}: fatal {fatal!r} is not yes or no (§12)")
    if answer is None or answer.role != "server-to-client" or answer.body[1:2] != b"\x05":
        raise Fail(f"vector {v.name}: answer {v.fields.get('answer')!r} names no ERROR vector")
    return state, answer, fatal == "yes"


def _replay_refused(ctx: Ctx, v: Vector) -> str:
    """§12.19: send the bytes (after a handshake for ``open``); the ERROR of ``answer``."""
    state, answer, fatal = _refused_keys(v, _vectors(ctx))
    want = _obj(answer)
    c = ctx.open() if state == "open" else ctx.raw()
    c.send_bytes(v.data)
    _, msg = ctx.expect_error(c, want[2], want[1], fatal=fatal, what=f"vector {v.name}")
    return (f"{state}: ERROR {want[2]} id {want[1]} like vector {answer.name} ({msg[:50]!r}), "
            + ("then closed" if fatal else "connection kept"))


def _refusers(ctx: Ctx, error_name: str) -> list[Vector]:
    return [v for v in _vectors(ctx).values()
            if v.role == "refused" and v.fields.get("answer", "").strip() == error_name]


# -- structs -----------------------------------------------------------------------


def _numbers(text: str) -> dict[str, int]:
    return {k: int(n, 0) for k, n in re.findall(r"([a-z_]+) (0x[0-9a-fA-F]+|\d+)", text)}


def _judge_struct(ctx: Ctx, v: Vector) -> str:
    kind, value = v.fields.get("struct", "").strip(), v.fields.get("value", "")
    if kind == "virtio_i2c_out_hdr":
        m = re.search(r"addr (0x[0-9a-fA-F]+) \((7|10)-bit\)", value)
        if not m:
            raise Fail(f"vector {v.name}: cannot read its value line")
        a = int(m.group(1), 16)
        field = addr10(a) if m.group(2) == "10" else addr7(a)
        flags = (FAIL_NEXT if "FAIL_NEXT" in value else 0) | (M_RD if "M_RD" in value else 0)
        built = out_hdr(field, flags)
    elif kind == "spi_transfer_head":
        n = _numbers(value)
        built = Head(n["chip_select_id"], n["bits_per_word"], n["cs_change"], n["tx_nbits"],
                     n["rx_nbits"], n["mode"], n["freq"], n["word_delay_ns"], n["cs_setup_ns"],
                     n["cs_delay_hold_ns"], n["cs_change_delay_inactive_ns"]).pack()
    elif kind == "virtio_spi_config":
        cfg = SpiConfig.unpack(v.data)
        n = _numbers(value)
        wrong = {k: (getattr(cfg, k), n[k]) for k in n if getattr(cfg, k) != n[k]}
        if wrong:
            raise Fail(f"vector {v.name}: decoded fields differ from its value line: {wrong}")
        return "decodes to its value line, field by field"
    else:
        raise Fail(f"vector {v.name}: unknown struct {kind!r}")
    if built != v.data:
        raise Fail(f"the kit encodes {value!r} as {built.hex(' ')}, the vector says "
                   f"{v.data.hex(' ')}")
    return "the kit's encoder reproduces it byte for byte"


# -- the checks --------------------------------------------------------------------


def _make(name: str, section: str, role: str) -> Check:
    def fn(ctx: Ctx) -> str:
        v = _vectors(ctx).get(name)
        if v is None:
            raise Fail(f"vector {name} vanished from SPEC.md")
        if v.role == "struct":
            return _judge_struct(ctx, v)
        if len(v.data) < 4 or int.from_bytes(v.data[:4], "big") != len(v.body):
            raise Fail(f"vector {name}: length prefix does not match its body")
        if v.role == "refused":
            return _replay_refused(ctx, v)
        obj = _obj(v)
        _event_agrees(v, obj)
        if v.role == "server-to-client":
            return _judge_server_vector(ctx, v, obj)
        handlers: dict[int, Callable[[Ctx, Vector, Any], str]] = {
            0: _replay_hello, 2: _replay_request, 3: _replay_request, 6: _replay_ping,
            8: _replay_lease, 10: _replay_admin}
        if obj[0] not in handlers:
            raise Fail(f"vector {name}: frame type {obj[0]} is not client-to-server")
        return handlers[obj[0]](ctx, v, obj)

    fn.__doc__ = f"Vector {name} ({role}) replayed against the live server."
    return Check(f"vec.{name}", section, f"vector {name}", fn)


def _consistent(ctx: Ctx) -> str:
    vs, annotated = parse_vectors(ctx.spec_text)
    names = [v.name for v in vs]
    if len(set(names)) != len(names):
        raise Fail("vector names are not unique")
    bad = [v.name for v in vs if annotated.get(v.name) != v.data]
    if bad:
        raise Fail(f"annotated bytes differ from the vector (or are missing): {bad}")
    roles = {v.role for v in vs} - {"client-to-server", "server-to-client", "struct", "refused"}
    if roles:
        raise Fail(f"unknown roles {roles}")
    by_name = {v.name: v for v in vs}
    refused = [v for v in vs if v.role == "refused"]
    for v in refused:
        _refused_keys(v, by_name)
    return (f"{len(vs)} vectors, each with an annotated block spelling the same bytes; "
            f"{len(refused)} refused vectors name their ERROR vector, state and fatality")


def provide(spec_text: str) -> list[Check]:
    vs, _ = parse_vectors(spec_text)
    out = [Check("vec.annotated-agree", "§12", "annotated blocks spell the vectors", _consistent)]
    out += [_make(v.name, v.section, v.role) for v in vs]
    return out


PROVIDERS.append(provide)



"""ADMIN / ADMIN_RESULT / EVENT frames: the one channel for admin-only functions.

Test control of simulated chips (``sim.*``), the live transaction trace
(``trace.*``) and lease administration (``lease.release``) are ops of ONE
request frame (SPEC.md §4.10-4.12).  ``[10, id, op, params]`` is answered by
``[11, id, result]`` or an ERROR; an op that opens a subscription
(``trace.start``) is followed by ``[12, id, event]`` frames carrying its id
until ``trace.stop`` is answered or the connection ends.

Params are hand-checked here, op by op, like the other request frames: a
param of the wrong type is ``malformed``, an out-of-range value or an unknown
op ``bad-request``.  What an op does is the server's business; the map
layouts every side shares (trace events, log entries) are built here, so the
server's trace and the simulator's log describe a transaction the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from .errors import ErrorCode, ProtocolError
from .limits import MAX_BUS_NAME, MAX_REQUEST_ID
from .virtio import I2C_FLAGS_FAIL_NEXT, I2C_FLAGS_M_RD, I2CMsg, SpiTransfer

#: Ops that open a subscription: their id then carries EVENT frames.
SUBSCRIBE_OPS: Final = frozenset({"trace.start"})
#: Ops that end the subscription named by their ``id`` param once answered.
UNSUBSCRIBE_OPS: Final = frozenset({"trace.stop"})
#: Most entries one ``sim.log`` answer holds.
MAX_LOG_LIMIT = 1000
DEFAULT_LOG_LIMIT = 100
#: What a quantity's or a fault parameter's value may be on the wire.
SCALARS = (int, float, bool, str)
KINDS = ("i2c", "spi")


class AdminRequest:
    """``[10, id, op, params]``: ``params`` has been checked for ``op`` (if known)."""

    __slots__ = ("id", "op", "params")

    def __init__(self, id: int, op: str, params: Mapping[str, Any] | None = None) -> None:
        self.id = id
        self.op = op
        self.params: dict[str, Any] = dict(params or {})

    def __eq__(self, other: object) -> bool:
        return (type(other) is AdminRequest and other.id == self.id and other.op == self.op
                and other.params == self.params)

    def __repr__(self) -> str:
        return f"AdminRequest(id={self.id!r}, op={self.op!r}, params={self.params!r})"


class AdminResult:
    """``[11, id, result]``: the answer to an ADMIN request; the map depends on its op."""

    __slots__ = ("id", "result")

    def __init__(self, id: int, result: Mapping[str, Any] | None = None) -> None:
        self.id = id
        self.result: dict[str, Any] = dict(result or {})

    def __eq__(self, other: object) -> bool:
        return type(other) is AdminResult and other.id == self.id and other.result == self.result

    def __repr__(self) -> str:
        return f"AdminResult(id={self.id!r}, result={self.result!r})"


class AdminEvent:
    """``[12, id, event]``: one event of the subscription opened by ADMIN request ``id``."""

    __slots__ = ("event", "id")

    def __init__(self, id: int, event: Mapping[str, Any]) -> None:
        self.id = id
        self.event: dict[str, Any] = dict(event)

    def __eq__(self, other: object) -> bool:
        return type(other) is AdminEvent and other.id == self.id and other.event == self.event

    def __repr__(self) -> str:
        return f"AdminEvent(id={self.id!r}, event={self.event!r})"


class Subscriptions:
    """Which ids carry EVENT frames on one connection: both sides keep this alike.

    An ADMIN request whose op opens a subscription (``SUBSCRIBE_OPS``) opens it
    when its ADMIN_RESULT passes; one that ends a subscription
    (``UNSUBSCRIBE_OPS``, naming it in its ``id`` param) ends it when its
    ADMIN_RESULT passes.  An ERROR answer changes nothing.
    """

    __slots__ = ("_opening", "_stopping", "live")

    def __init__(self) -> None:
        self._opening: set[int] = set()
        self._stopping: dict[int, int] = {}
        #: The open subscriptions, by the id of the request that opened them.
        self.live: set[int] = set()

    def requested(self, ev: AdminRequest) -> None:
        """ADMIN request ``ev`` went in flight."""
        if ev.op in SUBSCRIBE_OPS:
            self._opening.add(ev.id)
        elif ev.op in UNSUBSCRIBE_OPS and type(ev.params.get("id")) is int:
            self._stopping[ev.id] = ev.params["id"]

    def admit(self, f: list[Any]) -> AdminRequest:
        """Decode a received ADMIN frame; refuse one whose id names a live subscription."""
        ev = decode_admin(f)
        if ev.op in SUBSCRIBE_OPS and ev.id in self.live:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"request id {ev.id} names a live "
                                "subscription: pick another id", request_id=ev.id)
        return ev

    def event(self, f: list[Any]) -> AdminEvent:
        """Decode a received EVENT frame: fatal unless it is of an open subscription."""
        ev = decode_admin_event(f)
        if ev.id not in self.live:
            raise ProtocolError(ErrorCode.MALFORMED, f"EVENT for id {ev.id}, which names no "
                                "open subscription", fatal=True)
        return ev

    def answered(self, rid: int, ok: bool) -> None:
        """Request ``rid`` was answered: ``ok`` with its ADMIN_RESULT, else an ERROR
        (or it was withdrawn)."""
        if rid in self._opening:
            self._opening.discard(rid)
            if ok:
                self.live.add(rid)
        if self._stopping:
            target = self._stopping.pop(rid, None)
            if target is not None and ok:
                self.live.discard(target)


# ---------------------------------------------------------------------------
# Checking params, op by op
# ---------------------------------------------------------------------------


def _bad(code: ErrorCode, msg: str, rid: int, fatal: bool = False) -> ProtocolError:
    return ProtocolError(code, msg, request_id=rid, fatal=fatal)


class _Params:
    """Typed reads of one params map, each refusal naming the op and the key."""

    def __init__(self, op: str, p: dict[str, Any], rid: int) -> None:
        self.op, self.p, self.rid = op, p, rid

    def malformed(self, msg: str) -> ProtocolError:
        return _bad(ErrorCode.MALFORMED, f"ADMIN {self.op}: {msg}", self.rid)

    def invalid(self, msg: str) -> ProtocolError:
        return _bad(ErrorCode.BAD_REQUEST, f"ADMIN {self.op}: {msg}", self.rid)

    def text(self, key: str, required: bool, limit: int = 256) -> str | None:
        v = self.p.get(key)
        if v is None:
            if required:
                raise self.malformed(f"{key} (a string) is required")
            return None
        if type(v) is not str:
            raise self.malformed(f"{key} must be a string")
        if not 0 < len(v) <= limit:
            raise self.invalid(f"{key} must be 1..{limit} characters")
        return v

    def integer(self, key: str, lo: int, hi: int, required: bool = False) -> int | None:
        v = self.p.get(key)
        if v is None:
            if required:
                raise self.malformed(f"{key} (an integer) is required")
            return None
        if type(v) is not int:
            raise self.malformed(f"{key} must be an integer")
        if not lo <= v <= hi:
            raise self.invalid(f"{key} {v} out of range {lo}..{hi}")
        return v

    def flag(self, key: str) -> bool | None:
        v = self.p.get(key)
        if v is not None and type(v) is not bool:
            raise self.malformed(f"{key} must be a boolean")
        return v

    def kind(self, required: bool) -> str | None:
        kind = self.text("kind", required)
        if kind is not None and kind not in KINDS:
            raise self.invalid(f"kind must be 'i2c' or 'spi', not {kind!r}")
        return kind

    def bus(self, required: bool) -> str | None:
        return self.text("bus", required, MAX_BUS_NAME)

    def target(self, kind: str | None, required: bool) -> None:
        """``addr`` (+ ``ten_bit``) for I2C, ``cs`` for SPI; one of them when ``required``."""
        addr = self.integer("addr", 0, 0x3FF)
        cs = self.integer("cs", 0, 0xFF)
        ten = self.flag("ten_bit")
        if addr is not None and cs is not None:
            raise self.invalid("give addr (I2C) or cs (SPI), not both")
        if kind == "spi" and addr is not None:
            raise self.invalid("an SPI device is named by cs, not addr")
        if kind == "i2c" and cs is not None:
            raise self.invalid("an I2C device is named by addr, not cs")
        if addr is not None and addr > 0x7F and not ten:
            raise self.invalid(f"addr {addr:#x} is above 0x7f: set ten_bit for a 10-bit address")
        if required and (addr if kind == "i2c" else cs) is None:
            raise self.malformed(f"{'addr' if kind == 'i2c' else 'cs'} is required")

    def scalars(self, m: Any, what: str) -> None:
        if type(m) is not dict:
            raise self.malformed(f"{what} must be a map")
        for k, v in m.items():
            if type(k) is not str:
                raise self.malformed(f"{what}: names must be strings")
            if not isinstance(v, SCALARS):
                raise self.malformed(f"{what}: {k} must be a number, boolean or string")


_DEVICE_KEYS = ("kind", "bus", "addr", "cs", "ten_bit")


def _device(p: _Params) -> None:
    p.target(p.kind(True), True)
    p.bus(True)


def _check_sim_devices(p: _Params) -> None:
    p.bus(False)


def _check_sim_set(p: _Params) -> None:
    _device(p)
    values = p.p.get("values")
    if values is None:
        raise p.malformed("values (a map of name to value) is required")
    p.scalars(values, "values")
    if not values:
        raise p.invalid("values is empty: name at least one quantity")


def _check_sim_fault(p: _Params) -> None:
    _device(p)
    p.text("fault", True, 64)
    p.scalars({k: v for k, v in p.p.items() if k not in (*_DEVICE_KEYS, "fault")},
              "fault parameters")


def _check_sim_screenshot(p: _Params) -> None:
    kind = p.kind(False) or "i2c"
    p.target(kind, True)
    p.bus(True)
    p.integer("scale", 1, 16)


def _check_sim_log(p: _Params) -> None:
    p.kind(True)
    p.bus(True)
    p.integer("since", 0, (1 << 63) - 1)
    p.integer("limit", 1, MAX_LOG_LIMIT)


def _check_trace_start(p: _Params) -> None:
    kind = p.kind(False)
    p.bus(False)
    p.target(kind, False)


def _check_trace_stop(p: _Params) -> None:
    p.integer("id", 1, MAX_REQUEST_ID, required=True)


def _check_lease_release(p: _Params) -> None:
    p.text("lease", True, 64)


#: Every op this version knows, with its params check (SPEC.md §4.10).
OPS: Final[dict[str, Callable[[_Params], None]]] = {
    "sim.devices": _check_sim_devices,
    "sim.get": _device,
    "sim.set": _check_sim_set,
    "sim.fault": _check_sim_fault,
    "sim.screenshot": _check_sim_screenshot,
    "sim.log": _check_sim_log,
    "trace.start": _check_trace_start,
    "trace.stop": _check_trace_stop,
    "lease.release": _check_lease_release,
}


def check_params(rid: int, op: str, params: dict[str, Any]) -> None:
    """Refuse ``params`` that ``op`` cannot take: ProtocolError malformed / bad-request."""
    check = OPS.get(op)
    if check is None:
        raise _bad(ErrorCode.BAD_REQUEST,
                   f"unknown admin op {op!r} (ops: {', '.join(OPS)})", rid)
    check(_Params(op, params, rid))


def decode_admin(f: list[Any]) -> AdminRequest:
    """An ADMIN frame body (unpacked): never fatal, every refusal carries the id if valid."""
    rid = f[1] if type(f[1]) is int and 0 < f[1] <= MAX_REQUEST_ID else 0
    if len(f) != 4:
        raise _bad(ErrorCode.MALFORMED, "ADMIN frame must be [10, id, op, params]", rid)
    if not rid:
        raise _bad(ErrorCode.MALFORMED, f"request id must be an integer 1..{MAX_REQUEST_ID}", 0)
    op, params = f[2], f[3]
    if type(op) is not str or type(params) is not dict:
        raise _bad(ErrorCode.MALFORMED, "ADMIN op must be a string and params a map", rid)
    check_params(rid, op, params)
    return AdminRequest(rid, op, params)


def _server_map(f: list[Any], name: str, number: int) -> tuple[int, dict[str, Any]]:
    if (len(f) != 3 or type(f[1]) is not int or not 0 < f[1] <= MAX_REQUEST_ID
            or type(f[2]) is not dict):
        raise _bad(ErrorCode.MALFORMED, f"{name} frame must be [{number}, id, map]", 0, True)
    return f[1], f[2]


def decode_admin_result(f: list[Any]) -> AdminResult:
    """An ADMIN_RESULT body; a wrong shape is a fatal violation by the server."""
    return AdminResult(*_server_map(f, "ADMIN_RESULT", 11))


def decode_admin_event(f: list[Any]) -> AdminEvent:
    """An EVENT body; a wrong shape is a fatal violation by the server."""
    return AdminEvent(*_server_map(f, "EVENT", 12))


# ---------------------------------------------------------------------------
# The maps that describe one transaction (trace events, simulator log entries)
# ---------------------------------------------------------------------------


def i2c_messages(msgs: Sequence[I2CMsg], reads: Sequence[bytes], status: bytes | None = None
                 ) -> list[dict[str, Any]]:
    """Per message: address, direction, length, the bytes moved, its status, chain end.

    ``reads`` holds one entry per read message in order (fewer: the rest did not
    complete); ``status`` one byte per message (None: all OK).
    """
    out = []
    it = iter(reads)
    for i, m in enumerate(msgs):
        rd = bool(m.flags & I2C_FLAGS_M_RD)
        st = status[i] if status is not None and i < len(status) else 0
        data = next(it, b"") if rd else m.data
        out.append({"addr": m.addr, "ten_bit": m.ten_bit, "rw": "r" if rd else "w",
                    "len": m.length if rd else len(m.data), "data": bytes(data), "status": st,
                    "end": not m.flags & I2C_FLAGS_FAIL_NEXT})
    if out:
        out[-1]["end"] = True
    return out


def spi_transfers(transfers: Sequence[SpiTransfer], rx: Sequence[bytes],
                  status: bytes | None = None) -> list[dict[str, Any]]:
    """Per transfer: what went out, what came in, the head's fields and its status."""
    out = []
    it = iter(rx)
    for i, t in enumerate(transfers):
        h = t.head
        out.append({"tx": t.tx, "rx": bytes(next(it, b"")) if t.rx_len else b"",
                    "len": t.length, "rx_len": t.rx_len,
                    "status": status[i] if status is not None and i < len(status) else 0,
                    "bits_per_word": h.bits_per_word, "mode": int(h.mode), "freq": h.freq,
                    "cs_change": h.cs_change, "word_delay_ns": h.word_delay_ns,
                    "cs_setup_ns": h.cs_setup_ns, "cs_hold_ns": h.cs_delay_hold_ns,
                    "cs_inactive_ns": h.cs_change_delay_inactive_ns})
    return out


def chain_status(n: int, index: int | None, err: int = 1) -> bytes:
    """The status bytes of a chain/message of ``n`` that failed at ``index`` (None: none)."""
    if index is None:
        return bytes(n)
    k = min(max(index, 0), n)
    return bytes(k) + bytes([err]) * (n - k)


__all__ = [
    "DEFAULT_LOG_LIMIT",
    "MAX_LOG_LIMIT",
    "OPS",
    "SUBSCRIBE_OPS",
    "UNSUBSCRIBE_OPS",
    "AdminEvent",
    "AdminRequest",
    "AdminResult",
    "Subscriptions",
    "chain_status",
    "check_params",
    "decode_admin",
    "decode_admin_event",
    "decode_admin_result",
    "i2c_messages",
    "spi_transfers",
]

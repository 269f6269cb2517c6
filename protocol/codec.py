"""Pure encode/decode of every busbridge frame: events to bytes and back, no state.

Frames are a 4-byte big-endian length followed by one msgpack array whose first two items are
the frame type and the request id (see ``SPEC.md``). Request frames are checked by hand rather
than with pydantic: they are the hot path, and hand checks cost about a third as much per frame.

Nothing here knows whether a handshake happened or which ids are in flight: that is
:class:`~protocol.connection.Connection`'s job, and it calls these functions. They are public so
that peers, tests and tools can build and take apart frames without a connection. Decoders raise
:class:`ProtocolError` (with the request id when it could be read); encoders raise
:class:`LocalProtocolError`. The LEASE / LEASE_RESULT and ADMIN / ADMIN_RESULT / EVENT decoders
live beside their events in :mod:`protocol.leases` and :mod:`protocol.admin` (their maps have
many fields). The only state kept is two caches of virtio-i2c headers, bounded because only
valid headers are stored.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final

import msgpack
from pydantic import ValidationError

from .accel import result_body, result_frame
from .admin import AdminEvent, AdminRequest, AdminResult
from .errors import ErrorCode, LocalProtocolError, ProtocolError
from .events import (
    ChainedI2CRequest,
    Error,
    Event,
    Failure,
    FrameType,
    Hello,
    I2CRequest,
    Ping,
    Pong,
    Result,
    SpiRequest,
    Welcome,
)
from .handshake import WIRE, HelloInfo, WelcomeInfo
from .leases import LeaseRequest, LeaseResult
from .limits import (
    MAX_BUS_NAME,
    MAX_REQUEST_ID,
    MAX_STR,
    MAX_TIMEOUT_MS,
    PROTOCOL_VERSION,
    RESULT_BASE,
    RESULT_PER_REQUEST,
    Limits,
    result_room,
)
from .virtio import (
    I2C_FLAGS_FAIL_NEXT,
    I2C_FLAGS_KNOWN,
    I2C_FLAGS_M_RD,
    I2C_OUT_HDR,
    I2C_OUT_HDR_SIZE,
    SPI_TRANSFER_HEAD_SIZE,
    I2CMsg,
    SpiTransfer,
    SpiTransferHead,
    decode_i2c_addr,
    encode_i2c_addr,
)

Buffer = bytes | bytearray | memoryview

_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack
_PREFIX = struct.Struct(">I")
#: ``pack_prefix(len(body)) + body`` is a frame (:func:`frame`, without the call).
pack_prefix: Final = _PREFIX.pack
#: ``unpack_prefix(buf, pos)[0]``: the body length of the frame starting at ``pos``.
unpack_prefix: Final = _PREFIX.unpack_from

_HELLO = int(FrameType.HELLO)
_WELCOME = int(FrameType.WELCOME)
_I2C: Final = int(FrameType.I2C)
_SPI = int(FrameType.SPI)
_RESULT: Final = int(FrameType.RESULT)
_ERROR = int(FrameType.ERROR)
_PING = int(FrameType.PING)
_PONG = int(FrameType.PONG)
_LEASE = int(FrameType.LEASE)
_LEASE_RESULT = int(FrameType.LEASE_RESULT)
_ADMIN = int(FrameType.ADMIN)
_ADMIN_RESULT = int(FrameType.ADMIN_RESULT)
_EVENT = int(FrameType.EVENT)

#: No limit: what :func:`encode_i2c` checks lengths against without ``peer`` limits.
_UNLIMITED = 1 << 62


def frame(body: bytes) -> bytes:
    """Prefix a msgpack body with its length."""
    return pack_prefix(len(body)) + body


# ---------------------------------------------------------------------------
# Encoding: one encoder per frame type
# ---------------------------------------------------------------------------

#: ``(addr, flags, ten_bit)`` -> encoded ``out_hdr``; bounded like the decoder's cache
#: because only encodable headers are stored.
_HDR_OUT: dict[tuple[int, int, bool], bytes] = {}


def _encode_hdr(addr: int, flags: int, ten: bool) -> bytes:
    """Encode one ``out_hdr`` (the cache's miss path)."""
    try:
        field = encode_i2c_addr(addr, ten)
    except ValueError as e:
        raise LocalProtocolError(str(e)) from None
    try:
        hdr = I2C_OUT_HDR.pack(field, 0, flags)
    except struct.error as e:
        raise LocalProtocolError(f"I2C flags {flags!r}: {e}") from None
    if not flags & ~I2C_FLAGS_KNOWN:  # reserved bits go out as given, uncached
        _HDR_OUT[addr, flags, ten] = hdr
    return hdr


def _no_room(rx: int, cap: int) -> LocalProtocolError:
    return LocalProtocolError(
        f"reads total {rx} bytes: the RESULT would not fit in max_frame {cap}")


def _check_target(bus: Any, timeout_ms: Any) -> None:
    """Refuse locally what every server refuses as ``malformed`` (SPEC.md §4.3, §10).

    The bus name and ``timeout_ms`` of a request frame, checked before anything is
    sent, so a caller's mistake is its own exception and not an ERROR later.
    """
    if type(bus) is not str or not 0 < len(bus) <= MAX_BUS_NAME:
        raise LocalProtocolError(f"bus must be a string of 1..{MAX_BUS_NAME} characters, "
                                 f"got {bus!r:.80}")
    if timeout_ms is not None and (type(timeout_ms) is not int
                                   or not 0 < timeout_ms <= MAX_TIMEOUT_MS):
        raise LocalProtocolError(f"timeout_ms must be None or 1..{MAX_TIMEOUT_MS}, "
                                 f"got {timeout_ms!r}")


def _count_ok(n: int, peer: Limits) -> None:
    if not n:
        raise LocalProtocolError("a request needs at least one message")
    if n > peer.max_requests:
        raise LocalProtocolError(f"{n} requests in one frame; limit {peer.max_requests}")


def encode_i2c(ev: I2CRequest, peer: Limits | None = None, result_cap: int = 0) -> bytes:
    """The body of an I2C frame (a :class:`ChainedI2CRequest` marked as one chain).

    With ``peer`` (the receiver's limits) it also refuses, in the same pass,
    what the receiver would refuse: too many or too long messages, a frame
    that ends inside a chain, reads whose RESULT would not fit in
    ``result_cap`` bytes.  Without it, the event is encoded as it is (tests
    build the frames a server must refuse this way).
    """
    msgs = ev.msgs
    maxlen = _UNLIMITED
    if peer is not None:
        _check_target(ev.bus, ev.timeout_ms)
        if not 0 < len(msgs) <= peer.max_requests:  # the call only to raise the precise error
            _count_ok(len(msgs), peer)
        maxlen = peer.max_i2c_len
    chained = type(ev) is ChainedI2CRequest
    last = len(msgs) - 1 if chained else -1
    cache = _HDR_OUT
    reqs = []
    rx = 0
    flags = 0
    for i, m in enumerate(msgs):
        addr = m.addr
        flags = m.flags
        if chained:
            flags = flags | I2C_FLAGS_FAIL_NEXT if i < last else flags & ~I2C_FLAGS_FAIL_NEXT
        ten = m.ten_bit
        hdr = cache.get((addr, flags, ten))
        if hdr is None:
            hdr = _encode_hdr(addr, flags, ten)
        buf: bytes | int
        if flags & I2C_FLAGS_M_RD:
            buf = n = m.length
            if n < 0 and peer is not None:
                raise LocalProtocolError(f"{m.describe()}: read length {n} is negative")
            rx += n
        else:
            buf = m.data
            n = len(buf)
        if n > maxlen:
            raise LocalProtocolError(f"{m.describe()}: {n} bytes; limit {maxlen}")
        reqs.append([hdr, buf])
    if peer is not None:
        if flags & I2C_FLAGS_FAIL_NEXT:
            raise LocalProtocolError("last message has FAIL_NEXT set")
        if RESULT_BASE + RESULT_PER_REQUEST * len(reqs) + rx > result_cap:
            raise _no_room(rx, result_cap)
    return _packb([_I2C, ev.id, ev.bus, reqs, ev.timeout_ms])


def encode_spi(ev: SpiRequest, peer: Limits | None = None, result_cap: int = 0) -> bytes:
    """The body of an SPI frame; ``peer`` and ``result_cap`` as for :func:`encode_i2c`."""
    transfers = ev.transfers
    if peer is not None:
        _check_target(ev.bus, ev.timeout_ms)
        _count_ok(len(transfers), peer)
        for t in transfers:
            if t.rx_len < 0:
                raise LocalProtocolError(f"SPI rx_len {t.rx_len} is negative")
            if t.length > peer.max_spi_len:
                raise LocalProtocolError(f"SPI transfer of {t.length} bytes; "
                                         f"limit {peer.max_spi_len}")
        rx = sum(t.rx_len for t in transfers)
        if result_room(len(transfers), rx) > result_cap:
            raise _no_room(rx, result_cap)
    try:
        xfers = [[t.head.pack(), t.tx, t.rx_len] for t in transfers]
    except struct.error as e:  # a head field that does not fit its virtio width
        raise LocalProtocolError(f"cannot encode SpiRequest: {e}") from None
    return _packb([_SPI, ev.id, ev.bus, ev.cs, xfers, ev.timeout_ms])


def encode_result(ev: Result) -> bytes:
    fails = ev.failures
    if not fails and type(fails) is list:
        body = result_body(ev.id, ev.status, ev.reads)  # C when built (accel.py)
        if body is not None:
            return body
    if fails:
        return _packb([_RESULT, ev.id, ev.status, ev.reads,
                       [[f.index, f.errno, f.message] for f in fails]])
    return _packb([_RESULT, ev.id, ev.status, ev.reads, fails])


def frame_result(ev: Result) -> bytes:
    """``frame(encode_result(ev))``: the common RESULT's whole frame in one piece."""
    fails = ev.failures
    if not fails and type(fails) is list:
        data = result_frame(ev.id, ev.status, ev.reads)  # C when built (accel.py)
        if data is not None:
            return data
    body = encode_result(ev)
    return pack_prefix(len(body)) + body


def encode_error(ev: Error) -> bytes:
    return _packb([_ERROR, ev.id, ev.code.value, ev.message])


def encode_ping(ev: Ping) -> bytes:
    return _packb([_PING, ev.id])


def encode_pong(ev: Pong) -> bytes:
    return _packb([_PONG, ev.id])


def encode_lease(ev: LeaseRequest) -> bytes:
    return _packb([_LEASE, ev.id, ev.op.value, ev.params()])


def encode_lease_result(ev: LeaseResult) -> bytes:
    return _packb([_LEASE_RESULT, ev.id, ev.to_map()])


def encode_admin(ev: AdminRequest) -> bytes:
    return _packb([_ADMIN, ev.id, ev.op, ev.params])


def encode_admin_result(ev: AdminResult) -> bytes:
    return _packb([_ADMIN_RESULT, ev.id, ev.result])


def encode_admin_event(ev: AdminEvent) -> bytes:
    return _packb([_EVENT, ev.id, ev.event])


def encode_hello(ev: Hello) -> bytes:
    return _packb([_HELLO, 0, ev.info.model_dump()])


def encode_welcome(ev: Welcome) -> bytes:
    return _packb([_WELCOME, 0, ev.info.model_dump()])


_ENCODERS: dict[type[Any], Callable[[Any], bytes]] = {
    Hello: encode_hello,
    Welcome: encode_welcome,
    I2CRequest: encode_i2c,
    ChainedI2CRequest: encode_i2c,
    SpiRequest: encode_spi,
    Result: encode_result,
    Error: encode_error,
    Ping: encode_ping,
    Pong: encode_pong,
    LeaseRequest: encode_lease,
    LeaseResult: encode_lease_result,
    AdminRequest: encode_admin,
    AdminResult: encode_admin_result,
    AdminEvent: encode_admin_event,
}


def encode_body(event: Event) -> bytes:
    """The msgpack body of ``event`` (without the length prefix), checked against no limits."""
    encode = _ENCODERS.get(type(event))
    if encode is None:
        raise TypeError(f"not a protocol event: {event!r}")
    return encode(event)


# ---------------------------------------------------------------------------
# Decoding: the body, then one decoder per frame type
# ---------------------------------------------------------------------------


def _bad(code: ErrorCode, msg: str, rid: int = 0, fatal: bool = False) -> ProtocolError:
    return ProtocolError(code, msg, request_id=rid, fatal=fatal)


def unpacker(limits: Limits, client: bool) -> Callable[[Buffer], Any]:
    """``msgpack.unpackb`` bounded so that no object over ``limits`` is ever built.

    Results hold up to ``max_requests`` reads; WELCOME lists buses in maps, so a client
    allows more array items and map pairs than a server.  A closure, not a
    ``functools.partial``, which would copy its keyword dict on every call.
    """
    max_bin = max(limits.max_i2c_len, limits.max_spi_len, 64)
    max_array, max_map = max(limits.max_requests, 1024 if client else 8), 1024 if client else 64
    unpackb = msgpack.unpackb

    def unpack(body: Buffer) -> Any:
        return unpackb(body, max_bin_len=max_bin, max_str_len=MAX_STR,
                       max_array_len=max_array, max_map_len=max_map, max_ext_len=0)

    return unpack


def request_id_or_0(v: Any) -> int:
    """``v`` if it is a valid request id, else 0 (for refusals of frames whose id is bad)."""
    return v if type(v) is int and 0 < v <= MAX_REQUEST_ID else 0


def _check_id(v: Any) -> int:
    if type(v) is not int or not 0 < v <= MAX_REQUEST_ID:
        raise _bad(ErrorCode.MALFORMED, f"request id must be an integer 1..{MAX_REQUEST_ID}")
    return v


def _check_bus(v: Any, rid: int) -> str:
    if type(v) is not str or not 0 < len(v) <= MAX_BUS_NAME:
        raise _bad(ErrorCode.MALFORMED, f"bus must be a string of 1..{MAX_BUS_NAME} chars", rid)
    return v


def _check_timeout(v: Any, rid: int) -> int | None:
    if v is None:
        return None
    if type(v) is not int or not 0 < v <= MAX_TIMEOUT_MS:
        raise _bad(ErrorCode.MALFORMED, f"timeout_ms must be nil or 1..{MAX_TIMEOUT_MS}", rid)
    return v


def _check_result_room(n: int, rx: int, limits: Limits, rid: int) -> None:
    if result_room(n, rx) > limits.max_frame:
        raise _bad(ErrorCode.LIMIT_EXCEEDED,
                   f"reads total {rx} bytes: the RESULT would not fit in max_frame "
                   f"{limits.max_frame}", rid)


def _check_list(v: Any, what: str, limit: int, rid: int) -> list[Any]:
    if type(v) is not list or not v:
        raise _bad(ErrorCode.MALFORMED, f"{what} must be a non-empty array", rid)
    if len(v) > limit:
        raise _bad(ErrorCode.LIMIT_EXCEEDED, f"{len(v)} {what} in one frame; limit {limit}", rid)
    return v


#: Decoded ``out_hdr`` bytes -> ``(addr, flags, ten_bit)``.  Only valid headers
#: are stored, and there are at most (128 + 1024) addresses x 4 flag words of
#: them, so the cache is bounded without eviction.
_HDR_CACHE: Final[dict[bytes, tuple[int, int, bool]]] = {}


def _decode_hdr(hdr: Any, i: int, rid: int) -> tuple[int, int, bool]:
    """Validate and decode one ``out_hdr`` (the cache's miss path)."""
    if type(hdr) is not bytes or len(hdr) != I2C_OUT_HDR_SIZE:
        raise _bad(ErrorCode.MALFORMED, f"I2C request {i}: out_hdr must be 8 bytes", rid)
    field, pad, flags = I2C_OUT_HDR.unpack(hdr)
    if flags & ~I2C_FLAGS_KNOWN:
        raise _bad(ErrorCode.BAD_REQUEST,
                   f"I2C request {i}: reserved flag bits set ({flags:#x})", rid)
    try:
        addr, ten = decode_i2c_addr(field)
    except ValueError as e:
        raise _bad(ErrorCode.BAD_REQUEST, f"I2C request {i}: {e}", rid) from None
    if pad:  # the padding is ignored, like the device does; such headers are not cached
        return addr, flags, ten
    decoded = _HDR_CACHE[hdr] = (addr, flags, ten)
    return decoded


def decode_i2c(f: list[Any], limits: Limits) -> I2CRequest:
    """An I2C frame (``f`` is the unpacked body), checked against the receiver's ``limits``."""
    if len(f) != 5:
        raise _bad(ErrorCode.MALFORMED, "I2C frame must have 5 items", request_id_or_0(f[1]))
    # Inline fast checks; the helpers run only to raise the precise error.
    _t, rid, bus, reqs, timeout = f
    if type(rid) is not int or not 0 < rid <= MAX_REQUEST_ID:
        _check_id(rid)
    if type(bus) is not str or not 0 < len(bus) <= MAX_BUS_NAME:
        _check_bus(bus, rid)
    if type(reqs) is not list or not 0 < len(reqs) <= limits.max_requests:
        _check_list(reqs, "I2C requests", limits.max_requests, rid)
    if timeout is not None:
        _check_timeout(timeout, rid)
    maxlen = limits.max_i2c_len
    cache = _HDR_CACHE
    msgs = []
    rx = 0
    i = 0
    flags = 0
    for r in reqs:
        if type(r) is not list or len(r) != 2:
            raise _bad(ErrorCode.MALFORMED, f"I2C request {i} must be [out_hdr, buf]", rid)
        hdr, buf = r
        decoded = cache.get(hdr) if type(hdr) is bytes else None
        addr, flags, ten = decoded or _decode_hdr(hdr, i, rid)
        if flags & I2C_FLAGS_M_RD:
            if type(buf) is not int or buf < 0:
                raise _bad(ErrorCode.MALFORMED,
                           f"I2C request {i}: M_RD set, buf must be a read length", rid)
            if buf > maxlen:
                raise _bad(ErrorCode.LIMIT_EXCEEDED,
                           f"I2C request {i}: read of {buf} bytes; limit {maxlen}", rid)
            msgs.append(I2CMsg(addr, flags, b"", buf, ten))
            rx += buf
        else:
            if type(buf) is not bytes:
                raise _bad(ErrorCode.MALFORMED,
                           f"I2C request {i}: M_RD clear, buf must be binary data", rid)
            if len(buf) > maxlen:
                raise _bad(ErrorCode.LIMIT_EXCEEDED,
                           f"I2C request {i}: write of {len(buf)} bytes; limit {maxlen}", rid)
            msgs.append(I2CMsg(addr, flags, buf, 0, ten))
        i += 1
    if flags & I2C_FLAGS_FAIL_NEXT:
        raise _bad(ErrorCode.BAD_REQUEST,
                   "last I2C request has FAIL_NEXT set: the frame ends inside a chain", rid)
    if RESULT_BASE + RESULT_PER_REQUEST * i + rx > limits.max_frame:
        _check_result_room(i, rx, limits, rid)
    return I2CRequest(rid, bus, tuple(msgs), timeout)


def decode_spi(f: list[Any], limits: Limits) -> SpiRequest:
    """An SPI frame, checked against the receiver's ``limits``."""
    if len(f) != 6:
        raise _bad(ErrorCode.MALFORMED, "SPI frame must have 6 items", request_id_or_0(f[1]))
    _t, rid, bus, cs, items, timeout = f
    # Inline fast checks; the helpers run only to raise the precise error.
    if type(rid) is not int or not 0 < rid <= MAX_REQUEST_ID:
        _check_id(rid)
    if type(bus) is not str or not 0 < len(bus) <= MAX_BUS_NAME:
        _check_bus(bus, rid)
    if type(cs) is not int or not 0 <= cs <= 0xFF:
        raise _bad(ErrorCode.MALFORMED, "chip select must be an integer 0..255", rid)
    if type(items) is not list or not 0 < len(items) <= limits.max_requests:
        _check_list(items, "SPI transfers", limits.max_requests, rid)
    if timeout is not None:
        _check_timeout(timeout, rid)
    maxlen = limits.max_spi_len
    transfers = []
    rx = 0
    for i, t in enumerate(items):
        if type(t) is not list or len(t) != 3:
            raise _bad(ErrorCode.MALFORMED, f"SPI transfer {i} must be [head, tx, rx_len]", rid)
        head, tx, rx_len = t
        if type(head) is not bytes or len(head) != SPI_TRANSFER_HEAD_SIZE:
            raise _bad(ErrorCode.MALFORMED,
                       f"SPI transfer {i}: head must be {SPI_TRANSFER_HEAD_SIZE} bytes", rid)
        if tx is not None and type(tx) is not bytes:
            raise _bad(ErrorCode.MALFORMED, f"SPI transfer {i}: tx must be nil or binary", rid)
        if type(rx_len) is not int or rx_len < 0:
            raise _bad(ErrorCode.MALFORMED, f"SPI transfer {i}: rx_len must be >= 0", rid)
        n = max(len(tx) if tx is not None else 0, rx_len)
        if n > maxlen:
            raise _bad(ErrorCode.LIMIT_EXCEEDED,
                       f"SPI transfer {i}: {n} bytes; limit {maxlen}", rid)
        h = SpiTransferHead.unpack(head)
        if h.chip_select_id != cs:
            raise _bad(ErrorCode.BAD_REQUEST,
                       f"SPI transfer {i}: head chip_select_id {h.chip_select_id} "
                       f"!= frame chip select {cs}", rid)
        transfers.append(SpiTransfer(h, tx, rx_len))
        rx += rx_len
    if RESULT_BASE + RESULT_PER_REQUEST * len(transfers) + rx > limits.max_frame:
        _check_result_room(len(transfers), rx, limits, rid)
    return SpiRequest(rid, bus, cs, tuple(transfers), timeout)


def decode_result(f: list[Any]) -> Result:
    """A RESULT frame; anything wrong is a fatal violation by the server."""
    if len(f) != 5:
        raise _bad(ErrorCode.MALFORMED, "RESULT frame must have 5 items", fatal=True)
    _t, rid, status, reads, fails = f
    if type(rid) is not int or not 0 < rid <= MAX_REQUEST_ID:
        _check_id(rid)
    if type(status) is not bytes or type(reads) is not list or type(fails) is not list:
        raise _bad(ErrorCode.MALFORMED, "RESULT frame: bad item types", rid, fatal=True)
    for r in reads:
        if type(r) is not bytes:
            raise _bad(ErrorCode.MALFORMED, "RESULT frame: reads must be binary", rid,
                       fatal=True)
    if not fails:
        return Result(rid, status, reads, fails)
    failures = []
    for x in fails:
        if (type(x) is not list or len(x) != 3 or type(x[0]) is not int
                or type(x[1]) is not int or type(x[2]) is not str):
            raise _bad(ErrorCode.MALFORMED, "RESULT frame: bad failure entry", rid, fatal=True)
        failures.append(Failure(x[0], x[1], x[2]))
    return Result(rid, status, reads, failures)


def decode_error(f: list[Any]) -> Error:
    """An ERROR frame; unknown codes from newer peers degrade to ``internal``."""
    if len(f) != 4 or type(f[1]) is not int or type(f[2]) is not str or type(f[3]) is not str:
        raise _bad(ErrorCode.MALFORMED, "ERROR frame must be [5, id, code, message]", fatal=True)
    try:
        return Error(f[1], ErrorCode(f[2]), f[3])
    except ValueError:  # keep the text of a code this version does not know
        return Error(f[1], ErrorCode.INTERNAL, f"{f[2]}: {f[3]}")


def _ping_id(f: list[Any], what: str) -> int:
    """The id of a PING or PONG; a refusal carries id 0 (they are not request frames)."""
    if len(f) != 2:
        raise _bad(ErrorCode.MALFORMED, f"{what} frame must be [{f[0]}, id]")
    return _check_id(f[1])


def decode_ping(f: list[Any]) -> Ping:
    return Ping(_ping_id(f, "PING"))


def decode_pong(f: list[Any]) -> Pong:
    return Pong(_ping_id(f, "PONG"))


def _handshake_map(f: list[Any], model: type[HelloInfo] | type[WelcomeInfo]) -> Any:
    if len(f) != 3 or type(f[2]) is not dict:
        raise _bad(ErrorCode.MALFORMED, "handshake frame must be [type, 0, map]", fatal=True)
    try:
        return model.model_validate(f[2], context=WIRE)
    except ValidationError as e:  # one line per problem, joined: no pydantic banner
        why = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'map'}: {err['msg']}"
                        for err in e.errors())
        raise _bad(ErrorCode.MALFORMED, f"invalid handshake: {why}", fatal=True) from None
    except ValueError as e:
        raise _bad(ErrorCode.MALFORMED, f"invalid handshake: {e}", fatal=True) from None


def decode_hello(f: list[Any]) -> Hello:
    """A HELLO of this protocol version; any problem is fatal (SPEC.md §6)."""
    info: HelloInfo = _handshake_map(f, HelloInfo)
    if info.version != PROTOCOL_VERSION:
        raise _bad(ErrorCode.UNSUPPORTED_VERSION,
                   f"client speaks version {info.version}; "
                   f"this server speaks {PROTOCOL_VERSION}", fatal=True)
    return Hello(info)


def decode_welcome(f: list[Any]) -> Welcome:
    """A WELCOME of this protocol version; any problem is fatal (SPEC.md §6)."""
    info: WelcomeInfo = _handshake_map(f, WelcomeInfo)
    if info.version != PROTOCOL_VERSION:
        raise _bad(ErrorCode.UNSUPPORTED_VERSION,
                   f"server speaks version {info.version}", fatal=True)
    return Welcome(info)

"""Sans-I/O connection: bytes in, events out; events in, bytes out.

In the spirit of h11/wsproto: nothing here touches a socket.  The caller feeds
whatever it read into :meth:`Connection.receive_data`, drains
:meth:`Connection.next_event`, and writes what :meth:`Connection.send` returns.

Frames are a 4-byte big-endian length followed by one msgpack array whose
first two items are the frame type and the request id (see ``SPEC.md``).
Request frames are checked by hand rather than with pydantic: they are the
hot path, and hand checks cost about a third as much per frame.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterator, Sequence
from enum import Enum
from typing import Any, Final

import msgpack

from .errors import ErrorCode, ProtocolError
from .events import (
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
from .handshake import HelloInfo, WelcomeInfo
from .leases import (
    FRAME_LEASE,
    FRAME_LEASE_RESULT,
    LeaseRequest,
    LeaseResult,
    decode_lease,
    decode_lease_result,
)
from .limits import (
    DEFAULT_LIMITS,
    MAX_BUS_NAME,
    MAX_REQUEST_ID,
    MAX_STR,
    MAX_TIMEOUT_MS,
    PREFIX_SIZE,
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


class Role(Enum):
    CLIENT = "client"
    SERVER = "server"


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by :meth:`Connection.next_event` when a whole frame has not arrived.
NEED_DATA: Final = _NeedData()


class LocalProtocolError(Exception):
    """The caller asked to send something the protocol or the peer's limits forbid."""


# ---------------------------------------------------------------------------
# Encoding (used by both roles; pure functions so peers and tests can reuse them)
# ---------------------------------------------------------------------------

_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack
_PREFIX = struct.Struct(">I")
_unpack_prefix = _PREFIX.unpack_from
_pack_prefix = _PREFIX.pack
_FRAME_I2C = int(FrameType.I2C)
_FRAME_SPI = int(FrameType.SPI)
_FRAME_RESULT = int(FrameType.RESULT)


_NO_FAILURES: Final[list[Any]] = []

#: ``(addr, flags, ten_bit)`` -> encoded ``out_hdr``; bounded like the decoder's cache
#: because only encodable headers are stored.
_HDR_OUT: dict[tuple[int, int, bool], bytes] = {}


def _encode_hdr(addr: int, flags: int, ten: bool) -> bytes:
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


def frame(body: bytes) -> bytes:
    """Prefix a msgpack body with its length."""
    return _pack_prefix(len(body)) + body


def encode_body(event: Event) -> bytes:
    """The msgpack body of ``event`` (without the length prefix)."""
    if isinstance(event, I2CRequest):
        reqs = [
            [
                I2C_OUT_HDR.pack(encode_i2c_addr(m.addr, m.ten_bit), 0, m.flags),
                m.length if m.flags & I2C_FLAGS_M_RD else m.data,
            ]
            for m in event.msgs
        ]
        return _packb([_FRAME_I2C, event.id, event.bus, reqs, event.timeout_ms])
    if isinstance(event, Result):
        fails = [[f.index, f.errno, f.message] for f in event.failures]
        return _packb([_FRAME_RESULT, event.id, event.status, event.reads, fails])
    if isinstance(event, SpiRequest):
        xfers = [[t.head.pack(), t.tx, t.rx_len] for t in event.transfers]
        return _packb([_FRAME_SPI, event.id, event.bus, event.cs, xfers, event.timeout_ms])
    if isinstance(event, Error):
        return _packb([int(FrameType.ERROR), event.id, event.code.value, event.message])
    if isinstance(event, Ping):
        return _packb([int(FrameType.PING), event.id])
    if isinstance(event, Pong):
        return _packb([int(FrameType.PONG), event.id])
    if isinstance(event, LeaseRequest):
        return _packb([FRAME_LEASE, event.id, event.op.value, event.params()])
    if isinstance(event, LeaseResult):
        return _packb([FRAME_LEASE_RESULT, event.id, event.to_map()])
    if isinstance(event, Hello):
        return _packb([int(FrameType.HELLO), 0, event.info.model_dump()])
    if isinstance(event, Welcome):
        return _packb([int(FrameType.WELCOME), 0, event.info.model_dump()])
    raise TypeError(f"not a protocol event: {event!r}")


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------


def _bad(code: ErrorCode, msg: str, rid: int = 0, fatal: bool = False) -> ProtocolError:
    return ProtocolError(code, msg, request_id=rid, fatal=fatal)


def _peek_id(body: bytes | bytearray | memoryview) -> int:
    """Best-effort request id of a body that failed to decode, for the ERROR frame."""
    try:
        up = msgpack.Unpacker(max_buffer_size=len(body), max_bin_len=0, max_str_len=0,
                              max_array_len=0, max_map_len=0, max_ext_len=0)
        up.feed(body)
        up.read_array_header()
        up.unpack()  # type
        rid = up.unpack()
    except Exception:
        return 0
    return rid if type(rid) is int and 0 < rid <= MAX_REQUEST_ID else 0


def _id_or_0(v: Any) -> int:
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
_HDR_CACHE: dict[bytes, tuple[int, int, bool]] = {}


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
    if len(f) != 5:
        raise _bad(ErrorCode.MALFORMED, "I2C frame must have 5 items", _id_or_0(f[1]))
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
    if len(f) != 6:
        raise _bad(ErrorCode.MALFORMED, "SPI frame must have 6 items", _id_or_0(f[1]))
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
    if len(f) != 4 or type(f[1]) is not int or type(f[2]) is not str or type(f[3]) is not str:
        raise _bad(ErrorCode.MALFORMED, "ERROR frame must be [5, id, code, message]", fatal=True)
    try:
        return Error(f[1], ErrorCode(f[2]), f[3])
    except ValueError:  # unknown codes from newer peers degrade, keeping the text
        return Error(f[1], ErrorCode.INTERNAL, f"{f[2]}: {f[3]}")


def _decode_handshake(f: list[Any], model: type[HelloInfo] | type[WelcomeInfo]) -> Any:
    if len(f) != 3 or type(f[2]) is not dict:
        raise _bad(ErrorCode.MALFORMED, "handshake frame must be [type, 0, map]", fatal=True)
    try:
        return model.model_validate(f[2])
    except ValueError as e:
        raise _bad(ErrorCode.MALFORMED, f"invalid handshake: {e}", fatal=True) from None


# ---------------------------------------------------------------------------
# The connection state machine
# ---------------------------------------------------------------------------


class Connection:
    """One end of a busbridge connection.

    The server role enforces the handshake (HELLO first, matching version), the
    in-flight limit and unique request ids; the client role checks that every
    response answers a request it sent.
    """

    def __init__(self, role: Role, limits: Limits = DEFAULT_LIMITS) -> None:
        self.role = role
        self.limits = limits
        #: The peer's limits; on the client, set from WELCOME.
        self.peer_limits: Limits = limits
        self.handshaken = False
        self.closed = False
        self.in_flight: set[int] = set()
        self._last_id = 0
        self._buf = bytearray()
        self._pos = 0
        self._eof = False
        client = role is Role.CLIENT
        self._server = not client
        # Results hold up to max_requests reads; WELCOME lists buses in maps.
        self._unpackb: Callable[[bytes | bytearray | memoryview], Any] = functools.partial(
            msgpack.unpackb,
            max_bin_len=max(limits.max_i2c_len, limits.max_spi_len, 64),
            max_str_len=MAX_STR,
            max_array_len=max(limits.max_requests, 1024 if client else 8),
            max_map_len=1024 if client else 64,
            max_ext_len=0,
        )

    # -- receiving ---------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes read from the transport; ``b""`` means end of stream."""
        if data:
            self._buf += data
        else:
            self._eof = True

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def next_event(self) -> Event | _NeedData | None:
        """The next complete event, ``NEED_DATA``, or ``None`` at a clean end of stream.

        Raises :class:`ProtocolError`; unless it is ``fatal`` the offending
        frame has been consumed and decoding can continue.
        """
        if self.closed:
            raise _bad(ErrorCode.MALFORMED, "connection already failed", fatal=True)
        buf, pos = self._buf, self._pos
        end = self._frame_end(buf, pos)
        if end is None:
            return self._at_short(len(buf) - pos)
        if end == len(buf):
            # The common case: the buffer ends with this frame; hand it over whole.
            if pos:
                body = buf[pos + PREFIX_SIZE :]
            else:
                body = buf  # no copy; bytearray drops its head in O(1)
                del body[:PREFIX_SIZE]
            self._buf = bytearray()
            self._pos = 0
        else:
            body = buf[pos + PREFIX_SIZE : end]
            if end >= 65536:
                del buf[:end]
                self._pos = 0
            else:
                self._pos = end
        try:
            return self._decode(body)
        except ProtocolError as e:
            if e.fatal:
                self.closed = True
            raise

    def receive(self, data: bytes | bytearray | memoryview) -> list[Event | ProtocolError]:
        """Feed bytes read from the transport and return every complete event.

        The batch form of :meth:`receive_data` + :meth:`next_event`, for the
        hot path: frames that arrive whole are decoded straight from ``data``
        (no copy into the connection's buffer).  A refused frame appears in the
        list as its :class:`ProtocolError`, in order; after a ``fatal`` one the
        list ends and the connection is closed.  ``b""`` means end of stream.
        """
        if self.closed:
            raise _bad(ErrorCode.MALFORMED, "connection already failed", fatal=True)
        out: list[Event | ProtocolError] = []
        if not data:
            self._eof = True
            try:
                self._at_short(len(self._buf) - self._pos)
            except ProtocolError as e:
                out.append(e)
            return out
        buf: bytes | bytearray | memoryview
        if self._pos < len(self._buf):
            # Part of a frame is waiting: continue in the connection's own buffer.
            self._buf += data
            have = len(self._buf) - self._pos
            if have >= PREFIX_SIZE:
                n = _unpack_prefix(self._buf, self._pos)[0]
                if n <= self.limits.max_frame and have < PREFIX_SIZE + n:
                    # Still short: keep appending.  Copying what waits at every read
                    # made a big frame sent in small pieces cost quadratic time, and
                    # the copies' churn fragmented the heap (the worst-case attack).
                    return out
            buf = bytes(self._buf[self._pos:])
            self._buf = bytearray()
            self._pos = 0
        else:
            buf = data
        size = len(buf)
        decode = self._decode
        pos = 0
        limit = self.limits.max_frame
        # _frame_end's arithmetic, inline: a call per frame costs this loop ~3 %.
        while size - pos >= PREFIX_SIZE:
            n = _unpack_prefix(buf, pos)[0]
            if n > limit:
                out.append(self._too_large(n))
                return out
            end = pos + PREFIX_SIZE + n
            if end > size:
                break
            try:
                out.append(decode(buf[pos + PREFIX_SIZE : end]))
            except ProtocolError as e:
                # Kept errors must not pin a view of the caller's buffer through
                # their traceback or the exception they replaced.
                e.__traceback__ = e.__context__ = None
                out.append(e)
                if e.fatal:
                    self.closed = True
                    return out
            pos = end
        if pos < size:
            self._buf = bytearray(buf[pos:])
        return out

    def _frame_end(self, buf: bytes | bytearray | memoryview, pos: int) -> int | None:
        """Where the frame at ``pos`` ends, or None if it has not all arrived.

        The length prefix is checked before anything is buffered or decoded: an
        over-limit one fails the connection (fatal ``frame-too-large``).
        """
        if len(buf) - pos < PREFIX_SIZE:
            return None
        n = _unpack_prefix(buf, pos)[0]
        if n > self.limits.max_frame:
            raise self._too_large(n)
        end: int = pos + PREFIX_SIZE + n
        return end if end <= len(buf) else None

    def _too_large(self, n: int) -> ProtocolError:
        """The fatal refusal of a length prefix over ``max_frame``; fails the connection."""
        self.closed = True
        return _bad(ErrorCode.FRAME_TOO_LARGE, f"frame of {n} bytes; limit {self.limits.max_frame}",
                    fatal=True)

    def _at_short(self, avail: int) -> _NeedData | None:
        if not self._eof:
            return NEED_DATA
        if avail:
            self.closed = True
            raise _bad(ErrorCode.MALFORMED, f"stream ended inside a frame ({avail} bytes)",
                       fatal=True)
        return None

    def events(self) -> Iterator[Event]:
        """Drain complete events; stops at ``NEED_DATA`` or end of stream."""
        while True:
            ev = self.next_event()
            if ev is None or ev is NEED_DATA:
                return
            yield ev  # type: ignore[misc]

    def _decode(self, body: bytes | bytearray | memoryview) -> Event:
        try:
            f = self._unpackb(body)
        except ValueError as e:  # includes ExtraData, FormatError, StackError, limits
            too_big = "exceeds max" in str(e) and "max_ext_len" not in str(e)  # no ext types
            code = ErrorCode.LIMIT_EXCEEDED if too_big else ErrorCode.MALFORMED
            raise _bad(code, f"undecodable frame: {e}", _peek_id(body)) from None
        except Exception as e:
            raise _bad(ErrorCode.MALFORMED, f"undecodable frame: {e}", _peek_id(body)) from None
        if type(f) is not list or len(f) < 2 or type(f[0]) is not int:
            raise _bad(ErrorCode.MALFORMED, "frame must be an array [type, id, ...]")
        t = f[0]
        if self._server:
            if t in (_FRAME_I2C, _FRAME_SPI) and self.handshaken:  # the hot path, inline
                ev = decode_i2c(f, self.limits) if t == _FRAME_I2C else decode_spi(f, self.limits)
                in_flight = self.in_flight
                if ev.id in in_flight or len(in_flight) >= self.limits.max_in_flight:
                    self._admit(ev.id)  # raises the precise error
                in_flight.add(ev.id)
                return ev
            return self._server_event(t, f)
        if t == _FRAME_RESULT:
            res = decode_result(f)
            self._settle(res.id)
            return res
        return self._client_event(t, f)

    def _server_event(self, t: int, f: list[Any]) -> Event:
        if t in (_FRAME_I2C, _FRAME_SPI):
            if not self.handshaken:
                raise _bad(ErrorCode.HANDSHAKE_REQUIRED, "send HELLO first", fatal=True)
            ev: I2CRequest | SpiRequest = (
                decode_i2c(f, self.limits) if t == _FRAME_I2C else decode_spi(f, self.limits)
            )
            self._admit(ev.id)
            return ev
        if t == FrameType.PING:
            return Ping(_check_id(f[1]))
        if t == FrameType.PONG:
            return Pong(_check_id(f[1]))
        if t == FRAME_LEASE:
            if not self.handshaken:
                raise _bad(ErrorCode.HANDSHAKE_REQUIRED, "send HELLO first", fatal=True)
            lease = decode_lease(f)
            self._admit(lease.id)
            return lease
        if t == FrameType.HELLO:
            if self.handshaken:
                raise _bad(ErrorCode.MALFORMED, "second HELLO on one connection", fatal=True)
            info: HelloInfo = _decode_handshake(f, HelloInfo)
            if info.version != PROTOCOL_VERSION:
                raise _bad(ErrorCode.UNSUPPORTED_VERSION,
                           f"client speaks version {info.version}; "
                           f"this server speaks {PROTOCOL_VERSION}", fatal=True)
            self.handshaken = True
            return Hello(info)
        rid = _id_or_0(f[1])
        raise _bad(ErrorCode.MALFORMED, f"frame type {t} is not accepted by a server",
                   rid, fatal=not self.handshaken)

    def _admit(self, rid: int) -> None:
        if rid in self.in_flight:
            raise _bad(ErrorCode.DUPLICATE_ID, f"request id {rid} is already in flight",
                       fatal=True)
        if len(self.in_flight) >= self.limits.max_in_flight:
            raise _bad(ErrorCode.LIMIT_EXCEEDED,
                       f"{len(self.in_flight)} requests in flight; limit "
                       f"{self.limits.max_in_flight}", rid)
        self.in_flight.add(rid)

    def _client_event(self, t: int, f: list[Any]) -> Event:
        if t == _FRAME_RESULT:
            res = decode_result(f)
            self._settle(res.id)
            return res
        if t == FrameType.ERROR:
            err = decode_error(f)
            if err.id:
                self._settle(err.id)
            return err
        if t == FrameType.PONG:
            return Pong(_check_id(f[1]))
        if t == FrameType.PING:
            return Ping(_check_id(f[1]))
        if t == FRAME_LEASE_RESULT:
            lres = decode_lease_result(f)
            self._settle(lres.id)
            return lres
        if t == FrameType.WELCOME:
            if self.handshaken:
                raise _bad(ErrorCode.MALFORMED, "second WELCOME", fatal=True)
            info: WelcomeInfo = _decode_handshake(f, WelcomeInfo)
            if info.version != PROTOCOL_VERSION:
                raise _bad(ErrorCode.UNSUPPORTED_VERSION,
                           f"server speaks version {info.version}", fatal=True)
            self.handshaken = True
            self.peer_limits = info.limits.to_limits()
            return Welcome(info)
        raise _bad(ErrorCode.MALFORMED, f"frame type {t} is not accepted by a client",
                   fatal=True)

    def _settle(self, rid: int) -> None:
        try:
            self.in_flight.remove(rid)
        except KeyError:
            self.closed = True
            raise _bad(ErrorCode.MALFORMED, f"response for unknown request id {rid}",
                       fatal=True) from None

    # -- sending -----------------------------------------------------------

    def send(self, event: Event) -> bytes:
        """Bytes to write for ``event``; requests and responses update in-flight state."""
        cls = type(event)
        if cls is Result:
            assert isinstance(event, Result)
            return self.send_result(event.id, event.status, event.reads, event.failures)
        if cls is I2CRequest:
            assert isinstance(event, I2CRequest)
            return self.send_i2c(event.id, event.bus, event.msgs, event.timeout_ms)
        if cls is SpiRequest:
            assert isinstance(event, SpiRequest)
            self._check_outgoing(event)
            try:
                xfers = [[t.head.pack(), t.tx, t.rx_len] for t in event.transfers]
            except struct.error as e:  # a head field that does not fit its virtio width
                raise LocalProtocolError(f"cannot encode SpiRequest: {e}") from None
            body = _packb([_FRAME_SPI, event.id, event.bus, event.cs, xfers, event.timeout_ms])
            self.in_flight.add(event.id)
        else:
            if isinstance(event, LeaseRequest):
                self._check_request_id(event.id)
            elif isinstance(event, Error | LeaseResult) and self.role is Role.SERVER:
                self.in_flight.discard(event.id)
            try:
                body = encode_body(event)
            except struct.error as e:  # a head field that does not fit its virtio width
                raise LocalProtocolError(f"cannot encode {type(event).__name__}: {e}") from None
            if isinstance(event, LeaseRequest):
                self.in_flight.add(event.id)
        if len(body) > self.peer_limits.max_frame:
            raise self._over_peer_limit(
                body, event.id if isinstance(event, SpiRequest | LeaseRequest) else 0)
        return _pack_prefix(len(body)) + body

    def _over_peer_limit(self, body: bytes, request_id: int = 0) -> LocalProtocolError:
        """Refuse a frame over the peer's ``max_frame``; its request (if any) is not in flight."""
        self.in_flight.discard(request_id)
        return LocalProtocolError(
            f"frame of {len(body)} bytes exceeds the peer's limit {self.peer_limits.max_frame}")

    def next_id(self) -> int:
        """A request id not in flight: counting up, wrapping at ``MAX_REQUEST_ID``."""
        rid = self._last_id
        while True:
            rid = rid + 1 if rid < MAX_REQUEST_ID else 1
            if rid not in self.in_flight:
                self._last_id = rid
                return rid

    def send_result(self, rid: int, status: bytes, reads: list[bytes],
                    failures: list[Failure]) -> bytes:
        """Bytes of a RESULT; the same as ``send(Result(...))`` without the event."""
        if self.role is Role.SERVER:
            self.in_flight.discard(rid)
        if failures:
            fails = [[f.index, f.errno, f.message] for f in failures]
            body = _packb([_FRAME_RESULT, rid, status, reads, fails])
        else:
            body = _packb([_FRAME_RESULT, rid, status, reads, _NO_FAILURES])
        if len(body) > self.peer_limits.max_frame:
            raise self._over_peer_limit(body)
        return _pack_prefix(len(body)) + body

    def send_i2c(self, rid: int, bus: str, msgs: Sequence[I2CMsg],
                 timeout_ms: int | None = None, chained: bool = False) -> bytes:
        """Bytes of an I2C request; the same as ``send(I2CRequest(...))`` without the event.

        ``chained`` encodes ``msgs`` as :func:`~protocol.virtio.chain` would mark
        them (one combined transaction) without building new messages.
        """
        body = self._encode_i2c(rid, bus, msgs, timeout_ms, chained)
        if len(body) > self.peer_limits.max_frame:
            raise self._over_peer_limit(body, rid)
        return _pack_prefix(len(body)) + body

    def _encode_i2c(self, rid: int, bus: str, msgs: Sequence[I2CMsg],
                          timeout_ms: int | None, chained: bool) -> bytes:
        """Check against the peer's limits and encode in one pass (the client's hot path)."""
        if self.role is not Role.CLIENT or not 0 < rid <= MAX_REQUEST_ID or (
                rid in self.in_flight):
            self._check_request_id(rid)
        lim = self.peer_limits
        if not msgs:
            raise LocalProtocolError("a request needs at least one message")
        if len(msgs) > lim.max_requests:
            raise LocalProtocolError(
                f"{len(msgs)} requests in one frame; limit {lim.max_requests}")
        maxlen = lim.max_i2c_len
        cache = _HDR_OUT
        reqs = []
        rx = 0
        flags = 0
        last = len(msgs) - 1 if chained else -1
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
                rx += n
            else:
                buf = m.data
                n = len(buf)
            if n > maxlen:
                raise LocalProtocolError(f"{m.describe()}: {n} bytes; limit {maxlen}")
            reqs.append([hdr, buf])
        if flags & I2C_FLAGS_FAIL_NEXT:
            raise LocalProtocolError("last message has FAIL_NEXT set")
        if RESULT_BASE + RESULT_PER_REQUEST * len(reqs) + rx > lim.max_frame:
            self._check_room(len(reqs), rx)
        body = _packb([_FRAME_I2C, rid, bus, reqs, timeout_ms])
        self.in_flight.add(rid)
        return body

    def _check_request_id(self, rid: int) -> None:
        if self.role is not Role.CLIENT:
            raise LocalProtocolError("only a client sends requests")
        if not 0 < rid <= MAX_REQUEST_ID:
            raise LocalProtocolError(f"request id {rid} out of range")
        if rid in self.in_flight:
            raise LocalProtocolError(f"request id {rid} is already in flight")

    def _check_room(self, n: int, rx: int) -> None:
        cap = min(self.peer_limits.max_frame, self.limits.max_frame)  # server sends, we receive
        if result_room(n, rx) > cap:
            raise LocalProtocolError(
                f"reads total {rx} bytes: the RESULT would not fit in max_frame {cap}")

    def _check_outgoing(self, ev: SpiRequest) -> None:
        self._check_request_id(ev.id)
        lim = self.peer_limits
        if not ev.transfers:
            raise LocalProtocolError("a request needs at least one message")
        if len(ev.transfers) > lim.max_requests:
            raise LocalProtocolError(
                f"{len(ev.transfers)} requests in one frame; limit {lim.max_requests}")
        for t in ev.transfers:
            if t.length > lim.max_spi_len:
                raise LocalProtocolError(f"SPI transfer of {t.length} bytes; "
                                         f"limit {lim.max_spi_len}")
        self._check_room(len(ev.transfers), sum(t.rx_len for t in ev.transfers))

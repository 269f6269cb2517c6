"""The native pieces of the hot path, when they are built, and their pure fallback.

``protocol._native`` (``protocol/_native.c``, built only by the compiled build,
``BUSBRIDGE_COMPILE=1``) decodes the common I2C request frame and encodes the common
RESULT in C: about 2k instructions where the pure path (msgpack, then a check per
field, then the events) spends about 10k per request (docs/performance.md, "Phase 3b").
It takes only frames of one exact common shape and stops at anything else, which the
general path then decodes from the same bytes: every refusal keeps its code, message,
id and fatality.  On a client it decodes the common RESULT the same way (``result_feed``).
Without it (no compiler, or the default install) everything runs
as pure Python, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from .events import I2CRequest, Result
from .limits import Limits
from .virtio import I2CMsg

try:
    from ._native import Decoder as _Decoder
    from ._native import ResultDecoder as _ResultDecoder
    from ._native import result_body as _c_result_body
    from ._native import result_frame as _c_result_frame
except ImportError:  # the pure build, or a compiled one without it: the pure path
    _Decoder = _ResultDecoder = None  # type: ignore[assignment, misc]
    _c_result_body = _c_result_frame = None  # type: ignore[assignment]

Buffer = bytes | bytearray | memoryview
#: ``feed(buf, pos, out)``: appends the events of the common frames from ``pos`` on to
#: ``out``, their ids put in flight, and returns the offset of the first frame not taken.
Feed = Callable[[Buffer, int, list[Any]], int]

#: True when the C decoder and encoder are in use (``busbridge info --local`` says it).
NATIVE: Final = _Decoder is not None


def i2c_feed(server: bool, in_flight: set[int], live: set[int], limits: Limits) -> Feed | None:
    """A server connection's C decoder of common I2C frames; None on a client or without
    the module.  ``in_flight`` and ``live`` are the connection's own sets: the decoder
    admits ids into the first as ``Connection._admit`` does, and only while it is OPEN
    (``receive`` checks the state).
    """
    if _Decoder is None or not server:
        return None
    return _Decoder(in_flight, live, _msg, _request, limits.max_frame,
                           limits.max_requests, limits.max_i2c_len, limits.max_in_flight).feed


def result_feed(in_flight: set[int], expect: dict[int, Any], max_body: int) -> Feed | None:
    """A client connection's C decoder of common RESULT frames (bodies up to ``max_body``
    bytes); None without the module.  ``in_flight`` and ``expect`` are the connection's
    own: the decoder takes each answered id out of the first and pops it from the
    second, as ``Connection._on_result`` does, and only while it is OPEN (``receive``
    checks the state).
    """
    if _ResultDecoder is None:
        return None
    return _ResultDecoder(in_flight, expect, _result, max_body).feed


def _result(rid: int, status: bytes, reads: list[bytes], failures: list[Any]) -> Result:
    """What the C decoder calls to build a Result (a compiled function: see ``_msg``)."""
    return Result(rid, status, reads, failures)


def _msg(addr: int, flags: int, data: bytes, length: int, ten_bit: bool) -> I2CMsg:
    """What the C decoder calls to build a message: a compiled function, whose call takes
    its arguments as they are, is cheaper than the class (its ``tp_init`` parses a tuple)."""
    return I2CMsg(addr, flags, data, length, ten_bit)


def _request(rid: int, bus: str, msgs: tuple[I2CMsg, ...], timeout: int | None) -> I2CRequest:
    return I2CRequest(rid, bus, msgs, timeout)


#: One byte of each value; msgpack ``bin 8`` headers by length; ``fixarray`` headers.
_BYTE: Final = [bytes((n,)) for n in range(256)]
_BIN8: Final = [b"\xc4" + b for b in _BYTE]
_FIXARRAY: Final = [bytes((0x90 | n,)) for n in range(16)]


def _result_body(rid: int, status: object, reads: list[Any]) -> bytes | None:
    """The common RESULT (no failures, up to 15 reads of up to 255 bytes) from precomputed
    msgpack headers, no call but one join: the bytes ``_packb`` makes, or None.  Typed
    ``object`` / ``Any``: compiled, a ``bytes`` parameter would refuse a bytearray."""
    if (type(status) is not bytes or len(status) > 255 or len(reads) > 15
            or not 0 < rid <= 0xFFFFFFFF):
        return None
    b = _BYTE  # [RESULT (4), the id as msgpack's smallest uint, then the rest
    parts = ([b"\x95\x04", b[rid]] if rid < 0x80 else [b"\x95\x04\xcc", b[rid]] if rid < 0x100
             else [b"\x95\x04\xcd", b[rid >> 8], b[rid & 0xFF]] if rid < 0x10000
             else [b"\x95\x04\xce", b[rid >> 24], b[rid >> 16 & 0xFF], b[rid >> 8 & 0xFF],
                   b[rid & 0xFF]])
    parts.append(_BIN8[len(status)])
    parts.append(status)
    parts.append(_FIXARRAY[len(reads)])
    for r in reads:
        if type(r) is not bytes or len(r) > 255:
            return None
        parts.append(_BIN8[len(r)])
        parts.append(r)
    parts.append(b"\x90")  # no failures
    return b"".join(parts)


def _result_frame(rid: int, status: object, reads: list[Any]) -> bytes | None:
    body = _result_body(rid, status, reads)
    return None if body is None else len(body).to_bytes(4, "big") + body


#: ``result_body(id, status, reads)``: the common RESULT's body, or None for msgpack's
#: general encoder.  The C one when built; both make the same bytes.
result_body: Final[Callable[[int, object, list[Any]], bytes | None]] = (
    _c_result_body if _c_result_body is not None else _result_body)
#: ``result_frame(id, status, reads)``: the same with its length prefix, in one piece (the
#: prefix's ``struct`` call and the concatenation were a third of sending a RESULT).
result_frame: Final[Callable[[int, object, list[Any]], bytes | None]] = (
    _c_result_frame if _c_result_frame is not None else _result_frame)

"""The refusals the connection makes itself, outside the frame decoders (SPEC.md §9).

Most are the framing layer's: what an ERROR for an undecodable body says, and
which id it carries (§9.1's head rule), built while the stream is framed, before
any decoder of :mod:`protocol.codec` runs.  The others are a request refused
admission (§10) and an answer this side may not send; their words live here so
that :mod:`protocol.connection` reads as the state machine it is.
"""

from __future__ import annotations

import msgpack

from .errors import ErrorCode, LocalProtocolError, ProtocolError
from .events import FrameType
from .limits import MAX_REQUEST_ID

Buffer = bytes | bytearray | memoryview


def _bad(code: ErrorCode, msg: str, rid: int = 0, fatal: bool = False) -> ProtocolError:
    return ProtocolError(code, msg, request_id=rid, fatal=fatal)


#: The frame types that are request frames (SPEC.md §4): only their ids are ever
#: echoed in an ERROR.  A later request frame type is added here.
REQUEST_TYPES: frozenset[int] = frozenset({FrameType.I2C, FrameType.SPI, FrameType.LEASE,
                                          FrameType.ADMIN})


def peek_id(body: Buffer) -> int:
    """The request id an ERROR for this body carries: SPEC.md §9.1's "head" rule.

    The id can be read when the body *begins* with an array header of at least two
    items, an integer item 0 that is a request frame type and an integer item 1 in
    1..0xFFFFFFFF; whatever follows (a truncated rest, trailing bytes, invalid
    UTF-8, an extension type, an object over a decoding bound) does not matter.
    Anything else gives 0.  Only these three tokens are parsed, and nothing larger
    than an integer is ever built.
    """
    try:
        up = msgpack.Unpacker(max_buffer_size=len(body), max_bin_len=0, max_str_len=0,
                              max_array_len=0, max_map_len=0, max_ext_len=0)
        up.feed(body)
        if up.read_array_header() < 2:
            return 0
        ftype = up.unpack()
        if type(ftype) is not int or ftype not in REQUEST_TYPES:
            return 0
        rid = up.unpack()
    except Exception:
        return 0
    return rid if type(rid) is int and 0 < rid <= MAX_REQUEST_ID else 0


def undecodable(e: Exception, body: Buffer) -> ProtocolError:
    """The refusal of a body msgpack could not decode (``e`` is what msgpack raised).

    A decoding bound (SPEC.md §10) is ``limit-exceeded``; anything else, an extension
    type included, is ``malformed`` (§3).  The message says which, in words.
    """
    code = ErrorCode.MALFORMED
    text = str(e)
    if not body:
        why = "the body is empty"
    elif isinstance(e, msgpack.ExtraData):
        why = "trailing bytes after its msgpack object"
    elif isinstance(e, UnicodeDecodeError):
        why = "a str that is not valid UTF-8"
    elif "max_ext_len" in text:
        why = "an extension type (not used by this protocol)"
    elif "exceeds max" in text:
        code = ErrorCode.LIMIT_EXCEEDED
        why = f"over a decoding bound ({text})"
    elif "incomplete input" in text:
        why = "the body ends inside its msgpack object"
    else:
        why = f"not msgpack ({text or type(e).__name__})"
    return _bad(code, f"undecodable frame: {why}", peek_id(body))


def not_a_frame() -> ProtocolError:
    """The refusal of a body that decoded to something other than ``[type, id, ...]``."""
    return _bad(ErrorCode.MALFORMED, "frame must be an array [type, id, ...]")


def frame_too_large(n: int, max_frame: int) -> ProtocolError:
    """The fatal refusal of a length prefix over ``max_frame`` (its body is never read)."""
    return _bad(ErrorCode.FRAME_TOO_LARGE, f"frame of {n} bytes; limit {max_frame}", fatal=True)


def stream_ended_inside_frame(avail: int) -> ProtocolError:
    return _bad(ErrorCode.MALFORMED, f"stream ended inside a frame ({avail} bytes)", fatal=True)


def admission_refused(rid: int, in_flight: set[int], live: set[int], limit: int
                      ) -> ProtocolError:
    """Why a server does not accept request ``rid``: a duplicate id (fatal), the id of a
    live subscription, or ``limit`` requests already in flight (SPEC.md §4.12, §10)."""
    if rid in in_flight:
        return _bad(ErrorCode.DUPLICATE_ID, f"request id {rid} is already in flight", fatal=True)
    if rid in live:  # its EVENTs still carry the id (SPEC.md §4.12)
        return _bad(ErrorCode.BAD_REQUEST, f"request id {rid} names a live subscription", rid)
    return _bad(ErrorCode.LIMIT_EXCEEDED, f"{len(in_flight)} requests in flight; limit {limit}",
                rid)


def answer_refused(kind: str, rid: int, ended: bool, awaiting_hello: bool
                   ) -> LocalProtocolError:
    """Why this side may not send a ``kind`` answer to request ``rid``."""
    if ended:
        why = "the connection ended with a fatal ERROR"
    elif awaiting_hello:
        why = "no HELLO has been accepted"
    else:
        why = f"request {rid} is not in flight"
    return LocalProtocolError(f"cannot send {kind}: {why}")


def unknown_id(rid: int) -> ProtocolError:
    """A client's refusal of an answer whose id it has not sent (or that was answered)."""
    return _bad(ErrorCode.MALFORMED, f"response for unknown request id {rid}", fatal=True)

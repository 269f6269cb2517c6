"""A client's connection, with a fast path for the request it sends most.

An I2C request frame is ``[2, id, bus, reqs, timeout_ms]``.  For one
(bus, timeout, chained or not, messages) everything after the id is the same
bytes every time, and a register read is mostly that: the 4-byte prefix, the
array header, the id, then the same 30 bytes.  :class:`ClientConnection` keeps
those bytes (the *tail*) from the first time the general encoder built them,
and afterwards only packs the prefix, the header and the id in front of them:
one ``struct`` call instead of building the frame's lists and running
msgpack's packer (a third of a compiled client's instructions per register
read went there).

A tail is kept only after :meth:`Connection.send` accepted the same request,
checked against the same peer limits and RESULT room, so every local refusal
happens exactly as before (a miss takes the general path, and so does
anything uncommon: more than two messages, unusual field types or values, a frame over
``_MAX_CACHED`` bytes).  The frame's size, which depends on the id, is
checked again on every hit.  ``tests/protocol/test_fastpath.py`` compares the
two paths' bytes, ids and refusals.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, Final

import msgpack

from .accel import result_feed
from .codec import Buffer, unpack_prefix
from .connection import Connection
from .errors import ProtocolError
from .events import ChainedI2CRequest, Event, FrameType, I2CRequest, Result
from .limits import DEFAULT_LIMITS, MAX_REQUEST_ID, Limits
from .shapes import Shape, misfit
from .states import Role, State
from .virtio import I2CMsg

__all__ = ["ClientConnection"]

#: Tails kept per connection; all are dropped when it is full (a workload of that
#: many different small requests gains nothing from them anyway).
_MAX_TAILS: Final = 256
#: The largest RESULT body :meth:`ClientConnection.receive` decodes itself: smaller
#: than every bound of the connection's unpacker (no bin, str, array or map that
#: could break one fits in it), so plain ``unpackb`` decodes it the same way.
_MAX_RESULT: Final = 60
_RESULT: Final = int(FrameType.RESULT)
_unpackb: Final = msgpack.unpackb
#: Only frames up to this size are kept (a register read's is 37 bytes).
_MAX_CACHED: Final = 128

# The prefix, the array header (0x95: five items), the frame type 2 and the id,
# packed as msgpack packs a positive int: the shortest of fixint, uint8/16/32.
_ID7: Final = struct.Struct(">IBBB").pack
_ID8: Final = struct.Struct(">IBBBB").pack
_ID16: Final = struct.Struct(">IBBBH").pack
_ID32: Final = struct.Struct(">IBBBI").pack

#: A tail's key: (chained, bus, timeout_ms, then per message its packed number and data).
_Key = tuple[object, ...]
def _head(rid: int, tail: int) -> bytes:
    """The prefix, array header, type and id of a frame whose tail has ``tail`` bytes."""
    if rid < 0x80:
        return _ID7(tail + 3, 0x95, 2, rid)
    if rid < 0x100:
        return _ID8(tail + 4, 0x95, 2, 0xCC, rid)
    if rid < 0x10000:
        return _ID16(tail + 5, 0x95, 2, 0xCD, rid)
    return _ID32(tail + 7, 0x95, 2, 0xCE, rid)


def _key(bus: str, msgs: Sequence[I2CMsg], timeout_ms: int | None, chained: bool
         ) -> _Key | None:
    """The key of a request the fast path takes, or None for the general path.

    Only exact types: a key compares equal for ``1 == 1.0 == True``, and the
    general encoder does not treat those alike.
    """
    if type(bus) is not str or (timeout_ms is not None and type(timeout_ms) is not int):
        return None
    n = len(msgs)
    if n == 2:
        a = msgs[0]
        b = msgs[1]
        if type(a) is not I2CMsg or type(b) is not I2CMsg:
            return None
        ka = _number(a.addr, a.flags, a.ten_bit, a.data, a.length)
        kb = _number(b.addr, b.flags, b.ten_bit, b.data, b.length)
        if ka < 0 or kb < 0:
            return None
        return (chained, bus, timeout_ms, ka, a.data, kb, b.data)
    if n == 1:
        a = msgs[0]
        if type(a) is not I2CMsg:
            return None
        ka = _number(a.addr, a.flags, a.ten_bit, a.data, a.length)
        if ka < 0:
            return None
        return (chained, bus, timeout_ms, ka, a.data)
    return None


def _number(addr: object, flags: object, ten: object, data: object, length: object) -> int:
    """A message's address, flags, 10-bit flag and read length in one int; -1 unless
    each is of its exact type and in a range where the packing is one to one."""
    if not (type(addr) is int and type(flags) is int and type(ten) is bool
            and type(data) is bytes and type(length) is int):
        return -1
    a: int = addr
    f: int = flags
    n: int = length
    if not (0 <= a < 0x400 and 0 <= f < 0x10000 and 0 <= n < 0x1000000):
        return -1
    return ((n << 16 | f) << 10 | a) << 1 | (1 if ten else 0)


def _id_size(rid: int) -> int:
    """Bytes of the msgpack encoding of ``rid`` (1..MAX_REQUEST_ID)."""
    return 1 if rid < 0x80 else 2 if rid < 0x100 else 3 if rid < 0x10000 else 5


class ClientConnection(Connection):
    """The client role's :class:`Connection`, plus :meth:`send_i2c`: what the clients use."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        super().__init__(Role.CLIENT, limits)
        #: key -> (the peer limits and RESULT room it was checked against, the tail, the
        #: RESULT's shape).
        self._tails: dict[_Key, tuple[Limits, int, bytes, Shape]] = {}
        self._live = self._subs.live  # the same set, for the next_id below
        #: The largest RESULT body receive() decodes itself (no larger than max_frame).
        self._small = min(_MAX_RESULT, limits.max_frame)
        #: The C decoder of the same frames (protocol/accel.py), None in the pure build.
        self._cfeed = result_feed(self._in_flight, self._expect, self._small)

    def over_limit(self, held: int) -> bool:
        """Whether the server would hold more than its ``max_in_flight`` if every id in
        flight but the ``held`` ones (encoded, not yet written) had been sent."""
        return len(self._in_flight) - held > self._peer_limits.max_in_flight

    def unsend(self, rid: int) -> None:
        """Forget request ``rid``, encoded but never written: nothing will answer it."""
        self._in_flight.discard(rid)
        self._expect.pop(rid, None)

    def next_id(self) -> int:
        """:meth:`Connection.next_id`, with the common case (the next id is free) first."""
        rid = self._last_id + 1
        if rid <= MAX_REQUEST_ID and rid not in self._in_flight and rid not in self._live:
            self._last_id = rid
            return rid
        return super().next_id()

    def receive(self, data: Buffer) -> list[Event | ProtocolError]:
        """:meth:`Connection.receive`, with the common read first: small RESULT
        frames of the common shape, each answering a request in flight.

        Such a frame is too small for any of the unpacker's bounds to matter, so
        plain ``msgpack.unpackb`` decodes it as the bounded one would, without its
        keyword arguments.  From the first frame that is anything else (another
        type or shape, an error, a frame not complete in ``data``), the rest of
        ``data`` goes to ``Connection.receive``, which decodes that frame again:
        nothing before it changed the connection but the ids it took out of flight.
        """
        size = len(data)
        if size <= 4 or self._buf or self._state is not State.OPEN:
            return super().receive(data)
        out: list[Event | ProtocolError] = []
        cfeed = self._cfeed  # the C decoder first, then the frames it leaves
        pos = 0 if cfeed is None else cfeed(data, 0, out)
        limit = self._small
        while size - pos > 4:
            n: int = unpack_prefix(data, pos)[0]
            end = pos + 4 + n
            if n > limit or end > size:
                break
            try:
                f = _unpackb(data[pos + 4:end])
            except Exception:
                break
            if type(f) is not list or len(f) != 5 or type(f[0]) is not int or f[0] != _RESULT:
                break
            ev = self._result(f)
            if ev is None:
                break
            out.append(ev)
            pos = end
        if not pos:
            return super().receive(data)
        if pos < size:
            out += super().receive(data[pos:])
        return out

    def _result(self, f: list[Any]) -> Result | None:
        """The Result of a RESULT body of the common shape (every item of its type,
        one read, no failures, its id in flight, fitting its request), taken out of
        flight; else None (the general path decodes it again, and refuses a misfit)."""
        rid = f[1]
        status = f[2]
        reads = f[3]
        fails = f[4]
        if (type(rid) is int and type(status) is bytes and type(reads) is list
                and type(fails) is list and not fails and len(reads) == 1
                and type(reads[0]) is bytes and rid in self._in_flight):
            ev = Result(rid, status, reads, fails)
            if misfit(ev, self._expect.get(rid)):
                return None
            self._in_flight.remove(rid)
            self._expect.pop(rid, None)
            return ev
        return None

    def send_i2c(self, rid: int, bus: str, msgs: Sequence[I2CMsg], timeout_ms: int | None,
                 chained: bool) -> bytes:
        """``send(I2CRequest(rid, bus, tuple(msgs), timeout_ms))`` (or the chained
        request): the same bytes, the same refusals, without building the event
        when the same request was sent before."""
        key = _key(bus, msgs, timeout_ms, chained)
        if key is not None and 0 < rid <= MAX_REQUEST_ID and rid not in self._in_flight:
            hit = self._tails.get(key)
            peer = self._peer_limits
            if hit is not None and hit[0] is peer and hit[1] == self._result_cap:
                tail = hit[2]
                data = _head(rid, len(tail)) + tail
                if len(data) - 4 <= peer.max_frame:
                    self._in_flight.add(rid)
                    self._expect[rid] = hit[3]
                    return data
        request = ChainedI2CRequest if chained else I2CRequest
        data = self.send(request(rid, bus, tuple(msgs), timeout_ms))
        if key is not None and len(data) <= _MAX_CACHED:
            tails = self._tails
            if len(tails) >= _MAX_TAILS:
                tails.clear()
            tails[key] = (self._peer_limits, self._result_cap, data[6 + _id_size(rid):],
                          self._expect[rid])
        return data

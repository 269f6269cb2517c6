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
anything uncommon: more than two messages, unusual field types, a frame over
``_MAX_CACHED`` bytes).  The frame's size, which depends on the id, is
checked again on every hit.  ``tests/protocol/test_fastpath.py`` compares the
two paths' bytes, ids and refusals.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

from .connection import Connection
from .events import ChainedI2CRequest, I2CRequest
from .limits import DEFAULT_LIMITS, MAX_REQUEST_ID, Limits
from .states import Role
from .virtio import I2CMsg

__all__ = ["ClientConnection"]

#: Tails kept per connection; all are dropped when it is full (a workload of that
#: many different small requests gains nothing from them anyway).
_MAX_TAILS: Final = 256
#: Only frames up to this size are kept (a register read's is 37 bytes).
_MAX_CACHED: Final = 128

# The prefix, the array header (0x95: five items), the frame type 2 and the id,
# packed as msgpack packs a positive int: the shortest of fixint, uint8/16/32.
_ID7 = struct.Struct(">IBBB")
_ID8 = struct.Struct(">IBBBB")
_ID16 = struct.Struct(">IBBBH")
_ID32 = struct.Struct(">IBBBI")

#: A tail's key: (chained, bus, timeout_ms, then per message addr, flags,
#: ten_bit, data, length).
_Key = tuple[object, ...]


def _head(rid: int, tail: int) -> bytes:
    """The prefix, array header, type and id of a frame whose tail has ``tail`` bytes."""
    if rid < 0x80:
        return _ID7.pack(tail + 3, 0x95, 2, rid)
    if rid < 0x100:
        return _ID8.pack(tail + 4, 0x95, 2, 0xCC, rid)
    if rid < 0x10000:
        return _ID16.pack(tail + 5, 0x95, 2, 0xCD, rid)
    return _ID32.pack(tail + 7, 0x95, 2, 0xCE, rid)


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
        if type(a) is not I2CMsg or type(b) is not I2CMsg or not (
                _plain(a.addr, a.flags, a.ten_bit, a.data, a.length)
                and _plain(b.addr, b.flags, b.ten_bit, b.data, b.length)):
            return None
        return (chained, bus, timeout_ms, a.addr, a.flags, a.ten_bit, a.data, a.length,
                b.addr, b.flags, b.ten_bit, b.data, b.length)
    if n == 1:
        a = msgs[0]
        if type(a) is not I2CMsg or not _plain(a.addr, a.flags, a.ten_bit, a.data, a.length):
            return None
        return (chained, bus, timeout_ms, a.addr, a.flags, a.ten_bit, a.data, a.length)
    return None


def _plain(addr: object, flags: object, ten: object, data: object, length: object) -> bool:
    return (type(addr) is int and type(flags) is int and type(ten) is bool
            and type(data) is bytes and type(length) is int)


def _id_size(rid: int) -> int:
    """Bytes of the msgpack encoding of ``rid`` (1..MAX_REQUEST_ID)."""
    return 1 if rid < 0x80 else 2 if rid < 0x100 else 3 if rid < 0x10000 else 5


class ClientConnection(Connection):
    """The client role's :class:`Connection`, plus :meth:`send_i2c`: what the clients use."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        super().__init__(Role.CLIENT, limits)
        #: key -> (the peer limits and RESULT room it was checked against, the tail).
        self._tails: dict[_Key, tuple[Limits, int, bytes]] = {}

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
                    return data
        request = ChainedI2CRequest if chained else I2CRequest
        data = self.send(request(rid, bus, tuple(msgs), timeout_ms))
        if key is not None and len(data) <= _MAX_CACHED:
            tails = self._tails
            if len(tails) >= _MAX_TAILS:
                tails.clear()
            tails[key] = (self._peer_limits, self._result_cap, data[6 + _id_size(rid):])
        return data

"""``busbridge -vv serve``: one DEBUG line per request, written when it is answered.

Who asked (peer, client name), which bus, what (``w1@0x48 r2@0x48``; ``cs0
tx4/rx4``), the outcome (``ok``, the errno of a failure, the code of an ERROR)
and how long the server held it.  Client-supplied text (bus and client names) is
escaped by the log formatters.  A session makes a :class:`RequestLog` only when
DEBUG is on, so the hot path pays one ``is not None`` test otherwise.
"""

from __future__ import annotations

import errno
import logging
from typing import Protocol

from protocol.events import Error, Event, I2CRequest, Result, SpiRequest
from protocol.virtio import format_i2c_addr

from ..logs import event

log = logging.getLogger("busbridge.server")

#: Messages or transfers spelled out per line; the rest is counted.
SHOWN = 8


class _Loop(Protocol):
    def time(self) -> float: ...


class _Session(Protocol):
    peer: str
    client_name: str

    @property
    def loop(self) -> _Loop: ...


def describe(ev: I2CRequest | SpiRequest) -> tuple[str, str]:
    """``("i2c:1", "w1@0x48 r2@0x48")`` / ``("spi:0", "cs0 tx4/rx4")``."""
    if isinstance(ev, I2CRequest):
        what = " ".join(f"{'r' if m.is_read else 'w'}{m.size}@{format_i2c_addr(m.addr, m.ten_bit)}"
                        for m in ev.msgs[:SHOWN])
        more = len(ev.msgs) - SHOWN
        where = f"i2c:{ev.bus}"
    else:
        what = f"cs{ev.cs} " + " ".join(f"tx{len(t.tx or b'')}/rx{t.rx_len or 0}"
                                        for t in ev.transfers[:SHOWN])
        more = len(ev.transfers) - SHOWN
        where = f"spi:{ev.bus}"
    return where, what + (f" (+{more})" if more > 0 else "")


class RequestLog:
    """The requests of one session between arrival and answer."""

    def __init__(self, session: _Session) -> None:
        self.session = session
        self.pending: dict[int, tuple[str, str, float]] = {}

    def arrived(self, ev: I2CRequest | SpiRequest) -> None:
        where, what = describe(ev)
        self.pending[ev.id] = (where, what, self.session.loop.time())

    def answered(self, ev: Event) -> None:
        rid = getattr(ev, "id", 0)
        noted = self.pending.pop(rid, None) if rid else None
        if noted is None:
            return
        where, what, t0 = noted
        if isinstance(ev, Error):
            outcome = f"{ev.code}: {ev.message}"
        elif isinstance(ev, Result) and ev.failures:
            f = ev.failures[0]
            outcome = f"{errno.errorcode.get(f.errno, str(f.errno))}: {f.message}"
        else:
            outcome = "ok"
        s = self.session
        event(log, logging.DEBUG, "request", peer=s.peer, client=s.client_name, id=rid,
              bus=where, what=what, outcome=outcome,
              ms=round((s.loop.time() - t0) * 1000, 3))

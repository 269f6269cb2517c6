"""An in-memory client-server pair of Connections, and real handshakes for single ones.

As h11's tests do, protocol tests get a Connection into a state by passing it
the bytes a real peer Connection writes, never by setting its state: what a
test sets up is then something that can really happen on a wire.
"""

from __future__ import annotations

from collections.abc import Iterable

from protocol import (
    DEFAULT_LIMITS,
    Connection,
    Event,
    Hello,
    HelloInfo,
    I2CRequest,
    Limits,
    LimitsInfo,
    ProtocolError,
    Result,
    Role,
    Welcome,
    WelcomeInfo,
    read,
    write,
)
from protocol.admin import AdminRequest, AdminResult


def welcome(limits: Limits = DEFAULT_LIMITS) -> Welcome:
    """A WELCOME advertising ``limits`` (no buses)."""
    return Welcome(WelcomeInfo(server="tests", limits=LimitsInfo(**limits.as_dict())))


def _took(conn: Connection, data: bytes) -> list[Event]:
    items = conn.receive(data)
    for item in items:
        if isinstance(item, ProtocolError):
            raise item
    return items  # type: ignore[return-value]


def handshake(conn: Connection, peer_limits: Limits = DEFAULT_LIMITS) -> Connection:
    """``conn`` after taking a real peer's first frame: a HELLO for a server, or a
    WELCOME advertising ``peer_limits`` for a client.  Returns ``conn``."""
    if conn.role is Role.SERVER:
        _took(conn, Connection(Role.CLIENT).send(Hello(HelloInfo(client="tests"))))
    else:
        _took(conn, Connection(Role.SERVER).send(welcome(peer_limits)))
    assert conn.handshaken
    return conn


def request(rid: int) -> I2CRequest:
    """The smallest request: a zero-length write (an address probe)."""
    return I2CRequest(rid, "1", (write(0x48),))


def put_in_flight(conn: Connection, ids: Iterable[int]) -> Connection:
    """Requests ``ids`` in flight on ``conn`` through real traffic: a client sends
    them; a server (already past HELLO) receives them from a client."""
    if conn.role is Role.CLIENT:
        for rid in ids:
            conn.send(request(rid))
    else:
        peer = Connection(Role.CLIENT)
        _took(conn, b"".join(peer.send(request(rid)) for rid in ids))
    return conn


def fitting(result: Result) -> I2CRequest:
    """A request that ``result`` answers (SPEC.md §4.5): one message per status byte, the
    read entries placed in order on messages that may hold them (any for an empty
    entry, one whose status is OK for data), every other message a probe."""
    n = len(result.status)
    msgs = [write(0x48)] * n
    i = 0
    for j, entry in enumerate(result.reads):
        while i < n and entry and result.status[i]:
            i += 1
        if n - i < len(result.reads) - j:
            raise ValueError(f"no request has the shape of {result!r}")
        msgs[i] = read(0x48, len(entry) if not result.status[i] else 1)
        i += 1
    return I2CRequest(result.id, "1", tuple(msgs))


def expecting(conn: Connection, *results: Result) -> Connection:
    """A client ``conn`` (past its handshake) that sent the requests ``results`` answer."""
    for r in results:
        conn.send(fitting(r))
    return conn


def answering(rid: int, limits: Limits = DEFAULT_LIMITS) -> Connection:
    """A server connection that owes an answer to request ``rid`` (past HELLO, ``rid``
    received): the only state in which it may send that RESULT, ERROR or LEASE_RESULT."""
    return put_in_flight(handshake(Connection(Role.SERVER, limits)), [rid])


def subscribe(conn: Connection, sid: int) -> Connection:
    """Subscription ``sid`` open on ``conn`` (past its handshake) through real traffic: a
    ``trace.start`` with that id and its ADMIN_RESULT, from whichever side is the peer."""
    start = AdminRequest(sid, "trace.start", {})
    if conn.role is Role.CLIENT:
        conn.send(start)
        peer = handshake(Connection(Role.SERVER))  # a server answers what it received
        _took(peer, Connection(Role.CLIENT).send(start))
        _took(conn, peer.send(AdminResult(sid, {})))
    else:
        _took(conn, Connection(Role.CLIENT).send(start))
        conn.send(AdminResult(sid, {}))
    assert sid in conn.subscriptions
    return conn


class ConnectionPair:
    """A client and a server Connection back to back, with nothing in between.

    ``client_sends`` / ``server_sends`` write events from one side and return
    what the other side took from those bytes (events and refusals, in order).
    """

    def __init__(self, client_limits: Limits = DEFAULT_LIMITS,
                 server_limits: Limits = DEFAULT_LIMITS) -> None:
        self.client = Connection(Role.CLIENT, client_limits)
        self.server = Connection(Role.SERVER, server_limits)

    def client_sends(self, *events: Event) -> list[Event | ProtocolError]:
        return self.server.receive(b"".join(self.client.send(e) for e in events))

    def server_sends(self, *events: Event) -> list[Event | ProtocolError]:
        return self.client.receive(b"".join(self.server.send(e) for e in events))

    def handshake(self, hello: Hello | None = None) -> ConnectionPair:
        """HELLO one way, then a WELCOME advertising the server's limits the other."""
        hello = hello or Hello(HelloInfo(client="tests"))
        assert self.client_sends(hello) == [hello]
        w = welcome(self.server.limits)
        assert self.server_sends(w) == [w]
        return self

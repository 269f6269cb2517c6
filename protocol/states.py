"""The roles and states of a connection, and the only moves between the states.

Kept apart from :mod:`protocol.connection` so that the state machine's shape
(SPEC.md §6) reads in one screen.
"""

from __future__ import annotations

from enum import Enum
from typing import Final


class Role(Enum):
    CLIENT = "client"
    SERVER = "server"


class State(Enum):
    """Where a connection stands in SPEC.md §6 (receiving side).

    A server starts in ``AWAIT_HELLO``, a client in ``AWAIT_WELCOME``; a valid
    handshake frame from the peer moves either to ``OPEN``, and any fatal
    :class:`ProtocolError` to ``CLOSED``.  Sending never changes the state: a
    client may pipeline requests behind its HELLO (the server accepts them
    once it has accepted HELLO), and a ``CLOSED`` connection still sends the
    ERROR frame that explains why.
    """

    #: Server: only HELLO, PING and PONG are accepted; a request frame is fatal.
    AWAIT_HELLO = "await-hello"
    #: Client: answers to pipelined requests are accepted; WELCOME sets the peer's limits.
    AWAIT_WELCOME = "await-welcome"
    #: Handshake done: requests and answers flow; a second handshake frame is fatal.
    OPEN = "open"
    #: A fatal error was received: the stream cannot be trusted, nothing more is decoded.
    CLOSED = "closed"


#: The only moves there are; anything else is a bug in protocol.connection, not the peer's fault.
MOVES: Final[dict[State, tuple[State, ...]]] = {
    State.AWAIT_HELLO: (State.OPEN, State.CLOSED),
    State.AWAIT_WELCOME: (State.OPEN, State.CLOSED),
    State.OPEN: (State.CLOSED,),
    State.CLOSED: (),
}

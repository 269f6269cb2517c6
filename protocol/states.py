"""The state machine's tables: roles, states, and what each role sends and accepts.

:mod:`protocol.connection` is the machine; these are its rules, one table each,
from SPEC.md §4 (direction), §6 (handshake), §7 and §9 (what is fatal when):
``RECEIVES`` maps a role and state to the frame types accepted and the method
of :class:`~protocol.connection.Connection` that takes each (any other type is
refused there), ``SENDS`` what a role may send, ``MOVES`` the only state
changes there are.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Final

from .admin import AdminEvent, AdminRequest, AdminResult
from .events import (
    ChainedI2CRequest,
    Error,
    FrameType,
    Hello,
    I2CRequest,
    Ping,
    Pong,
    Result,
    SpiRequest,
    Welcome,
)
from .leases import LeaseRequest, LeaseResult


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


#: The only moves there are; anything else is a bug in this module, not the peer's fault.
MOVES: Final[dict[State, tuple[State, ...]]] = {
    State.AWAIT_HELLO: (State.OPEN, State.CLOSED),
    State.AWAIT_WELCOME: (State.OPEN, State.CLOSED),
    State.OPEN: (State.CLOSED,),
    State.CLOSED: (),
}

_T = FrameType
#: What each role accepts in each state: frame type -> the method that takes it.
#: Any other type goes to ``_unexpected``.
RECEIVES: Final[dict[tuple[Role, State], dict[int, str]]] = {
    (Role.SERVER, State.AWAIT_HELLO): {
        _T.HELLO: "_on_hello", _T.PING: "_on_ping", _T.PONG: "_on_pong",
        _T.I2C: "_on_early_request", _T.SPI: "_on_early_request",
        _T.LEASE: "_on_early_request", _T.ADMIN: "_on_early_request",
    },
    (Role.SERVER, State.OPEN): {
        _T.I2C: "_on_i2c", _T.SPI: "_on_spi", _T.LEASE: "_on_lease", _T.PING: "_on_ping",
        _T.PONG: "_on_pong", _T.HELLO: "_on_second_handshake", _T.ADMIN: "_on_admin",
    },
    (Role.CLIENT, State.AWAIT_WELCOME): {
        _T.WELCOME: "_on_welcome", _T.RESULT: "_on_result", _T.ERROR: "_on_error",
        _T.LEASE_RESULT: "_on_lease_result", _T.PING: "_on_ping", _T.PONG: "_on_pong",
        _T.ADMIN_RESULT: "_on_admin_result", _T.EVENT: "_on_admin_event",
    },
    (Role.CLIENT, State.OPEN): {
        _T.RESULT: "_on_result", _T.ERROR: "_on_error", _T.LEASE_RESULT: "_on_lease_result",
        _T.PING: "_on_ping", _T.PONG: "_on_pong", _T.WELCOME: "_on_second_handshake",
        _T.ADMIN_RESULT: "_on_admin_result", _T.EVENT: "_on_admin_event",
    },
}

#: What each role may send (SPEC.md §4's direction column), and what to call it
#: when the other role tries.
SENDS: Final[dict[Role, dict[type[Any], str]]] = {
    Role.CLIENT: {
        I2CRequest: "requests", ChainedI2CRequest: "requests", SpiRequest: "requests",
        LeaseRequest: "requests", AdminRequest: "requests", Hello: "HELLO", Ping: "PING",
        Pong: "PONG",
    },
    Role.SERVER: {
        Result: "answers", Error: "answers", LeaseResult: "answers", AdminResult: "answers",
        AdminEvent: "EVENT", Welcome: "WELCOME", Ping: "PING", Pong: "PONG",
    },
}

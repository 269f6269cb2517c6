"""The sans-I/O connection: the one place where protocol state changes.

In the spirit of h11/wsproto, nothing here touches a socket, and there is one
documented entry per direction:

* :meth:`Connection.receive` takes whatever the transport read and returns
  every complete event, a refused frame appearing in order as its
  :class:`ProtocolError`;
* :meth:`Connection.send` takes one event and returns the bytes to write.

What a role accepts in each :class:`State` is one table (``_RECEIVES``, from
SPEC.md §6, §7 and §9), what it may send is another (``_SENDS``), and only
:meth:`Connection._enter` moves between states, along ``_MOVES``.  Turning
events into bytes and back is :mod:`protocol.codec`'s job.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from enum import Enum
from typing import Any, Final

from .codec import (
    Buffer,
    decode_error,
    decode_hello,
    decode_i2c,
    decode_ping,
    decode_pong,
    decode_result,
    decode_spi,
    decode_welcome,
    encode_body,
    encode_i2c,
    encode_result,
    encode_spi,
    frame,
    frame_too_large,
    not_a_frame,
    pack_prefix,
    request_id_or_0,
    stream_ended_inside_frame,
    undecodable,
    unpack_prefix,
    unpacker,
)
from .errors import ErrorCode, LocalProtocolError, ProtocolError
from .events import (
    ChainedI2CRequest,
    Error,
    Event,
    FrameType,
    Hello,
    I2CRequest,
    Ping,
    Pong,
    Result,
    SpiRequest,
    Welcome,
)
from .leases import LeaseRequest, LeaseResult, decode_lease, decode_lease_result
from .limits import DEFAULT_LIMITS, MAX_REQUEST_ID, PREFIX_SIZE, Limits

# Callers of the state machine import these from here as well as from their homes.
__all__ = ["NEED_DATA", "Connection", "LocalProtocolError", "Role", "State", "encode_body",
           "frame"]


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
_MOVES: Final[dict[State, tuple[State, ...]]] = {
    State.AWAIT_HELLO: (State.OPEN, State.CLOSED),
    State.AWAIT_WELCOME: (State.OPEN, State.CLOSED),
    State.OPEN: (State.CLOSED,),
    State.CLOSED: (),
}

_T = FrameType
#: What each role accepts in each state: frame type -> the method that takes it.
#: Any other type goes to ``_unexpected``.
_RECEIVES: Final[dict[tuple[Role, State], dict[int, str]]] = {
    (Role.SERVER, State.AWAIT_HELLO): {
        _T.HELLO: "_on_hello", _T.PING: "_on_ping", _T.PONG: "_on_pong",
        _T.I2C: "_on_early_request", _T.SPI: "_on_early_request",
        _T.LEASE: "_on_early_request",
    },
    (Role.SERVER, State.OPEN): {
        _T.I2C: "_on_i2c", _T.SPI: "_on_spi", _T.LEASE: "_on_lease", _T.PING: "_on_ping",
        _T.PONG: "_on_pong", _T.HELLO: "_on_second_handshake",
    },
    (Role.CLIENT, State.AWAIT_WELCOME): {
        _T.WELCOME: "_on_welcome", _T.RESULT: "_on_result", _T.ERROR: "_on_error",
        _T.LEASE_RESULT: "_on_lease_result", _T.PING: "_on_ping", _T.PONG: "_on_pong",
    },
    (Role.CLIENT, State.OPEN): {
        _T.RESULT: "_on_result", _T.ERROR: "_on_error", _T.LEASE_RESULT: "_on_lease_result",
        _T.PING: "_on_ping", _T.PONG: "_on_pong", _T.WELCOME: "_on_second_handshake",
    },
}

#: What each role may send (SPEC.md §4's direction column), and what to call it
#: when the other role tries.
_SENDS: Final[dict[Role, dict[type[Any], str]]] = {
    Role.CLIENT: {
        I2CRequest: "requests", ChainedI2CRequest: "requests", SpiRequest: "requests",
        LeaseRequest: "requests", Hello: "HELLO", Ping: "PING", Pong: "PONG",
    },
    Role.SERVER: {
        Result: "answers", Error: "answers", LeaseResult: "answers", Welcome: "WELCOME",
        Ping: "PING", Pong: "PONG",
    },
}


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by :meth:`Connection.next_event` when a whole frame has not arrived.
NEED_DATA: Final = _NeedData()

_Handler = Callable[[list[Any]], Event]


def _bad(code: ErrorCode, msg: str, rid: int = 0, fatal: bool = False) -> ProtocolError:
    return ProtocolError(code, msg, request_id=rid, fatal=fatal)


class _Core:
    """The state, the limits and the ids in flight; the layers below change them."""

    def __init__(self, role: Role, limits: Limits = DEFAULT_LIMITS) -> None:
        self.role: Final = role
        self._limits = limits
        self._peer_limits = limits  # the client learns the server's from WELCOME
        self._result_cap = limits.max_frame  # a RESULT must fit both sides' max_frame
        self._in_flight: set[int] = set()
        self._last_id = 0
        self._buf = bytearray()  # the start of a frame whose end has not arrived
        self._eof = False
        self._unpackb = unpacker(limits, role is Role.CLIENT)
        self._tables: dict[State, dict[int, _Handler]] = {
            state: {int(t): getattr(self, name) for t, name in table.items()}
            for (r, state), table in _RECEIVES.items() if r is role
        }
        self._may_send = frozenset(_SENDS[role])
        # The next_event() view's own queue (see receive_data).
        self._pending = bytearray()
        self._pending_eof = False
        self._queue: deque[Event | ProtocolError] = deque()
        self._state = State.AWAIT_HELLO if role is Role.SERVER else State.AWAIT_WELCOME
        self._on = self._tables[self._state]

    @property
    def state(self) -> State:
        return self._state

    @property
    def handshaken(self) -> bool:
        """The handshake completed and no fatal error came since (``state`` is OPEN)."""
        return self._state is State.OPEN

    @property
    def closed(self) -> bool:
        """A fatal error was received: nothing more is decoded."""
        return self._state is State.CLOSED

    @property
    def limits(self) -> Limits:
        """This side's limits (a server advertises them in WELCOME)."""
        return self._limits

    @property
    def peer_limits(self) -> Limits:
        """The peer's limits: on a client, those of WELCOME; until then, its own."""
        return self._peer_limits

    @property
    def in_flight(self) -> frozenset[int]:
        """A snapshot of the request ids sent (client) or accepted (server) and not yet answered."""
        return frozenset(self._in_flight)

    def _enter(self, new: State) -> None:
        """The one place the state changes, and only along ``_MOVES``."""
        if new not in _MOVES[self._state]:
            raise RuntimeError(f"{self.role.value} connection: no move from "
                               f"{self._state.name} to {new.name}")
        self._state = new
        self._on = self._tables.get(new, {})

    def next_id(self) -> int:
        """A request id not in flight: counting up, wrapping at ``MAX_REQUEST_ID``."""
        rid = self._last_id
        while True:
            rid = rid + 1 if rid < MAX_REQUEST_ID else 1
            if rid not in self._in_flight:
                self._last_id = rid
                return rid

    def withdraw(self, request_id: int) -> None:
        """Forget an accepted request that will never be answered: the transport is gone.

        Only a server withdraws.  A client's id stays in flight until its
        answer arrives, because the server answers every request it received
        (SPEC.md §7) and a reused id would match the late answer.
        """
        if self.role is not Role.SERVER:
            raise LocalProtocolError("only a server withdraws a request")
        self._in_flight.discard(request_id)


class _Receiver(_Core):
    """Bytes in, events out: :meth:`receive`, its handlers and its pull view."""

    def receive(self, data: Buffer) -> list[Event | ProtocolError]:
        """Feed bytes read from the transport and return every complete event.

        THE receiving entry: the only one that decodes.  Frames that arrive
        whole are decoded straight from ``data`` (no copy into the
        connection's buffer; nothing returned keeps a view of it).  A refused
        frame appears in the list as its :class:`ProtocolError`, in order;
        after a ``fatal`` one the list ends and the state is ``CLOSED``.
        ``b""`` means end of stream (an error if it ends inside a frame).
        Raises :class:`ProtocolError` if the connection had already failed.
        """
        if self._state is State.CLOSED:
            raise _bad(ErrorCode.MALFORMED, "connection already failed", fatal=True)
        out: list[Event | ProtocolError] = []
        own = self._buf
        if not data:
            self._eof = True
            if own:
                out.append(self._fail(stream_ended_inside_frame(len(own))))
            return out
        buf: Buffer
        if own:  # part of a frame is waiting: continue in the connection's own buffer
            own += data
            buf = own
            self._buf = bytearray()
        else:
            buf = data
        size = len(buf)
        unpackb = self._unpackb
        pos = 0
        limit = self._limits.max_frame
        while size - pos >= PREFIX_SIZE:
            n = unpack_prefix(buf, pos)[0]
            if n > limit:  # checked before anything is buffered or decoded
                out.append(self._fail(frame_too_large(n, limit)))
                return out
            end = pos + PREFIX_SIZE + n
            if end > size:
                break
            body = buf[pos + PREFIX_SIZE : end]
            pos = end
            item: ProtocolError
            try:
                f = unpackb(body)
            except Exception as e:
                item = undecodable(e, body)
            else:
                if type(f) is list and len(f) > 1 and type(f[0]) is int:
                    take = self._on.get(f[0])  # not cached: a HELLO changes the table
                    if take is None:
                        take = self._unexpected
                    try:
                        out.append(take(f))
                        continue
                    except ProtocolError as e:
                        item = e
                else:
                    item = not_a_frame()
            # A kept error must not pin a view of the caller's buffer through
            # its traceback or the exception it replaced.
            item.__traceback__ = item.__context__ = None
            out.append(item)
            if item.fatal:
                self._enter(State.CLOSED)
                return out
        if pos < size:
            if buf is own:  # keep it: a frame trickling in is not copied again
                if pos:
                    del own[:pos]
                self._buf = own
            else:
                self._buf = bytearray(buf[pos:])
        return out

    def _fail(self, error: ProtocolError) -> ProtocolError:
        self._enter(State.CLOSED)
        return error

    # The handlers of _RECEIVES: each takes an unpacked body ``[type, id, ...]``.

    def _on_i2c(self, f: list[Any]) -> Event:
        ev = decode_i2c(f, self._limits)
        rid = ev.id
        in_flight = self._in_flight
        if rid in in_flight or len(in_flight) >= self._limits.max_in_flight:
            self._refuse_admission(rid)
        in_flight.add(rid)
        return ev

    def _on_spi(self, f: list[Any]) -> Event:
        ev = decode_spi(f, self._limits)
        self._admit(ev.id)
        return ev

    def _on_lease(self, f: list[Any]) -> Event:
        ev = decode_lease(f)
        self._admit(ev.id)
        return ev

    def _admit(self, rid: int) -> None:
        if rid in self._in_flight or len(self._in_flight) >= self._limits.max_in_flight:
            self._refuse_admission(rid)
        self._in_flight.add(rid)

    def _refuse_admission(self, rid: int) -> None:
        if rid in self._in_flight:
            raise _bad(ErrorCode.DUPLICATE_ID, f"request id {rid} is already in flight",
                       fatal=True)
        raise _bad(ErrorCode.LIMIT_EXCEEDED, f"{len(self._in_flight)} requests in flight; "
                   f"limit {self._limits.max_in_flight}", rid)

    def _on_early_request(self, f: list[Any]) -> Event:
        raise _bad(ErrorCode.HANDSHAKE_REQUIRED, "send HELLO first", fatal=True)

    def _on_hello(self, f: list[Any]) -> Event:
        ev = decode_hello(f)
        self._enter(State.OPEN)
        return ev

    def _on_welcome(self, f: list[Any]) -> Event:
        ev = decode_welcome(f)
        self._peer_limits = peer = ev.info.limits.to_limits()
        self._result_cap = min(peer.max_frame, self._limits.max_frame)
        self._enter(State.OPEN)
        return ev

    def _on_second_handshake(self, f: list[Any]) -> Event:
        what = "HELLO on one connection" if self.role is Role.SERVER else "WELCOME"
        raise _bad(ErrorCode.MALFORMED, f"second {what}", fatal=True)

    def _on_result(self, f: list[Any]) -> Event:
        ev = decode_result(f)
        try:
            self._in_flight.remove(ev.id)
        except KeyError:
            raise self._unknown_id(ev.id) from None
        return ev

    def _on_error(self, f: list[Any]) -> Event:
        ev = decode_error(f)
        if ev.id:  # id 0: about the connection, not a request
            self._settle(ev.id)
        return ev

    def _on_lease_result(self, f: list[Any]) -> Event:
        ev = decode_lease_result(f)
        self._settle(ev.id)
        return ev

    def _settle(self, rid: int) -> None:
        try:
            self._in_flight.remove(rid)
        except KeyError:
            raise self._unknown_id(rid) from None

    @staticmethod
    def _unknown_id(rid: int) -> ProtocolError:
        return _bad(ErrorCode.MALFORMED, f"response for unknown request id {rid}", fatal=True)

    def _on_ping(self, f: list[Any]) -> Event:
        return decode_ping(f)

    def _on_pong(self, f: list[Any]) -> Event:
        return decode_pong(f)

    def _unexpected(self, f: list[Any]) -> Event:
        """A frame type this role does not take in this state (or no known type at all)."""
        if self.role is Role.CLIENT:
            raise _bad(ErrorCode.MALFORMED, f"frame type {f[0]} is not accepted by a client",
                       fatal=True)
        # Before HELLO the stream may not be busbridge at all: fatal; after it, only
        # this frame is refused (a newer client's frame type, say).
        raise _bad(ErrorCode.MALFORMED, f"frame type {f[0]} is not accepted by a server",
                   request_id_or_0(f[1]), fatal=self._state is not State.OPEN)

    # -- the pull view of receive() ------------------------------------------

    def receive_data(self, data: Buffer) -> None:
        """Queue bytes for :meth:`next_event`; ``b""`` means end of stream.

        ``receive_data`` + :meth:`next_event` is a thin view of :meth:`receive`
        kept for callers that want one event per call (the spec vectors, the
        fuzzers, tests that assert ``NEED_DATA``); it decodes through
        ``receive`` on demand, so the two cannot disagree.  The transports use
        ``receive``: it returns a whole read's events at once, without a call
        per event.
        """
        if data:
            self._pending += data
        else:
            self._pending_eof = True

    def next_event(self) -> Event | _NeedData | None:
        """The next complete event, ``NEED_DATA``, or ``None`` at a clean end of stream.

        Raises :class:`ProtocolError`; unless it is ``fatal`` the offending
        frame has been consumed and decoding can continue.
        """
        queue = self._queue
        if not queue:
            if self._state is State.CLOSED:
                raise _bad(ErrorCode.MALFORMED, "connection already failed", fatal=True)
            if self._pending:
                data, self._pending = self._pending, bytearray()
                queue.extend(self.receive(data))
            if not queue and self._pending_eof and not self._eof:
                queue.extend(self.receive(b""))
            if not queue:
                return None if self._eof else NEED_DATA
        item = queue.popleft()
        if isinstance(item, ProtocolError):
            raise item
        return item

    def events(self) -> Iterator[Event]:
        """Drain complete events; stops at ``NEED_DATA`` or end of stream."""
        while True:
            ev = self.next_event()
            if ev is None or ev is NEED_DATA:
                return
            yield ev  # type: ignore[misc]

    @property
    def buffered(self) -> int:
        """Bytes received that are not yet decoded (an incomplete frame, or queued ones)."""
        return len(self._buf) + len(self._pending)


class Connection(_Receiver):
    """One end of a busbridge connection: :meth:`receive` bytes, :meth:`send` events.

    The server role enforces the handshake (HELLO first, matching version), the
    in-flight limit and unique request ids; the client role checks its
    requests against the server's advertised limits and that every answer
    matches a request it sent.  The ids in flight are private: they change
    only when a request or its answer passes through :meth:`send` or
    :meth:`receive`, or when a server :meth:`withdraw`\\ s one.
    """

    def send(self, event: Event) -> bytes:
        """The bytes to write for ``event``: THE sending entry.

        A client's request is checked against the server's limits and its id
        goes in flight; a server's answer takes its id out of flight.  Raises
        :class:`LocalProtocolError` (and changes nothing) for what this role
        may not send or the peer would refuse.
        """
        if type(event) not in self._may_send:
            raise self._not_ours(event)
        # Direct calls (native ones under mypyc), the hot frames first.
        if type(event) is Result:
            return self._send_result(event)
        if type(event) is I2CRequest or type(event) is ChainedI2CRequest:
            return self._send_i2c(event)
        if type(event) is SpiRequest:
            return self._send_spi(event)
        if type(event) is LeaseRequest:
            return self._send_lease(event)
        if type(event) is Error or type(event) is LeaseResult:
            return self._send_answer(event)
        return self._send_other(event)

    def _not_ours(self, event: object) -> Exception:
        other = Role.SERVER if self.role is Role.CLIENT else Role.CLIENT
        kind = _SENDS[other].get(type(event))
        if kind is None:
            return TypeError(f"not a protocol event: {event!r}")
        return LocalProtocolError(f"only a {other.value} sends {kind}")

    def _send_i2c(self, ev: I2CRequest) -> bytes:
        rid = ev.id
        if not 0 < rid <= MAX_REQUEST_ID or rid in self._in_flight:
            self._check_request_id(rid)
        body = encode_i2c(ev, self._peer_limits, self._result_cap)
        if len(body) > self._peer_limits.max_frame:
            raise self._over_peer_limit(body)
        self._in_flight.add(rid)
        return pack_prefix(len(body)) + body

    def _send_spi(self, ev: SpiRequest) -> bytes:
        self._check_request_id(ev.id)
        return self._sent_request(ev.id, encode_spi(ev, self._peer_limits, self._result_cap))

    def _send_lease(self, ev: LeaseRequest) -> bytes:
        self._check_request_id(ev.id)
        return self._sent_request(ev.id, encode_body(ev))

    def _sent_request(self, rid: int, body: bytes) -> bytes:
        if len(body) > self._peer_limits.max_frame:
            raise self._over_peer_limit(body)
        self._in_flight.add(rid)
        return pack_prefix(len(body)) + body

    def _check_request_id(self, rid: int) -> None:
        if not 0 < rid <= MAX_REQUEST_ID:
            raise LocalProtocolError(f"request id {rid} out of range")
        if rid in self._in_flight:
            raise LocalProtocolError(f"request id {rid} is already in flight")

    def _send_result(self, ev: Result) -> bytes:
        body = encode_result(ev)
        if len(body) > self._peer_limits.max_frame:
            raise self._over_peer_limit(body)
        self._in_flight.discard(ev.id)
        return pack_prefix(len(body)) + body

    def _send_answer(self, ev: Error | LeaseResult) -> bytes:
        body = self._send_other(ev)
        self._in_flight.discard(ev.id)
        return body

    def _send_other(self, ev: Event) -> bytes:
        body = encode_body(ev)
        if len(body) > self._peer_limits.max_frame:
            raise self._over_peer_limit(body)
        return pack_prefix(len(body)) + body

    def _over_peer_limit(self, body: bytes) -> LocalProtocolError:
        return LocalProtocolError(f"frame of {len(body)} bytes exceeds the peer's limit "
                                  f"{self._peer_limits.max_frame}")

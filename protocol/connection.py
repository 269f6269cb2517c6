"""The sans-I/O connection: the one place where protocol state changes.

In the spirit of h11/wsproto, nothing here touches a socket, and there is one
documented entry per direction:

* :meth:`Connection.receive` takes whatever the transport read and returns
  every complete event, a refused frame appearing in order as its
  :class:`ProtocolError`;
* :meth:`Connection.send` takes one event and returns the bytes to write.

What a role accepts in each :class:`State` is one table (``RECEIVES``, from
SPEC.md §6, §7 and §9), what it may send is another (``SENDS``; both in
:mod:`protocol.states`), and only :meth:`Connection._enter` moves between
states, along ``MOVES``.  Turning events into bytes and back is
:mod:`protocol.codec`'s job.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Final

from .accel import i2c_feed
from .admin import (
    OPS,
    AdminEvent,
    AdminRequest,
    AdminResult,
    Subscriptions,
    check_params,
    decode_admin_result,
)
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
    encode_spi,
    frame,
    frame_result,
    pack_prefix,
    unpack_prefix,
    unpacker,
)
from .errors import ErrorCode, LocalProtocolError, ProtocolError
from .events import (
    ChainedI2CRequest,
    Error,
    Event,
    I2CRequest,
    Result,
    SpiRequest,
)
from .leases import LeaseRequest, LeaseResult, decode_lease, decode_lease_result
from .limits import DEFAULT_LIMITS, MAX_REQUEST_ID, PREFIX_SIZE, Limits
from .refusals import (
    admission_refused,
    answer_refused,
    frame_too_large,
    not_a_frame,
    stream_ended_inside_frame,
    undecodable,
    unknown_id,
)
from .shapes import Shape, i2c_shape, misfit, spi_shape
from .states import MOVES, RECEIVES, SENDS, Role, State

# Callers of the state machine import these from here as well as from their homes.
__all__ = ["NEED_DATA", "Connection", "LocalProtocolError", "Role", "State", "encode_body",
           "frame"]


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
        self._expect: dict[int, Shape] = {}  # client: what each RESULT must be (shapes.py)
        #: Server: ids (0 too) of non-fatal refusals whose ERROR is not yet sent, with
        #: how many times each is owed (a refusal never puts its id in flight, §9.1).
        self._owed: dict[int, int] = {}
        #: Server: the ERROR that ends the connection (a fatal one) has been sent.
        self._ended = False
        self._last_id = 0
        self._subs = Subscriptions()  # which ids carry EVENT frames (SPEC.md §4.12)
        self._buf = bytearray()  # the start of a frame whose end has not arrived
        self._eof = False
        self._unpackb = unpacker(limits, role is Role.CLIENT)
        self._feed = i2c_feed(role is Role.SERVER, self._in_flight, self._subs.live, limits)
        self._tables: dict[State, dict[int, _Handler]] = {
            state: {int(t): getattr(self, name) for t, name in table.items()}
            for (r, state), table in RECEIVES.items() if r is role
        }
        self._may_send = frozenset(SENDS[role])
        # The next_event() view's own queue (see receive_data).
        self._pending = bytearray()
        self._pending_eof = False
        self._queue: deque[Event | ProtocolError] = deque()
        self._state = State.AWAIT_HELLO if role is Role.SERVER else State.AWAIT_WELCOME
        self._on = self._tables[self._state]
        #: Every refusal is fatal: on a server before HELLO (the stream may not be
        #: busbridge at all), and on a client, which closes on any violation (SPEC §9).
        self._all_fatal = True

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

    @property
    def subscriptions(self) -> frozenset[int]:
        """Ids of the open subscriptions: their EVENT frames may be sent and received."""
        return frozenset(self._subs.live)

    def _enter(self, new: State) -> None:
        """The one place the state changes, and only along ``MOVES``."""
        if new not in MOVES[self._state]:
            raise RuntimeError(f"{self.role.value} connection: no move from "
                               f"{self._state.name} to {new.name}")
        self._state = new
        self._on = self._tables.get(new, {})
        self._all_fatal = self.role is Role.CLIENT or new is not State.OPEN

    def next_id(self) -> int:
        """A request id not in flight: counting up, wrapping at ``MAX_REQUEST_ID``."""
        rid = self._last_id
        while True:
            rid = rid + 1 if rid < MAX_REQUEST_ID else 1
            if rid not in self._in_flight and rid not in self._subs.live:
                self._last_id = rid
                return rid

    def withdraw(self, request_id: int) -> None:
        """Forget an accepted request that will never be answered: the transport is gone.

        Only a server withdraws: a client's id stays in flight until its answer arrives
        (the server answers every request, SPEC.md §7; a reused id would match it).
        """
        if self.role is not Role.SERVER:
            raise LocalProtocolError("only a server withdraws a request")
        if not self._settle_owed(request_id):
            self._in_flight.discard(request_id)
        self._subs.answered(request_id, False)

    def _settle_owed(self, rid: int) -> bool:
        """Take one owed refusal of ``rid`` off the books; False if none was owed."""
        n = self._owed.get(rid)
        if not n:
            return False
        if n == 1:
            del self._owed[rid]
        else:
            self._owed[rid] = n - 1
        return True


class _Receiver(_Core):
    """Bytes in, events out: :meth:`receive`, its handlers and its pull view."""

    def receive(self, data: Buffer) -> list[Event | ProtocolError]:
        """Feed bytes read from the transport and return every complete event.

        THE receiving entry: the only one that decodes.  Whole frames are decoded straight
        from ``data`` (nothing returned keeps a view of it); a server's common I2C frames
        in C when it is built (:mod:`protocol.accel`).  A refused frame appears in the list
        as its :class:`ProtocolError`, in order; after a ``fatal`` one the list ends and the
        state is ``CLOSED``.  ``b""`` means end of stream (an error if it ends inside a
        frame).  Raises :class:`ProtocolError` if the connection had already failed.
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
        feed = self._feed if self._state is State.OPEN else None
        while size - pos >= PREFIX_SIZE:
            if feed is not None and size - (pos := feed(buf, pos, out)) < PREFIX_SIZE:
                break  # all taken in C; else the frame at pos is the general path's
            n: int = unpack_prefix(buf, pos)[0]
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
            if self._all_fatal and not item.fatal:
                item = item.as_fatal()
            # A kept error pins no view of the caller's buffer (traceback, replaced exception).
            item.__traceback__ = item.__context__ = None
            out.append(item)
            if not item.fatal:  # its ERROR is owed (id 0 included)
                rid = item.request_id
                self._owed[rid] = self._owed.get(rid, 0) + 1
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

    # The handlers of RECEIVES: each takes an unpacked body ``[type, id, ...]``.

    def _on_i2c(self, f: list[Any]) -> Event:
        ev = decode_i2c(f, self._limits)
        self._admit(ev.id)
        return ev

    def _on_spi(self, f: list[Any]) -> Event:
        ev = decode_spi(f, self._limits)
        self._admit(ev.id)
        return ev

    def _on_lease(self, f: list[Any]) -> Event:
        ev = decode_lease(f)
        self._admit(ev.id)
        return ev

    def _on_admin(self, f: list[Any]) -> Event:
        ev = self._subs.admit(f)
        self._admit(ev.id)
        self._subs.requested(ev)
        return ev

    def _admit(self, rid: int) -> None:
        if rid in self._in_flight or rid in self._subs.live or \
                len(self._in_flight) >= self._limits.max_in_flight:
            raise admission_refused(rid, self._in_flight, self._subs.live,
                                    self._limits.max_in_flight)
        self._in_flight.add(rid)

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
            raise unknown_id(ev.id) from None
        why = misfit(ev, self._expect.pop(ev.id, None))  # None: a lease's or an admin id
        if why:  # a server violation, fatal like any other (SPEC.md §4.5, §9.3)
            raise _bad(ErrorCode.MALFORMED, f"RESULT of request {ev.id} does not fit it: "
                       f"{why}", fatal=True)
        return ev

    def _on_error(self, f: list[Any]) -> Event:
        ev = decode_error(f)
        if ev.id:  # id 0: about the connection, not a request
            self._settle(ev.id)
            self._expect.pop(ev.id, None)
            self._subs.answered(ev.id, False)
        return ev

    def _on_admin_result(self, f: list[Any]) -> Event:
        ev = decode_admin_result(f)
        self._settle(ev.id)
        self._subs.answered(ev.id, True)
        return ev

    def _on_admin_event(self, f: list[Any]) -> Event:
        return self._subs.event(f)

    def _on_lease_result(self, f: list[Any]) -> Event:
        ev = decode_lease_result(f)
        self._settle(ev.id)
        return ev

    def _settle(self, rid: int) -> None:
        try:
            self._in_flight.remove(rid)
        except KeyError:
            raise unknown_id(rid) from None

    def _on_ping(self, f: list[Any]) -> Event:
        return decode_ping(f)

    def _on_pong(self, f: list[Any]) -> Event:
        return decode_pong(f)

    def _unexpected(self, f: list[Any]) -> Event:
        """A frame type this role does not take in this state (or no known type at all).

        Its id is never echoed: it is no request frame, and a client closes on an
        ERROR whose id is not in flight (SPEC.md §7, §9).  After HELLO only this
        frame is refused; before it (and on a client) the refusal is fatal.
        """
        raise _bad(ErrorCode.MALFORMED,
                   f"frame type {f[0]} is not accepted by a {self.role.value}")

    # -- the pull view of receive() ------------------------------------------

    def receive_data(self, data: Buffer) -> None:
        """Queue bytes for :meth:`next_event`; ``b""`` means end of stream.

        ``receive_data`` + :meth:`next_event` is a thin view of :meth:`receive` kept for
        callers that want one event per call (the spec vectors, the fuzzers, tests that
        assert ``NEED_DATA``); it decodes through ``receive`` on demand, so the two cannot
        disagree.  The transports use ``receive``: a whole read's events, in one call.
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
        if type(event) is Error or type(event) is LeaseResult or type(event) is AdminResult:
            return self._send_answer(event)
        if type(event) is AdminEvent:
            return self._send_event(event)
        if type(event) is AdminRequest:
            return self._send_admin(event)
        return self._send_other(event)

    def _not_ours(self, event: object) -> Exception:
        other = Role.SERVER if self.role is Role.CLIENT else Role.CLIENT
        kind = SENDS[other].get(type(event))
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
        self._expect[rid] = i2c_shape(ev.msgs)
        return pack_prefix(len(body)) + body

    def _send_spi(self, ev: SpiRequest) -> bytes:
        self._check_request_id(ev.id)
        data = self._sent_request(ev.id, encode_spi(ev, self._peer_limits, self._result_cap))
        self._expect[ev.id] = spi_shape(ev.transfers)
        return data

    def _send_lease(self, ev: LeaseRequest) -> bytes:
        self._check_request_id(ev.id)
        return self._sent_request(ev.id, encode_body(ev))

    def _send_admin(self, ev: AdminRequest) -> bytes:
        self._check_request_id(ev.id)
        if ev.op in OPS:  # an op this version does not know may be a newer server's
            try:
                check_params(ev.id, ev.op, ev.params)
            except ProtocolError as e:
                raise LocalProtocolError(e.message) from None
        try:
            body = encode_body(ev)
        except (TypeError, ValueError) as err:  # what msgpack cannot carry (not `e`: mypyc)
            raise LocalProtocolError(f"ADMIN {ev.op}: {err}") from None
        data = self._sent_request(ev.id, body)
        self._subs.requested(ev)
        return data

    def _send_event(self, ev: AdminEvent) -> bytes:
        if ev.id not in self._subs.live:
            raise LocalProtocolError(f"EVENT for id {ev.id}, which names no open subscription")
        return self._send_other(ev)

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
        if rid in self._subs.live:
            raise LocalProtocolError(f"request id {rid} names a live subscription")

    def _send_result(self, ev: Result) -> bytes:
        if ev.id not in self._in_flight:
            raise self._not_in_flight(ev)
        data = frame_result(ev)  # prefix + body, the common one in C when built
        if len(data) - PREFIX_SIZE > self._peer_limits.max_frame:
            raise self._over_peer_limit(data[PREFIX_SIZE:])
        self._in_flight.remove(ev.id)
        return data

    def _send_answer(self, ev: Error | LeaseResult | AdminResult) -> bytes:
        """An ERROR, LEASE_RESULT or ADMIN_RESULT: only for a request read and not yet answered.

        ERROR may also answer a non-fatal refusal (its id is owed, never in flight)
        or carry id 0.  Once the receiving side is ``CLOSED``, an ERROR with id 0
        that no non-fatal refusal owes is the fatal one: the last thing a server
        sends (answers to frames read before the fatal frame may precede it).
        """
        rid = ev.id
        if self._ended:
            raise LocalProtocolError(f"cannot send {type(ev).__name__}: the connection "
                                     "ended with a fatal ERROR")
        owed = type(ev) is Error and rid in self._owed
        if rid not in self._in_flight and not owed and (rid or type(ev) is not Error):
            raise self._not_in_flight(ev)
        body = self._send_other(ev)
        if owed:
            self._settle_owed(rid)
        elif rid:
            self._in_flight.discard(rid)
            if type(ev) is not LeaseResult:
                self._subs.answered(rid, type(ev) is AdminResult)
        elif self._state is State.CLOSED:
            self._ended = True
            self._in_flight.clear()
            self._owed.clear()
        return body

    def _not_in_flight(self, ev: Result | Error | LeaseResult | AdminResult) -> LocalProtocolError:
        return answer_refused(type(ev).__name__, ev.id, self._ended,
                              self._state is State.AWAIT_HELLO)

    def _send_other(self, ev: Event) -> bytes:
        body = encode_body(ev)
        if len(body) > self._peer_limits.max_frame:
            raise self._over_peer_limit(body)
        return pack_prefix(len(body)) + body

    def _over_peer_limit(self, body: bytes) -> LocalProtocolError:
        return LocalProtocolError(f"frame of {len(body)} bytes exceeds the peer's limit "
                                  f"{self._peer_limits.max_frame}")

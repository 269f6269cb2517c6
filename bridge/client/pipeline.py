"""One pipelined connection to a server: frames out, answers matched to their requests.

:class:`Pipeline` is the half of :class:`~bridge.client.AsyncClient` that owns
the transport.  It writes frames (those made in one loop iteration go out in one
write), hands each answer to the future of its request, fails a request whose
deadline passed, and fails everything in flight when the connection drops;
nothing is ever re-sent.  The bus and lease calls built on it are in
:mod:`bridge.client.aio`; its underscore methods are for that one subclass.
"""

from __future__ import annotations

import asyncio
import errno as _errno
import ssl
from collections.abc import Sequence
from typing import Any, Protocol

from protocol.admin import AdminEvent, AdminRequest, AdminResult
from protocol.errors import ProtocolError
from protocol.events import Error, Event, Hello, Ping, Pong, Result, Welcome
from protocol.fastpath import ClientConnection
from protocol.handshake import WelcomeInfo
from protocol.leases import LeaseRequest, LeaseResult

from .. import __version__
from . import diagnose
from .auth import ClientAuth
from .errors import ConnectionLost, ConnectTimeout, RemoteError, RequestTimeout
from .requests import check_timeout, encode, hello_info

__all__ = ["Pipeline"]

#: How often request deadlines are checked (s): timeouts are this coarse.
_SWEEP = 0.05


class Subscriber(Protocol):
    """Where the EVENT frames of one subscription go (:class:`~.admin.Trace`)."""

    def push(self, event: dict[str, Any]) -> None: ...
    def end(self, exc: BaseException) -> None: ...


class _ClientProtocol(asyncio.BufferedProtocol):
    """Reads into one reused buffer (no 256 KiB allocation per read on asyncio)."""

    def __init__(self, client: Pipeline) -> None:
        self.client = client
        self._view = memoryview(bytearray(65536))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        self.client._feed(self._view[:nbytes])

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._lost(exc)


def release_held(held: dict[int, bytes], conn: ClientConnection) -> bytes:
    """Held requests to send now, in order, while the server has room for them."""
    out: list[bytes] = []
    while held and not conn.over_limit(len(held) - 1):
        out.append(held.pop(next(iter(held))))
    return b"".join(out)


def no_answer(host: str, port: int, sent: bool) -> RequestTimeout:
    if not sent:
        return RequestTimeout(_errno.ETIMEDOUT, f"{host}:{port} had no room for the request "
                              "in time (this connection's max_in_flight requests were all "
                              "unanswered); it was not sent")
    return RequestTimeout(_errno.ETIMEDOUT, f"no answer from {host}:{port} in time; the "
                          "request's effect is unknown and it was not re-sent")


class Pipeline:
    """The connection of an :class:`~bridge.client.AsyncClient`: opening it with its
    handshake, the requests in flight on it and their deadlines, reconnecting and closing.
    """

    def __init__(self, *, timeout: float = 5.0, name: str = "",
                 leases: Sequence[str] = (), auth: ClientAuth | None = None) -> None:
        self.timeout = check_timeout(timeout)
        self.auth = auth or ClientAuth()
        self.name = name or f"busbridge-client/{__version__}"
        #: Lease tokens presented in HELLO: this connection may use what they lease.
        self.lease_tokens = list(leases)
        self.conn = ClientConnection()
        self.welcome: WelcomeInfo | None = None
        self.address = ("", 0)
        self._transport: asyncio.Transport | None = None
        #: Request id -> (answer's future, deadline on the loop's clock).
        self._pending: dict[int, tuple[asyncio.Future[Event], float]] = {}
        self._welcomed: asyncio.Future[WelcomeInfo] | None = None
        self._closed_exc: BaseException | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._wbuf: list[bytes] = []
        #: Requests encoded but held back, in order: the server already holds its
        #: ``max_in_flight`` of this connection's (SPEC §10: a client must not exceed it).
        self._held: dict[int, bytes] = {}
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._gone: asyncio.Future[None] | None = None
        #: Subscription id -> where its EVENT frames go (registered before the request).
        self._subscribers: dict[int, Subscriber] = {}
        #: The peer's first bytes and why the connection ended, to explain a failed handshake.
        self._head = bytearray()
        self._lost_exc: Exception | None = None

    async def _open(self, host: str, port: int) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self.address = (host, port)
        self._welcomed = loop.create_future()
        ctx = self.auth.ssl_context()
        tls: dict[str, Any] = {} if ctx is None else {
            "ssl": ctx, "server_hostname": self.auth.server_hostname or host}
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: _ClientProtocol(self), host, port, **tls),
                self.timeout)
        except TimeoutError:
            raise ConnectTimeout(_errno.ETIMEDOUT, f"connect to {host}:{port} timed out") from None
        except ssl.SSLError as e:
            raise diagnose.tls_error(host, port, e, self.auth) from None
        self._transport = transport
        self._gone = loop.create_future()  # resolved by connection_lost
        hello = hello_info(self.name, self.auth.token, self.lease_tokens)
        try:
            self._transport.write(encode(self.conn, Hello(hello)))
            self.welcome = await asyncio.wait_for(self._welcomed, self.timeout)
        except TimeoutError:
            transport.abort()
            raise (await diagnose.explain(host, port, self._head, self.auth, self.timeout,
                                          timed_out=True)
                   or ConnectTimeout(_errno.ETIMEDOUT, f"no WELCOME from {host}:{port} in time")
                   ) from None
        except ConnectionLost as e:
            transport.abort()
            raise (await diagnose.explain(host, port, self._head, self.auth, self.timeout,
                                          exc=self._lost_exc) or e) from None
        except BaseException:
            transport.abort()
            raise

    # -- receiving ------------------------------------------------------------

    def _feed(self, data: bytes | memoryview) -> None:
        if self.welcome is None and len(self._head) < diagnose.HEAD:
            self._head += data[:diagnose.HEAD - len(self._head)]
        try:
            items = self.conn.receive(data)
        except ProtocolError as e:
            items = [e]
        pending = self._pending
        for ev in items:
            if type(ev) is Result:
                entry = pending.pop(ev.id, None)
                if entry is not None and not entry[0].done():
                    entry[0].set_result(ev)
            elif isinstance(ev, ProtocolError):
                self._fail_all(ConnectionLost(f"protocol error from server: {ev}"))
                if self._transport is not None:
                    self._transport.abort()
                return
            else:
                self._handle(ev)
        if self._held and self._transport is not None:
            self._transport.write(release_held(self._held, self.conn))

    def _handle(self, ev: Event) -> None:
        if isinstance(ev, AdminEvent):
            sub = self._subscribers.get(ev.id)
            if sub is not None:
                sub.push(ev.event)
        elif isinstance(ev, Result | Error | Pong | LeaseResult | AdminResult) \
                and ev.id in self._pending:
            fut = self._pending.pop(ev.id)[0]
            if not fut.done():
                fut.set_result(ev)
        elif isinstance(ev, Welcome):
            if self._welcomed is not None and not self._welcomed.done():
                self._welcomed.set_result(ev.info)
        elif isinstance(ev, Error) and ev.id == 0:
            exc = RemoteError(ev.code, ev.message)
            if self._welcomed is not None and not self._welcomed.done():
                self._welcomed.set_exception(exc)
            self._closed_exc = exc
        elif isinstance(ev, Ping) and self._transport is not None:
            self._transport.write(self.conn.send(Pong(ev.id)))

    def _lost(self, exc: Exception | None) -> None:
        self._lost_exc = exc
        host, port = self.address
        reason = f"{self._closed_exc}" if self._closed_exc else (str(exc) if exc else "closed")
        err = ConnectionLost(
            f"connection to {host}:{port} lost ({reason}); {len(self._pending)} request(s) "
            "in flight were not answered: their effect on the bus is unknown and they were "
            "not re-sent"
        )
        if self._welcomed is not None and not self._welcomed.done():
            self._welcomed.set_exception(err)
        self._fail_all(err)
        subscribers, self._subscribers = self._subscribers, {}
        for sub in subscribers.values():
            sub.end(err)
        self._transport = None
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)

    def _fail_all(self, exc: BaseException) -> None:
        self._closed_exc = self._closed_exc or exc
        self._wbuf.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._held.clear()
        pending, self._pending = self._pending, {}
        for fut, _deadline in pending.values():
            if not fut.done():
                fut.set_exception(exc)

    # -- sending ----------------------------------------------------------------

    def _next_id(self) -> int:
        return self.conn.next_id()

    def _not_connected(self) -> ConnectionLost:
        return ConnectionLost(f"not connected to {self.address[0]}:{self.address[1]}"
                              + (f" ({self._closed_exc})" if self._closed_exc else ""))

    def _start(self, rid: int, data: bytes, timeout: float) -> asyncio.Future[Event]:
        """Register the answer's future and write (or coalesce) the frame; no await."""
        loop = self._loop
        fut: asyncio.Future[Event] = loop.create_future()
        pending = self._pending
        pending[rid] = (fut, loop.time() + timeout)
        if self._sweeper is None:
            self._sweeper = loop.call_later(_SWEEP, self._sweep)
        held = self._held
        if held or self.conn.over_limit(len(held)):
            held[rid] = data  # sent when answers make room (_release_held)
        elif len(pending) == 1:
            self._transport.write(data)  # type: ignore[union-attr]  # alone: no reason to wait
        else:
            # Pipelined requests made in the same loop iteration go out in one write.
            wbuf = self._wbuf
            wbuf.append(data)
            if len(wbuf) == 1:
                loop.call_soon(self._flush)
        return fut

    async def _request(self, ev: Ping | LeaseRequest | AdminRequest, timeout: float | None
                       ) -> Event:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise self._not_connected()
        data = encode(self.conn, ev)
        return await self._start(ev.id, data, self.timeout if timeout is None else timeout)

    def _flush(self) -> None:
        wbuf = self._wbuf
        if wbuf and self._transport is not None:
            self._transport.write(b"".join(wbuf) if len(wbuf) > 1 else wbuf[0])
        wbuf.clear()

    def _sweep(self) -> None:
        """Fail requests past their deadline; one timer for all of them is cheaper."""
        self._sweeper = None
        now = self._loop.time()
        host, port = self.address
        pending = self._pending
        for rid, (fut, deadline) in list(pending.items()):
            if fut.done():  # cancelled by its awaiter; a late answer is dropped
                if self._held.pop(rid, None) is not None:  # and a held one is never sent
                    del pending[rid]
                    self.conn.unsend(rid)
                continue
            if deadline <= now:
                del pending[rid]
                sent = self._held.pop(rid, None) is None
                if not sent:  # held back: no answer will come
                    self.conn.unsend(rid)
                # Else the id stays in flight in the connection; a late answer is dropped.
                fut.set_exception(no_answer(host, port, sent))
        if pending:
            self._sweeper = self._loop.call_later(_SWEEP, self._sweep)

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    async def reconnect(self) -> None:
        """Open a NEW connection to the same server, with a fresh handshake.

        Nothing is re-sent: requests in flight on the old connection have
        failed with :class:`ConnectionLost` (if it is still up, it is dropped
        first and they fail now), and only requests made after this returns
        go out.  Deciding whether to repeat one is the caller's job, since
        I2C and SPI writes are not idempotent.  Raises ``OSError`` if the
        server cannot be reached; call it again to retry.
        """
        if self._transport is not None:
            self._transport.abort()
        if self._gone is not None and not self._gone.done():
            # Until connection_lost has run, the old connection could still fail requests.
            try:
                await asyncio.wait_for(asyncio.shield(self._gone), self.timeout)
            except TimeoutError:
                host, port = self.address
                raise ConnectTimeout(_errno.ETIMEDOUT, f"the connection to {host}:{port} "
                                     "did not close in time; call reconnect again") from None
        self.conn = ClientConnection()
        self.welcome = None
        self._closed_exc = None
        self._head.clear()
        await self._open(*self.address)

    async def close(self) -> None:
        self._flush()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        await asyncio.sleep(0)

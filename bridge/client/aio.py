"""Guest-side client: pipelined asyncio API and a thin synchronous wrapper.

Two levels:

* raw virtio — :meth:`AsyncClient.i2c_raw` takes ``(out_hdr bytes, buf)``
  pairs and :meth:`AsyncClient.i2c` / :meth:`AsyncClient.spi` take virtio
  request objects; both return the :class:`~protocol.events.Result` (status
  bytes and read data) without raising for bus errors;
* convenient — :meth:`AsyncClient.transfer` runs a list of
  :func:`write`/:func:`read` messages as ONE combined transaction and returns
  the read data, raising :class:`TransferError` (an ``OSError`` carrying the
  board's errno) when the bus says no.

A lost connection fails every request in flight with :class:`ConnectionLost`;
nothing is ever re-sent, because I2C and SPI writes are not idempotent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno as _errno
import ssl
import threading
from collections.abc import Callable, Coroutine, Iterable, Sequence
from concurrent.futures import Future as CFuture
from typing import Any, Self, TypeVar

from protocol.connection import Connection, LocalProtocolError, Role
from protocol.errors import ErrorCode, ProtocolError
from protocol.events import (
    ChainedI2CRequest,
    Error,
    Event,
    Hello,
    I2CRequest,
    Ping,
    Pong,
    Result,
    SpiRequest,
    Welcome,
)
from protocol.handshake import HelloInfo, WelcomeInfo
from protocol.leases import LeaseInfo, LeaseOp, LeaseRequest, LeaseResult
from protocol.limits import DEFAULT_PORT
from protocol.virtio import (
    I2CMsg,
    I2CStatus,
    SpiResult,
    SpiTransfer,
    SpiTransferHead,
    read,
    write,
)

from .. import __version__
from ..runtime import new_event_loop
from .auth import ClientAuth

T = TypeVar("T")

#: How often request deadlines are checked (s): timeouts are this coarse.
_SWEEP = 0.05

__all__ = [
    "AsyncClient",
    "BusBridgeError",
    "Client",
    "ConnectionLost",
    "Lease",
    "RemoteError",
    "TransferError",
    "parse_address",
    "read",
    "spi_xfer",
    "write",
]


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class BusBridgeError(Exception):
    """Base of every error this client raises (bus errors are also ``OSError``)."""


class ConnectionLost(BusBridgeError, ConnectionError):
    """The connection dropped; requests in flight have an unknown effect and are not re-sent."""


class RemoteError(BusBridgeError):
    """The server refused a frame (ERROR frame): ``code`` is machine-readable."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        # A message that already starts with its code ("busy: ...") is not prefixed twice.
        super().__init__(message if message.startswith(f"{code}:") else f"{code}: {message}")
        self.code = code
        self.message = message


class TransferError(BusBridgeError, OSError):
    """The bus refused or failed a transaction; ``errno`` is the board's errno.

    It is an ``OSError`` so code written for smbus2/spidev, which sees kernel
    errors as ``OSError``, keeps working.
    """

    def __init__(self, err: int, message: str, result: Result, index: int) -> None:
        OSError.__init__(self, err, message)
        self.result = result
        self.index = index


@dataclasses.dataclass(frozen=True)
class Lease:
    """A lease this client took: ``token`` is the secret to present (never log it)."""

    token: str = dataclasses.field(repr=False)
    info: LeaseInfo

    @property
    def id(self) -> str:
        return self.info.id


def _raise_for_i2c(result: Result) -> None:
    if not any(result.status):  # all OK (0)
        return
    k = next(i for i, b in enumerate(result.status) if b != I2CStatus.OK)
    f = next((x for x in result.failures if x.index == k), None)
    if f is None and result.failures:
        f = result.failures[0]
    err = f.errno if f and f.errno else _errno.EIO
    raise TransferError(err, f.message if f else f"message {k} failed", result, k)


def _raise_for_spi(result: Result) -> None:
    if not any(result.status):  # all TRANS_OK (0)
        return
    k = next(i for i, b in enumerate(result.status) if b == SpiResult.PARAM_ERR) if (
        SpiResult.PARAM_ERR in result.status
    ) else next(i for i, b in enumerate(result.status) if b != SpiResult.TRANS_OK)
    f = next((x for x in result.failures if x.index == k), None) or (
        result.failures[0] if result.failures else None
    )
    default = _errno.EINVAL if result.status[k] == SpiResult.PARAM_ERR else _errno.EIO
    err = f.errno if f and f.errno else default
    raise TransferError(err, f.message if f else f"transfer {k} failed", result, k)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def split_host_port(text: str) -> tuple[str, str]:
    """``HOST[:PORT]`` or ``[v6]:PORT`` (a trailing ``/`` allowed) → ``(host, port text)``;
    a bare IPv6 address has no port."""
    s = text.rstrip("/")
    if s.startswith("["):
        host, _, rest = s[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else ""
    if s.count(":") == 1:
        host, _, port = s.partition(":")
        return host, port
    return s, ""


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``HOST[:PORT]``, ``[v6]:PORT`` or ``tcp://HOST:PORT`` → ``(host, port)``."""
    s = text.strip()
    if s.startswith("tcp://"):
        s = s[6:]
    host, port = split_host_port(s)
    if not host:
        host = "127.0.0.1"
    try:
        p = int(port) if port else default_port
    except ValueError:
        raise ValueError(f"bad port in {text!r}") from None
    if not 0 < p < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return host, p


def spi_xfer(
    tx: bytes | bytearray | Sequence[int] | None = None,
    rx_len: int | None = None,
    *,
    speed_hz: int = 0,
    mode: int = 0,
    bits_per_word: int = 8,
    cs_change: bool = False,
    tx_nbits: int = 0,
    rx_nbits: int = 0,
    word_delay_ns: int = 0,
    cs_setup_ns: int = 0,
    cs_hold_ns: int = 0,
    cs_inactive_ns: int = 0,
) -> SpiTransfer:
    """One SPI transfer.  ``tx`` only: write; ``rx_len`` only: read; ``tx`` with
    ``rx_len=None``: full duplex of ``len(tx)`` bytes.  The chip select is
    filled in by :meth:`AsyncClient.spi`."""
    data = None if tx is None else bytes(tx)
    if rx_len is None:
        rx_len = len(data) if data is not None else 0
    head = SpiTransferHead(
        chip_select_id=0,
        bits_per_word=bits_per_word,
        cs_change=int(cs_change),
        tx_nbits=tx_nbits if data is not None else 0,
        rx_nbits=rx_nbits if rx_len else 0,
        mode=mode,
        freq=speed_hz,
        word_delay_ns=word_delay_ns,
        cs_setup_ns=cs_setup_ns,
        cs_delay_hold_ns=cs_hold_ns,
        cs_change_delay_inactive_ns=cs_inactive_ns,
    )
    return SpiTransfer(head, data, rx_len)


# ---------------------------------------------------------------------------
# asyncio client
# ---------------------------------------------------------------------------


def encode_i2c(conn: Connection, bus: str | int, msgs: Sequence[I2CMsg],
               timeout: float | None, chained: bool) -> tuple[int, bytes]:
    """A fresh request id and the I2C frame; limits broken locally raise ``ValueError``.

    ``timeout`` (s) goes to the server as the request's deadline.  Shared by both
    clients, so they agree on ids, deadlines and local refusals.
    """
    rid = conn.next_id()
    try:
        request = ChainedI2CRequest if chained else I2CRequest
        return rid, conn.send(request(rid, bus if type(bus) is str else str(bus), tuple(msgs),
                                      _server_ms(timeout)))
    except LocalProtocolError as e:
        raise ValueError(str(e)) from None


def encode_spi(conn: Connection, bus: str | int, cs: int, transfers: Sequence[SpiTransfer],
               timeout: float | None) -> tuple[int, bytes]:
    """Like :func:`encode_i2c`; every head's chip_select_id is set to ``cs``."""
    ts = tuple(
        t if t.head.chip_select_id == cs
        else dataclasses.replace(t, head=dataclasses.replace(t.head, chip_select_id=cs))
        for t in transfers
    )
    ev = SpiRequest(conn.next_id(), bus if type(bus) is str else str(bus), cs, ts,
                    _server_ms(timeout))
    try:
        return ev.id, conn.send(ev)
    except LocalProtocolError as e:
        raise ValueError(str(e)) from None


def _server_ms(timeout: float | None) -> int | None:
    return None if timeout is None else max(1, int(timeout * 1000))


def answer_wait(default: float, timeout: float | None) -> float:
    """How long a client waits: a request's own deadline leaves the server 1 s to
    answer it first (with ERR/ETIMEDOUT) before the client gives up."""
    return default if timeout is None else timeout + 1.0


class _ClientProtocol(asyncio.BufferedProtocol):
    """Reads into one reused buffer (no 256 KiB allocation per read on asyncio)."""

    def __init__(self, client: AsyncClient) -> None:
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


class AsyncClient:
    """A pipelined connection to one busbridge server.

    Many requests may be in flight at once (``asyncio.gather`` them); each one
    gets exactly one answer, or an exception.  Use ``async with await
    AsyncClient.connect(...)`` or call :meth:`close`.
    """

    def __init__(self, *, timeout: float = 5.0, name: str = "",
                 leases: Sequence[str] = (), auth: ClientAuth | None = None) -> None:
        self.timeout = timeout
        self.auth = auth or ClientAuth()
        self.name = name or f"busbridge-client/{__version__}"
        #: Lease tokens presented in HELLO: this connection may use what they lease.
        self.lease_tokens = list(leases)
        self.conn = Connection(Role.CLIENT)
        self.welcome: WelcomeInfo | None = None
        self.address = ("", 0)
        self._transport: asyncio.Transport | None = None
        #: Request id -> (answer's future, deadline on the loop's clock).
        self._pending: dict[int, tuple[asyncio.Future[Event], float]] = {}
        self._welcomed: asyncio.Future[WelcomeInfo] | None = None
        self._closed_exc: BaseException | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._wbuf: list[bytes] = []
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._gone: asyncio.Future[None] | None = None

    @classmethod
    async def connect(
        cls,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        timeout: float = 5.0,
        name: str = "",
        leases: Sequence[str] = (),
        tls: bool | ssl.SSLContext = False,
        cafile: str | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        server_hostname: str | None = None,
        token: str | None = None,
    ) -> AsyncClient:
        """Connect and complete the handshake (raises ``OSError`` on failure).

        ``leases``: tokens of leases held elsewhere (e.g. by ``busbridge run
        --lease``) that this connection may use.

        TLS is on with ``tls=True`` (system CAs), an ``ssl.SSLContext``, or when
        ``cafile`` (the CA that signed the server's certificate) or ``certfile``
        (this client's certificate, for mutual TLS) is given. ``token`` (an access
        token, not a lease token) is sent in HELLO to servers that require one. A
        server that refuses raises :class:`RemoteError` (``unauthorized``) or, for a
        refused certificate, ``ssl.SSLError`` / :class:`ConnectionLost`.
        """
        auth = ClientAuth(tls, cafile, certfile, keyfile, server_hostname, token)
        self = cls(timeout=timeout, name=name, leases=leases, auth=auth)
        await self._open(host, port)
        return self

    @classmethod
    async def connect_url(cls, url: str, **kw: Any) -> AsyncClient:
        host, port = parse_address(url)
        return await cls.connect(host, port, **kw)

    @classmethod
    async def connect_board(cls, board: str, broker: str | None = None, *,
                            prefix: str | None = None, timeout: float = 5.0,
                            **kw: Any) -> AsyncClient:
        """Connect to a board by name, found in the MQTT broker's retained inventory.

        ``broker`` defaults to ``$BUSBRIDGE_BROKER``, else localhost:1883; needs
        ``busbridge[mqtt]``.  An unknown or offline board raises ``OSError``.
        """
        from ..mqtt.discovery import resolve

        host, port = await resolve(board, broker, prefix=prefix, timeout=timeout)
        return await cls.connect(host, port, timeout=timeout, **kw)

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
            raise TimeoutError(_errno.ETIMEDOUT, f"connect to {host}:{port} timed out") from None
        self._transport = transport
        self._gone = loop.create_future()  # resolved by connection_lost
        hello = HelloInfo(client=self.name, token=self.auth.token, leases=self.lease_tokens)
        self._transport.write(self.conn.send(Hello(hello)))
        try:
            self.welcome = await asyncio.wait_for(self._welcomed, self.timeout)
        except BaseException:
            transport.abort()
            raise

    # -- receiving ------------------------------------------------------------

    def _feed(self, data: bytes | memoryview) -> None:
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

    def _handle(self, ev: Event) -> None:
        if isinstance(ev, Result | Error | Pong | LeaseResult) and ev.id in self._pending:
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
        self._transport = None
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)

    def _fail_all(self, exc: BaseException) -> None:
        self._closed_exc = self._closed_exc or exc
        self._wbuf.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
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
        if len(pending) == 1:
            self._transport.write(data)  # type: ignore[union-attr]  # alone: no reason to wait
        else:
            # Pipelined requests made in the same loop iteration go out in one write.
            wbuf = self._wbuf
            wbuf.append(data)
            if len(wbuf) == 1:
                loop.call_soon(self._flush)
        return fut

    def _start_i2c(self, bus: str | int, msgs: Sequence[I2CMsg], timeout: float | None,
                   chained: bool) -> asyncio.Future[Event]:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise self._not_connected()
        rid, data = encode_i2c(self.conn, bus, msgs, timeout, chained)
        return self._start(rid, data, answer_wait(self.timeout, timeout))

    async def _request(self, ev: Ping | LeaseRequest, timeout: float | None) -> Event:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise self._not_connected()
        try:
            data = self.conn.send(ev)
        except LocalProtocolError as e:
            raise ValueError(str(e)) from None
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
                continue
            if deadline <= now:
                # The id stays in flight in the connection; a late answer is dropped.
                del pending[rid]
                fut.set_exception(TimeoutError(
                    _errno.ETIMEDOUT,
                    f"no answer from {host}:{port} in time; the request's effect is "
                    "unknown and it was not re-sent"))
        if pending:
            self._sweeper = self._loop.call_later(_SWEEP, self._sweep)

    @staticmethod
    def _result(ev: Event) -> Result:
        if isinstance(ev, Error):
            raise RemoteError(ev.code, ev.message)
        assert isinstance(ev, Result)
        return ev

    # -- raw virtio level ---------------------------------------------------------

    async def i2c(
        self, bus: str | int, msgs: Sequence[I2CMsg], *, timeout: float | None = None
    ) -> Result:
        """Send virtio-i2c requests as they are (FAIL_NEXT flags are the caller's)."""
        ev = await self._start_i2c(bus, msgs, timeout, False)
        if type(ev) is Result:
            return ev
        return self._result(ev)

    async def i2c_raw(
        self, bus: str | int, requests: Iterable[tuple[bytes, bytes | int]], *,
        timeout: float | None = None,
    ) -> Result:
        """Submit raw ``(out_hdr, buf)`` pairs: ``buf`` is write data or a read length."""
        try:
            msgs = [I2CMsg.from_out_hdr(h, b) for h, b in requests]
        except Exception as e:
            raise ValueError(f"bad virtio-i2c request: {e}") from None
        return await self.i2c(bus, msgs, timeout=timeout)

    async def spi(
        self, bus: str | int, cs: int, transfers: Sequence[SpiTransfer], *,
        timeout: float | None = None,
    ) -> Result:
        """One SPI message on ``cs``; every head's chip_select_id is set to ``cs``."""
        answer = await self._start_spi(bus, cs, transfers, timeout)
        return answer if type(answer) is Result else self._result(answer)

    def _start_spi(self, bus: str | int, cs: int, transfers: Sequence[SpiTransfer],
                   timeout: float | None) -> asyncio.Future[Event]:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise self._not_connected()
        rid, data = encode_spi(self.conn, bus, cs, transfers, timeout)
        return self._start(rid, data, answer_wait(self.timeout, timeout))

    # -- convenient level ------------------------------------------------------------

    async def transfer(
        self, bus: str | int, msgs: Sequence[I2CMsg], *, timeout: float | None = None
    ) -> list[bytes]:
        """Run ``msgs`` as ONE combined transaction; return the read data, in order."""
        ev = await self._start_i2c(bus, msgs, timeout, True)
        if type(ev) is not Result:
            ev = self._result(ev)
        if any(ev.status):
            _raise_for_i2c(ev)
        return ev.reads

    async def spi_transfer(
        self, bus: str | int, cs: int, transfers: Sequence[SpiTransfer], *,
        timeout: float | None = None,
    ) -> list[bytes]:
        """Run one SPI message; return the received bytes of each reading transfer."""
        result = await self.spi(bus, cs, transfers, timeout=timeout)
        _raise_for_spi(result)
        return result.reads

    async def xfer(self, bus: str | int, cs: int, data: bytes | Sequence[int], **head: Any
                   ) -> bytes:
        """Full-duplex transfer of ``data``; returns what was clocked in."""
        (rx,) = await self.spi_transfer(bus, cs, [spi_xfer(data, **head)])
        return rx

    async def ping(self, timeout: float | None = None) -> float:
        """Round-trip time in seconds."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await self._request(Ping(self._next_id()), timeout)
        return loop.time() - t0

    # -- leases -------------------------------------------------------------------------

    async def _lease(self, req: LeaseRequest) -> LeaseResult:
        ev = await self._request(req, None)
        if isinstance(ev, Error):
            raise RemoteError(ev.code, ev.message)
        assert isinstance(ev, LeaseResult)
        return ev

    async def lease_take(self, bus: str | int, address: int | None = None,
                         cs: int | None = None, *, ttl: int = 60, kind: str | None = None,
                         holder: str = "") -> Lease:
        """Exclusive use of a bus, or of one I2C ``address`` / SPI ``cs`` on it, for ``ttl`` s.

        ``kind`` defaults to ``"spi"`` when ``cs`` is given, else ``"i2c"``.  Raises
        :class:`RemoteError` with code ``busy`` (naming holder and expiry) if taken.
        The lease outlives this connection: release or let it expire.
        """
        kind = kind or ("spi" if cs is not None else "i2c")
        res = await self._lease(LeaseRequest(self._next_id(), LeaseOp.TAKE, kind=kind,
                                             bus=str(bus), address=address, cs=cs, ttl=ttl,
                                             holder=holder))
        if res.token is None or len(res.leases) != 1:
            raise BusBridgeError("the server answered a lease take without one lease and token")
        return Lease(res.token, res.leases[0])

    async def lease_renew(self, lease: Lease | str, ttl: int | None = None) -> LeaseInfo:
        """Extend to now + ``ttl`` (default: the lease's ttl); ``no-lease`` if it died."""
        token = lease.token if isinstance(lease, Lease) else lease
        res = await self._lease(LeaseRequest(self._next_id(), LeaseOp.RENEW, token=token,
                                             ttl=ttl))
        if len(res.leases) != 1:
            raise BusBridgeError("the server answered a lease renew without the lease")
        return res.leases[0]

    async def lease_release(self, lease: Lease | str) -> bool:
        """Give a lease back; False if it was already gone (never an error)."""
        token = lease.token if isinstance(lease, Lease) else lease
        res = await self._lease(LeaseRequest(self._next_id(), LeaseOp.RELEASE, token=token))
        return bool(res.released)

    async def leases(self) -> list[LeaseInfo]:
        """Every live lease on the board (anyone may look; no tokens)."""
        return (await self._lease(LeaseRequest(self._next_id(), LeaseOp.LIST))).leases

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
            await asyncio.wait_for(asyncio.shield(self._gone), self.timeout)
        self.conn = Connection(Role.CLIENT)
        self.welcome = None
        self._closed_exc = None
        await self._open(*self.address)

    async def close(self) -> None:
        self._flush()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        await asyncio.sleep(0)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# ---------------------------------------------------------------------------
# synchronous wrapper
# ---------------------------------------------------------------------------


def _copy_outcome(src: asyncio.Future[Event], dst: CFuture[Event]) -> None:
    if src.cancelled():
        dst.cancel()
    elif (exc := src.exception()) is not None:
        dst.set_exception(exc)
    else:
        dst.set_result(src.result())


class SyncClientBase:
    """What the synchronous clients share: how they open, and the bus calls built on
    their two primitives, :meth:`_i2c_result` and :meth:`spi`."""

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
                 timeout: float = 5.0, **kw: Any) -> None:
        raise NotImplementedError  # pragma: no cover - the subclasses connect

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> Self:
        host, port = parse_address(url)
        return cls(host, port, **kw)

    @classmethod
    def from_board(cls, board: str, broker: str | None = None, *, prefix: str | None = None,
                   timeout: float = 5.0, **kw: Any) -> Self:
        """Connect to a board by name, found in the MQTT broker's retained inventory
        (blocking :meth:`AsyncClient.connect_board`)."""
        from ..mqtt.discovery import resolve_sync

        host, port = resolve_sync(board, broker, prefix=prefix, timeout=timeout)
        return cls(host, port, timeout=timeout, **kw)

    def _i2c_result(self, bus: str | int, msgs: Sequence[I2CMsg], timeout: float | None,
                    chained: bool) -> Result:
        raise NotImplementedError  # pragma: no cover

    def spi(self, bus: str | int, cs: int, transfers: Sequence[SpiTransfer], *,
            timeout: float | None = None) -> Result:
        """One SPI message on ``cs``; every head's chip_select_id is set to ``cs``."""
        raise NotImplementedError  # pragma: no cover

    def i2c(self, bus: str | int, msgs: Sequence[I2CMsg], *, timeout: float | None = None
            ) -> Result:
        """Send virtio-i2c requests as they are (FAIL_NEXT flags are the caller's)."""
        return self._i2c_result(bus, msgs, timeout, False)

    def transfer(self, bus: str | int, msgs: Sequence[I2CMsg], *,
                 timeout: float | None = None) -> list[bytes]:
        """Run ``msgs`` as ONE combined transaction; return the read data, in order."""
        result = self._i2c_result(bus, msgs, timeout, True)
        if any(result.status):
            _raise_for_i2c(result)
        return result.reads

    def spi_transfer(self, bus: str | int, cs: int, transfers: Sequence[SpiTransfer], *,
                     timeout: float | None = None) -> list[bytes]:
        """Run one SPI message; return the received bytes of each reading transfer."""
        result = self.spi(bus, cs, transfers, timeout=timeout)
        _raise_for_spi(result)
        return result.reads

    def xfer(self, bus: str | int, cs: int, data: bytes | Sequence[int], **head: Any) -> bytes:
        """Full-duplex transfer of ``data``; returns what was clocked in."""
        (rx,) = self.spi_transfer(bus, cs, [spi_xfer(data, **head)])
        return rx


class Client(SyncClientBase):
    """Blocking API over :class:`AsyncClient`, with its event loop on a private thread.

    Thread-safe: several threads may call it at once; their requests are
    pipelined on the one connection.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
                 timeout: float = 5.0, name: str = "", leases: Sequence[str] = (),
                 **auth: Any) -> None:
        """``auth``: the TLS and token options of :meth:`AsyncClient.connect`."""
        self._loop = new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="busbridge-client",
                                        daemon=True)
        self._thread.start()
        try:
            self._client: AsyncClient = self._call(
                AsyncClient.connect(host, port, timeout=timeout, name=name, leases=leases,
                                    **auth))
        except BaseException:
            self._stop_loop()
            raise

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        fut: CFuture[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result()

    @property
    def welcome(self) -> WelcomeInfo:
        assert self._client.welcome is not None
        return self._client.welcome

    def _now(self, begin: Callable[[], asyncio.Future[Event]]) -> Event:
        """Run ``begin`` (which starts a request) on the loop's thread; wait for the answer.

        The hot path of the drop-in layers: no coroutine and no Task, so one wake-up
        of the loop's thread and one of the caller's.
        """
        done: CFuture[Event] = CFuture()
        client = self._client

        def start() -> None:
            try:
                fut = begin()
            except BaseException as e:
                done.set_exception(e)
                return
            fut.add_done_callback(lambda f: _copy_outcome(f, done))

        try:
            self._loop.call_soon_threadsafe(start)
        except RuntimeError:  # the loop was closed
            raise client._not_connected() from None
        return done.result()

    def _i2c_result(self, bus: str | int, msgs: Sequence[I2CMsg], timeout: float | None,
                    chained: bool) -> Result:
        ev = self._now(lambda: self._client._start_i2c(bus, msgs, timeout, chained))
        return ev if type(ev) is Result else AsyncClient._result(ev)

    def i2c_raw(self, bus: str | int, requests: Iterable[tuple[bytes, bytes | int]], *,
                timeout: float | None = None) -> Result:
        return self._call(self._client.i2c_raw(bus, list(requests), timeout=timeout))

    def spi(self, bus: str | int, cs: int, transfers: Sequence[SpiTransfer], *,
            timeout: float | None = None) -> Result:
        ev = self._now(lambda: self._client._start_spi(bus, cs, transfers, timeout))
        return ev if type(ev) is Result else AsyncClient._result(ev)

    def ping(self) -> float:
        return self._call(self._client.ping())

    def lease_take(self, bus: str | int, address: int | None = None, cs: int | None = None, *,
                   ttl: int = 60, kind: str | None = None, holder: str = "") -> Lease:
        return self._call(self._client.lease_take(bus, address, cs, ttl=ttl, kind=kind,
                                                  holder=holder))

    def lease_renew(self, lease: Lease | str, ttl: int | None = None) -> LeaseInfo:
        return self._call(self._client.lease_renew(lease, ttl))

    def lease_release(self, lease: Lease | str) -> bool:
        return self._call(self._client.lease_release(lease))

    def leases(self) -> list[LeaseInfo]:
        return self._call(self._client.leases())

    def reconnect(self) -> None:
        """See :meth:`AsyncClient.reconnect`: a new connection; nothing is re-sent."""
        self._call(self._client.reconnect())

    @property
    def connected(self) -> bool:
        """False once the connection dropped (requests in flight then failed)."""
        return not self._loop.is_closed() and self._client.connected

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._call(self._client.close())
        self._stop_loop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

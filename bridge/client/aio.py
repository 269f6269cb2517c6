"""The pipelined asyncio client.

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
nothing is ever re-sent, because I2C and SPI writes are not idempotent.  The
connection itself (handshake, requests in flight, deadlines) is
:class:`~bridge.client.pipeline.Pipeline`, this class's base.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Unpack

from protocol.admin import AdminRequest, AdminResult
from protocol.events import Error, Event, Ping, Result
from protocol.leases import LeaseInfo, LeaseOp, LeaseRequest, LeaseResult
from protocol.limits import DEFAULT_PORT
from protocol.virtio import I2CMsg, SpiTransfer

from .admin import AsyncSimControl, Trace
from .auth import ClientAuth
from .errors import BusBridgeError, InvalidRequest, RemoteError
from .pipeline import Pipeline
from .requests import (
    Lease,
    SpiHead,
    answer_wait,
    check_answer,
    i2c_frame,
    raise_for_i2c,
    raise_for_spi,
    server_address,
    spi_frame,
    spi_xfer,
)

__all__ = ["AsyncClient"]


class AsyncClient(Pipeline):
    """A pipelined connection to one busbridge server.

    Many requests may be in flight at once (``asyncio.gather`` them); each one
    gets exactly one answer, or an exception.  Use ``async with await
    AsyncClient.connect(...)`` or call :meth:`close`.
    """

    @classmethod
    async def connect(
        cls,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        timeout: float = 5.0,
        name: str = "",
        leases: Sequence[str] = (),
        auth: ClientAuth | None = None,
    ) -> AsyncClient:
        """Connect and complete the handshake (raises ``OSError`` on failure).

        ``leases``: tokens of leases held elsewhere (e.g. by ``busbridge run
        --lease``) that this connection may use.

        ``auth``: TLS and the access token (not a lease token), e.g.
        ``ClientAuth(cafile="lab-ca.pem", token=...)`` or ``ClientAuth.from_env()``;
        none by default.  A server that refuses raises :class:`RemoteError`
        (``unauthorized``) or, for a refused certificate, ``ssl.SSLError`` /
        :class:`ConnectionLost`.
        """
        self = cls(timeout=timeout, name=name, leases=leases, auth=auth)
        await self._open(host, port)
        return self

    @classmethod
    async def connect_url(cls, url: str, *, timeout: float = 5.0, name: str = "",
                          leases: Sequence[str] = (), auth: ClientAuth | None = None
                          ) -> AsyncClient:
        """:meth:`connect` to ``HOST[:PORT]`` (port 7707 by default)."""
        host, port = server_address(url)
        return await cls.connect(host, port, timeout=timeout, name=name, leases=leases,
                                 auth=auth)

    # -- starting a request without awaiting it ---------------------------------------

    def start_i2c(self, bus: str | int, msgs: Sequence[I2CMsg], timeout: float | None,
                  chained: bool) -> asyncio.Future[Event]:
        """Send an I2C request now and return the future of its answer (on the loop's
        thread only): the thread-backed :class:`~bridge.client.Client` starts requests
        this way, without a Task each."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise self._not_connected()
        rid, data = i2c_frame(self.conn, bus, msgs, timeout, chained)
        return self._start(rid, data, answer_wait(self.timeout, timeout))

    def start_spi(self, bus: str | int, cs: int, transfers: Sequence[SpiTransfer],
                  timeout: float | None) -> asyncio.Future[Event]:
        """Like :meth:`start_i2c`, for one SPI message on ``cs``."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise self._not_connected()
        rid, data = spi_frame(self.conn, bus, cs, transfers, timeout)
        return self._start(rid, data, answer_wait(self.timeout, timeout))

    # -- raw virtio level ---------------------------------------------------------

    async def i2c(
        self, bus: str | int, msgs: Sequence[I2CMsg], *, timeout: float | None = None
    ) -> Result:
        """Send virtio-i2c requests as they are (FAIL_NEXT flags are the caller's)."""
        ev = await self.start_i2c(bus, msgs, timeout, False)
        if type(ev) is Result:
            return ev
        return check_answer(ev)

    async def i2c_raw(
        self, bus: str | int, requests: Iterable[tuple[bytes, bytes | int]], *,
        timeout: float | None = None,
    ) -> Result:
        """Submit raw ``(out_hdr, buf)`` pairs: ``buf`` is write data or a read length."""
        try:
            msgs = [I2CMsg.from_out_hdr(h, b) for h, b in requests]
        except Exception as e:
            raise InvalidRequest(f"bad virtio-i2c request: {e}") from None
        return await self.i2c(bus, msgs, timeout=timeout)

    async def spi(
        self, bus: str | int, cs: int, transfers: Sequence[SpiTransfer], *,
        timeout: float | None = None,
    ) -> Result:
        """One SPI message on ``cs``; every head's chip_select_id is set to ``cs``."""
        answer = await self.start_spi(bus, cs, transfers, timeout)
        return answer if type(answer) is Result else check_answer(answer)

    # -- convenient level ------------------------------------------------------------

    async def transfer(
        self, bus: str | int, msgs: Sequence[I2CMsg], *, timeout: float | None = None
    ) -> list[bytes]:
        """Run ``msgs`` as ONE combined transaction; return the read data, in order."""
        ev = await self.start_i2c(bus, msgs, timeout, True)
        if type(ev) is not Result:
            ev = check_answer(ev)
        if any(ev.status):
            raise_for_i2c(ev)
        return ev.reads

    async def spi_transfer(
        self, bus: str | int, cs: int, transfers: Sequence[SpiTransfer], *,
        timeout: float | None = None,
    ) -> list[bytes]:
        """Run one SPI message; return the received bytes of each reading transfer."""
        result = await self.spi(bus, cs, transfers, timeout=timeout)
        raise_for_spi(result)
        return result.reads

    async def xfer(self, bus: str | int, cs: int, data: bytes | Sequence[int],
                   **head: Unpack[SpiHead]) -> bytes:
        """Full-duplex transfer of ``data``; returns what was clocked in."""
        (rx,) = await self.spi_transfer(bus, cs, [spi_xfer(data, **head)])
        return rx

    async def ping(self, timeout: float | None = None) -> float:
        """Round-trip time in seconds."""
        t0 = time.perf_counter()  # uvloop's loop.time() ticks in milliseconds
        await self._request(Ping(self._next_id()), timeout)
        return time.perf_counter() - t0

    # -- leases -------------------------------------------------------------------------

    async def _lease(self, req: LeaseRequest) -> LeaseResult:
        ev = await self._request(req, None)
        if isinstance(ev, Error):
            raise RemoteError(ev.code, ev.message)
        assert isinstance(ev, LeaseResult)
        return ev

    async def lease_take(self, bus: str | int, address: int | None = None,
                         cs: int | None = None, *, ttl: int = 60, kind: str | None = None,
                         holder: str = "", ten_bit: bool = False) -> Lease:
        """Exclusive use of a bus, or of one I2C ``address`` / SPI ``cs`` on it, for ``ttl`` s.

        ``kind`` defaults to ``"spi"`` when ``cs`` is given, else ``"i2c"``.  An
        address above 0x7f is 10-bit; ``ten_bit`` makes a low one 10-bit (a
        10-bit 0x050 is another device than the 7-bit 0x50).  Raises
        :class:`RemoteError` with code ``busy`` (naming holder and expiry) if taken.
        The lease outlives this connection: release or let it expire.
        """
        kind = kind or ("spi" if cs is not None else "i2c")
        res = await self._lease(LeaseRequest(self._next_id(), LeaseOp.TAKE, kind=kind,
                                             bus=str(bus), address=address, cs=cs, ttl=ttl,
                                             holder=holder, ten_bit=ten_bit))
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

    async def leases(self, limit: int = 100_000) -> list[LeaseInfo]:
        """Every live lease on the board (anyone may look; no tokens), page by page.

        A board with many leases answers ``list`` in pages that each fit in a
        frame; this follows the server's cursor for at most ``limit`` leases.
        """
        out: list[LeaseInfo] = []
        after = ""
        while True:
            res = await self._lease(LeaseRequest(self._next_id(), LeaseOp.LIST, after=after))
            out += res.leases
            if res.next is None or not res.leases or len(out) >= limit or res.next == after:
                return out[:limit]
            after = res.next

    # -- the admin channel (SPEC.md §4.10) ---------------------------------------------

    async def _admin(self, rid: int, op: str, params: Mapping[str, Any] | None,
                     timeout: float | None) -> dict[str, Any]:
        ev = await self._request(AdminRequest(rid, op, params), timeout)
        if isinstance(ev, Error):
            raise RemoteError(ev.code, ev.message)
        assert isinstance(ev, AdminResult)
        return ev.result

    async def admin(self, op: str, params: Mapping[str, Any] | None = None,
                    timeout: float | None = None) -> dict[str, Any]:
        """One ADMIN op (``"sim.set"``, ...); its result map.  A refusal (``denied``,
        ``bad-request`` naming what is wrong) raises :class:`RemoteError`."""
        return await self._admin(self._next_id(), op, params, timeout)

    @property
    def sim(self) -> AsyncSimControl:
        """Test control of the board's simulated chips: ``await client.sim.set(1, 0x48,
        temperature=31.25)``."""
        return AsyncSimControl(self)

    def trace(self, *, kind: str | None = None, bus: str | int | None = None,
              addr: int | None = None, cs: int | None = None, ten_bit: bool = False,
              queue: int = 4096) -> Trace:
        """Every transaction on the board as it happens (all clients, real or simulated
        buses), filtered by ``kind``/``bus``/``addr``/``cs``: ``async with
        client.trace(bus=1) as t: async for ev in t: ...``."""
        params: dict[str, Any] = {k: v for k, v in (("kind", kind), ("addr", addr), ("cs", cs))
                                  if v is not None}
        if bus is not None:
            params["bus"] = str(bus)
        if ten_bit:
            params["ten_bit"] = True

        async def start(t: Trace) -> int:
            rid = self._next_id()
            self._subscribers[rid] = t  # before the request: events follow its answer at once
            try:
                await self._admin(rid, "trace.start", params, None)
            except BaseException:
                self._subscribers.pop(rid, None)
                raise
            return rid

        async def stop(sid: int) -> None:
            try:
                await self.admin("trace.stop", {"id": sid})
            finally:
                self._subscribers.pop(sid, None)

        return Trace(start, stop, queue)

    # -- lifecycle (connected, reconnect and close are the Pipeline's) --------------------

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


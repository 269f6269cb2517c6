"""The thread-backed synchronous client: an :class:`~bridge.client.AsyncClient` whose
event loop runs on a private thread.

Thread-safe, and requests of several threads are pipelined on one connection;
each call costs two thread hand-overs, which is why the drop-in layers use
:class:`~bridge.client.BlockingClient` instead (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import Future as CFuture
from typing import Any, TypeVar

from protocol.events import Event, Result
from protocol.handshake import WelcomeInfo
from protocol.leases import LeaseInfo
from protocol.limits import DEFAULT_PORT
from protocol.virtio import I2CMsg, SpiTransfer

from ..runtime import new_event_loop
from .aio import AsyncClient
from .auth import ClientAuth
from .errors import ConnectionLost
from .requests import Lease, check_answer
from .sync import SyncClientBase

T = TypeVar("T")

__all__ = ["Client"]


def _shut(loop: asyncio.AbstractEventLoop, thread: threading.Thread, client: AsyncClient) -> None:
    """Close a client its user never closed, at interpreter exit.

    Left running, the loop's thread outlives the interpreter: a timer that fires
    during the C library's exit handlers calls into a finalized Python and the
    process dies of SIGSEGV after the program's own work was done.
    """
    if loop.is_closed():
        return
    with contextlib.suppress(Exception):  # best effort on the way out: the loop stops below
        asyncio.run_coroutine_threadsafe(client.close(), loop).result(2)
    _stop(loop, thread)


def _stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    if not thread.is_alive():
        loop.close()


def _copy_outcome(src: asyncio.Future[Event], dst: CFuture[Event]) -> None:
    if src.cancelled():
        dst.cancel()
    elif (exc := src.exception()) is not None:
        dst.set_exception(exc)
    else:
        dst.set_result(src.result())


class Client(SyncClientBase):
    """Blocking API over :class:`AsyncClient`, with its event loop on a private thread.

    Thread-safe: several threads may call it at once; their requests are
    pipelined on the one connection.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
                 timeout: float = 5.0, name: str = "", leases: Sequence[str] = (),
                 auth: ClientAuth | None = None) -> None:
        self._loop = new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="busbridge-client",
                                        daemon=True)
        self._loop_thread.start()
        try:
            self._client: AsyncClient = self._call(
                AsyncClient.connect(host, port, timeout=timeout, name=name, leases=leases,
                                    auth=auth))
        except BaseException:
            _stop(self._loop, self._loop_thread)
            raise
        # Not a bound method: the exit hook must not keep this object alive.
        self._at_exit = functools.partial(_shut, self._loop, self._loop_thread, self._client)
        atexit.register(self._at_exit)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            fut: CFuture[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError:  # the loop was closed
            coro.close()
            raise self._closed() from None
        return fut.result()

    def _closed(self) -> ConnectionLost:
        host, port = self._client.address
        return ConnectionLost(f"not connected to {host}:{port} (the client was closed)")

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
            raise self._closed() from None
        return done.result()

    def _i2c_result(self, bus: str | int, msgs: Sequence[I2CMsg], timeout: float | None,
                    chained: bool) -> Result:
        ev = self._now(lambda: self._client.start_i2c(bus, msgs, timeout, chained))
        return ev if type(ev) is Result else check_answer(ev)

    def i2c_raw(self, bus: str | int, requests: Iterable[tuple[bytes, bytes | int]], *,
                timeout: float | None = None) -> Result:
        return self._call(self._client.i2c_raw(bus, list(requests), timeout=timeout))

    def spi(self, bus: str | int, cs: int, transfers: Sequence[SpiTransfer], *,
            timeout: float | None = None) -> Result:
        ev = self._now(lambda: self._client.start_spi(bus, cs, transfers, timeout))
        return ev if type(ev) is Result else check_answer(ev)

    def ping(self) -> float:
        return self._call(self._client.ping())

    def admin(self, op: str, params: Mapping[str, Any] | None = None,
              timeout: float | None = None) -> dict[str, Any]:
        return self._call(self._client.admin(op, params, timeout))

    def lease_take(self, bus: str | int, address: int | None = None, cs: int | None = None, *,
                   ttl: int = 60, kind: str | None = None, holder: str = "",
                   ten_bit: bool = False) -> Lease:
        return self._call(self._client.lease_take(bus, address, cs, ttl=ttl, kind=kind,
                                                  holder=holder, ten_bit=ten_bit))

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

    def close(self) -> None:
        if self._loop.is_closed():
            return
        atexit.unregister(self._at_exit)  # partials compare by identity: only this one
        try:
            self._call(self._client.close())
        finally:
            _stop(self._loop, self._loop_thread)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

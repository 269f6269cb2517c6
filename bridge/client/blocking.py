"""A blocking client: the calling thread does the socket I/O itself.

:class:`~bridge.client.Client` runs an event loop on a private thread, so each
call is handed to that thread and its answer handed back: two thread wake-ups
per request, which cost more than the whole network round trip on a loaded or
unpinned machine.  Code that makes one bus call at a time (the drop-in
``smbus2`` / ``spidev`` / ``busio`` layers, a hardware test suite) needs none of
that: :class:`BlockingClient` writes the frame and reads the answer on the
caller's thread, with the same sans-I/O :class:`~protocol.connection.Connection`,
the same errors and the same bus-call API as ``Client``.

Calls are serialised by a lock (several threads may share one client, one
request at a time).  Nothing is ever re-sent: a request whose answer does not
come in time raises :class:`~bridge.client.RequestTimeout` (a ``TimeoutError``)
and its late answer is dropped.
"""

from __future__ import annotations

import errno as _errno
import select
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from protocol.admin import AdminRequest, AdminResult
from protocol.errors import ProtocolError
from protocol.events import Error, Event, Hello, Ping, Pong, Result, Welcome
from protocol.fastpath import ClientConnection
from protocol.handshake import WelcomeInfo
from protocol.limits import DEFAULT_PORT
from protocol.virtio import I2CMsg, SpiTransfer

from .. import __version__
from . import diagnose
from .auth import ClientAuth
from .errors import ConnectionLost, ConnectTimeout, RemoteError, RequestTimeout
from .requests import (
    answer_wait,
    check_answer,
    check_timeout,
    encode,
    hello_info,
    i2c_frame,
    spi_frame,
)
from .sync import SyncClientBase

__all__ = ["BlockingClient"]

#: ``struct timeval`` for SO_RCVTIMEO / SO_SNDTIMEO (Linux: two longs).
_TIMEVAL = struct.Struct("@ll")


def _timeval(seconds: float) -> bytes:
    """``seconds`` as a timeval, at least 1 µs: a zero timeval means "wait forever"."""
    sec = int(seconds)
    usec = int((seconds - sec) * 1_000_000)
    return _TIMEVAL.pack(sec, usec if sec or usec else 1)


def _kernel_timeouts(sock: socket.socket, timeout: float) -> bool:
    """On Linux, make plain TCP ``sock`` block, its waits bounded by the kernel
    (SO_RCVTIMEO, SO_SNDTIMEO): one ``recv`` per read.  A Python socket timeout polls
    first, two system calls per read: a tenth of a register read's round trip."""
    if not sys.platform.startswith("linux"):
        return False
    sock.settimeout(None)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(timeout))
    return True


class BlockingClient(SyncClientBase):
    """Bus calls on a blocking socket; see the module docstring for when to prefer it."""

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
                 timeout: float = 5.0, name: str = "", leases: Sequence[str] = (),
                 auth: ClientAuth | None = None) -> None:
        self.timeout = check_timeout(timeout)
        self.address = (host, port)
        self.auth = auth or ClientAuth()
        self.conn = ClientConnection()
        self._lock = threading.Lock()
        self._buf = bytearray(65536)
        self._view = memoryview(self._buf)
        self._closed_why = ""
        self._wait = -1.0  # the socket's timeout as last set by _receive
        self._head: bytearray | None = bytearray()  # the peer's first bytes, until WELCOME
        try:
            sock = socket.create_connection((host, port), timeout)
        except TimeoutError:
            raise ConnectTimeout(_errno.ETIMEDOUT, f"connect to {host}:{port} timed out") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ctx = self.auth.ssl_context()
        self._kernel_timeout = ctx is None and _kernel_timeouts(sock, self.timeout)
        if ctx is not None:
            try:
                sock = ctx.wrap_socket(sock, server_hostname=self.auth.server_hostname or host)
            except ssl.SSLError as e:
                sock.close()
                raise diagnose.tls_error(host, port, e, self.auth) from None
            except BaseException:
                sock.close()
                raise
        self._sock: socket.socket | None = sock
        try:
            self.welcome = self._handshake(name or f"busbridge-client/{__version__}", leases)
        except (ConnectTimeout, ConnectionLost, ssl.SSLError) as e:
            self._drop("")
            better = diagnose.explain_sync(host, port, bytes(self._head or b""), self.auth,
                                           timeout, timed_out=isinstance(e, ConnectTimeout),
                                           exc=e.__context__ or e)
            raise (better or e) from None
        except BaseException:
            self._drop("")
            raise
        self._head = None

    # -- the wire ----------------------------------------------------------------

    def _handshake(self, name: str, leases: Sequence[str]) -> WelcomeInfo:
        hello = hello_info(name, self.auth.token, leases)
        self._send(encode(self.conn, Hello(hello)))
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                events = self._read(deadline, "WELCOME")
            except RequestTimeout:
                host, port = self.address
                raise ConnectTimeout(_errno.ETIMEDOUT, f"no WELCOME from {host}:{port} in time"
                                     ) from None
            for ev in events:
                if isinstance(ev, Welcome):
                    return ev.info
                if isinstance(ev, Error) and ev.id == 0:
                    raise RemoteError(ev.code, ev.message)

    def _send(self, data: bytes) -> None:
        if self._sock is None:
            raise self._not_connected()
        try:
            self._sock.sendall(data)
        except OSError as e:
            self._drop(str(e))
            raise self._lost() from None

    def _read(self, deadline: float, what: str) -> list[Event]:
        """One read's worth of events; fatal problems close the connection and raise."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise self._timeout(what)
        n, items = self._receive(left, what)
        return self._events(n, items)

    def _receive(self, wait: float, what: str) -> tuple[int, list[Event | ProtocolError]]:
        """One ``recv`` (waiting up to ``wait`` s) and what the connection made of it."""
        sock = self._sock
        if sock is None:
            raise self._not_connected()
        if wait != self._wait:  # a system call of its own: only when the wait changes
            if self._kernel_timeout:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(wait))
            else:
                sock.settimeout(wait)
            self._wait = wait
        try:
            n = sock.recv_into(self._buf)
        except (TimeoutError, BlockingIOError):  # BlockingIOError: SO_RCVTIMEO ran out
            raise self._timeout(what) from None
        except OSError as e:
            self._drop(str(e))
            raise self._lost() from None
        if self._head is not None and len(self._head) < diagnose.HEAD:
            self._head += self._view[:min(n, diagnose.HEAD - len(self._head))]
        try:
            return n, self.conn.receive(self._view[:n] if n else b"")
        except ProtocolError as e:
            return n, [e]

    def _events(self, n: int, items: list[Event | ProtocolError]) -> list[Event]:
        events: list[Event] = []
        for item in items:
            if isinstance(item, ProtocolError):
                self._drop(f"protocol error from server: {item}")
                if events:  # what came before the violation was good: it is delivered
                    return events
                raise self._lost()
            if isinstance(item, Ping):
                self._send(self.conn.send(Pong(item.id)))
            elif isinstance(item, Error) and item.id == 0:
                self._closed_why = f"{item.code}: {item.message}"
                events.append(item)
            else:
                events.append(item)
        if not n:
            self._drop(self._closed_why or "closed by the server")
            if not events:
                raise self._lost()
        return events

    def _roundtrip(self, rid: int, data: bytes, timeout: float) -> Event:
        self._send(data)
        deadline = time.monotonic() + timeout
        # The first wait is the whole timeout: the deadline was set a moment ago.
        n, items = self._receive(timeout, "answer")
        while True:
            if len(items) == 1:
                ev = items[0]
                if type(ev) is Result and ev.id == rid:  # the common answer: nothing else came
                    return ev
            for ev in self._events(n, items):
                if getattr(ev, "id", None) == rid:
                    return ev
                # Anything else is a late answer to a request that timed out: dropped.
            if self._sock is None:
                raise self._lost()
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._timeout("answer")
            n, items = self._receive(left, "answer")

    # -- errors ------------------------------------------------------------------

    def _drop(self, why: str) -> None:
        self._closed_why = self._closed_why or why
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _lost(self) -> ConnectionLost:
        host, port = self.address
        return ConnectionLost(
            f"connection to {host}:{port} lost ({self._closed_why or 'closed'}); the request "
            "in flight was not answered: its effect on the bus is unknown and it was not "
            "re-sent")

    def _not_connected(self) -> ConnectionLost:
        host, port = self.address
        return ConnectionLost(f"not connected to {host}:{port}"
                              + (f" ({self._closed_why})" if self._closed_why else ""))

    def _timeout(self, what: str) -> RequestTimeout:
        host, port = self.address
        return RequestTimeout(_errno.ETIMEDOUT, f"no {what} from {host}:{port} in time; the "
                            "request's effect is unknown and it was not re-sent")

    # -- bus calls (the same as Client's) ------------------------------------------

    def _i2c_result(self, bus: str | int, msgs: Sequence[I2CMsg], timeout: float | None,
                    chained: bool) -> Result:
        lock = self._lock
        lock.acquire()  # not `with`: its __exit__ call costs more than the two
        try:
            rid, data = i2c_frame(self.conn, bus, msgs, timeout, chained)
            ev = self._roundtrip(rid, data, answer_wait(self.timeout, timeout))
        finally:
            lock.release()
        return ev if type(ev) is Result else check_answer(ev)

    def spi(self, bus: str | int, cs: int, transfers: Sequence[SpiTransfer], *,
            timeout: float | None = None) -> Result:
        """One SPI message on ``cs``; every head's chip_select_id is set to ``cs``."""
        with self._lock:
            rid, data = spi_frame(self.conn, bus, cs, transfers, timeout)
            answer = self._roundtrip(rid, data, answer_wait(self.timeout, timeout))
        return answer if type(answer) is Result else check_answer(answer)

    def ping(self) -> float:
        """Round-trip time in seconds."""
        with self._lock:
            t0 = time.monotonic()
            rid = self.conn.next_id()
            self._roundtrip(rid, encode(self.conn, Ping(rid)), self.timeout)
            return time.monotonic() - t0

    def admin(self, op: str, params: Mapping[str, Any] | None = None,
              timeout: float | None = None) -> dict[str, Any]:
        """One ADMIN op (SPEC.md §4.10); its result map, or :class:`RemoteError`."""
        with self._lock:
            rid = self.conn.next_id()
            ev = self._roundtrip(rid, encode(self.conn, AdminRequest(rid, op, params)),
                                 self.timeout if timeout is None else timeout)
        if isinstance(ev, Error):
            raise RemoteError(ev.code, ev.message)
        assert isinstance(ev, AdminResult)
        return ev.result

    # -- lifecycle -----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """False once the server closed the connection (checked without blocking)."""
        with self._lock:
            sock = self._sock
            if sock is None:
                return False
            # Between calls the server may have said goodbye (idle timeout, shutdown)
            # or pinged: take what is there now, without waiting.
            while sock.fileno() >= 0 and select.select([sock], [], [], 0)[0]:
                try:
                    self._read(time.monotonic() + 0.05, "data")  # readable: no real wait
                except (ConnectionLost, RequestTimeout):
                    break
                sock = self._sock
                if sock is None:
                    break
            return self._sock is not None

    def close(self) -> None:
        with self._lock:
            self._drop("closed by the client")

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

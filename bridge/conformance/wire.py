"""Raw access to a busbridge server: length-prefixed msgpack frames over TCP or TLS.

Written from protocol/SPEC.md sections 1-3 alone, with no code from the project, so
that the kit judges the server by the document and not by a shared implementation.
Every connection has a reader thread that timestamps each frame as it arrives: the
timing checks compare arrival times across connections, which a reader that only
runs while the caller waits would distort.
"""

from __future__ import annotations

import contextlib
import queue
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack

HELLO, WELCOME, I2C, SPI, RESULT, ERROR, PING, PONG, LEASE, LEASE_RESULT = range(10)
ADMIN, ADMIN_RESULT, EVENT = 10, 11, 12

#: The largest server frame the kit buffers; far above any max_frame a server may set.
READ_LIMIT = 64 * 1024 * 1024


def pack(obj: Any) -> bytes:
    """One msgpack object, bin for bytes and str for text (SPEC §3), shortest encodings."""
    return msgpack.packb(obj, use_bin_type=True)


def frame(obj: Any) -> bytes:
    """A whole frame: big-endian 32-bit body length, then the body (SPEC §2)."""
    return frame_body(pack(obj))


def frame_body(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


class Closed(Exception):
    """The peer closed the connection (or reset it) before the awaited frame came."""


@dataclass(frozen=True)
class Frame:
    """One frame the server sent, with when it arrived and what is wrong with it."""

    body: bytes
    at: float
    obj: Any = None
    #: Why the body breaks SPEC §2/§3 (not msgpack, trailing bytes, not an array, ...).
    problem: str | None = None

    @property
    def type(self) -> int | None:
        o = self.obj
        if isinstance(o, list) and o and type(o[0]) is int:
            return o[0]
        return None

    @property
    def id(self) -> int | None:
        o = self.obj
        if isinstance(o, list) and len(o) > 1 and type(o[1]) is int:
            return o[1]
        return None

    def brief(self) -> str:
        if self.problem:
            return f"undecodable frame ({self.problem}): {self.body[:40].hex(' ')}"
        text = repr(self.obj)
        return text if len(text) <= 160 else text[:157] + "..."


def decode_body(body: bytes, at: float = 0.0) -> Frame:
    """Decode a frame body strictly: exactly one msgpack array, no extension types."""

    def no_ext(code: int, data: bytes) -> Any:
        raise ValueError(f"extension type {code}")

    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=False, ext_hook=no_ext,
                              max_bin_len=READ_LIMIT, max_str_len=READ_LIMIT)
    except msgpack.ExtraData:
        return Frame(body, at, None, "trailing bytes after the msgpack object")
    except (ValueError, msgpack.UnpackException, UnicodeDecodeError) as e:
        return Frame(body, at, None, f"not msgpack: {e}")
    if not isinstance(obj, list) or len(obj) < 2:
        return Frame(body, at, obj, "not an array of at least 2 items")
    return Frame(body, at, obj)


@dataclass
class Target:
    """Where the server is and how to reach it (SPEC §1: TCP, optional TLS and token)."""

    host: str
    port: int
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    token: str | None = None
    server_name: str | None = None
    tls: bool = False
    #: Seconds any single wait may take before the kit calls the server unresponsive.
    timeout: float = 10.0
    client_name: str = "busbridge-conformance"

    @property
    def uses_tls(self) -> bool:
        return self.tls or bool(self.cafile or self.certfile)

    def ssl_context(self, *, client_cert: bool = True) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.cafile)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if client_cert and self.certfile:
            ctx.load_cert_chain(self.certfile, self.keyfile)
        return ctx


_EOF = object()


@dataclass
class _Closed:
    reason: str
    at: float


class Conn:
    """One connection. Frames are read on a thread and queued with their arrival time."""

    def __init__(self, target: Target, *, client_cert: bool = True) -> None:
        self.target = target
        raw = socket.create_connection((target.host, target.port), timeout=target.timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock: socket.socket = raw
        if target.uses_tls:
            try:
                sock = target.ssl_context(client_cert=client_cert).wrap_socket(
                    raw, server_hostname=target.server_name or target.host)
            except BaseException:
                raw.close()
                raise
        sock.setblocking(False)
        self.sock = sock
        self.tls = isinstance(sock, ssl.SSLSocket)
        self._lock = threading.Lock()
        self._frames: queue.Queue[Frame | _Closed] = queue.Queue()
        self._stop = False
        self.closed: _Closed | None = None
        self.sent_at: float = 0.0
        #: The WELCOME map, once a handshake on this connection succeeded.
        self.welcome: dict[str, Any] | None = None
        self._reader = threading.Thread(target=self._read_loop, daemon=True,
                                         name="conformance-reader")
        self._reader.start()

    # -- reading ------------------------------------------------------------------

    def _read_loop(self) -> None:
        buf = bytearray()
        reason = "closed by the server"
        try:
            while not self._stop:
                pending = self.tls and self.sock.pending()  # type: ignore[attr-defined]
                if not pending:
                    r, _, _ = select.select([self.sock], [], [], 0.05)
                    if not r:
                        continue
                with self._lock:
                    try:
                        data = self.sock.recv(262144)
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                        continue
                if not data:
                    break
                now = time.perf_counter()
                buf += data
                while len(buf) >= 4:
                    (n,) = struct.unpack_from(">I", buf)
                    if n > READ_LIMIT:
                        reason = f"server sent a length prefix of {n}"
                        self._stop = True
                        break
                    if len(buf) < 4 + n:
                        break
                    body = bytes(buf[4:4 + n])
                    del buf[:4 + n]
                    self._frames.put(decode_body(body, now))
        except (OSError, ValueError) as e:
            reason = f"connection error: {type(e).__name__}: {e}"
        if buf and not self._stop:
            reason += f" (inside a frame: {len(buf)} bytes left)"
        self._frames.put(_Closed(reason, time.perf_counter()))

    def recv(self, timeout: float | None = None) -> Frame:
        """The next frame; Closed if the server closed first, TimeoutError if none came."""
        if self.closed is not None:
            raise Closed(self.closed.reason)
        wait = self.target.timeout if timeout is None else timeout
        try:
            item = self._frames.get(timeout=wait)
        except queue.Empty:
            raise TimeoutError(f"no frame within {wait:g} s") from None
        if isinstance(item, _Closed):
            self.closed = item
            raise Closed(item.reason)
        return item

    def recv_all(self, count: int, timeout: float | None = None) -> list[Frame]:
        """``count`` frames, waiting at most ``timeout`` in all."""
        wait = self.target.timeout if timeout is None else timeout
        end = time.monotonic() + wait
        return [self.recv(max(0.0, end - time.monotonic())) for _ in range(count)]

    def wait_closed(self, timeout: float | None = None) -> list[Frame]:
        """Every frame up to the close; TimeoutError if the server keeps it open."""
        wait = self.target.timeout if timeout is None else timeout
        end = time.monotonic() + wait
        got: list[Frame] = []
        while True:
            try:
                got.append(self.recv(max(0.0, end - time.monotonic())))
            except Closed:
                return got

    def quiet(self, seconds: float) -> list[Frame]:
        """Frames that arrive within ``seconds`` (none expected, usually)."""
        got: list[Frame] = []
        end = time.monotonic() + seconds
        with contextlib.suppress(TimeoutError, Closed):
            while (left := end - time.monotonic()) > 0:
                got.append(self.recv(left))
        return got

    # -- writing ------------------------------------------------------------------

    def send(self, obj: Any) -> float:
        return self.send_bytes(frame(obj))

    def send_bytes(self, data: bytes, chunks: Iterable[int] | None = None,
                   pause: float = 0.0) -> float:
        """Write ``data``, optionally as separate writes of the given sizes (cycled)."""
        sizes = list(chunks) if chunks is not None else []
        pos = 0
        i = 0
        while pos < len(data):
            n = sizes[i % len(sizes)] if sizes else 65536
            i += 1
            self._write_all(data[pos:pos + n])
            pos += n
            if pause and pos < len(data):
                time.sleep(pause)
        self.sent_at = time.perf_counter()
        return self.sent_at

    def _write_all(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        end = time.monotonic() + self.target.timeout
        while view:
            with self._lock:
                try:
                    n = self.sock.send(view)
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                    n = 0
            view = view[n:]
            if view:
                if time.monotonic() > end:
                    raise TimeoutError("the server stopped reading")
                select.select([], [self.sock], [], 0.05)

    def shutdown_write(self) -> None:
        """Half-close: a FIN on the TCP stream (under TLS, without close_notify)."""
        with self._lock:
            socket.socket.shutdown(self.sock, socket.SHUT_WR)

    def close_notify(self) -> None:
        """TLS only: send ``close_notify`` (the TLS end of the stream) and keep reading."""
        quiet = contextlib.suppress(ssl.SSLWantReadError, ssl.SSLWantWriteError, OSError,
                                    ValueError)
        with self._lock, quiet:
            self.sock.unwrap()  # type: ignore[attr-defined]

    def close(self) -> None:
        self._stop = True
        self._reader.join(2.0)
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Ids:
    """Request ids for one connection: 1, 2, 3, ... (SPEC §7 lets the client choose)."""

    next: int = 1
    used: list[int] = field(default_factory=list)

    def __call__(self) -> int:
        n = self.next
        self.next += 1
        return n

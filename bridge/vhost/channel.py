"""The vhost-user message socket: headers, payloads and the file descriptors that ride along.

One front end talks to us over a unix socket; a message may carry descriptors
(guest memory regions, eventfds) as SCM_RIGHTS. Descriptors of a message that
cannot be read whole are closed here, so none leaks into a half-parsed message.
"""

from __future__ import annotations

import array
import asyncio
import os
import socket

from . import messages


class VhostUserError(Exception):
    pass


class Channel:
    """Read whole messages from, and write replies to, the front end's socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()

    async def _readable(self) -> None:
        fut: asyncio.Future[None] = self.loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        fd = self.sock.fileno()
        self.loop.add_reader(fd, ready)
        try:
            await fut
        finally:
            self.loop.remove_reader(fd)

    async def _recv(self, n: int, fds: list[int]) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(
                    n - len(buf), socket.CMSG_SPACE(messages.MAX_FDS * 4))
            except BlockingIOError:
                await self._readable()
                continue
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    arr = array.array("i")
                    arr.frombytes(payload[: len(payload) - len(payload) % arr.itemsize])
                    fds.extend(arr)
            if not data:
                raise EOFError
            buf += data
        return bytes(buf)

    async def receive(self) -> tuple[int, int, bytes, list[int]]:
        fds: list[int] = []
        try:
            head = await self._recv(messages.HEADER_SIZE, fds)
            request, flags, size = messages.HEADER.unpack(head)
            if size > messages.MAX_PAYLOAD:
                raise VhostUserError(f"message {request} with a {size}-byte payload")
            payload = await self._recv(size, fds) if size else b""
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return request, flags, payload, fds

    async def send(self, data: bytes) -> None:
        await self.loop.sock_sendall(self.sock, data)

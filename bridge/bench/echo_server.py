"""The baseline: ``python -m bridge.bench.echo_server SIZE plain|buffered|msgpack uv|asyncio``.

Answers every length-prefixed frame with a ``SIZE``-byte frame, so the
same bytes cross the socket as for the bridge; prints its port, then serves
until its stdin closes (a clean exit, which ``valgrind --tool=callgrind``
needs to write its counts) or it is terminated.  ``buffered`` is the asyncio
``BufferedProtocol`` variant; ``msgpack`` also decodes each request and encodes
a RESULT-shaped reply, the floor of any msgpack bridge.  It imports nothing of
the bridge but the loop choice, so the baseline stays bare.
"""

from __future__ import annotations

import asyncio
import os
import sys

from ..runtime import run


def frame_of(size: int) -> bytes:
    """A length-prefixed frame of ``size`` bytes in all (zeros after the prefix)."""
    return (size - 4).to_bytes(4, "big") + bytes(size - 4)


class PlainEcho(asyncio.Protocol):
    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while len(buf) >= 4:
            n = int.from_bytes(buf[:4], "big")
            if len(buf) < 4 + n:
                break
            del buf[: 4 + n]
            self.t.write(self.reply)


class BufferedEcho(asyncio.BufferedProtocol):
    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.mem = bytearray(1 << 18)
        self.view = memoryview(self.mem)
        self.n = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view[self.n :]

    def buffer_updated(self, nbytes: int) -> None:
        self.n += nbytes
        pos = 0
        while self.n - pos >= 4:
            size = int.from_bytes(self.mem[pos : pos + 4], "big")
            if self.n - pos < 4 + size:
                break
            pos += 4 + size
            self.t.write(self.reply)
        if pos:
            self.mem[: self.n - pos] = self.mem[pos : self.n]
            self.n -= pos


class MsgpackEcho(asyncio.Protocol):
    """The msgpack floor's server: decodes each request, answers a RESULT-shaped array
    for its id; the answers to one read go out in one write, as busbridge's do."""

    def __init__(self) -> None:
        import msgpack

        self.buf = bytearray()
        self.pack = msgpack.Packer().pack
        self.unpackb = msgpack.unpackb

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos, end = 0, len(buf)
        out = []
        while end - pos >= 4:
            n = int.from_bytes(buf[pos : pos + 4], "big")
            if end - pos - 4 < n:
                break
            f = self.unpackb(buf[pos + 4 : pos + 4 + n])
            pos += 4 + n
            body = self.pack([4, f[1], b"\0\0", [b"\x0c\x80"], []])
            out.append(len(body).to_bytes(4, "big") + body)
        del buf[:pos]
        if out:
            self.t.write(b"".join(out) if len(out) > 1 else out[0])


async def until_stdin_closes() -> None:
    """Return once the bench closes this process's stdin."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    fd = sys.stdin.fileno()

    def readable() -> None:
        if not os.read(fd, 4096) and not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)


async def serve(reply_size: int, mode: str) -> None:
    reply = frame_of(reply_size)
    loop = asyncio.get_running_loop()
    if mode == "msgpack":
        srv = await loop.create_server(MsgpackEcho, "127.0.0.1", 0)
    elif mode == "buffered":
        srv = await loop.create_server(lambda: BufferedEcho(reply), "127.0.0.1", 0)
    else:
        srv = await loop.create_server(lambda: PlainEcho(reply), "127.0.0.1", 0)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await until_stdin_closes()
    srv.close()


def main(argv: list[str] | None = None) -> None:
    reply_size, mode, loop = sys.argv[1:4] if argv is None else argv
    run(serve(int(reply_size), mode), use_uvloop=loop == "uv")


if __name__ == "__main__":
    main()

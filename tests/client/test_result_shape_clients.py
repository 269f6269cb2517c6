"""The clients close on a RESULT that does not fit its request (SPEC.md §4.5, §9.3)
instead of returning it as data: a server on 127.0.0.1 that answers a register read
with an empty read entry (through the smbus2 drop-in, read_word_data had returned 0)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import msgpack
import pytest

from bridge.client import AsyncClient, BlockingClient, ConnectionLost
from protocol import (
    DEFAULT_LIMITS,
    Connection,
    I2CRequest,
    LimitsInfo,
    Role,
    Welcome,
    WelcomeInfo,
    read,
    write,
)
from protocol.codec import frame

REG_READ = [write(0x48, [0x0F]), read(0x48, 2)]


def _serve_one(listener: socket.socket, good_then_bad: bool = False) -> None:
    """Handshake properly, then answer every I2C request with OK and an empty entry (or,
    ``good_then_bad``, with a good RESULT followed in the same write by a bad frame)."""
    sock, _ = listener.accept()
    with sock:
        conn = Connection(Role.SERVER)
        sock.settimeout(30)
        for _ in range(100):  # bounded: a test makes a few requests
            data = sock.recv(65536)
            if not data:
                return
            for ev in conn.receive(data):
                if type(ev).__name__ == "Hello":
                    sock.sendall(conn.send(Welcome(WelcomeInfo(
                        server="shape", limits=LimitsInfo(**DEFAULT_LIMITS.as_dict())))))
                elif isinstance(ev, I2CRequest) and good_then_bad:
                    sock.sendall(frame(msgpack.packb([4, ev.id, b"\0\0", [b"\x01\x17"], []]))
                                 + frame(msgpack.packb([99, 1])))
                elif isinstance(ev, I2CRequest):
                    sock.sendall(frame(msgpack.packb([4, ev.id, b"\0\0", [b""], []])))


@pytest.fixture
def bad_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        good_then_bad = getattr(request, "param", False)
        t = threading.Thread(target=_serve_one, args=(listener, good_then_bad), daemon=True)
        t.start()
        yield listener.getsockname()
        t.join(30)


def test_blocking_client(bad_server: tuple[str, int]) -> None:
    with BlockingClient(*bad_server) as c:
        with pytest.raises(ConnectionLost, match="does not fit"):
            c.transfer("1", REG_READ)
        with pytest.raises(ConnectionLost):
            c.transfer("1", REG_READ)  # closed, as after any violation


async def test_async_client(bad_server: tuple[str, int]) -> None:
    c = await AsyncClient.connect(*bad_server)
    try:
        with pytest.raises(ConnectionLost, match="does not fit"):
            await c.transfer("1", REG_READ)
        assert not c.connected
    finally:
        await c.close()


@pytest.mark.parametrize("bad_server", [True], indirect=True)
def test_blocking_client_delivers_the_answer_that_came_before_a_violation(
        bad_server: tuple[str, int]) -> None:
    """The same bytes in one read or two: the answer, then the connection closes (as
    AsyncClient does); it used to depend on how TCP split the stream."""
    with BlockingClient(*bad_server) as c:
        assert c.transfer("1", REG_READ) == [b"\x01\x17"]
        with pytest.raises(ConnectionLost):
            c.transfer("1", REG_READ)

"""Resource limits over real TCP: each one refuses with its own error, others keep working."""

from __future__ import annotations

import asyncio
import math
import socket
import struct
import time
from collections.abc import AsyncIterator

import pytest

from bridge.client import AsyncClient, ClientAuth, ConnectionLost, RemoteError, read, write
from bridge.config import Board, board_from_toml_text
from bridge.server import READ_BUFFER, LimitSettings, Server, ServerPolicy
from bridge.server.auth import TokenSpec, build_server_security, hash_token
from protocol import (
    Connection,
    Error,
    ErrorCode,
    Hello,
    HelloInfo,
    I2CRequest,
    Result,
    Role,
    chain,
)

STALLING_BOARD = """
name = "stall"
[[i2c]]
name = "1"
backend = "sim"
[[i2c.devices]]
type = "regmap"
address = 0x48
[[i2c.devices]]
type = "regmap"
address = 0x20
stall_s = 0.3
"""


async def start(board: Board, lim: LimitSettings, **kw: object) -> Server:
    s = Server(board, host="127.0.0.1", port=0,
               policy=ServerPolicy(limit_settings=lim, **kw))  # type: ignore[arg-type]
    await s.start()
    return s


@pytest.fixture
async def stop() -> AsyncIterator[list[Server]]:
    servers: list[Server] = []
    yield servers
    for s in servers:
        await s.close(grace=1.0)


async def connect(s: Server, **kw: object) -> AsyncClient:
    return await AsyncClient.connect("127.0.0.1", s.port, timeout=5.0, **kw)  # type: ignore[arg-type]


async def works(c: AsyncClient) -> bool:
    (data,) = await c.transfer("1", [read(0x48, 1)])
    return len(data) == 1


async def raw_frames(reader: asyncio.StreamReader) -> list[object]:
    """Everything the server sends until it closes, decoded as a client would."""
    conn = Connection(Role.CLIENT)
    conn.receive_data(await asyncio.wait_for(reader.read(), 5))
    return list(conn.events())


async def test_max_frame_is_configurable_and_advertised(board: Board,
                                                        stop: list[Server]) -> None:
    s = await start(board, LimitSettings(max_frame=4096))
    stop.append(s)
    c = await connect(s)
    assert c.welcome is not None
    assert c.welcome.limits.max_frame == 4096
    with pytest.raises(ValueError, match="limit 4096"):  # the client knows it and refuses
        await c.transfer("1", [write(0x50, bytes(4200))])
    reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
    hello = Connection(Role.CLIENT).send(Hello(HelloInfo()))
    writer.write(hello + struct.pack(">I", 5000))  # a peer that ignores it is cut off
    frames = await raw_frames(reader)
    writer.close()
    assert [f.code for f in frames[1:]] == [ErrorCode.FRAME_TOO_LARGE]  # type: ignore[attr-defined]
    assert await works(c)
    await c.close()


async def test_max_in_flight_refuses_the_extra_request_only(stop: list[Server]) -> None:
    s = await start(board_from_toml_text(STALLING_BOARD), LimitSettings(max_in_flight=2))
    stop.append(s)
    # Raw frames: busbridge's own clients hold back what the server would refuse.
    conn = Connection(Role.CLIENT)
    reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
    try:
        writer.write(conn.send(Hello(HelloInfo(client="raw"))))
        answers: list[object] = []
        while not conn.handshaken:
            conn.receive(await asyncio.wait_for(reader.read(65536), 30))
        writer.write(b"".join(conn.send(I2CRequest(rid, "1", (read(0x20, 1),)))
                              for rid in (1, 2, 3)))
        for _ in range(100):  # bounded: three answers
            if len(answers) == 3:
                break
            answers += conn.receive(await asyncio.wait_for(reader.read(65536), 30))
    finally:
        writer.close()
    refused = [a for a in answers if isinstance(a, Error)]
    assert len(refused) == 1
    assert refused[0].code == ErrorCode.LIMIT_EXCEEDED
    assert "limit 2" in refused[0].message
    assert sorted(a.id for a in answers if isinstance(a, Result)) == [1, 2]


async def test_max_clients_turns_the_extra_connection_away(board: Board,
                                                           stop: list[Server]) -> None:
    s = await start(board, LimitSettings(max_clients=2))
    stop.append(s)
    a, b = await connect(s), await connect(s)
    with pytest.raises(RemoteError) as e:
        await connect(s)
    assert e.value.code == ErrorCode.TOO_MANY_CLIENTS
    assert "2 clients already connected" in e.value.message
    assert await works(a)
    assert await works(b)
    await b.close()
    for _ in range(50):  # the server notices the close
        if len(s.sessions) < 2:
            break
        await asyncio.sleep(0.02)
    c = await connect(s)
    assert await works(c)
    await a.close()
    await c.close()


async def test_rate_limit_refuses_at_once_and_per_client(board: Board,
                                                         stop: list[Server]) -> None:
    tokens = [TokenSpec(name="ci", hash=hash_token("t" * 40))]
    s = await start(board, LimitSettings(rate=1, burst=3),
                    security=build_server_security(None, tokens, False))
    stop.append(s)
    ci = await connect(s, auth=ClientAuth(token="t" * 40))
    t0 = time.monotonic()
    results = await asyncio.gather(*(ci.transfer("1", [read(0x48, 1)]) for _ in range(6)),
                                   return_exceptions=True)
    assert time.monotonic() - t0 < 2.0  # refused, not queued
    refused = [r for r in results if isinstance(r, RemoteError)]
    assert [r.code for r in refused] == [ErrorCode.RATE_LIMITED] * 3
    assert "client 'token:ci' is over its request rate (1/s, burst 3)" in refused[0].message
    ci2 = await connect(s, auth=ClientAuth(token="t" * 40))  # same client name: same bucket
    with pytest.raises(RemoteError, match="rate"):
        await works(ci2)
    await ci.close()
    await ci2.close()


async def test_rate_limit_leaves_other_clients_alone(board: Board, stop: list[Server]) -> None:
    s = await start(board, LimitSettings(rate=1, burst=1))
    stop.append(s)
    greedy, other = await connect(s), await connect(s)  # anonymous: one bucket each
    assert await works(greedy)
    with pytest.raises(RemoteError, match="rate"):
        await works(greedy)
    assert await works(other)
    await greedy.close()
    await other.close()


async def test_idle_connection_is_closed_with_idle_timeout(board: Board,
                                                           stop: list[Server]) -> None:
    s = await start(board, LimitSettings(idle_timeout_s=0.3))
    stop.append(s)
    idle, busy = await connect(s), await connect(s)
    deadline = time.monotonic() + 1.2
    while time.monotonic() < deadline:
        await busy.ping()  # a PING is activity
        await asyncio.sleep(0.05)
    assert not idle.connected
    with pytest.raises(ConnectionLost, match="idle-timeout"):
        await works(idle)
    assert busy.connected
    assert await works(busy)
    await busy.close()


async def test_silent_client_is_closed_with_handshake_timeout(board: Board,
                                                              stop: list[Server]) -> None:
    s = await start(board, LimitSettings(handshake_timeout_s=0.2))
    stop.append(s)
    c = await connect(s)
    reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
    t0 = time.monotonic()
    frames = await raw_frames(reader)  # never sends HELLO
    writer.close()
    assert time.monotonic() - t0 < 3
    assert [(f.id, f.code) for f in frames] == [(0, ErrorCode.HANDSHAKE_TIMEOUT)]  # type: ignore[attr-defined]
    assert await works(c)  # connected before: its HELLO came in time
    await c.close()


async def test_keepalive_is_set_on_accepted_connections(board: Board,
                                                        stop: list[Server]) -> None:
    lim = LimitSettings(keepalive_idle_s=7, keepalive_interval_s=2, keepalive_count=4)
    s = await start(board, lim)
    stop.append(s)
    c = await connect(s)
    (session,) = s.sessions
    sock = session.transport.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 2
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 4
    await c.close()


async def test_a_client_that_never_reads_cannot_grow_the_servers_buffer(
    server: Server, client: AsyncClient,
) -> None:
    """High-water mark + one batch (the answers to one read), however much it sends."""
    conn = Connection(Role.CLIENT)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(conn.send(Hello(HelloInfo(client="stalled"))))
    sock.setblocking(False)
    # Each request reads 4 KiB of EEPROM: a 30-byte frame asking for a 4 KiB answer.
    req = I2CRequest(1, "1", tuple(chain([write(0x50, [0, 0]), read(0x50, 4096)])))
    frame_len = len(Connection(Role.CLIENT).send(req))
    answer_len = 4096 + 64
    me = f":{sock.getsockname()[1]}"
    for _ in range(1000):  # the server accepts on this same loop; up to 10 s
        await asyncio.sleep(0.01)
        mine = [x for x in server.sessions if x.peer.endswith(me)]
        if mine:
            break
    (session,) = mine
    ids = iter(range(1, 10**9))

    def more() -> memoryview:  # fresh ids: one read may hold thousands of frames
        return memoryview(b"".join(Connection(Role.CLIENT).send(I2CRequest(next(ids), "1",
                                                                           req.msgs))
                                   for _ in range(1000)))

    pending = more()
    sent_bytes = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120  # generous: a loaded machine is slow, not wrong
    # Send until the server stops reading this client (its own decision, observable on its
    # transport), then until the kernel buffers are full too; a fixed "no progress for
    # 0.5 s" ended early whenever the test itself was not scheduled for half a second.
    blocked = 0
    while session.transport.is_reading() or blocked < 20:
        if loop.time() > deadline:
            pytest.fail(f"the server kept reading for 120 s ({sent_bytes} B sent)")
        try:
            n = sock.send(pending)
        except BlockingIOError:
            blocked += 0 if session.transport.is_reading() else 1
            await asyncio.sleep(0.01)
            continue
        blocked = 0
        sent_bytes += n
        pending = pending[n:] if n < len(pending) else more()
        if sent_bytes > 64 * 1024 * 1024:
            pytest.fail("the server never stopped reading")
        await asyncio.sleep(0)
    sent = sent_bytes // frame_len
    _low, high = session.transport.get_write_buffer_limits()
    batch = math.ceil(READ_BUFFER / frame_len + 1) * answer_len
    first = session.transport.get_write_buffer_size()
    print(f"write buffer {first} B; high-water {high} B; bound {high + batch} B; "
          f"{sent} requests sent")
    assert first <= high + batch
    await asyncio.sleep(0.3)
    assert not session.transport.is_reading()
    assert session.transport.get_write_buffer_size() == first  # nothing more was read
    assert sent * answer_len > 4 * (high + batch)  # it did ask for far more than that
    assert await works(client)  # other clients are served throughout
    sock.close()


FD_PROBE = """
import asyncio, resource, sys
from bridge.config import load_board
from bridge.logs import setup
from bridge.server import Server

soft, hard = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
setup()  # as busbridge serve: WARNING and up, key=value, to stderr

async def main() -> None:
    s = Server(load_board(None), host="127.0.0.1", port=0)
    await s.start()
    print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    await s.close(grace=1.0)

asyncio.run(main())
"""


@pytest.mark.parametrize(("hard", "soft_after", "warned"), [(4096, 576, False),
                                                             (400, 400, True)])
def test_the_server_raises_its_descriptor_limit_to_what_its_limits_need_or_warns(
    hard: int, soft_after: int, warned: bool,
) -> None:
    """Default limits need max_clients + max_pending + 64 = 576 descriptors: the server
    raises a lower soft limit that far, and says so when the hard limit is lower."""
    import subprocess
    import sys
    from pathlib import Path

    with open("/proc/self/status", encoding="ascii") as f:
        if any(line.split()[:2] == ["Seccomp:", "2"] for line in f):
            pytest.skip("under a seccomp filter the server leaves its limit alone")
    if resource_hard() < hard:
        pytest.skip(f"this process's hard descriptor limit is below {hard}")
    out = subprocess.run([sys.executable, "-c", FD_PROBE, "100", str(hard)],
                         capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2], check=True)
    assert int(out.stdout.split()[-1]) == soft_after
    assert ("descriptor limit below what the connection limits need" in out.stderr) is warned
    if warned:
        assert "needed=576" in out.stderr, out.stderr
        assert "limit=400" in out.stderr, out.stderr


def resource_hard() -> int:
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 1 << 30 if hard == resource.RLIM_INFINITY else hard

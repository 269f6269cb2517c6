"""Per-connection state keyed by client input (issue 14, finding 5), over a real socket.

The review sent 200k denied frames, each naming another bus, with a token that has
no rights at all: +69 MiB RSS (a verdict cached per made-up bus name) and 69 MB of
WARNING lines.  Now verdicts are cached for the board's own buses only and in a
bounded table, repeated denials are aggregated in the log, and a connection's
lease tokens stay bounded however many leases it takes and gives back.
"""

from __future__ import annotations

import io
import logging
import socket
import tracemalloc
from collections.abc import AsyncIterator, Iterator

import pytest
from conftest import busbridge_log, serve_with_access_rules
from reliability.attacks import frame, hello

from bridge.client import AsyncClient, ClientAuth
from bridge.config import Board
from bridge.logs import LogfmtFormatter
from bridge.server import Server
from bridge.server.acl import MAX_CACHED_VERDICTS, AccessRule, Acl
from bridge.server.session import MAX_LEASE_TOKENS
from protocol.virtio import I2C_FLAGS_M_RD, I2C_OUT_HDR, encode_i2c_addr

NOBODY, ADMIN = "nobody-" + "n" * 40, "admin-" + "a" * 40
FRAMES = 20_000


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    # WARNING: what `busbridge serve` writes by default
    with busbridge_log(LogfmtFormatter(), logging.WARNING) as out:
        yield out


@pytest.fixture
async def acl_server(board: Board) -> AsyncIterator[Server]:
    async with serve_with_access_rules(board, {"nobody": NOBODY, "admin": ADMIN},
                                       [AccessRule(client="token:admin", bus="*")]) as s:
        yield s


def denied_frames(n: int) -> bytes:
    hdr = I2C_OUT_HDR.pack(encode_i2c_addr(0x48, False), 0, I2C_FLAGS_M_RD)
    return b"".join(frame([2, k + 1, f"bus-{k:058d}", [[hdr, 1]], None]) for k in range(n))


async def test_denied_frames_naming_made_up_buses_cost_no_memory_and_few_log_lines(
    acl_server: Server, logs: io.StringIO,
) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    sock = socket.create_connection(("127.0.0.1", acl_server.port))
    sock.setblocking(False)
    tracemalloc.start()
    try:
        await loop.sock_sendall(sock, hello("flooder", token=NOBODY))
        before = tracemalloc.take_snapshot()
        payload = denied_frames(FRAMES)
        send = asyncio.ensure_future(loop.sock_sendall(sock, payload))
        got = 0
        buf = b""
        deadline = loop.time() + 60
        while got < FRAMES + 1 and loop.time() < deadline:  # WELCOME + one ERROR each
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 30)
            assert chunk, "the server closed the connection"
            buf += chunk
            while len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[:4], "big"):
                buf = buf[4 + int.from_bytes(buf[:4], "big"):]
                got += 1
        await send
        (session,) = acl_server.sessions
        assert session.guard is not None
        assert session.guard.acl is not None
        cache = session.guard.acl._cache
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
        sock.close()
    assert got == FRAMES + 1
    assert len(cache) == 0  # not one verdict kept for a bus the board does not have
    grown = sum(s.size_diff for s in after.compare_to(before, "filename")
                if "bridge/server" in s.traceback[0].filename)
    assert grown < 256 * 1024, grown  # the review measured 361 B a frame: 7 MB here
    denied = [x for x in logs.getvalue().splitlines() if 'msg="request denied"' in x]
    assert 1 <= len(denied) <= 10 + 60  # a burst, then about one a second
    assert any("suppressed=" in x for x in denied) or len(denied) == 10


async def test_the_verdict_cache_of_a_client_is_bounded(acl_server: Server) -> None:
    rules = Acl([AccessRule(client="*", bus="i2c:*")]).for_client("token:x", [("i2c", "1")])
    from protocol import I2CRequest, read
    for addr in range(0x80):
        for ten in (False, True):
            assert rules.check(I2CRequest(1, "1", (read(addr, 1, ten_bit=ten),))) is None
    assert len(rules._cache) <= MAX_CACHED_VERDICTS


async def test_taking_and_releasing_leases_keeps_a_connections_tokens_bounded(
    acl_server: Server,
) -> None:
    async with await AsyncClient.connect("127.0.0.1", acl_server.port,
                                         auth=ClientAuth(token=ADMIN)) as c:
        for k in range(600):
            lease = await c.lease_take("1", k if k < 20 else 20 + k % 100, ttl=60)
            if k >= 20:  # keeps the first 20, gives every later one back
                await c.lease_release(lease)
        (session,) = acl_server.sessions
        assert len(session.lease_tokens) <= MAX_LEASE_TOKENS
        assert len(acl_server.leases) == 20

"""Leases under attack (issue 14, findings 4, 10 and 11), over real sockets.

* One connection used to stack the same lease thousands of times until takes took
  30 ms, an unrelated client froze and ``lease list`` broke for everyone; now a
  holder re-taking its scope renews, leases are bounded per client and in total,
  and ``list`` pages within ``max_frame``.
* Holder text is anyone's words: it reaches other users' terminals escaped and
  next to the identity the server authenticated.
* A 7-bit lease on 0x50 no longer locks the 10-bit 0x050.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from conftest import Running

from bridge.client import AsyncClient, ClientAuth, RemoteError, read, write
from bridge.config import Board
from bridge.server import LimitSettings, Server, ServerPolicy
from bridge.server.auth import TokenSpec, build_server_security, hash_token
from protocol import ErrorCode, LeaseOp, LeaseRequest

BUSBRIDGE = [sys.executable, "-c", "from bridge.cli.main import main; main()"]
CI, OPS = "ci-" + "c" * 40, "ops-" + "o" * 40
#: Characters no terminal line may get raw: C0/C1 controls, DEL, separators, bidi overrides.
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


async def start(board: Board, limits: LimitSettings) -> Server:
    sec = build_server_security(None, [TokenSpec(name="ci", hash=hash_token(CI)),
                                       TokenSpec(name="ops", hash=hash_token(OPS))], False)
    s = Server(board, host="127.0.0.1", port=0, policy=ServerPolicy(sec, limits))
    await s.start()
    return s


@pytest.fixture
async def small(board: Board) -> AsyncIterator[Server]:
    s = await start(board, LimitSettings(max_frame=4096, max_leases=500,
                                         max_leases_per_client=300))
    yield s
    await s.close(grace=1.0)


async def connect(s: Server, token: str) -> AsyncClient:
    return await AsyncClient.connect("127.0.0.1", s.port, auth=ClientAuth(token=token))


async def test_retaking_ones_own_scope_renews_instead_of_stacking(small: Server) -> None:
    ci = await connect(small, CI)
    try:
        first = await ci.lease_take("1", 0x50, ttl=60, holder="job 1")
        for k in range(2000):  # the review stacked 6,000 of these
            again = await ci.lease_take("1", 0x50, ttl=60, holder=f"job {k}")
            assert again.token == first.token
        assert len(small.leases) == 1
        (only,) = await ci.leases()
        assert (only.id, only.holder) == (first.id, "job 1999")
    finally:
        await ci.close()


async def test_leases_are_bounded_per_client_and_in_total_and_a_bystander_is_served(
    small: Server,
) -> None:
    """ci fills its share (300 leases), ops the rest of the board's (500); further takes
    are limit-exceeded, while an unrelated client keeps reading a device; and everyone
    can still list every lease, page by page within the 4096-byte max_frame."""
    ci, ops = await connect(small, CI), await connect(small, OPS)
    bystander = await connect(small, OPS)  # another connection, reading a sensor
    done = asyncio.Event()

    async def fill(c: AsyncClient, bus: str, addresses: range, ten_bit: bool) -> None:
        for a in addresses:
            await c.lease_take(bus, a, ttl=60, ten_bit=ten_bit)

    async def read_along() -> int:
        n = 0
        while not done.is_set():
            (data,) = await bystander.transfer("1", [write(0x48, [0x0F]), read(0x48, 2)])
            assert data == b"\x01\x17"
            n += 1
            await asyncio.sleep(0)
        return n

    reader = asyncio.ensure_future(read_along())
    try:
        await fill(ci, "2", range(0x78), False)  # 120 seven-bit addresses
        await fill(ci, "2", range(0x100, 0x100 + 180), True)  # and 180 ten-bit ones
        with pytest.raises(RemoteError) as e:
            await ci.lease_take("1", 0x10, ttl=60)
        assert e.value.code is ErrorCode.LIMIT_EXCEEDED
        assert "token:ci holds 300 leases" in e.value.message
        await fill(ops, "1", range(0x40), False)  # not 0x48: the bystander reads it
        await fill(ops, "1", range(0x100, 0x100 + 136), True)
        with pytest.raises(RemoteError) as e:
            await ops.lease_take("1", 0x300, ttl=60)
        assert e.value.code is ErrorCode.LIMIT_EXCEEDED
        assert "the board has 500 leases, its maximum" in e.value.message
    finally:
        done.set()
    try:
        assert await reader > 0
        assert len(small.leases) == 500
        listed = await bystander.leases()
        assert len(listed) == 500
        assert len({x.id for x in listed}) == 500
        # Each page is one frame within max_frame: ask for the first by hand.
        page = await bystander._lease(LeaseRequest(999, LeaseOp.LIST))
        assert 0 < len(page.leases) < 500
        assert page.total == 500
        assert page.next is not None
    finally:
        for c in (ci, ops, bystander):
            await c.close()


async def test_a_full_board_refuses_takes_with_limit_exceeded(board: Board) -> None:
    s = await start(board, LimitSettings(max_leases=5, max_leases_per_client=5))
    try:
        ci, ops = await connect(s, CI), await connect(s, OPS)
        for a in range(3):
            await ci.lease_take("1", 0x10 + a, ttl=60)
        for a in range(2):
            await ops.lease_take("1", 0x20 + a, ttl=60)
        with pytest.raises(RemoteError) as e:
            await ops.lease_take("1", 0x30, ttl=60)
        assert e.value.code is ErrorCode.LIMIT_EXCEEDED
        assert "the board has 5 leases, its maximum" in e.value.message
        (held,) = [x for x in await ops.leases() if x.address == 0x20]
        assert held.client == "token:ops"
    finally:
        await ci.close()
        await ops.close()
        await s.close(grace=1.0)


async def test_a_7_bit_lease_does_not_lock_the_10_bit_address_of_the_same_number(
    server: Server,
) -> None:
    a = await AsyncClient.connect("127.0.0.1", server.port, name="a")
    b = await AsyncClient.connect("127.0.0.1", server.port, name="b")
    try:
        seven = await a.lease_take("2", 0x48, ttl=30)  # the LM75
        assert seven.info.scope == "i2c bus 2 address 0x48"
        with pytest.raises(RemoteError) as e:
            await b.transfer("2", [write(0x48, [0x00]), read(0x48, 2)])
        assert e.value.code is ErrorCode.BUSY
        # The 10-bit 0x048 is another device (none answers there): not busy, a NACK.
        res = await b.i2c("2", [read(0x48, 1, ten_bit=True)])
        assert list(res.status) == [1]
        ten = await b.lease_take("2", 0x48, ttl=30, ten_bit=True)
        assert ten.info.scope == "i2c bus 2 address 0x048 (10-bit)"
        with pytest.raises(RemoteError) as e:
            await a.i2c("2", [read(0x48, 1, ten_bit=True)])
        assert e.value.code is ErrorCode.BUSY
        assert "address 0x048 (10-bit)" in e.value.message
        (data,) = await a.transfer("2", [write(0x48, [0x00]), read(0x48, 2)])
        assert len(data) == 2  # its own 7-bit lease still works
    finally:
        await a.close()
        await b.close()


def test_holder_text_reaches_terminals_escaped_and_next_to_the_identity(
    token_thread: Running,
) -> None:
    """A holder that would set the terminal title, clear the screen and rewrite the line
    to pose as "admin (ops on-call)" shows escaped, with the token name beside it."""
    evil = "\x1b]0;pwned\x07\x1b[2J\rADMIN (ops on-call)\u202e"
    env = {"BUSBRIDGE_TOKEN": CI, "PATH": "/usr/bin:/bin"}
    url = ["--connect", token_thread.url]
    took = subprocess.run([*BUSBRIDGE, *url, "lease", "take", "i2c:1@0x48", "--ttl", "60",
                           "--holder", evil], capture_output=True, text=True, env=env,
                          timeout=60)
    assert took.returncode == 0, took.stderr
    other = {**env, "BUSBRIDGE_TOKEN": OPS}
    listed = subprocess.run([*BUSBRIDGE, *url, "lease", "list"], capture_output=True,
                            text=True, env=other, timeout=60)
    busy = subprocess.run([*BUSBRIDGE, *url, "i2c", "get", "-y", "1", "0x48", "0x0f", "w"],
                          capture_output=True, text=True, env=other, timeout=60)
    assert busy.returncode == 1
    for out in (took.stderr, listed.stdout, busy.stderr):
        assert not RAW.search(out), repr(out)
        assert "\\u001b]0;pwned\\u0007\\u001b[2J\\rADMIN (ops on-call)\\u202e" in out, out
    assert "token:ci" in listed.stdout
    assert '(ops on-call)\\u202e" (token:ci) until' in busy.stderr


@pytest.fixture
def token_thread(board: Board) -> Running:  # type: ignore[misc]
    from conftest import start_server_thread, stop_server_thread
    sec = build_server_security(None, [TokenSpec(name="ci", hash=hash_token(CI)),
                                       TokenSpec(name="ops", hash=hash_token(OPS))], False)
    running, t = start_server_thread(board, policy=ServerPolicy(sec))
    try:
        yield running
    finally:
        stop_server_thread(running, t)

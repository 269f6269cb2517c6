"""Bounds of the admin channel over real TCP: what one admin, or many, may make the
server hold, and how far a fault may wedge a bus."""

from __future__ import annotations

import asyncio
import io
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from bridge import logs
from bridge.client import AsyncClient, RemoteError, read, write
from bridge.logs import AUDIT_LOGGER
from bridge.server import Server
from bridge.server.trace import MAX_SUBS, MAX_SUBS_PER_CONNECTION
from protocol import Connection, ErrorCode, Hello, HelloInfo, Role
from protocol.admin import AdminEvent, AdminRequest, AdminResult
from protocol.events import Error, Event, I2CRequest, Result

TMP117 = 0x48


class Raw:
    """A bare protocol connection, to send what the client library would not."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = Connection(Role.CLIENT)
        self.got: list[Event] = []

    @classmethod
    async def open(cls, server: Server, name: str = "raw admin") -> Raw:
        r, w = await asyncio.open_connection("127.0.0.1", server.port)
        raw = cls(r, w)
        w.write(raw.conn.send(Hello(HelloInfo(client=name))))
        return raw

    def send(self, rid: int, op: str, params: dict[str, Any]) -> None:
        self.writer.write(self.conn.send(AdminRequest(rid, op, params)))

    async def answer(self, rid: int) -> Event:
        """The ADMIN_RESULT or ERROR of ``rid`` (bounded wait)."""
        for _ in range(10_000):
            for ev in self.got:
                if isinstance(ev, (AdminResult, Error)) and ev.id == rid:
                    return ev
            data = await asyncio.wait_for(self.reader.read(1 << 20), 10)
            assert data, "connection closed"
            self.got += self.conn.receive(data)
        raise AssertionError("no answer")

    async def answer_any(self, rid: int) -> Event:
        """Any answer of ``rid``, a RESULT included (bounded wait)."""
        for _ in range(10_000):
            for ev in self.got:
                if isinstance(ev, (AdminResult, Error, Result)) and ev.id == rid:
                    return ev
            data = await asyncio.wait_for(self.reader.read(1 << 20), 10)
            assert data, "connection closed"
            self.got += self.conn.receive(data)
        raise AssertionError("no answer")

    def close(self) -> None:
        self.writer.close()


async def test_trace_subscriptions_are_bounded_per_connection_and_in_total(
        server: Server, client: AsyncClient) -> None:
    assert (MAX_SUBS_PER_CONNECTION, MAX_SUBS) == (4, 64)
    tracer = server.admin.tracer
    a = await Raw.open(server)
    for rid in range(1, 7):  # pipelined, as the attacker did
        a.send(rid, "trace.start", {"bus": "1"})
    answers = [await a.answer(rid) for rid in range(1, 7)]
    assert [type(x) for x in answers] == [AdminResult] * 4 + [Error] * 2
    assert all(x.code is ErrorCode.LIMIT_EXCEEDED for x in answers[4:])  # type: ignore
    assert "4 live traces" in answers[4].message  # type: ignore[attr-defined]
    assert len(tracer.subs) == 4
    # A stop makes room again on that connection.
    a.send(7, "trace.stop", {"id": 1})
    assert isinstance(await a.answer(7), AdminResult)
    a.send(8, "trace.start", {})
    assert isinstance(await a.answer(8), AdminResult)

    # The server-wide bound (lowered here: the mechanism, not 16 connections).
    tracer.max_subs = 6
    b = await Raw.open(server, "second admin")
    for rid in (1, 2, 3):
        b.send(rid, "trace.start", {})
    got = [await b.answer(rid) for rid in (1, 2, 3)]
    assert [type(x) for x in got] == [AdminResult, AdminResult, Error]
    assert got[2].code is ErrorCode.LIMIT_EXCEEDED  # type: ignore[attr-defined]
    assert "the server has 6 live traces" in got[2].message  # type: ignore[attr-defined]
    assert len(tracer.subs) == 6
    # Nobody else is hurt: a bystander's bus request is answered.
    assert len((await client.transfer(1, [read(TMP117, 2)]))[0]) == 2
    a.close()
    b.close()


async def test_admin_answers_count_against_the_answer_budget(
        server: Server, client: AsyncClient) -> None:
    """A connection that asks for log pages and never reads pins at most its
    client_answer_budget: the pages past it are refused limit-exceeded, not buffered."""
    for _ in range(48):  # about 400 KiB of log: every page is a full frame
        await client.transfer(1, [write(0x50, b"\x00\x00"), read(0x50, 8192)])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    r, w = await asyncio.open_connection(sock=sock)
    a = Raw(r, w)
    w.write(a.conn.send(Hello(HelloInfo(client="hoarder"))))
    n = 64
    for rid in range(1, n + 1):
        a.send(rid, "sim.log", {"kind": "i2c", "bus": "1", "limit": 1000})
    session = None
    for _ in range(400):  # every frame answered (or refused) server-side: bounded wait
        await asyncio.sleep(0.05)
        session = next((s for s in server.sessions if s.client_name == "hoarder"), None)
        if session is not None and not session.conn.in_flight and session.owed == 0:
            break
    assert session is not None
    session.note_buffer()
    per_client = server.budget.per_client
    held = session.owed + session.buffered
    assert held <= per_client + 64 * 1024, held  # not 64 pages of 256 KiB
    answers = [await a.answer(rid) for rid in range(1, n + 1)]
    pages = [x for x in answers if isinstance(x, AdminResult)]
    refused = [x for x in answers if isinstance(x, Error)]
    assert pages
    assert refused
    assert all(x.code is ErrorCode.LIMIT_EXCEEDED for x in refused)
    assert "client_answer_budget" in refused[0].message
    assert all(len(p.result["entries"]) >= 1 for p in pages)
    # Reading again, the same connection is served.
    a.send(n + 1, "sim.log", {"kind": "i2c", "bus": "1", "limit": 1})
    assert isinstance(await a.answer(n + 1), AdminResult)
    a.close()


async def test_a_log_entry_bigger_than_a_frame_is_cut_so_the_log_pages_on(
        client: AsyncClient) -> None:
    """31 page writes and an 8 KiB read in one frame: its entry holds more than a frame.
    It comes cut to 64 bytes per message, marked truncated, and ``next`` moves past it."""
    start = await client.sim.log(1, limit=1000)
    while start.more:
        start = await client.sim.log(1, since=start.next, limit=1000)
    big = [write(0x50, b"\x00\x00" + bytes(8190)) for _ in range(31)]
    await client.transfer(1, [*big, read(0x50, 8192)])
    await client.transfer(1, [write(TMP117, b"\x0f"), read(TMP117, 2)])
    page = await client.sim.log(1, since=start.next, limit=10)
    assert [e["seq"] for e in page.entries] == [start.next + 1, start.next + 2]
    assert page.next == start.next + 2
    assert not page.more
    cut, small = page.entries
    assert cut["truncated"] is True
    assert len(cut["msgs"]) == 32
    assert all(len(m["data"]) == 64 for m in cut["msgs"])
    assert cut["msgs"][0]["len"] == 8192  # the length says what really went
    assert "truncated" not in small
    assert small["msgs"][1]["data"] == b"\x01\x17"


@pytest.mark.parametrize(("addr", "params", "words"), [
    (TMP117, {"fault": "stall", "seconds": 1e9}, "outside 0..60"),
    (TMP117, {"fault": "stall", "seconds": -1.0}, "outside 0..60"),
    (0x50, {"fault": "nack-next", "count": -5}, "outside 0..1000000"),
    (0x50, {"fault": "busy", "seconds": 3600.0}, "outside 0..60"),
])
async def test_a_fault_that_would_wedge_the_bus_is_refused_and_nothing_changes(
        client: AsyncClient, addr: int, params: dict[str, object], words: str) -> None:
    with pytest.raises(RemoteError) as info:
        await client.admin("sim.fault", {"kind": "i2c", "bus": "1", "addr": addr, **params})
    assert info.value.code is ErrorCode.BAD_REQUEST
    assert words in info.value.message
    # The chip answers at once, as before: no stall, no NACK was installed.
    got = await asyncio.wait_for(client.transfer(1, [read(addr, 1)]), 10)
    assert len(got[0]) == 1
    (dev,) = [d for d in await client.sim.devices("1") if d.get("addr") == TMP117]
    (stall,) = [f for f in dev["faults"] if f["name"] == "stall"]
    assert stall["params"] == [{"name": "seconds", "type": "float", "default": None,
                                "min": 0.0, "max": 60.0}]


@pytest.fixture
def default_logging() -> Iterator[io.StringIO]:
    """The server's logging as `busbridge serve` sets it up without -v; restored after."""
    root = logging.getLogger("busbridge")
    audit = logging.getLogger(AUDIT_LOGGER)
    saved = (root.handlers[:], root.level, root.propagate, audit.level)
    logs.setup(0)
    out = io.StringIO()
    (handler,) = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    yield out
    root.handlers[:], root.level, root.propagate = saved[:3]
    audit.setLevel(saved[3])


async def test_state_changing_admin_ops_leave_an_audit_trail_at_the_default_level(
        default_logging: io.StringIO, server: Server, client: AsyncClient) -> None:
    await client.sim.set(1, TMP117, temperature=31.25)
    await client.sim.fault(1, 0x50, "nack-next", count=1)
    async with client.trace(bus=1):
        pass
    await client.sim.get(1, TMP117)  # reads leave no line at the default level
    await client.sim.log(1, limit=1)
    err = default_logging.getvalue()
    lines = [line for line in err.splitlines() if "level=info" in line]
    assert [line.split('msg="')[1].split('"')[0] for line in lines] == [
        "sim values set", "sim fault injected", "trace started", "trace stopped"]
    assert "temperature" in lines[0]
    assert "client=anonymous" in lines[0]
    assert "level=warning" not in err


async def test_a_burst_of_harmless_changes_does_not_hide_the_one_that_matters(
        default_logging: io.StringIO, server: Server, client: AsyncClient) -> None:
    for _ in range(30):  # more than the log gate lets through for one event
        await client.sim.fault(1, 0x50, "nack-next", count=0)
    await client.sim.fault(1, 0x50, "nack-next", count=3)
    await client.sim.set(1, TMP117, temperature=20.0 + 0.5)
    err = default_logging.getvalue()
    faults = [line for line in err.splitlines() if 'msg="sim fault injected"' in line]
    assert len(faults) == 31
    assert "3" in faults[-1].split("params=")[1]
    assert any('msg="sim values set"' in line and "20.5" in line for line in err.splitlines())


async def test_a_request_reusing_a_live_subscriptions_id_is_refused_and_the_trace_goes_on(
        server: Server, client: AsyncClient) -> None:
    a = await Raw.open(server)
    a.send(5, "trace.start", {"bus": "1"})
    assert isinstance(await a.answer(5), AdminResult)
    a.writer.write(a.conn.send(I2CRequest(6, "1", (read(TMP117, 2),))))
    await a.answer_any(6)
    # The client library refuses to send it; a raw peer does it anyway.
    a.got.clear()  # the trace.start's answer, the RESULT of 6
    a.conn._subs.live.discard(5)
    a.writer.write(a.conn.send(I2CRequest(5, "1", (read(TMP117, 2),))))
    a.conn._subs.live.add(5)
    err = await a.answer(5)
    assert isinstance(err, Error)
    assert err.code is ErrorCode.BAD_REQUEST
    assert "live subscription" in err.message
    # Nothing ran, the trace is still live: another client's transaction reaches it.
    await client.transfer(1, [read(TMP117, 2)])
    for _ in range(100):
        if any(isinstance(e, AdminEvent) for e in a.got):
            break
        a.got += a.conn.receive(await asyncio.wait_for(a.reader.read(65536), 10))
    assert any(isinstance(e, AdminEvent) and e.id == 5 for e in a.got)
    a.close()


async def test_devices_name_an_unknown_bus_so_and_give_ranges_as_floats(
        client: AsyncClient) -> None:
    with pytest.raises(RemoteError) as info:
        await client.admin("sim.devices", {"bus": "9"})
    assert info.value.code is ErrorCode.UNKNOWN_BUS
    devices = await client.sim.devices()
    quantities = [q for d in devices for q in d["quantities"]]
    assert any(q["type"] == "int" for q in quantities)
    assert all(type(q["min"]) is float and type(q["max"]) is float for q in quantities)


async def test_a_generic_devices_model_is_its_board_file_type(client: AsyncClient) -> None:
    models = {d["model"] for d in await client.sim.devices()}
    assert {"regmap", "loopback", "eeprom"} <= models
    assert not any(m.endswith("Device") for m in models)

"""Bounds of the admin channel over real TCP: what one admin, or many, may make the
server hold, and how far a fault may wedge a bus."""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.client import AsyncClient, read
from bridge.server import Server
from bridge.server.trace import MAX_SUBS, MAX_SUBS_PER_CONNECTION
from protocol import Connection, ErrorCode, Hello, HelloInfo, Role
from protocol.admin import AdminRequest, AdminResult
from protocol.events import Error, Event

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

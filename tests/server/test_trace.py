"""The live trace over real TCP: every client's transactions, filters, bounds, the end."""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import Any

from bridge.client import AsyncClient, describe_event, read, write
from bridge.server import Server
from protocol import Connection, Hello, HelloInfo, Role
from protocol.admin import AdminEvent, AdminRequest, AdminResult

TMP117 = 0x48


async def next_event(t: Any) -> dict[str, Any]:
    return await asyncio.wait_for(anext(t), 10)  # type: ignore[no-any-return]


async def test_a_trace_shows_every_clients_transactions_decoded(
        server: Server, client: AsyncClient) -> None:
    other = await AsyncClient.connect("127.0.0.1", server.port, name="driver\x1b[31m")
    assert server.scheduler.observe is None  # nobody traces: the hook costs nothing
    async with client.trace() as t:
        assert server.scheduler.observe is not None
        await other.transfer(1, [write(TMP117, b"\x0f"), read(TMP117, 2)])
        await other.i2c(1, [read(0x33, 1)])
        await other.xfer(0, 1, b"\x9f\x00\x00\x00", speed_hz=1_000_000)
        i2c_ok, i2c_nack, spi = [await next_event(t) for _ in range(3)]
    assert server.scheduler.observe is None
    await other.close()

    assert i2c_ok["kind"] == "i2c"
    assert i2c_ok["bus"] == "1"
    assert i2c_ok["client"] == "anonymous"
    assert i2c_ok["name"] == "driver\x1b[31m"
    assert i2c_ok["peer"].startswith("127.0.0.1:")
    assert [(m["addr"], m["rw"], m["data"], m["end"]) for m in i2c_ok["msgs"]] == [
        (TMP117, "w", b"\x0f", False), (TMP117, "r", b"\x01\x17", True)]
    assert i2c_ok["failures"] == []
    assert i2c_ok["ran"] is True
    assert i2c_ok["dur_us"] >= 0
    assert i2c_nack["msgs"][0]["status"] == 1
    assert i2c_nack["failures"][0][1] == errno.ENXIO
    (x,) = spi["transfers"]
    assert (spi["kind"], spi["cs"], x["tx"], x["freq"]) == ("spi", 1, b"\x9f\x00\x00\x00",
                                                          1_000_000)
    assert len(x["rx"]) == 4
    line = describe_event(i2c_ok)
    assert "i2c 1 S 48 W 0f Sr 48 R 01 17 P -> ok" in line
    assert "\x1b" not in line
    assert "driver\\x1b[31m" in line
    assert "NACK" in describe_event(i2c_nack)


async def test_filters_pick_the_bus_address_or_chip_select(
        server: Server, client: AsyncClient) -> None:
    async with client.trace(bus=2) as bus2, client.trace(addr=0x50) as eeprom, \
            client.trace(cs=1) as cs1:
        await client.transfer(1, [write(TMP117, b"\x00"), read(TMP117, 2)])
        await client.transfer(2, [write(0x18, b"\x05"), read(0x18, 2)])
        await client.transfer(1, [write(0x50, b"\x00\x00"), read(0x50, 2)])
        await client.xfer(0, 0, b"\x9f\x00")
        await client.xfer(0, 1, b"\x00\x00")
        assert (await next_event(bus2))["msgs"][0]["addr"] == 0x18
        assert (await next_event(eeprom))["msgs"][0]["addr"] == 0x50
        assert (await next_event(cs1))["cs"] == 1
        await client.ping()  # everything above has been traced by now
        assert bus2.pending == eeprom.pending == cs1.pending == 0


async def test_no_event_follows_the_stop_and_a_trace_ends_with_its_connection(
        server: Server, client: AsyncClient) -> None:
    tracer = server.admin.tracer
    t = client.trace(bus=1)
    async with t:
        await client.transfer(1, [read(TMP117, 2)])
        await next_event(t)
    await client.transfer(1, [read(TMP117, 2)])
    await client.ping()
    assert [e async for e in t] == []  # nothing after the stop's answer
    other = await AsyncClient.connect("127.0.0.1", server.port)
    await other.trace().__aenter__()
    assert len(tracer.subs) == 1
    await other.close()
    for _ in range(100):  # the server notices the close: bounded wait
        if not tracer.subs:
            break
        await asyncio.sleep(0.05)
    assert tracer.subs == []
    assert server.scheduler.observe is None


async def test_a_subscriber_that_does_not_read_loses_events_never_server_memory(
        server: Server, client: AsyncClient) -> None:
    """Events wait in a bounded queue, then are dropped and counted; reading again, the
    subscriber gets every kept event in order and one count in place of the lost ones."""
    server.admin.tracer.max_events = 8
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    conn = Connection(Role.CLIENT)
    writer.write(conn.send(Hello(HelloInfo(client="slow admin"))))
    writer.write(conn.send(AdminRequest(1, "trace.start", {"bus": "1"})))
    got: list[Any] = []
    while not any(isinstance(e, AdminResult) for e in got):
        got += conn.receive(await asyncio.wait_for(reader.read(4096), 10))
    # A slow network: the server's socket takes little before its transport must buffer.
    (session,) = [s for s in server.sessions if s.conn.subscriptions]
    session.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                                          4096)
    n = 3000
    for k in range(0, n, 100):
        await asyncio.gather(*(client.transfer(1, [write(TMP117, bytes([r % 16])),
                                                   read(TMP117, 2)])
                               for r in range(k, k + 100)))
    (sub,) = server.admin.tracer.subs
    assert sub.lost > 0, "the subscriber kept up: the test did not exercise the bound"
    assert len(sub.queue) <= 9
    assert session.transport.get_write_buffer_size() <= 64 * 1024 + 8 * 1024

    seen, ids, drops = 0, [], []
    while seen < n:
        data = await asyncio.wait_for(reader.read(65536), 30)
        assert data, "connection closed early"
        for ev in conn.receive(data):
            if isinstance(ev, AdminEvent):
                if ev.event["kind"] == "dropped":
                    drops.append(ev.event["count"])
                    seen += ev.event["count"]
                else:
                    ids.append(ev.event["id"])
                    seen += 1
    assert seen == n
    assert sum(drops) == sub.lost
    assert len(ids) == n - sub.lost
    assert ids == sorted(ids)  # the kept ones in order: the client's request ids rise
    writer.close()

"""The admin channel under access rules, over real TCP, as a lab with tokens uses it.

Two clients on one board: ``ci`` may read and write every bus but has no
``admin = true`` rule; ``lab`` has both.  What a user notices: ``ci`` is refused
every admin op with a message naming what is missing, and none of those refusals
changes anything another client can see; what ``lab`` does through the admin
channel, ``ci`` sees through ordinary reads, writes and leases.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import serve_with_access_rules

from bridge.client import AsyncClient, ClientAuth, RemoteError, TransferError, read, write
from bridge.config import Board
from bridge.server import Server
from bridge.server.acl import AccessRule
from protocol import ErrorCode

CI, LAB = "ci-token-" + "c" * 32, "lab-token-" + "l" * 32
TMP117, EEPROM, OLED = 0x48, 0x50, 0x3C

RULES = [
    AccessRule(client="ci", bus="*"),
    AccessRule(client="lab", bus="*"),
    AccessRule(client="lab", bus="*", admin=True),
]


@pytest.fixture
async def lab_server(board: Board) -> AsyncIterator[Server]:
    async with serve_with_access_rules(board, {"ci": CI, "lab": LAB}, RULES) as s:
        yield s


@pytest.fixture
async def ci(lab_server: Server) -> AsyncIterator[AsyncClient]:
    async with await AsyncClient.connect("127.0.0.1", lab_server.port,
                                         auth=ClientAuth(token=CI), name="ci runner") as c:
        yield c


@pytest.fixture
async def lab(lab_server: Server) -> AsyncIterator[AsyncClient]:
    async with await AsyncClient.connect("127.0.0.1", lab_server.port,
                                         auth=ClientAuth(token=LAB)) as c:
        yield c


async def temperature(c: AsyncClient) -> float:
    (data,) = await c.transfer(1, [write(TMP117, b"\x00"), read(TMP117, 2)])
    return int.from_bytes(data, "big", signed=True) * 0.0078125


NOT_ON_BUS_1 = ("no access rule grants client 'token:ci' the admin ops on i2c bus '1' "
                "(an admin = true rule covering it)")
NOT_ANYWHERE = "no access rule grants client 'token:ci' the admin ops (admin = true)"
WHERE = {"kind": "i2c", "bus": "1"}


@pytest.mark.parametrize(("op", "params", "message"), [
    ("sim.devices", {}, NOT_ANYWHERE),
    ("sim.get", {**WHERE, "addr": TMP117}, NOT_ON_BUS_1),
    ("sim.set", {**WHERE, "addr": TMP117, "values": {"temperature": 99.0}}, NOT_ON_BUS_1),
    ("sim.fault", {**WHERE, "addr": EEPROM, "fault": "nack-next", "count": 5}, NOT_ON_BUS_1),
    ("sim.screenshot", {**WHERE, "addr": OLED}, NOT_ON_BUS_1),
    ("sim.log", WHERE, NOT_ON_BUS_1),
    ("trace.start", {"bus": "1"}, NOT_ON_BUS_1),
    ("trace.start", {}, NOT_ON_BUS_1),  # every bus: the first one not covered is named
    ("lease.release", {"lease": "@LEASE"}, NOT_ON_BUS_1),
])
async def test_a_client_without_an_admin_rule_is_refused_each_op_and_nothing_changes(
        lab_server: Server, ci: AsyncClient, lab: AsyncClient, op: str,
        params: dict[str, Any], message: str) -> None:
    await lab.sim.set(1, TMP117, temperature=21.5)
    held = await lab.lease_take(1, 0x51, ttl=600, holder="lab bench")
    if params.get("lease") == "@LEASE":
        params = {"lease": held.id}
    before_log = await lab.sim.log(1, limit=1000)
    while before_log.more:
        before_log = await lab.sim.log(1, since=before_log.next, limit=1000)

    with pytest.raises(RemoteError) as info:
        await ci.admin(op, params)
    assert info.value.code is ErrorCode.DENIED
    assert info.value.message == message

    # Nothing changed: the value, the faults, the lease, the trace, the bus itself.
    assert await temperature(ci) == 21.5
    assert await lab.sim.get(1, TMP117) == {"temperature": 21.5}
    (data,) = await ci.transfer(1, [write(EEPROM, b"\x00\x00"), read(EEPROM, 1)])
    assert len(data) == 1  # no NACK injected
    assert [(x.id, x.holder) for x in await ci.leases()] == [(held.id, "lab bench")]
    with pytest.raises(RemoteError) as busy:
        await ci.transfer(1, [write(0x51, b"\x00\x00\x01")])
    assert busy.value.code is ErrorCode.BUSY
    assert lab_server.admin.tracer.subs == []
    assert lab_server.scheduler.observe is None
    after = await lab.sim.log(1, since=before_log.next, limit=1000)
    assert [e["msgs"][0]["addr"] for e in after.entries] == [TMP117, EEPROM]  # ci's reads


async def test_what_the_admin_sets_a_plain_client_reads(ci: AsyncClient,
                                                        lab: AsyncClient) -> None:
    for value in (31.25, -12.5, 0.0078125):
        assert await lab.sim.set(1, TMP117, temperature=value) == {"temperature": value}
        assert await temperature(ci) == value
    await lab.sim.fault(1, EEPROM, "nack-next", count=1)
    with pytest.raises(TransferError) as info:
        await ci.transfer(1, [read(EEPROM, 1)])
    assert info.value.errno == errno.ENXIO
    (data,) = await ci.transfer(1, [read(EEPROM, 1)])  # one NACK, as asked
    assert len(data) == 1


async def test_the_admins_trace_shows_the_other_clients_requests_by_name(
        lab_server: Server, ci: AsyncClient, lab: AsyncClient) -> None:
    async with lab.trace(bus=1) as t:
        await ci.transfer(1, [write(TMP117, b"\x01"), read(TMP117, 2)])
        with pytest.raises(RemoteError):  # denied: it never reached the bus
            await ci.admin("sim.set", {**WHERE, "addr": TMP117, "values": {"temperature": 1}})
        await ci.transfer(1, [write(EEPROM, b"\x00\x10"), read(EEPROM, 4)])
        events = [await asyncio.wait_for(anext(t), 10) for _ in range(2)]
        await lab.ping()
        assert t.pending == 0  # the denied op was no transaction
    assert [(e["client"], e["name"]) for e in events] == [("token:ci", "ci runner")] * 2
    assert [m["addr"] for m in events[0]["msgs"]] == [TMP117, TMP117]
    assert events[1]["msgs"][0]["data"] == b"\x00\x10"
    assert len(events[1]["msgs"][1]["data"]) == 4
    assert lab_server.admin.tracer.subs == []


async def test_the_admin_frees_a_lease_another_client_holds(
        lab_server: Server, ci: AsyncClient, lab: AsyncClient) -> None:
    lease = await ci.lease_take(1, EEPROM, ttl=600, holder="forgotten ci job")
    with pytest.raises(RemoteError) as busy:
        await lab.transfer(1, [write(EEPROM, b"\x00\x00\x07")])
    assert busy.value.code is ErrorCode.BUSY
    assert "forgotten ci job" in busy.value.message
    got = await lab.admin("lease.release", {"lease": lease.id})
    assert got["released"] is True
    await lab.transfer(1, [write(EEPROM, b"\x00\x00\x07")])  # the admin may write now
    assert await ci.leases() == []
    with pytest.raises(RemoteError) as gone:
        await ci.lease_renew(lease)  # the holder learns at its next renewal
    assert gone.value.code is ErrorCode.NO_LEASE
    with pytest.raises(RemoteError) as denied:  # and cannot do the same back
        await ci.admin("lease.release", {"lease": (await lab.lease_take(1, EEPROM)).id})
    assert denied.value.code is ErrorCode.DENIED

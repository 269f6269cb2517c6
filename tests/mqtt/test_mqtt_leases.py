"""Leases published retained on the board's leases topic (needs the lease manager)."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.client import AsyncClient
from bridge.mqtt.presence import Presence
from bridge.server import Server

from .conftest import wait_for

pytest.importorskip("bridge.leases", reason="the lease manager (issue 8, branch "
                    "issue-8-lease) is not on this branch yet: nothing to publish")

TOPIC = "busbridge/boards/busbridge-sim/leases"


async def test_leases_are_published_retained_on_every_change(
        announced: tuple[Server, Presence], watch: Any) -> None:
    server, _ = announced
    w = await watch(TOPIC)
    first = await w.until("leases", lambda p: True)  # retained, from the announcement
    assert first["leases"] == []
    async with await AsyncClient.connect(server.host, server.port) as c:
        lease = await c.lease_take("1", 0x50, ttl=30, holder="ci-job-17")
        held = await w.until("leases", lambda p: len(p["leases"]) == 1)
        (entry,) = held["leases"]
        assert (entry["kind"], entry["bus"], entry["address"], entry["holder"]) == (
            "i2c", "1", 0x50, "ci-job-17")
        assert "token" not in entry  # anyone may subscribe: never the secret
        n = len(w.messages)
        await c.lease_release(lease)
    await wait_for(lambda: any(p is not None and p["leases"] == []
                               for _, p, _ in w.messages[n:]), what="the release published")

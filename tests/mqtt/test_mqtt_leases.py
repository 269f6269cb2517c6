"""Leases published retained on the board's leases topic."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

from bridge.client import AsyncClient
from bridge.mqtt.presence import Presence
from bridge.server import Server

from .conftest import Mosquitto, ThreadBoard, wait_for

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


async def test_ci_job_finds_the_board_by_name_and_holds_a_lease(
        board_thread: ThreadBoard, mosquitto: Mosquitto, watch: Any, tmp_path: Path) -> None:
    w = await watch(f"busbridge/boards/{board_thread.name}/leases")
    # The job lasts long enough that the publisher cannot fold take and release into one.
    code = ("import smbus2, time; b = smbus2.SMBus(1); "
            "print(hex(b.read_word_data(0x48, 0x0f))); time.sleep(0.3)")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from bridge.cli.main import main; main()", "--broker", mosquitto.url,
        "run", "--board", board_thread.name, "--lease", "i2c:1", "--holder", "ci-job-42", "--",
        sys.executable, "-c", code, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, cwd=tmp_path)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert out.decode() == "0x1701\n"
    held = await w.until("leases", lambda p: [x["holder"] for x in p["leases"]] == ["ci-job-42"])
    assert held["leases"][0]["bus"] == "1"
    await w.until("leases", lambda p: p["leases"] == [] and p["at"] > held["at"])


async def test_an_expired_lease_disappears_from_the_topic_by_itself(
        announced: tuple[Server, Presence], watch: Any) -> None:
    server, _ = announced
    w = await watch(TOPIC)
    async with await AsyncClient.connect(server.host, server.port) as c:
        await c.lease_take("0", cs=1, ttl=1, holder="forgetful-job")
    held = await w.until("leases", lambda p: len(p["leases"]) == 1)
    assert held["leases"][0]["cs"] == 1
    # Nobody releases it and no request arrives: the TTL alone ends it, and says so.
    await w.until("leases", lambda p: p["leases"] == [] and p["at"] > held["at"], timeout=5)

"""A board announcing itself on a real Mosquitto: presence, inventory, health, last will."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bridge.client import AsyncClient, RemoteError, TransferError, read, write
from bridge.config import load_board
from bridge.mqtt.presence import Presence, advertised_address
from bridge.server import Server

from .conftest import Mosquitto, fast_settings, wait_for

TOPIC = "busbridge/boards/busbridge-sim/"


async def test_online_status_and_retained_inventory_seen_by_a_second_client(
        announced: tuple[Server, Presence], watch: Any) -> None:
    server, _ = announced
    # Subscribed after the board announced: only retained messages can reach it.
    w = await watch("busbridge/boards/+/+")
    status = await w.until("status", lambda p: True)
    inv = await w.until("inventory", lambda p: True)
    assert all(retain for topic, _, retain in w.messages if topic.endswith(("status",
                                                                            "inventory")))
    assert status["state"] == "online"
    assert status["address"] == f"127.0.0.1:{server.port}"
    assert inv["board"] == "busbridge-sim"
    assert inv["address"] == f"127.0.0.1:{server.port}"
    assert inv["version"] == server.welcome.server.split()[-1]
    i2c = {b["name"]: b for b in inv["i2c"]}
    assert set(i2c) == {"1", "2"}
    assert i2c["1"]["functionality"] == server.welcome.i2c_bus("1").functionality  # type: ignore[union-attr]
    assert {d["address"] for d in i2c["1"]["devices"]} == {0x20, 0x3C, 0x40, 0x44, 0x48, 0x50,
                                                           0x68, 0x76}
    assert {(d["address"], d["ten_bit"]) for d in i2c["2"]["devices"]} >= {(0x2A5, True)}
    (spi,) = inv["spi"]
    assert spi["config"]["max_freq_hz"] == 50_000_000
    assert [(d["cs"], d["type"]) for d in spi["devices"]] == [(0, "SpiNorFlash"),
                                                            (1, "LoopbackDevice")]


async def test_health_counts_requests_and_outcomes_per_bus(
        announced: tuple[Server, Presence], watch: Any) -> None:
    """Issue 17 item 5: every request counts in requests, on its bus, and in one outcome;
    the totals are the sums over the buses, a refusal included."""
    server, _ = announced
    w = await watch(TOPIC + "health")
    async with await AsyncClient.connect(server.host, server.port) as c, \
            await AsyncClient.connect(server.host, server.port) as other:
        for _ in range(3):
            await c.transfer("1", [write(0x48, [0x0F]), read(0x48, 2)])
        with pytest.raises(TransferError):
            await c.transfer("2", [write(0x33)])  # nobody at 0x33: NACK
        await c.xfer("0", 0, b"\x9f\x00\x00\x00")
        await c.lease_take("1", 0x50, ttl=60)
        with pytest.raises(RemoteError, match="busy"):
            await other.transfer("1", [read(0x50, 1)])  # leased to c: refused
    h = await w.until("health", lambda p: p["requests"] == 6)
    outcomes = ("requests", "errors", "nacks", "refused", "timeouts")

    def bus(kind: str, name: str) -> dict[str, Any]:
        return {k: h[kind][name][k] for k in (*outcomes, "bytes_read", "bytes_written",
                                              "errnos", "codes", "in_flight", "leases")}

    assert bus("i2c", "1") == {"requests": 4, "errors": 0, "nacks": 0, "refused": 1,
                               "timeouts": 0, "bytes_read": 6, "bytes_written": 3,
                               "errnos": {}, "codes": {"busy": 1}, "in_flight": 0, "leases": 1}
    assert bus("i2c", "2") == {"requests": 1, "errors": 0, "nacks": 1, "refused": 0,
                               "timeouts": 0, "bytes_read": 0, "bytes_written": 0,
                               "errnos": {"ENXIO": 1}, "codes": {}, "in_flight": 0,
                               "leases": 0}
    assert bus("spi", "0") == {"requests": 1, "errors": 0, "nacks": 0, "refused": 0,
                               "timeouts": 0, "bytes_read": 4, "bytes_written": 4,
                               "errnos": {}, "codes": {}, "in_flight": 0, "leases": 0}
    # Every answered request is in its bus's latency histogram, the refusal included.
    assert [sum(h[k][n]["latency"]["buckets"]) for k, n in (("i2c", "1"), ("i2c", "2"),
                                                            ("spi", "0"))] == [4, 1, 1]
    assert len(h["latency_bounds_s"]) + 1 == len(h["i2c"]["1"]["latency"]["buckets"])
    for key in outcomes:
        assert h[key] == sum(b[key] for kind in ("i2c", "spi") for b in h[kind].values())
    assert (h["protocol_errors"], h["lease_refused"]) == (0, 0)
    assert h["uptime_s"] > 0


async def test_one_i2c_detect_is_probes_and_nacks_not_errors(
        announced: tuple[Server, Presence], watch: Any) -> None:
    from click.testing import CliRunner

    from bridge.cli.main import cli

    server, _ = announced
    w = await watch(TOPIC + "health")
    r = await asyncio.to_thread(CliRunner().invoke, cli, [
        "--connect", f"{server.host}:{server.port}", "i2c", "detect", "-y", "1"])
    assert r.exit_code == 0, r.output
    found = len(re.findall(r" [0-7][0-9a-f](?= |$)", r.output.split("\n", 1)[1], re.M))
    probed = 0x77 - 0x08 + 1
    h = await w.until("health", lambda p: p["requests"] == probed)
    assert h["i2c"]["1"]["nacks"] == probed - found
    assert (h["errors"], h["i2c"]["1"]["errors"]) == (0, 0)


async def test_graceful_stop_says_offline_shutdown(mosquitto: Mosquitto, watch: Any) -> None:
    server = Server(load_board(None), host="127.0.0.1", port=0)
    await server.start()
    presence = Presence(server, fast_settings(mosquitto.url))
    presence.start()
    try:
        await wait_for(lambda: presence.connects == 1)
    finally:
        await presence.stop()
        await server.close()
    w = await watch(TOPIC + "status")
    status = await w.until("status", lambda p: True)
    assert status["state"] == "offline"
    assert status["reason"] == "shutdown"


async def test_broker_down_and_back(mosquitto: Mosquitto, announced: tuple[Server, Presence],
                                    watch: Any) -> None:
    server, presence = announced
    async with await AsyncClient.connect(server.host, server.port) as c:
        mosquitto.stop()
        await wait_for(lambda: not presence.connected, what="the broker loss to be noticed")
        # The data path does not care: requests are answered, promptly, while the
        # publisher retries in the background.
        t0 = time.monotonic()
        for _ in range(20):
            (data,) = await c.transfer("1", [write(0x48, [0x0F]), read(0x48, 2)])
            assert data == b"\x01\x17"
        assert time.monotonic() - t0 < 2.0
        await asyncio.sleep(0.5)  # a few reconnect attempts fail meanwhile
        assert not presence.connected
        (data,) = await c.transfer("1", [write(0x48, [0x0F]), read(0x48, 2)])
        assert data == b"\x01\x17"

        mosquitto.start()  # same port, no persistence: it remembers nothing
        await wait_for(lambda: presence.connects == 2, what="the reconnect")
        w = await watch(TOPIC + "+")
        status = await w.until("status", lambda p: True)
        assert status["state"] == "online"
        inv = await w.until("inventory", lambda p: True)
        assert inv["address"] == f"127.0.0.1:{server.port}"
        h = await w.until("health", lambda p: p["requests"] >= 21)
        assert h["i2c"]["1"]["requests"] >= 21


def _board_file(tmp_path: Path, broker: str, name: str = "lab-pi-3") -> Path:
    cfg = tmp_path / "board.toml"
    cfg.write_text(f'''name = "{name}"
[mqtt]
broker = "{broker}"
keepalive_s = 1
health_interval_s = 0.2
[[i2c]]
name = "1"
backend = "sim"
[[i2c.devices]]
type = "regmap"
address = 0x48
value_bits = 16
registers = {{ 0x0F = 0x0117 }}
''')
    return cfg


BUSBRIDGE = [sys.executable, "-c", "from bridge.cli.main import main; main()"]


async def test_killed_board_shows_offline_through_its_last_will(
        mosquitto: Mosquitto, watch: Any, tmp_path: Path) -> None:
    cfg = _board_file(tmp_path, mosquitto.url)
    w = await watch("busbridge/boards/lab-pi-3/status")
    proc = await asyncio.create_subprocess_exec(
        *BUSBRIDGE, "serve", "--config", str(cfg), "--listen", "127.0.0.1:0",
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        online = await w.until("status", lambda p: p["state"] == "online", timeout=15)
        assert online["board"] == "lab-pi-3"
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 5)
        t0 = time.monotonic()
        offline = await w.until("status", lambda p: p["state"] == "offline", timeout=10)
        assert offline["reason"] == "connection lost"
        assert offline["online_since"] == online["since"]
        assert time.monotonic() - t0 < 5  # the kernel closes the socket: no keepalive wait
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_stale_offline_is_overwritten_while_the_board_lives(
        announced: tuple[Server, Presence], mosquitto: Mosquitto, watch: Any) -> None:
    import aiomqtt

    w = await watch(TOPIC + "status")
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as other:
        await other.publish(TOPIC + "status", b'{"state": "offline", "reason": "stale"}',
                            qos=1, retain=True)
    await w.until("status", lambda p: p.get("reason") == "stale")
    # The board's answer may already be in by the time the stale message is seen (a loaded
    # machine polls late): look for "online" after the stale message, not after "now".
    stale = next(i for i, (_, p, _) in enumerate(w.messages) if p and p.get("reason") == "stale")
    await wait_for(lambda: any(p and p["state"] == "online"
                               for _, p, _ in w.messages[stale + 1:]),
                   timeout=30, what="the board to overwrite the stale offline")


def test_wildcard_listen_is_advertised_as_a_dialable_name() -> None:
    addr = advertised_address(None, "0.0.0.0", 7707)
    assert not addr.startswith("0.0.0.0")
    assert addr.endswith(":7707")
    settings = fast_settings("x", advertise="lab-pi-3.lab:7000")
    assert advertised_address(settings, "0.0.0.0", 7707) == "lab-pi-3.lab:7000"

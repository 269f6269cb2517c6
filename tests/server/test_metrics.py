"""Prometheus metrics over real HTTP: a known sequence of requests, then a scrape.

The server and its ``/metrics`` endpoint listen on ephemeral ports of 127.0.0.1;
the scrape is parsed with ``prometheus_client``'s own parser, so what is checked
is what Prometheus would store.  The same numbers are in the MQTT health message
(``ServerStats.snapshot``): both are compared.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from conftest import Pki, serve_with_access_rules
from prometheus_client.parser import text_string_to_metric_families

from bridge.client import (
    AsyncClient,
    ClientAuth,
    ConnectionLost,
    RemoteError,
    TransferError,
    read,
    write,
)
from bridge.config import Board
from bridge.server import Server, ServerPolicy
from bridge.server.acl import AccessRule
from bridge.server.auth import TlsSettings, build_server_security
from bridge.server.metrics import FAMILIES, MetricsServer
from bridge.server.stats import LATENCY_BOUNDS
from protocol import ErrorCode

CI, ADMIN = "ci-token-" + "c" * 32, "admin-token-" + "a" * 32
RULES = [AccessRule(client="ci", bus="i2c:1", addresses=["0x48"], access="read-only"),
         AccessRule(client="admin", bus="*")]
DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "busbridge.json"
BUSBRIDGE = [sys.executable, "-c", "from bridge.cli.main import main; main()"]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """Every sample of ``/metrics``: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        assert r.status == 200
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def labels(**kw: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kw.items()))


def pick(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, tuple(sorted(labels.items()))]


def family(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


@pytest.fixture
async def server(board: Board) -> AsyncIterator[Server]:
    async with serve_with_access_rules(board, {"ci": CI, "admin": ADMIN}, RULES) as s:
        yield s


@pytest.fixture
def metrics() -> Iterator[MetricsServer]:
    m = MetricsServer("127.0.0.1", 0)
    yield m
    m.close()


async def test_a_scrape_counts_exactly_the_requests_made(server: Server,
                                                         metrics: MetricsServer) -> None:
    metrics.attach(server.stats, server.board.name)
    connect = AsyncClient.connect
    async with await connect("127.0.0.1", server.port, auth=ClientAuth(token=ADMIN)) as admin, \
            await connect("127.0.0.1", server.port, auth=ClientAuth(token=ADMIN)) as other, \
            await connect("127.0.0.1", server.port, auth=ClientAuth(token=CI)) as ci:
        for _ in range(3):  # OK: 1 byte written, 2 read each
            await admin.transfer("1", [write(0x48, [0x0F]), read(0x48, 2)])
        with pytest.raises(TransferError):
            await admin.transfer("2", [read(0x33, 1)])  # nobody at 0x33: a NACK
        assert await admin.xfer("0", 1, b"\x01\x02\x03") == b"\x01\x02\x03"  # loopback
        with pytest.raises(RemoteError) as e:
            await ci.transfer("1", [write(0x48, [0x01, 0x60])])  # read-only rule: denied
        assert e.value.code == ErrorCode.DENIED
        await admin.lease_take("1", 0x50, ttl=60)
        with pytest.raises(RemoteError) as e:
            await other.transfer("1", [read(0x50, 1)])  # leased to admin: busy
        assert e.value.code == ErrorCode.BUSY
        with pytest.raises(RemoteError) as e:
            await other.transfer("7", [read(0x50, 1)])  # no bus 7
        assert e.value.code == ErrorCode.UNKNOWN_BUS
        with pytest.raises(RemoteError) as e:
            await connect("127.0.0.1", server.port, auth=ClientAuth(token="guess"))
        assert e.value.code == ErrorCode.UNAUTHORIZED
        live = await asyncio.to_thread(scrape, metrics.port)
    for _ in range(200):  # bounded: the server sees the closes within a few loop turns
        if not server.sessions:
            break
        await asyncio.sleep(0.05)
    gone = await asyncio.to_thread(scrape, metrics.port)

    i2c1, i2c2, spi0 = (labels(kind="i2c", bus="1"), labels(kind="i2c", bus="2"),
                        labels(kind="spi", bus="0"))
    assert pick(live, "busbridge_info", board="busbridge-sim",
                version=server.welcome.server.split()[-1]) == 1
    expected = {  # name -> {labels: value}, every sample of these families
        "busbridge_requests_total": {i2c1: 5, i2c2: 1, spi0: 1},
        "busbridge_errors_total": {i2c1: 0, i2c2: 0, spi0: 0},
        "busbridge_nacks_total": {i2c1: 0, i2c2: 1, spi0: 0},
        "busbridge_refused_total": {i2c1: 2, i2c2: 0, spi0: 0},
        "busbridge_timeouts_total": {i2c1: 0, i2c2: 0, spi0: 0},
        "busbridge_failures_total": {labels(kind="i2c", bus="2", errno="ENXIO"): 1},
        "busbridge_refusals_total": {labels(kind="i2c", bus="1", code="denied"): 1,
                                     labels(kind="i2c", bus="1", code="busy"): 1},
        "busbridge_bytes_total": {
            labels(kind="i2c", bus="1", direction="read"): 6,
            labels(kind="i2c", bus="1", direction="write"): 3,
            labels(kind="i2c", bus="2", direction="read"): 0,
            labels(kind="i2c", bus="2", direction="write"): 0,
            labels(kind="spi", bus="0", direction="read"): 3,
            labels(kind="spi", bus="0", direction="write"): 3},
        "busbridge_queue_depth": {i2c1: 0, i2c2: 0, spi0: 0},
        "busbridge_leases_held": {i2c1: 1, i2c2: 0, spi0: 0},
        "busbridge_request_duration_seconds_count": {i2c1: 5, i2c2: 1, spi0: 1},
        "busbridge_unknown_bus_requests_total": {(): 1},
        "busbridge_connections_total": {(): 4},
        "busbridge_connected_clients": {(): 3},
        "busbridge_auth_failures_total": {labels(stage="hello"): 1, labels(stage="tls"): 0},
        "busbridge_denials_total": {(): 1},
        "busbridge_error_frames_total": {labels(code="busy"): 1, labels(code="denied"): 1,
                                         labels(code="unauthorized"): 1,
                                         labels(code="unknown-bus"): 1},
        "busbridge_protocol_errors_total": {(): 1},  # the refused HELLO closed its connection
        "busbridge_lease_refused_total": {(): 0},
    }
    for name, want in expected.items():
        assert family(live, name) == want, name
    # The histogram: cumulative, ending at its count; bus time only while requests were in.
    for bus in (i2c1, i2c2, spi0):
        les = [pick(live, "busbridge_request_duration_seconds_bucket", **dict(bus), le=le)
               for le in [*map(repr, LATENCY_BOUNDS), "+Inf"]]
        assert les == sorted(les)
        assert les[-1] == pick(live, "busbridge_request_duration_seconds_count", **dict(bus))
        busy = pick(live, "busbridge_bus_busy_seconds_total", **dict(bus))
        assert 0 < busy <= pick(live, "busbridge_request_duration_seconds_sum", **dict(bus))
    assert pick(gone, "busbridge_connected_clients") == 0
    assert pick(gone, "busbridge_requests_total", kind="i2c", bus="1") == 5
    assert pick(gone, "process_resident_memory_bytes") > 0  # the process's own metrics too

    # One source of truth: the MQTT health message says the same.
    h = server.stats.snapshot()
    for kind, bus in (("i2c", "1"), ("i2c", "2"), ("spi", "0")):
        entry, lab = h[kind][bus], {"kind": kind, "bus": bus}
        for key in ("requests", "errors", "nacks", "refused", "timeouts"):
            assert entry[key] == pick(gone, f"busbridge_{key}_total", **lab)
        assert entry["bytes_read"] == pick(gone, "busbridge_bytes_total", **lab,
                                           direction="read")
        assert sum(entry["latency"]["buckets"]) == pick(
            gone, "busbridge_request_duration_seconds_count", **lab)
        failures = {dict(k)["errno"]: v for k, v in family(gone, "busbridge_failures_total")
                    .items() if dict(k)["bus"] == bus and dict(k)["kind"] == kind}
        assert entry["errnos"] == failures
    assert (h["auth_failures"], h["denials"], h["leases"]) == (1, 1, 1)


async def test_queue_depth_counts_queued_requests_and_a_gone_client_leaves_none(
        board: Board, metrics: MetricsServer) -> None:
    s = Server(board, host="127.0.0.1", port=0, request_timeout=30.0)
    await s.start()
    dev = board.i2c["1"].device(0x48)  # type: ignore[attr-defined]
    dev.stall_s = 0.2  # every transaction takes 0.2 s: the rest wait on the bus's worker
    try:
        metrics.attach(s.stats, board.name)
        c = await AsyncClient.connect("127.0.0.1", s.port)
        pending = [asyncio.ensure_future(c.transfer("1", [read(0x48, 2)])) for _ in range(5)]
        depth = 0.0
        for _ in range(100):  # bounded: the five arrive within a few loop turns
            samples = await asyncio.to_thread(scrape, metrics.port)
            depth = pick(samples, "busbridge_queue_depth", kind="i2c", bus="1")
            if depth == 5:
                break
            await asyncio.sleep(0.02)
        assert depth == 5
        await c.close()  # gone with its requests queued: withdrawn, nobody waits for them
        await asyncio.gather(*pending, return_exceptions=True)
        for _ in range(200):  # bounded: the server sees the close within a few loop turns
            if not s.sessions:
                break
            await asyncio.sleep(0.05)
        samples = await asyncio.to_thread(scrape, metrics.port)
        assert pick(samples, "busbridge_queue_depth", kind="i2c", bus="1") == 0
        assert pick(samples, "busbridge_connected_clients") == 0
        assert pick(samples, "busbridge_bus_busy_seconds_total", kind="i2c", bus="1") > 0
    finally:
        dev.stall_s = 0
        await s.close(grace=5.0)


def test_an_unattached_endpoint_serves_only_process_metrics(metrics: MetricsServer) -> None:
    names = {name for name, _ in scrape(metrics.port)}
    assert not {n for n in names if n.startswith("busbridge_")}
    assert "process_cpu_seconds_total" in names


def test_every_metric_of_the_dashboard_is_exported() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert exprs
    used = {m for e in exprs for m in re.findall(r"\b(busbridge_[a-z_]+|process_[a-z_]+)", e)}
    exported = set()
    for name, (kind, _labels, _doc) in FAMILIES.items():
        exported |= ({f"{name}_total"} if kind == "counter" else
                     {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram"
                     else {name})
    exported |= {"process_resident_memory_bytes", "process_cpu_seconds_total",
                 "process_open_fds"}
    assert used <= exported, used - exported
    # ...and every busbridge family is on the dashboard somewhere.
    assert {n for n in exported if n.startswith("busbridge_")} - used <= {
        "busbridge_request_duration_seconds_sum", "busbridge_request_duration_seconds_count",
        "busbridge_info"}


def _free_port_in_use() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_serve_with_the_board_files_metrics_key_serves_them(tmp_path: Path) -> None:
    board = tmp_path / "board.toml"
    board.write_text('name = "lab-7"\n[server]\nlisten = "127.0.0.1:0"\n'
                     'metrics = "127.0.0.1:0"\n[[i2c]]\nname = "1"\nbackend = "sim"\n')
    proc = subprocess.Popen([*BUSBRIDGE, "serve", "--config", str(board)],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # the first line says where the metrics are
        m = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", line)
        assert m, line
        samples = scrape(int(m.group(1)))
        (info,) = family(samples, "busbridge_info")
        assert dict(info)["board"] == "lab-7"
        assert pick(samples, "busbridge_requests_total", kind="i2c", bus="1") == 0
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_a_metrics_port_in_use_is_one_clear_error() -> None:
    with _free_port_in_use() as taken:
        port = taken.getsockname()[1]
        r = subprocess.run([*BUSBRIDGE, "serve", "--listen", "127.0.0.1:0", "--metrics",
                            f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        f"busbridge: error: cannot listen on 127.0.0.1:{port} for metrics: "
        "Address already in use"]


async def test_a_deadline_counts_as_an_error_by_its_errno(board: Board,
                                                          metrics: MetricsServer) -> None:
    s = Server(board, host="127.0.0.1", port=0)
    await s.start()
    dev = board.i2c["1"].device(0x48)  # type: ignore[attr-defined]
    dev.stall_s = 0.5
    try:
        metrics.attach(s.stats, board.name)
        async with await AsyncClient.connect("127.0.0.1", s.port) as c:
            r = await c.i2c("1", [read(0x48, 2)], timeout=0.05)
            assert r.failures[0].errno == 110  # ETIMEDOUT
        samples = await asyncio.to_thread(scrape, metrics.port)
        bus1 = {"kind": "i2c", "bus": "1"}
        assert pick(samples, "busbridge_errors_total", **bus1) == 1
        assert pick(samples, "busbridge_timeouts_total", **bus1) == 1
        assert family(samples, "busbridge_failures_total") == {
            labels(kind="i2c", bus="1", errno="ETIMEDOUT"): 1}
        assert pick(samples, "busbridge_bytes_total", **bus1, direction="read") == 0
    finally:
        dev.stall_s = 0
        await s.close(grace=2.0)


async def test_a_refused_tls_handshake_is_an_auth_failure(board: Board, pki: Pki,
                                                          metrics: MetricsServer) -> None:
    tls = TlsSettings(cert=str(pki.server), key=str(pki.server), client_ca=str(pki.client_ca))
    s = Server(board, host="127.0.0.1", port=0,
               policy=ServerPolicy(security=build_server_security(tls, [], False)))
    await s.start()
    try:
        metrics.attach(s.stats, board.name)

        async def connect_and_ping() -> None:  # no client certificate
            c = await AsyncClient.connect("127.0.0.1", s.port,
                                          auth=ClientAuth(cafile=str(pki.ca)), timeout=5.0)
            await c.ping()  # TLS 1.3 reports the refusal on the first read

        with pytest.raises((ssl.SSLError, ConnectionLost, ConnectionResetError)):
            await connect_and_ping()
        samples: Samples = {}
        for _ in range(100):  # bounded: the server logs the refusal as the handshake fails
            samples = await asyncio.to_thread(scrape, metrics.port)
            if pick(samples, "busbridge_auth_failures_total", stage="tls"):
                break
            await asyncio.sleep(0.05)
        assert pick(samples, "busbridge_auth_failures_total", stage="tls") == 1
        assert pick(samples, "busbridge_auth_failures_total", stage="hello") == 0
        assert s.stats.snapshot()["auth_failures"] == 1
    finally:
        await s.close(grace=1.0)

"""``busbridge sim ...``, ``busbridge trace`` and ``lease release --force``: real
subprocesses, real TCP, the default simulated board."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from conftest import Running

from bridge.client import Client, read, write

BUSBRIDGE = [sys.executable, "-c", "from bridge.cli.main import main; main()"]


def bb(running: Running, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BUSBRIDGE, "--connect", running.url, *args], capture_output=True,
                          text=True, timeout=60, check=False)


def test_a_value_set_from_the_shell_is_what_i2cget_reads(server_thread: Running) -> None:
    got = bb(server_thread, "sim", "set", "1", "0x48", "temperature=31.25")
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == "temperature = 31.25"
    word = bb(server_thread, "i2c", "get", "-y", "1", "0x48", "0x00", "w")
    assert word.returncode == 0, word.stderr
    assert int(word.stdout, 16) == 0xA00F  # i2cget prints the SMBus word: low byte first
    listed = bb(server_thread, "sim", "get", "1", "0x48", "--json")
    assert json.loads(listed.stdout) == {"temperature": 31.25}


def test_a_fault_from_the_shell_names_its_count(server_thread: Running) -> None:
    got = bb(server_thread, "sim", "fault", "1", "0x50", "nack-next=2")
    assert got.returncode == 0, got.stderr
    with Client(server_thread.host, server_thread.port) as c:
        for _ in range(2):
            assert c.i2c(1, [read(0x50, 1)]).failures
        assert not c.i2c(1, [read(0x50, 1)]).failures
    bad = bb(server_thread, "sim", "fault", "1", "0x50", "melt")
    assert bad.returncode == 1
    assert bad.stderr.startswith("busbridge: error: ")
    assert "no fault 'melt'" in bad.stderr
    assert bb(server_thread, "sim", "fault", "1", "0x50", "clear=1").returncode == 2


def test_devices_log_and_screenshot(server_thread: Running, tmp_path: Path) -> None:
    devices = bb(server_thread, "sim", "devices", "1")
    assert devices.returncode == 0, devices.stderr
    assert any(line.startswith("i2c 1 0x48  tmp117") and "temperature (°C)" in line
               for line in devices.stdout.splitlines())
    with Client(server_thread.host, server_thread.port) as c:
        c.transfer(1, [write(0x48, b"\x0f"), read(0x48, 2)])
    log = bb(server_thread, "sim", "log", "1", "--limit", "100000")
    assert log.returncode == 0, log.stderr
    assert "S 48 W 0f Sr 48 R 01 17 P -> ok" in log.stdout.splitlines()[-1]
    png = tmp_path / "oled.png"
    shot = bb(server_thread, "sim", "screenshot", "1", "0x3c", str(png), "--scale", "1")
    assert shot.returncode == 0, shot.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_trace_prints_other_clients_transactions(server_thread: Running) -> None:
    proc = subprocess.Popen([*BUSBRIDGE, "--connect", server_thread.url, "trace", "--bus",
                             "1", "--addr", "0x48", "--count", "2", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with Client(server_thread.host, server_thread.port, name="driver under test") as c:
            deadline = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < deadline:
                c.transfer(1, [write(0x48, b"\x0f"), read(0x48, 2)])  # until the trace ran
                c.transfer(1, [write(0x50, b"\x00\x00"), read(0x50, 1)])  # filtered out
                time.sleep(0.1)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert len(events) == 2
    assert {e["name"] for e in events} == {"driver under test"}
    assert {m["addr"] for e in events for m in e["msgs"]} == {0x48}
    assert events[0]["msgs"][1]["data"] == "0117"


def test_an_admin_force_releases_a_lease_from_the_shell(server_thread: Running) -> None:
    with Client(server_thread.host, server_thread.port) as holder:
        lease = holder.lease_take(1, 0x50, ttl=600, holder="stuck job")
        got = bb(server_thread, "lease", "release", "--force", lease.id)
        assert got.returncode == 0, got.stderr
        assert got.stdout.strip() == (f"force-released lease {lease.id} on i2c bus 1 "
                                      "address 0x50 (held by stuck job)")
        assert holder.leases() == []
        again = bb(server_thread, "lease", "release", "--force", lease.id)
        assert "no live lease" in again.stdout


def test_devices_list_only_what_can_be_set_and_clear_says_so(server_thread: Running) -> None:
    devices = bb(server_thread, "sim", "devices")
    assert devices.returncode == 0, devices.stderr
    (oled,) = [line for line in devices.stdout.splitlines() if "ssd1306" in line]
    for read_only in ("display_on", "contrast", "inverted"):
        assert read_only not in oled
    cleared = bb(server_thread, "sim", "fault", "1", "0x50", "clear")
    assert cleared.returncode == 0, cleared.stderr
    assert cleared.stdout.strip() == "every fault cleared"

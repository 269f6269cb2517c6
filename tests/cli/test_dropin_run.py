"""``busbridge run``: unchanged programs and pytest suites on the remote buses.

The programs below import ``smbus2``, ``spidev``, ``board``, ``busio`` and
``digitalio`` by those names and use third-party drivers from PyPI
(RPi.bme280, adafruit-circuitpython-mcp9808, adafruit-circuitpython-lis3dh)
exactly as they would on a Raspberry Pi.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DROPIN_BOARD, Running, start_server_thread, stop_server_thread

from bridge.cli.run import SHIM_DIR
from bridge.config import load_board

BUSBRIDGE = [sys.executable, "-c", "from bridge.cli.main import main; main()"]

PROGRAM = """\
import json, sys
import smbus2, spidev, board, busio, digitalio
import bme280, adafruit_mcp9808, adafruit_lis3dh

out = {"files": {m.__name__: m.__file__ for m in (smbus2, spidev, board, busio, digitalio)},
       "real_smbus2_loaded": "smbus2.smbus2" in sys.modules}
bus = smbus2.SMBus(int(sys.argv[1]))
cal = bme280.load_calibration_params(bus, 0x76)
out["bme280"] = bme280.sample(bus, 0x76, cal).temperature
out["ctrl_meas"] = bus.read_byte_data(0x76, 0xF4)
mcp = adafruit_mcp9808.MCP9808(board.I2C())
mcp.resolution = 2
out["mcp9808"] = [mcp.temperature, mcp.resolution]
lis = adafruit_lis3dh.LIS3DH_SPI(board.SPI(), digitalio.DigitalInOut(board.CE1))
lis.range = adafruit_lis3dh.RANGE_4_G
out["lis3dh"] = [round(lis.acceleration[2], 2), lis.range]
dev = spidev.SpiDev()
dev.open(0, 0)
out["loopback"] = dev.xfer2([1, 2, 3])
print(json.dumps(out))
"""

DOCS = Path(__file__).parents[2] / "docs" / "ci.md"


def docs_example() -> str:
    """The worked example of docs/ci.md, so the documentation stays true."""
    m = re.search(r"```python\n(# tests/hw/test_sensors.py\n.*?)```", DOCS.read_text(), re.S)
    assert m is not None, "docs/ci.md lost its worked example"
    return m.group(1)


@pytest.fixture
def remote() -> Iterator[Running]:
    running, t = start_server_thread(load_board(str(DROPIN_BOARD)))
    try:
        yield running
    finally:
        stop_server_thread(running, t)


def busbridge(args: list[str], cwd: Path, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BUSBRIDGE, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False, env=env)


def test_an_unchanged_program_runs_on_the_remote_board(remote: Running, tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(PROGRAM)
    out = busbridge(["run", "--connect", remote.url, "--map", "i2c:4=1", "--",
                     sys.executable, "app.py", "4"], tmp_path)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    for name, file in got["files"].items():
        assert Path(file).parent == SHIM_DIR, name
    assert got["real_smbus2_loaded"] is False
    assert got["bme280"] == pytest.approx(25.08, abs=0.01)
    assert got["ctrl_meas"] >> 2 == 0b001_001  # x1 oversampling, as the driver wrote it
    assert got["mcp9808"] == [24.0625, 2]
    assert got["lis3dh"] == [pytest.approx(9.58, abs=0.02), 1]
    assert got["loopback"] == [1, 2, 3]


def test_the_documented_pytest_suite_runs_under_it(remote: Running, tmp_path: Path) -> None:
    hw = tmp_path / "tests" / "hw"
    hw.mkdir(parents=True)
    (hw / "test_sensors.py").write_text(docs_example())
    env = {**os.environ, "BUSBRIDGE_URL": remote.url, "BUSBRIDGE_MAP": "i2c:1=1,spi:0=0"}
    out = busbridge(["run", "--", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                     "tests/hw"], tmp_path, env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 passed" in out.stdout


def test_the_programs_exit_status_comes_back(remote: Running, tmp_path: Path) -> None:
    out = busbridge(["run", "--connect", remote.url, "--", sys.executable, "-c",
                     "import smbus2; smbus2.SMBus(1).read_byte_data(0x33, 0)"], tmp_path)
    assert out.returncode == 1
    assert "OSError: [Errno 6]" in out.stderr  # ENXIO from the board, as the kernel says it
    out = busbridge(["run", "--connect", remote.url, "--", sys.executable, "-c",
                     "raise SystemExit(7)"], tmp_path)
    assert out.returncode == 7


def test_wrong_server_or_bus_fails_before_the_program_starts(remote: Running, tmp_path: Path
                                                             ) -> None:
    marker = tmp_path / "ran"
    cmd = ["--", sys.executable, "-c", f"open({str(marker)!r}, 'w')"]
    out = busbridge(["run", "--connect", remote.url, "--map", "i2c:1=9", *cmd], tmp_path)
    assert out.returncode != 0
    assert "no i2c bus '9'" in out.stderr
    out = busbridge(["run", "--connect", "127.0.0.1:1", *cmd], tmp_path)
    assert out.returncode != 0
    assert out.stderr.startswith("busbridge: error: cannot connect to the busbridge server at ")
    out = busbridge(["run", "--connect", remote.url, "--map", "nonsense", *cmd], tmp_path)
    assert out.returncode == 2
    assert not marker.exists()

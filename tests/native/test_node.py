"""Node's i2c-bus from npm (its native addon built here) on the simulated board.

Slow: the first run downloads i2c-bus and compiles its addon with node-gyp
(about 10 s); the install is cached in ${BUSBRIDGE_CACHE:-~/.cache/busbridge}/npm.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import Running, default_bus_addresses

from .conftest import PROGRAMS, run, unavailable

pytestmark = pytest.mark.slow

I2C_BUS = "i2c-bus@5.2.3"


@pytest.fixture(scope="module")
def node_modules() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable("node and npm not found (apt-get install nodejs npm)")
    assert npm is not None
    base = Path(os.environ.get("BUSBRIDGE_CACHE") or Path.home() / ".cache" / "busbridge")
    prefix = base / "npm" / I2C_BUS.replace("@", "-")
    addon = prefix / "node_modules" / "i2c-bus" / "build" / "Release" / "i2c.node"
    if not addon.exists():
        prefix.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                            "--foreground-scripts", I2C_BUS], capture_output=True, text=True,
                           timeout=600, check=False)
        if r.returncode != 0 or not addon.exists():
            unavailable(f"npm install {I2C_BUS} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return prefix / "node_modules"


def test_node_i2c_bus_reads_the_tmp117_and_the_eeprom(board: Running,
                                                     node_modules: Path) -> None:
    env = dict(os.environ, NODE_PATH=str(node_modules))
    r = run(board, "node", str(PROGRAMS / "i2c_bus.js"), env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["id"] == 0x1701
    assert out["funcs"] is True
    assert out["read"] == 2
    assert out["eeprom"] == "cafe"
    # i2c-bus scans with a read byte at every address (i2c-bus.js scanSync), so
    # it finds every chip on bus 1 except the two that NACK a read header: the
    # SSD1306 (write-only on I2C) and the SHT31 (no measurement pending).
    assert set(default_bus_addresses("1")) - set(out["scan"]) == {0x3C, 0x44}
    assert set(out["scan"]) <= set(default_bus_addresses("1"))
    assert out["nack"] == "EIO"  # SMBus on a short count (i2c-core-smbus.c:472)
    assert out["async"] == 0x1701

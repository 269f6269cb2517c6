"""``--map`` as `busbridge run` takes it: entries no device could use are refused
before the command starts, and explicit maps add to the default (same number)."""

from __future__ import annotations

import subprocess

import pytest
from conftest import Running

from .conftest import BUSBRIDGE, need, run


@pytest.mark.parametrize(("entry", "why"), [
    ("i2c:007=1", "LOCAL must be a bus number"),
    ("i2c:x=1", "LOCAL must be a bus number"),
    ("i2c:-1=1", "LOCAL must be a bus number"),
    ("i2c:99999999999=1", "LOCAL must be a bus number"),
    ("foo:1=1", "unknown bus kind 'foo'"),
    ("i2c:5", "expected [i2c:|spi:]LOCAL=REMOTE"),
])
def test_a_map_no_device_could_use_is_refused(board: Running, entry: str, why: str) -> None:
    r = run(board, "true", opts=("--map", entry))
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("busbridge: error: ")
    assert why in last
    assert entry in last


def test_two_different_maps_for_one_bus_are_refused(board: Running) -> None:
    r = run(board, "true", opts=("--map", "i2c:5=1", "--map", "i2c:5=2"))
    assert r.returncode == 2
    assert "'i2c:5=1' and 'i2c:5=2' both map i2c bus 5" in r.stderr
    # Without a kind an entry maps both: it conflicts with an spi entry too.
    both = run(board, "true", opts=("--map", "spi:0=0", "--map", "0=1"))
    assert both.returncode == 2
    assert "both map spi bus 0" in both.stderr
    same = run(board, "true", opts=("--map", "i2c:5=1", "--map", "i2c:5=1"))
    assert same.returncode == 0, same.stderr  # a repeat says nothing new


def test_explicit_maps_add_to_the_same_number_default(board: Running) -> None:
    need("i2cget", "i2c-tools")
    # /dev/i2c-5 is remote bus 1; /dev/i2c-1 stays remote bus 1 (as SMBus(1) does
    # in the Python drop-ins of the same run).
    for bus in ("5", "1"):
        r = run(board, "i2cget", "-y", bus, "0x48", "0x0f", "w", opts=("--map", "i2c:5=1"))
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "0x1701"


def test_mount_refuses_the_same_entries(board: Running) -> None:
    # Checked before /dev/cuse or the server is touched: no root needed to see it.
    r = subprocess.run([*BUSBRIDGE, "--connect", board.url, "mount", "--map", "i2c:01=1"],
                       capture_output=True, text=True, timeout=120, check=False,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 2
    assert "'i2c:01=1': LOCAL must be a bus number" in r.stderr

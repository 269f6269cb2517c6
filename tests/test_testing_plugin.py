"""The ``busbridge_board`` pytest fixture (bridge.testing), used as a driver's tests would."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.client import RemoteError, read, write
from bridge.dropin.pysmbus import SMBus as LegacySMBus
from bridge.dropin.smbus import SMBus
from bridge.testing import TestBoard

TMP117 = 0x48


def test_a_value_set_through_the_fixture_is_what_an_smbus_driver_reads(
        busbridge_board: TestBoard) -> None:
    assert busbridge_board.sim.set(1, TMP117, temperature=31.25) == {"temperature": 31.25}
    with SMBus(1) as bus:  # the drop-in: pointed at the fixture's board
        raw = bus.read_i2c_block_data(TMP117, 0x00, 2)
    assert int.from_bytes(bytes(raw), "big", signed=True) * 0.0078125 == 31.25
    busbridge_board.sim.set(1, TMP117, temperature=-40.0)
    legacy = LegacySMBus(1)
    raw = legacy.read_i2c_block_data(TMP117, 0x00, 2)
    legacy.close()
    assert int.from_bytes(bytes(raw), "big", signed=True) * 0.0078125 == -40.0


def test_faults_and_the_log_reach_the_test(busbridge_board: TestBoard) -> None:
    busbridge_board.sim.fault(1, 0x50, "nack-next", count=1)
    with SMBus(1) as bus:
        with pytest.raises(OSError, match=r"No such device|ENXIO|NACK|nack") as info:
            bus.read_byte(0x50)
        assert info.value.errno == errno.ENXIO
        bus.read_byte(0x50)
    page = busbridge_board.sim.log(1, limit=1000)
    while page.more:
        page = busbridge_board.sim.log(1, since=page.next, limit=1000)
    assert page.entries[-1]["msgs"][0]["addr"] == 0x50
    assert page.entries[-2]["errno"] != 0


def test_the_board_takes_ordinary_clients_too(busbridge_board: TestBoard) -> None:
    with busbridge_board.client() as c:
        (data,) = c.transfer(1, [write(TMP117, b"\x0f"), read(TMP117, 2)])
    assert data == b"\x01\x17"  # TMP117 device id


BOARD = Path(__file__).parent / "boards" / "dropin.toml"


@pytest.mark.busbridge_board(str(BOARD))
def test_a_marker_names_the_board_file(busbridge_board: TestBoard) -> None:
    assert busbridge_board.board.name == "dropin-test"
    with pytest.raises(RemoteError, match="no device at 0x48"):
        busbridge_board.sim.set(1, TMP117, temperature=1.0)


@pytest.mark.busbridge_board("boards/dropin.toml")
def test_a_relative_board_path_is_relative_to_the_test_file_not_the_cwd(
        busbridge_board: TestBoard) -> None:
    assert busbridge_board.board.name == "dropin-test"


def test_the_relative_path_does_not_depend_on_where_pytest_runs(tmp_path: Path) -> None:
    """A test suite in one directory, run from another: its board file is found."""
    suite = tmp_path / "suite"
    (suite / "boards").mkdir(parents=True)
    (suite / "boards" / "mine.toml").write_text(BOARD.read_text())
    (suite / "test_mine.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.busbridge_board('boards/mine.toml')\n"
        "def test_it(busbridge_board):\n"
        "    assert busbridge_board.board.name == 'dropin-test'\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(suite / "test_mine.py")], cwd=elsewhere, capture_output=True,
                         text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout


def test_serve_works_outside_the_fixture() -> None:
    with TestBoard.serve() as tb:
        assert tb.sim.set(1, TMP117, temperature=12.5) == {"temperature": 12.5}
        with tb.client() as c:
            (data,) = c.transfer(1, [write(TMP117, b"\x00"), read(TMP117, 2)])
        assert int.from_bytes(data, "big") * 0.0078125 == 12.5

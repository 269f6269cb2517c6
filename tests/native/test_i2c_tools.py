"""Debian's i2c-tools, unmodified, on the simulated board through `busbridge run`.

What a user of these tools sees must be what they would see on a Linux machine
whose adapter is the remote bus (docs/native.md): i2cdetect's map, the bytes
i2cset writes, one transaction per i2ctransfer, and the kernel's answers to a
NACK, an absent bus and a bus leased to someone else.
"""

from __future__ import annotations

import re

import pytest
from conftest import Running

from bridge.client import Client
from protocol.virtio import read, write

from .conftest import BUSBRIDGE, need, run

#: `busbridge` as a shell command line (for a second, unleased run inside a script).
BUSBRIDGE_CMD = " ".join(BUSBRIDGE[:2]) + " '" + BUSBRIDGE[2] + "'"


@pytest.fixture(autouse=True)
def _tools() -> None:
    need("i2cdetect", "i2c-tools")


def found(detect_output: str) -> set[str]:
    """Addresses i2cdetect printed (not -- or blanks)."""
    return {t for line in detect_output.splitlines()[1:]
            for t in line[4:].split() if re.fullmatch(r"[0-9a-f]{2}|UU", t)}


def test_i2cdetect_prints_the_simulated_boards_devices(board: Running) -> None:
    r = run(board, "i2cdetect", "-y", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].split() == [f"{i:x}" for i in range(16)]
    assert found(r.stdout) == {"20", "3c", "40", "44", "48", "50", "68", "76"}
    r2 = run(board, "i2cdetect", "-y", "2")
    assert found(r2.stdout) == {"18", "19", "40", "48", "49", "68"}


def test_i2cdetect_functionality_is_the_remote_adapters(board: Running) -> None:
    r = run(board, "i2cdetect", "-F", "1")
    assert r.returncode == 0, r.stderr
    table = dict(re.findall(r"^(.*?)\s{2,}(yes|no)$", r.stdout, re.M))
    assert table["I2C"] == "yes"
    assert table["SMBus Quick Command"] == table["SMBus Block Write"] == "yes"
    assert table["SMBus Block Read"] == "no"  # not in I2C_FUNC_SMBUS_EMUL


def test_i2cget_reads_the_tmp117_id(board: Running) -> None:
    r = run(board, "i2cget", "-y", "1", "0x48", "0x0f", "w")
    assert r.returncode == 0, r.stderr
    # SMBus words are little-endian; the TMP117 sends its ID 0x0117 high byte first.
    assert r.stdout.strip() == "0x1701"


def test_i2cset_writes_the_bytes_the_kernel_would(board: Running) -> None:
    r = run(board, "i2cset", "-y", "1", "0x48", "0x02", "0xbeef", "w")
    assert r.returncode == 0, r.stderr
    with Client(board.host, board.port) as c:
        (raw,) = c.transfer("1", [write(0x48, b"\x02"), read(0x48, 2)])
    assert raw == b"\xef\xbe"  # SMBus write word: low byte first
    back = run(board, "i2cget", "-y", "1", "0x48", "0x02", "w")
    assert back.stdout.strip() == "0xbeef"


def test_i2ctransfer_chain_is_one_transaction(board: Running) -> None:
    bus = board.board.i2c["1"]
    w = run(board, "i2ctransfer", "-y", "1", "w4@0x50", "0x01", "0x20", "0xde", "0xad")
    assert w.returncode == 0, w.stderr
    before = len(bus.log_snapshot())  # type: ignore[attr-defined]
    r = run(board, "i2ctransfer", "-y", "1", "w2@0x50", "0x01", "0x20", "r2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0xde", "0xad"]
    new = bus.log_snapshot()[before:]  # type: ignore[attr-defined]
    assert len(new) == 1, [e.describe() for e in new]  # write + repeated START + read
    assert [m.is_read for m in new[0].msgs] == [False, True]


def test_failing_chain_stops_at_the_nack_and_reports_a_short_count(board: Running) -> None:
    # A NACK from 0x33 fails the chain there: the EEPROM write after it never runs
    # (FAIL_NEXT), and i2c-dev reports what i2c-virtio reports: 0 of 2 messages.
    r = run(board, "i2ctransfer", "-y", "1", "w1@0x33", "0x00", "w3@0x50", "0x02", "0x00", "0x77")
    assert r.returncode == 0, r.stderr
    assert "only 0/2 messages were sent" in r.stderr
    back = run(board, "i2ctransfer", "-y", "1", "w2@0x50", "0x02", "0x00", "r1")
    assert back.stdout.split() == ["0xff"]  # untouched (erased EEPROM)
    mid = run(board, "i2ctransfer", "-y", "1", "w2@0x50", "0x02", "0x00", "r1@0x33")
    assert "only 1/2 messages were sent" in mid.stderr


def test_nack_fails_smbus_reads_with_eio(board: Running) -> None:
    r = run(board, "i2cget", "-y", "1", "0x33", "0x00")
    assert r.returncode == 2
    assert "Read failed" in r.stderr


def test_i2cdump_shows_the_register_map(board: Running) -> None:
    r = run(board, "i2cdump", "-y", "-r", "0x0c-0x0f", "1", "0x48", "w")
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith("08:"))
    assert row.split()[-1] == "1701"


def test_absent_bus_is_no_such_file(board: Running) -> None:
    r = run(board, "i2cget", "-y", "9", "0x48", "0x00")
    assert r.returncode != 0
    assert "/dev/i2c-9" in r.stderr
    assert "No such file or directory" in r.stderr


def test_map_points_a_local_bus_at_a_remote_one(board: Running) -> None:
    r = run(board, "i2cget", "-y", "9", "0x18", "0x05", "w", opts=("--map", "i2c:9=2"))
    assert r.returncode == 0, r.stderr
    # 25 °C, wobbling; bits 15/14: above the (power-on, 0 °C) critical and upper limits
    assert r.stdout.strip() in {"0x90c1", "0x91c1", "0x92c1", "0x8fc1"}


def test_lease_held_by_someone_else_is_ebusy(board: Running) -> None:
    with Client(board.host, board.port) as other:
        lease = other.lease_take("1", 0x50, ttl=60, holder="someone else")
        try:
            r = run(board, "i2ctransfer", "-y", "1", "w2@0x50", "0x00", "0x00", "r1")
            assert r.returncode != 0
            assert "Device or resource busy" in r.stderr
            # The agent says who, once (the holder quoted: logfmt escapes its quotes).
            assert r.stderr.count('held by \\"someone else\\" (anonymous)') == 1
            free = run(board, "i2cget", "-y", "1", "0x48", "0x0f", "w")
            assert free.stdout.strip() == "0x1701"  # other addresses are not leased
        finally:
            other.lease_release(lease)


def test_run_lease_covers_the_native_program(board: Running) -> None:
    # run --lease takes the lease, and the agent presents its token: the program may use
    # the address while anyone else gets EBUSY.
    script = ("i2ctransfer -y 1 w3@0x50 0x07 0x00 0x99 && "
              "i2ctransfer -y 1 w2@0x50 0x07 0x00 r1 && "
              f"env -u BUSBRIDGE_LEASE {BUSBRIDGE_CMD} --connect {board.url} run -- "
              "i2ctransfer -y 1 w2@0x50 0x07 0x00 r1 2>&1; true")
    r = run(board, "sh", "-c", script, opts=("--lease", "i2c:1@0x50", "--lease-ttl", "30"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "0x99"
    assert any("Device or resource busy" in line for line in lines[1:])

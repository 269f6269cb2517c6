"""End to end on a real kernel I2C stack: the board server inside a QEMU guest
running Debian's stock kernel with i2c-stub (an SMBus-only adapter, so every
request goes through the SMBus mapping) and i2c-dev; the CLI and the client on
the host, through QEMU's user-mode network.

Prerequisites: ``qemu-system-x86_64`` and the guest built by
``scripts/e2e_stub/build_guest.py``.  Without them the suite skips and says
why; with BUSBRIDGE_E2E_REQUIRED=1 it fails instead.
"""

from __future__ import annotations

import errno
import subprocess
import sys
from collections.abc import Iterator

import pytest
from e2e.board_guest import BoardGuest, board_guest, free_port, stub_guest_build, stub_guest_cmd
from e2e.guest import which

from bridge.client import Client, TransferError
from protocol.virtio import read, write

pytestmark = pytest.mark.slow

CHIPS = (0x48, 0x50)


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BoardGuest]:
    qemu = which("qemu-system-x86_64", "apt-get install qemu-system-x86")
    build = stub_guest_build()
    port = free_port()
    console = tmp_path_factory.mktemp("guest") / "console.log"
    cmd = stub_guest_cmd(qemu, build, port, ",".join(f"{a:#04x}" for a in CHIPS))
    with board_guest(cmd, console, port) as g:
        yield g


def cli(g: BoardGuest, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", "--connect", g.url, *args],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_info_shows_the_stub_adapter_functionality(guest: BoardGuest) -> None:
    with Client("127.0.0.1", guest.port, timeout=30.0) as c:
        assert c.welcome is not None
        (bus,) = c.welcome.i2c
    assert bus.name == "stub"
    assert bus.functionality & 0x1 == 0  # i2c-stub: no plain I2C
    assert bus.functionality & 0x00010000  # SMBus quick
    r = cli(guest, "i2c", "detect", "-F", "stub")
    assert r.returncode == 0, r.stderr
    lines = {" ".join(ln.split()[:-1]): ln.split()[-1] for ln in r.stdout.splitlines()[1:]}
    assert lines["I2C"] == "no"
    assert lines["SMBus Quick Command"] == lines["SMBus Read Word"] == "yes"


def test_detect_finds_the_stub_chips(guest: BoardGuest) -> None:
    r = cli(guest, "i2c", "detect", "-y", "stub")
    assert r.returncode == 0, r.stderr
    found = {t for line in r.stdout.splitlines()[1:] for t in line[4:].split() if t != "--"}
    assert found == {"48", "50"}


def test_set_and_get_byte_and_word(guest: BoardGuest) -> None:
    r = cli(guest, "i2c", "set", "-y", "stub", "0x48", "0x02", "0x60", "b")
    assert r.returncode == 0, r.stderr
    r = cli(guest, "i2c", "get", "-y", "stub", "0x48", "0x02", "b")
    assert (r.returncode, r.stdout.strip()) == (0, "0x60"), r.stderr
    r = cli(guest, "i2c", "set", "-y", "stub", "0x48", "0x10", "0x1234", "w")
    assert r.returncode == 0, r.stderr
    r = cli(guest, "i2c", "get", "-y", "stub", "0x48", "0x10", "w")
    assert (r.returncode, r.stdout.strip()) == (0, "0x1234"), r.stderr


def test_i2c_block_write_and_read_and_readback(guest: BoardGuest) -> None:
    r = cli(guest, "i2c", "set", "-y", "stub", "0x50", "0x30", "0x01", "0x02", "0xfe", "i")
    assert r.returncode == 0, r.stderr
    r = cli(guest, "i2c", "get", "-y", "stub", "0x50", "0x30", "i", "3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-3:] == ["0x01", "0x02", "0xfe"]
    r = cli(guest, "i2c", "set", "-y", "-r", "stub", "0x48", "0x03", "0xa5", "b")
    assert (r.returncode, r.stdout.strip()) == (0, "Value 0xa5 written, readback matched")


def test_block_write_and_read_through_the_client(guest: BoardGuest) -> None:
    with Client("127.0.0.1", guest.port, timeout=30.0) as c:
        c.transfer("stub", [write(0x50, [0x20, 0xDE, 0xAD, 0xBE, 0xEF])])  # I2C block write
        (data,) = c.transfer("stub", [write(0x50, [0x20]), read(0x50, 4)])  # I2C block read
        assert data == b"\xde\xad\xbe\xef"
        c.transfer("stub", [write(0x48, [0x11, 0x34, 0x12])])  # write word data, LE
        (word,) = c.transfer("stub", [write(0x48, [0x11]), read(0x48, 2)])
        assert word == b"\x34\x12"
        # Zero-length probes (SMBus quick) in both directions.
        res = c.i2c("stub", [write(0x48), read(0x48, 0), write(0x49)])
        assert list(res.status) == [0, 0, 1]


def test_errors_reach_the_client_with_the_kernel_errno(guest: BoardGuest) -> None:
    with Client("127.0.0.1", guest.port, timeout=30.0) as c:
        with pytest.raises(TransferError) as e:
            c.transfer("stub", [write(0x49, [0x00]), read(0x49, 1)])
        assert e.value.errno in (errno.ENXIO, errno.ENODEV)  # i2c-stub: no chip there
        with pytest.raises(TransferError) as e:
            c.transfer("stub", [read(0x48, 4)])  # no SMBus form: refused, never sent
        assert e.value.errno == errno.EOPNOTSUPP
    r = cli(guest, "i2c", "get", "-y", "stub", "0x49", "0x00", "b")
    assert r.returncode != 0
    assert "0x49" in r.stderr


def test_i2c_transfer_maps_smbus_shaped_chains(guest: BoardGuest) -> None:
    # write word data, then write pointer + read 2 (SMBus read word), as on the sim board
    r = cli(guest, "i2c", "transfer", "-y", "stub", "w3@0x48", "0x12", "0xcd", "0xab")
    assert r.returncode == 0, r.stderr
    r = cli(guest, "i2c", "transfer", "-y", "stub", "w1@0x48", "0x12", "r2")
    assert (r.returncode, r.stdout.strip()) == (0, "0xcd 0xab"), r.stderr
    # a shape no SMBus transaction has is refused with the reason, and never sent
    r = cli(guest, "i2c", "transfer", "-y", "stub", "r4@0x48")
    assert r.returncode == 1
    assert "0x48" in r.stderr

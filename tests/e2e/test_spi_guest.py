"""A real Linux 7.2 guest's virtio-spi driver on the simulated board, through the agent.

Prerequisites (cached, built by scripts/e2e/): a Debian sid chroot with QEMU 11
(vhost-user-spi-pci) and linux-source-7.2; a tinyconfig kernel with SPI_VIRTIO,
SPI_SPIDEV and a test-only board file putting spidev on chip selects 0 and 1;
the kernel tree's spidev_test / spidev_fdx built static.  The board's SPI bus
"0" has a W25Q32 flash on CS0 and a loopback on CS1.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.client import Client, parse_address, spi_xfer

from .guest import (
    SCRIPTS,
    GuestRun,
    agent,
    agent_log,
    build,
    busbridge_server,
    missing,
    run_guest,
)

pytestmark = pytest.mark.slow

SCRIPT = r"""
ls /dev/spidev* || exit 3
T=spidev_test
echo "=== jedec"
$T -D /dev/spidev0.0 -s 1000000 -v -p '\x9f\x00\x00\x00'
echo "=== program"
$T -D /dev/spidev0.0 -s 1000000 -p '\x06'
$T -D /dev/spidev0.0 -s 1000000 -p '\x02\x00\x20\x00busbridge-spi-e2e'
n=0
while [ $n -lt 100 ]; do
    $T -D /dev/spidev0.0 -s 1000000 -v -p '\x05\x00' | grep -q '^RX | .. 00' && break
    n=$((n+1))
done
echo "=== readback"
$T -D /dev/spidev0.0 -s 1000000 -v \
    -p '\x03\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00'
echo "=== multi"
spidev_fdx -m 4 /dev/spidev0.1; echo "rc $?"
echo "=== param_err"
$T -D /dev/spidev0.0 -s 60000000 -p '\x9f\x00\x00\x00' 2>&1; echo "rc $?"
echo "=== perf"
a=$(cut -d' ' -f1 /proc/uptime)
$T -D /dev/spidev0.1 -s 1000000 -S 32 -I 2000 >/dev/null; echo "rc $?"
b=$(cut -d' ' -f1 /proc/uptime)
echo "2000 $a $b"
echo "==="
"""


@pytest.fixture(scope="module")
def prereqs() -> tuple[Path, Path, Path]:
    kernel = build("build-spi-kernel.sh")
    root = build("build-sid-chroot.sh")
    if not (root / "usr/bin/qemu-system-x86_64").exists():
        missing(f"no qemu-system-x86_64 in the sid chroot {root}")
    initrd = build("build-initramfs.sh")
    return root, kernel, initrd


def hexbytes(line: str) -> list[int]:
    """Bytes of a spidev_test hex-dump line (``RX | 00 EF ... | ascii``)."""
    return [int(b, 16) for b in re.findall(r"\b([0-9A-F]{2})\b", line.split("|")[1])]


@pytest.fixture(scope="module")
def guest(prereqs: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[GuestRun, str, str]]:
    """The guest's run, the board's address, and what the agent logged."""
    root, kernel, initrd = prereqs
    work = tmp_path_factory.mktemp("spi-guest")
    sock = work / "vspi.sock"
    tools = kernel.parent
    extra = {f"usr/bin/{t}": ((tools / t).read_bytes(), 0o100755)
             for t in ("spidev_test", "spidev_fdx")}
    wrapper = ["env", f"IN_CHROOT_BIND={work}", str(SCRIPTS / "in-chroot.sh"), str(root)]
    with busbridge_server() as srv, agent(sock, srv.url, "0", "spi"):
        run = run_guest("qemu-system-x86_64", kernel, initrd, SCRIPT,
                        [("vhost-user-spi-pci", sock)], work, timeout=240, extra_files=extra,
                        wrapper=wrapper)
        assert run.status == 0, f"guest did not finish its script:\n{run.output[-4000:]}"
        yield run, srv.url, agent_log(sock)


def rx(section: str) -> list[int]:
    line = next(ln for ln in section.splitlines() if ln.startswith("RX |"))
    return hexbytes(line)


def test_flash_jedec_id(guest: tuple[GuestRun, str, str]) -> None:
    assert rx(guest[0].section("jedec"))[1:4] == [0xEF, 0x40, 0x16]


def test_page_program_and_read_back(guest: tuple[GuestRun, str, str]) -> None:
    run, url, _ = guest
    data = rx(run.section("readback"))
    assert bytes(data[4:4 + 17]) == b"busbridge-spi-e2e"
    with Client(*parse_address(url)) as c:  # the board agrees
        (got,) = c.spi_transfer("0", 0, [spi_xfer(b"\x03\x00\x20\x00" + bytes(17))])
        assert got[4:] == b"busbridge-spi-e2e"


def test_multi_transfer_message(guest: tuple[GuestRun, str, str]) -> None:
    text = guest[0].section("multi")
    # spidev_fdx: a 1-byte write then a 4-byte read in one message; status = bytes moved
    assert re.search(r"response\(\s*4,\s*5\)", text), text
    assert text.strip().splitlines()[-1] == "rc 0"


def test_agent_warns_once_per_chip_select_that_cs_drops_between_transfers(
        guest: tuple[GuestRun, str, str]) -> None:
    # spidev_fdx -m sends a 1-byte write and a 4-byte read as ONE message on CS1; the
    # agent cannot see where that message ends (docs/vhost-user.md, SPI) and says so,
    # once per chip select.  The flash's write-enable then page-program on CS0 looks the
    # same to it: two consecutive transfers with cs_change 0.
    warnings = [ln for ln in guest[2].splitlines() if "chip select released" in ln]
    found = [re.search(r"\bcs=(\d+)", ln) for ln in warnings]
    assert sorted(m.group(1) for m in found if m) == ["0", "1"], guest[2][-2000:]
    assert all("level=warning" in ln and "docs/vhost-user.md" in ln for ln in warnings)


def test_speed_above_advertised_maximum_is_param_err(guest: tuple[GuestRun, str, str]) -> None:
    text = guest[0].section("param_err")
    assert "can't send spi message: Invalid argument" in text
    assert "rc 0" not in text


def test_guest_spi_transfers_per_second(guest: tuple[GuestRun, str, str]) -> None:
    text = guest[0].section("perf")
    lines = text.strip().splitlines()
    assert lines[0] == "rc 0"
    n, a, b = lines[1].split()
    rate = int(n) / (float(b) - float(a))
    print(f"\nguest spidev_test -S 32 -I 2000: {rate:.0f} transfers/s")
    assert rate > 50


def test_lost_server_is_an_io_error_not_a_hang(prereqs: tuple[Path, Path, Path],
                                               tmp_path: Path) -> None:
    root, kernel, initrd = prereqs
    sock = tmp_path / "vspi.sock"
    extra = {"usr/bin/spidev_test": ((kernel.parent / "spidev_test").read_bytes(), 0o100755)}
    script = r"""
echo "=== down"
spidev_test -D /dev/spidev0.1 -s 1000000 -p 'abc' 2>&1; echo "rc $?"
echo "==="
"""
    wrapper = ["env", f"IN_CHROOT_BIND={tmp_path}", str(SCRIPTS / "in-chroot.sh"), str(root)]
    with busbridge_server() as srv, agent(sock, srv.url, "0", "spi"):
        srv.stop()
        run = run_guest("qemu-system-x86_64", kernel, initrd, script,
                        [("vhost-user-spi-pci", sock)], tmp_path, timeout=120, extra_files=extra,
                        wrapper=wrapper)
    assert run.status == 0, f"guest hung or failed:\n{run.output[-3000:]}"
    text = run.section("down")
    assert "can't send spi message: Input/output error" in text
    assert "rc 0" not in text

"""A real Linux guest's virtio-i2c driver on the simulated board, through the vhost-user agent.

Prerequisites (cached, built by scripts/e2e/): a tinyconfig 6.1 kernel with
CONFIG_I2C_VIRTIO and a busybox initramfs; QEMU 7.2 from Debian.  One boot runs
every i2c-tools command; the assertions compare the guest's own output with
what the simulated devices hold, and the board is read back from the host.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import default_bus_addresses

from bridge.client import Client, parse_address, read, write

from .guest import (
    GuestRun,
    agent,
    build,
    busbridge_server,
    run_guest,
    which,
)

pytestmark = pytest.mark.slow

# Finds the virtio adapter by name, so other adapters in the config do not matter.
PRELUDE = r"""
B=
for d in /sys/bus/i2c/devices/i2c-*; do
    case "$(cat $d/name)" in *virtio*) B=${d##*/i2c-};; esac
done
echo "adapter i2c-$B"
[ -n "$B" ] || exit 3
"""

SCRIPT = PRELUDE + r"""
echo "=== detect"
i2cdetect -y $B
echo "=== sensor id"
i2cget -y $B 0x48 0x0f w
echo "=== word set/get"
i2cset -y $B 0x48 0x02 0x1234 w; echo "rc $?"
i2cget -y $B 0x48 0x02 w
echo "=== eeprom write"
i2ctransfer -y $B w18@0x50 0x00 0x00 0x10 0x11 0x12 0x13 0x14 0x15 0x16 0x17 \
    0x18 0x19 0x1a 0x1b 0x1c 0x1d 0x1e 0x1f
echo "rc $?"
echo "=== write-then-read"
i2ctransfer -y $B w2@0x50 0x00 0x00 r16
i2ctransfer -y $B w1@0x48 0x0f r2
echo "=== byte set/get"
i2cset -y $B 0x50 0x00 0x05; echo "rc $?"
i2cget -y $B 0x50
echo "=== dump"
i2ctransfer -y $B w2@0x50 0x00 0x00
i2cdump -y $B 0x50 c
echo "=== nack chain"
i2ctransfer -y $B w1@0x33 0x00 w4@0x50 0x00 0x80 0xaa 0xbb; echo "rc $?"
i2ctransfer -y $B w2@0x50 0x00 0x80 r2
echo "=== nack get"
i2cget -y $B 0x33 0x00; echo "rc $?"
echo "=== perf"
a=$(cut -d' ' -f1 /proc/uptime)
n=0
while [ $n -lt 300 ]; do i2ctransfer -y $B w1@0x48 0x0f r2 >/dev/null || echo fail; n=$((n+1)); done
b=$(cut -d' ' -f1 /proc/uptime)
echo "300 $a $b"
echo "==="
"""


@pytest.fixture(scope="module")
def prereqs() -> tuple[str, Path, Path]:
    qemu = which("qemu-system-x86_64", "apt-get install qemu-system-x86")
    kernel = build("build-i2c-kernel.sh")
    initrd = build("build-initramfs.sh")
    return qemu, kernel, initrd


@pytest.fixture(scope="module")
def guest(prereqs: tuple[str, Path, Path], tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[GuestRun, str]]:
    qemu, kernel, initrd = prereqs
    work = tmp_path_factory.mktemp("i2c-guest")
    sock = work / "vi2c.sock"
    with busbridge_server() as srv, agent(sock, srv.url, "1"):
        run = run_guest(qemu, kernel, initrd, SCRIPT, [("vhost-user-i2c-pci", sock)], work,
                        timeout=180)
        assert run.status == 0, f"guest did not finish its script:\n{run.output[-4000:]}"
        yield run, srv.url


def test_i2cdetect_sees_exactly_the_simulated_devices(guest: tuple[GuestRun, str]) -> None:
    text = guest[0].section("detect")
    found = {int(a, 16) for a in re.findall(r"\b([0-7][0-9a-f])\b(?!:)", text.split("\n", 1)[1])}
    assert found == set(default_bus_addresses("1"))


def test_sensor_id_and_word_round_trip(guest: tuple[GuestRun, str]) -> None:
    run = guest[0]
    assert run.section("sensor id").split() == ["0x1701"]  # TMP117 ID 0x0117, SMBus LE word
    assert run.section("word set/get").split() == ["rc", "0", "0x1234"]


def test_multi_message_write_then_read(guest: tuple[GuestRun, str]) -> None:
    lines = guest[0].section("write-then-read").strip().splitlines()
    assert lines[0].split() == [f"0x{b:02x}" for b in range(0x10, 0x20)]
    assert lines[1].split() == ["0x01", "0x17"]


def test_byte_set_get_and_eeprom_dump(guest: tuple[GuestRun, str]) -> None:
    run = guest[0]
    # i2cset's byte write sets the EEPROM's 16-bit address pointer to 0x0005,
    # i2cget's receive-byte reads from there.
    assert run.section("byte set/get").split() == ["rc", "0", "0x15"]
    rows = [ln for ln in run.section("dump").splitlines() if re.match(r"^[0-9a-f]0:", ln)]
    assert len(rows) == 16
    assert rows[0].split()[1:17] == [f"{b:02x}" for b in range(0x10, 0x20)]
    assert rows[1].split()[1:17] == ["ff"] * 16


def test_nack_on_first_message_fails_the_chain_and_leaves_device_untouched(
        guest: tuple[GuestRun, str]) -> None:
    run, url = guest
    text = run.section("nack chain")
    assert "only 0/2 messages sent" in text
    assert text.strip().splitlines()[-1].split() == ["0xff", "0xff"]
    get = run.section("nack get")
    assert "Input/output error" in get or "read failed" in get
    assert get.strip().splitlines()[-1] == "rc 1"
    # The board itself agrees: the guest's writes landed, the NACKed chain's did not.
    with Client(*parse_address(url)) as c:
        assert c.transfer("1", [write(0x50, b"\x00\x00"), read(0x50, 16)])[0] == \
            bytes(range(0x10, 0x20))
        assert c.transfer("1", [write(0x50, b"\x00\x80"), read(0x50, 2)])[0] == b"\xff\xff"


def test_guest_transfers_per_second(guest: tuple[GuestRun, str]) -> None:
    text = guest[0].section("perf")
    assert "fail" not in text
    n, a, b = text.split()
    rate = int(n) / (float(b) - float(a))
    print(f"\nguest i2ctransfer w1 r2 (one process each): {rate:.0f} transfers/s")
    assert rate > 20


def test_lost_server_fails_guest_transfers_without_hanging(
        prereqs: tuple[str, Path, Path], tmp_path: Path) -> None:
    qemu, kernel, initrd = prereqs
    sock = tmp_path / "vi2c.sock"
    script = PRELUDE + r"""
echo "=== down"
i2cget -y $B 0x48 0x0f w; echo "rc $?"
i2ctransfer -y $B w1@0x48 0x0f r2; echo "rc $?"
echo "==="
"""
    with busbridge_server() as srv, agent(sock, srv.url, "1"):
        srv.stop()  # the agent outlives its server: the guest must get errors, not a hang
        run = run_guest(qemu, kernel, initrd, script, [("vhost-user-i2c-pci", sock)], tmp_path,
                        timeout=120)
    assert run.status == 0, f"guest hung or failed:\n{run.output[-3000:]}"
    text = run.section("down")
    assert "Input/output error" in text
    assert "only 0/2 messages sent" in text  # busybox i2ctransfer reports, exits 0
    assert "0x1701" not in text


def test_guest_reboot_restarts_the_ring(prereqs: tuple[str, Path, Path], tmp_path: Path) -> None:
    """QEMU stops the vhost-user ring at reboot and starts it again for the new kernel.

    The boot counter lives in the simulated EEPROM, which outlives the guest.
    """
    qemu, kernel, initrd = prereqs
    sock = tmp_path / "vi2c.sock"
    script = PRELUDE + r"""
c=$(i2ctransfer -y $B w2@0x50 0x0f 0x00 r1)
echo "boot counter $c"
if [ "$c" = "0xff" ]; then
    i2ctransfer -y $B w3@0x50 0x0f 0x00 0x01
    reboot -f
fi
echo "=== after reboot"
i2ctransfer -y $B w1@0x48 0x0f r2
echo "==="
"""
    with busbridge_server() as srv, agent(sock, srv.url, "1"):
        run = run_guest(qemu, kernel, initrd, script, [("vhost-user-i2c-pci", sock)], tmp_path,
                        timeout=120, allow_reboot=True)
    assert run.status == 0, f"guest hung or failed:\n{run.output[-3000:]}"
    assert run.output.count("E2E-BOOTED") == 2
    assert "boot counter 0xff" in run.output
    assert "boot counter 0x01" in run.output
    assert run.section("after reboot").split() == ["0x01", "0x17"]

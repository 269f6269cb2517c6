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
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.client import Client, TransferError
from protocol.virtio import read, write

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "scripts" / "e2e_stub" / "build_guest.py"
BOOT_TIMEOUT_S = 240.0
#: The guest powers itself off after this long even if this process dies without stopping it.
GUEST_LIFETIME_S = 900
CHIPS = (0x48, 0x50)


def _unavailable(why: str) -> None:
    if os.environ.get("BUSBRIDGE_E2E_REQUIRED") == "1":
        pytest.fail(f"BUSBRIDGE_E2E_REQUIRED=1 but {why}")
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Guest:
    def __init__(self, proc: subprocess.Popen[bytes], console: Path, port: int) -> None:
        self.proc = proc
        self.console = console
        self.port = port
        self.url = f"127.0.0.1:{port}"

    def log(self) -> str:
        return self.console.read_text(errors="replace")[-4000:]


def _wait_ready(g: Guest) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        text = g.console.read_text(errors="replace")
        if "BUSBRIDGE-GUEST-FAIL" in text or "SERVER-EXIT" in text:
            pytest.fail(f"guest failed:\n{g.log()}")
        if g.proc.poll() is not None:
            pytest.fail(f"QEMU exited with {g.proc.returncode}:\n{g.log()}")
        if "BUSBRIDGE-GUEST-READY" in text:
            try:
                with Client("127.0.0.1", g.port, timeout=5.0):
                    return
            except Exception as e:  # slirp accepts before the guest listens
                last = repr(e)
        time.sleep(1.0)
    pytest.fail(f"server in the guest not reachable after {BOOT_TIMEOUT_S:.0f} s ({last}):\n"
                f"{g.log()}")


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        _unavailable("qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
    assert qemu is not None
    check = subprocess.run([sys.executable, str(BUILD), "--check"], capture_output=True,
                           text=True, timeout=60)
    if check.returncode != 0:
        _unavailable(f"i2c-stub guest: {check.stderr.strip()}")
    build = Path(check.stdout.strip().splitlines()[-1])
    if any(c.isspace() for c in sys.executable):
        _unavailable(f"Python path {sys.executable!r} contains spaces; the guest cannot take it")
    port = _free_port()
    console = tmp_path_factory.mktemp("guest") / "console.log"
    chips = ",".join(f"{a:#04x}" for a in CHIPS)
    cmd = [
        qemu, "-accel", "tcg", "-M", "q35", "-m", "1024", "-smp", "1",
        "-nographic", "-no-reboot", "-vga", "none", "-monitor", "none", "-serial", "stdio",
        "-kernel", str(build / "vmlinuz"), "-initrd", str(build / "initramfs.cpio.gz"),
        "-append", f"console=ttyS0 panic=-1 quiet BB_PYTHON={sys.executable} BB_CHIPS={chips} "
                   f"BB_LIFETIME={GUEST_LIFETIME_S}",
        "-virtfs", "local,path=/,mount_tag=host,security_model=none,readonly=on,"
                   "multidevs=remap",
        "-nic", f"user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{port}-:7707",
    ]
    with open(console, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    g = Guest(proc, console, port)
    try:
        _wait_ready(g)
        yield g
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def cli(g: Guest, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", "--connect", g.url, *args],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_info_shows_the_stub_adapter_functionality(guest: Guest) -> None:
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


def test_detect_finds_the_stub_chips(guest: Guest) -> None:
    r = cli(guest, "i2c", "detect", "-y", "stub")
    assert r.returncode == 0, r.stderr
    found = {t for line in r.stdout.splitlines()[1:] for t in line[4:].split() if t != "--"}
    assert found == {"48", "50"}


def test_set_and_get_byte_and_word(guest: Guest) -> None:
    r = cli(guest, "i2c", "set", "-y", "stub", "0x48", "0x02", "0x60", "b")
    assert r.returncode == 0, r.stderr
    r = cli(guest, "i2c", "get", "-y", "stub", "0x48", "0x02", "b")
    assert (r.returncode, r.stdout.strip()) == (0, "0x60"), r.stderr
    r = cli(guest, "i2c", "set", "-y", "stub", "0x48", "0x10", "0x1234", "w")
    assert r.returncode == 0, r.stderr
    r = cli(guest, "i2c", "get", "-y", "stub", "0x48", "0x10", "w")
    assert (r.returncode, r.stdout.strip()) == (0, "0x1234"), r.stderr


def test_i2c_block_write_and_read_and_readback(guest: Guest) -> None:
    r = cli(guest, "i2c", "set", "-y", "stub", "0x50", "0x30", "0x01", "0x02", "0xfe", "i")
    assert r.returncode == 0, r.stderr
    r = cli(guest, "i2c", "get", "-y", "stub", "0x50", "0x30", "i", "3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-3:] == ["0x01", "0x02", "0xfe"]
    r = cli(guest, "i2c", "set", "-y", "-r", "stub", "0x48", "0x03", "0xa5", "b")
    assert (r.returncode, r.stdout.strip()) == (0, "Value 0xa5 written, readback matched")


def test_block_write_and_read_through_the_client(guest: Guest) -> None:
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


def test_errors_reach_the_client_with_the_kernel_errno(guest: Guest) -> None:
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


def test_i2c_transfer_maps_smbus_shaped_chains(guest: Guest) -> None:
    # write word data, then write pointer + read 2 (SMBus read word), as on the sim board
    r = cli(guest, "i2c", "transfer", "-y", "stub", "w3@0x48", "0x12", "0xcd", "0xab")
    assert r.returncode == 0, r.stderr
    r = cli(guest, "i2c", "transfer", "-y", "stub", "w1@0x48", "0x12", "r2")
    assert (r.returncode, r.stdout.strip()) == (0, "0xcd 0xab"), r.stderr
    # a shape no SMBus transaction has is refused with the reason, and never sent
    r = cli(guest, "i2c", "transfer", "-y", "stub", "r4@0x48")
    assert r.returncode == 1
    assert "0x48" in r.stderr

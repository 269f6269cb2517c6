"""`busbridge mount` (CUSE) in a QEMU guest running Debian's stock kernel with its cuse module.

The guest (scripts/e2e_stub/build_guest.py with scripts/native/cuse_init.sh)
shares the host's file tree read-only and runs a script from it: busbridge
mount creates /dev/i2c-1, /dev/spidev0.0 and /dev/spidev0.1 backed by the
simulated board that this test serves on the host (reached as 10.0.2.2), then
Debian's i2c-tools and spi-tools and a *statically linked* C program, which
LD_PRELOAD could never reach, use them as real character devices.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Running, default_bus_addresses, start_server_thread, stop_server_thread

from bridge.config import load_board

from .conftest import PROGRAMS, compile_c, unavailable

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BUILD = [sys.executable, str(REPO / "scripts" / "e2e_stub" / "build_guest.py"),
         "--init", str(REPO / "scripts" / "native" / "cuse_init.sh"), "--extra-modules", "cuse"]
RUN_TIMEOUT_S = 420

SCRIPT = """\
cd /
"$BB_PYTHON" -m bridge.cli --connect "$BB_SERVER" mount --map i2c:1=1 --map spi:0=0 \\
    >/dev/busbridge/mount.log 2>&1 &
i=0
while [ ! -e /dev/i2c-1 ] || [ ! -e /dev/spidev0.1 ]; do
  i=$((i + 1))
  if [ $i -gt 1200 ]; then echo "== no devices"; cat /dev/busbridge/mount.log; exit 1; fi
  sleep 0.1
done
echo "== ls"; ls -l /dev/i2c-1 /dev/spidev0.0 /dev/spidev0.1
echo "== i2cdetect"; i2cdetect -y 1
echo "== i2cget"; i2cget -y 1 0x48 0x0f w
echo "== i2cset"; i2cset -y 1 0x48 0x02 0x1234 w && i2cget -y 1 0x48 0x02 w
echo "== i2ctransfer"; i2ctransfer -y 1 w3@0x50 0x00 0x40 0x5a && \
  i2ctransfer -y 1 w2@0x50 0x00 0x40 r1
echo "== nack"; i2ctransfer -y 1 w1@0x33 0x00 r1 2>&1; i2cget -y 1 0x33 0 2>&1; echo "rc=$?"
echo "== static"; {static}
echo "== spi-config"; spi-config -d /dev/spidev0.1 -q
echo "== spi-pipe"; printf 'cuse!' | spi-pipe -d /dev/spidev0.1 -b 5 -n 1; echo
echo "== end"
"""


@pytest.fixture(scope="module")
def board() -> Iterator[Running]:
    running, t = start_server_thread(load_board(None))
    try:
        yield running
    finally:
        stop_server_thread(running, t)


def sections(console: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for m in re.finditer(r"^== (\S+)\r?\n(.*?)(?=^== |\Z)", console, re.S | re.M):
        out[m.group(1)] = m.group(2).replace("\r", "")
    return out


def test_mount_gives_static_programs_and_i2c_tools_the_remote_buses(
        board: Running, tmp_path_factory: pytest.TempPathFactory) -> None:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        unavailable("qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
    assert qemu is not None
    check = subprocess.run([*BUILD, "--check"], capture_output=True, text=True, timeout=60)
    if check.returncode != 0:
        unavailable(f"CUSE guest: {check.stderr.strip()}")
    build = Path(check.stdout.strip().splitlines()[-1])
    for tool in ("i2cdetect", "spi-config"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin") is None:
            unavailable(f"{tool} not found (apt-get install i2c-tools spi-tools)")
    tmp = tmp_path_factory.mktemp("cuse")
    static = compile_c(PROGRAMS / "rdwr_spi.c", tmp / "rdwr_static", "-static")
    script = tmp / "guest.sh"
    script.write_text(SCRIPT.replace("{static}", str(static)))
    for p in (tmp, static, script):
        os.chmod(p, os.stat(p).st_mode | 0o755)
    console = tmp / "console.log"
    cmd = [
        qemu, "-accel", "tcg", "-M", "q35", "-m", "1024", "-smp", "1",
        "-nographic", "-no-reboot", "-vga", "none", "-monitor", "none", "-serial", "stdio",
        "-kernel", str(build / "vmlinuz"), "-initrd", str(build / "initramfs.cpio.gz"),
        "-append", f"console=ttyS0 panic=-1 quiet BB_PYTHON={sys.executable} "
                   f"BB_SERVER=10.0.2.2:{board.port} BB_SCRIPT={script} BB_LIFETIME=400",
        "-virtfs", "local,path=/,mount_tag=host,security_model=none,readonly=on,"
                   "multidevs=remap",
        "-nic", "user,model=virtio-net-pci",
    ]
    with open(console, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while proc.poll() is None and time.monotonic() < deadline:
            text = console.read_text(errors="replace")
            if "BUSBRIDGE-GUEST-DONE" in text or "BUSBRIDGE-GUEST-FAIL" in text:
                break
            time.sleep(1.0)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    text = console.read_text(errors="replace")
    assert "BUSBRIDGE-GUEST-DONE: 0" in text, text[-6000:]
    s = sections(text)
    assert "crw" in s["ls"]  # real character devices
    found = {t for line in s["i2cdetect"].splitlines()[1:] for t in line[4:].split()
             if re.fullmatch(r"[0-9a-f]{2}", t)}
    assert found == {f"{a:02x}" for a in default_bus_addresses("1")}
    assert s["i2cget"].strip() == "0x1701"
    assert s["i2cset"].strip() == "0x1234"
    assert s["i2ctransfer"].split() == ["0x5a"]
    assert "only 0/2 messages were sent" in s["nack"]
    assert "Read failed" in s["nack"]
    static_out = s["static"].splitlines()
    assert static_out[0] == "rdwr 2 id 0117"
    assert static_out[1] == "nack 0 errno - untouched 5a"
    assert static_out[2] == "spi 5 rx 40 ef ff 16"
    assert s["spi-config"].strip().startswith("/dev/spidev0.1: mode=0, lsb=0, bits=8")
    assert s["spi-pipe"].strip() == "cuse!"

"""The board server inside a QEMU guest, on the guest kernel's own adapters.

The chain these helpers set up, for I2C and SPI alike::

    test (host) --TCP--> busbridge serve in the guest, backend = "linux"
        --ioctl--> guest kernel: /dev/i2c-N or /dev/spidevB.C on a virtio adapter
        --virtqueue--> QEMU --vhost-user--> busbridge vhost-user (host)
        --TCP--> the simulated board, served in this test process

The simulated board runs in-process (a server thread, as tests/conftest.py
does), so a test reads its bus's transaction log directly: what arrived at
the far end, message by message, with every per-transfer field.

The guest runs the host's own Python and checkout, shared read-only over 9p,
and is reached through QEMU's user-mode network (a port forward to
127.0.0.1).  Every process started here is bounded in time and stopped on
the way out.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from conformance.test_conformance import KNOWN_FAILURES
from conftest import Running, start_server_thread, stop_server_thread

from bridge.buses.sim import SimI2CBus, SimSpiBus
from bridge.client import Client
from bridge.config import Board, load_board

from .guest import free_port, missing, stop

REPO = Path(__file__).resolve().parents[2]
STUB_BUILD = REPO / "scripts" / "e2e_stub" / "build_guest.py"
BOOT_TIMEOUT_S = 300.0
#: The guest powers itself off after this long even if this process dies without stopping it.
GUEST_LIFETIME_S = 1200
#: The guest server's deadline: a chain crosses a TCG guest, QEMU, the agent and a second
#: server, on a busy 2-core machine.
GUEST_REQUEST_TIMEOUT_MS = 60_000


#: The conformance kit's known failures of the server on a Linux bus: the same as on the
#: simulator (the deadline and withdrawal checks pass on both since the fair scheduler).
KNOWN_ON_LINUX = dict(KNOWN_FAILURES)


def stub_guest_build() -> Path:
    """The Debian-kernel guest of scripts/e2e_stub/ (stock 6.1, i2c-stub, i2c-virtio.ko)."""
    check = subprocess.run([sys.executable, str(STUB_BUILD), "--check"], capture_output=True,
                           text=True, timeout=120, check=False)
    if check.returncode != 0:
        missing(f"board guest: {check.stderr.strip()}")
    return Path(check.stdout.strip().splitlines()[-1])


def stub_guest_cmd(qemu: str, build: Path, port: int, chips: str, *, append: str = "",
                   extra: Sequence[str] = ()) -> list[str]:
    """QEMU's command line for the i2c-stub board guest serving on 127.0.0.1:``port``.

    ``append`` adds settings to the kernel command line (init's BB_* variables),
    ``extra`` QEMU options (another 9p share, a vhost-user device).
    """
    return [
        qemu, "-accel", "tcg", "-M", "q35", "-m", "1024", "-smp", "1",
        "-nographic", "-no-reboot", "-vga", "none", "-monitor", "none", "-serial", "stdio",
        "-kernel", str(build / "vmlinuz"), "-initrd", str(build / "initramfs.cpio.gz"),
        "-append", f"console=ttyS0 panic=-1 quiet BB_PYTHON={python_for_guest()} "
                   f"BB_CHIPS={chips} BB_LIFETIME={GUEST_LIFETIME_S} {append}".rstrip(),
        *host_share_and_net("/", port), *extra,
    ]


def python_for_guest() -> str:
    """The interpreter the guest runs (from the host's tree); it goes on a kernel command line."""
    if any(c.isspace() for c in sys.executable):
        missing(f"Python path {sys.executable!r} contains spaces; the guest cannot take it")
    return sys.executable


def shared_memory(mem_mb: int) -> list[str]:
    """QEMU options for guest RAM a vhost-user back end can map (``share=on``)."""
    return ["-M", "q35,memory-backend=mem", "-m", f"{mem_mb}M",
            "-object", f"memory-backend-memfd,id=mem,size={mem_mb}M,share=on"]


def host_share_and_net(root: str, port: int) -> list[str]:
    """The host's file tree at 9p tag ``host`` and the guest's port 7707 at 127.0.0.1:``port``."""
    return ["-virtfs", f"local,path={root},mount_tag=host,security_model=none,readonly=on,"
                       "multidevs=remap",
            "-nic", f"user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{port}-:7707"]


def vhost_user_device(device: str, sock: Path) -> list[str]:
    return ["-chardev", f"socket,id=vu0,path={sock}", "-device", f"{device},chardev=vu0"]


class BoardGuest:
    """A running guest whose init prints BUSBRIDGE-GUEST-READY, then serves on port 7707."""

    def __init__(self, proc: subprocess.Popen[bytes], console: Path, port: int) -> None:
        self.proc = proc
        self.console = console
        self.port = port
        self.url = f"127.0.0.1:{port}"

    def text(self) -> str:
        return self.console.read_text(errors="replace")

    def log(self) -> str:
        return self.text()[-4000:]

    def client(self, timeout: float = 90.0) -> Client:
        return Client("127.0.0.1", self.port, timeout=timeout)

    def wait_ready(self, timeout: float = BOOT_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            text = self.text()
            if "BUSBRIDGE-GUEST-FAIL" in text or "SERVER-EXIT" in text:
                pytest.fail(f"guest failed:\n{self.log()}")
            if self.proc.poll() is not None:
                pytest.fail(f"QEMU exited with {self.proc.returncode}:\n{self.log()}")
            if "BUSBRIDGE-GUEST-READY" in text:
                try:
                    with Client("127.0.0.1", self.port, timeout=10.0):
                        return
                except Exception as e:  # slirp accepts before the guest listens
                    last = repr(e)
            time.sleep(1.0)
        pytest.fail(f"server in the guest not reachable after {timeout:.0f} s ({last}):\n"
                    f"{self.log()}")


@contextlib.contextmanager
def board_guest(cmd: list[str], console: Path, port: int) -> Iterator[BoardGuest]:
    """Start QEMU (``cmd``), wait until the guest's server answers, stop QEMU afterwards."""
    with open(console, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    g = BoardGuest(proc, console, port)
    try:
        g.wait_ready()
        yield g
    finally:
        stop(proc)


@contextlib.contextmanager
def host_board(board: Board | None = None) -> Iterator[Running]:
    """The simulated board (default: the embedded one) served on a thread of this process."""
    running, t = start_server_thread(board if board is not None else load_board(None),
                                     request_timeout=30.0)
    try:
        yield running
    finally:
        stop_server_thread(running, t)


class LogWatch:
    """New entries in a simulated bus's transaction log since the last :meth:`mark`."""

    def __init__(self, bus: SimI2CBus | SimSpiBus) -> None:
        self.bus = bus
        self.seen = 0

    def mark(self) -> None:
        entries = self.bus.log_snapshot()
        self.seen = entries[-1].seq if entries else 0

    def new(self) -> list[Any]:
        """I2CLogEntry or SpiLogEntry objects, oldest first."""
        return [e for e in self.bus.log_snapshot() if e.seq > self.seen]


__all__ = ["KNOWN_ON_LINUX", "BoardGuest", "LogWatch", "board_guest", "free_port", "host_board",
           "host_share_and_net", "python_for_guest", "shared_memory", "stub_guest_build",
           "stub_guest_cmd",
           "vhost_user_device"]

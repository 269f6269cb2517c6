"""Helpers for the QEMU end-to-end suites: prerequisites, processes, guest runs.

Every process started here is bounded in time and killed on the way out; all
traffic stays on 127.0.0.1 and unix sockets.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "e2e"
#: The CLI as a subprocess (``-m bridge.cli`` would run before late-registered commands).
BUSBRIDGE = [sys.executable, "-c", "from bridge.cli.main import main; main()"]
REQUIRED = os.environ.get("BUSBRIDGE_E2E_REQUIRED") == "1"


def missing(why: str) -> None:
    """Skip with the exact reason, or fail when CI says the suite must run."""
    if REQUIRED:
        pytest.fail(f"BUSBRIDGE_E2E_REQUIRED=1 but {why}", pytrace=False)
    pytest.skip(why)


def build(script: str, *args: str, timeout: float = 1800) -> Path:
    """Run a cached prerequisite build script; its last stdout line is the artefact."""
    path = SCRIPTS / script
    try:
        p = subprocess.run([str(path), *args], capture_output=True, text=True, timeout=timeout,
                           check=False)
    except subprocess.TimeoutExpired:
        missing(f"{script} did not finish within {timeout:g} s")
        raise AssertionError from None
    if p.returncode != 0:
        missing(f"{script} failed: {p.stderr.strip()[-800:]}")
    out = Path(p.stdout.strip().splitlines()[-1])
    if not out.exists():
        missing(f"{script} printed {out}, which does not exist")
    return out


def which(tool: str, hint: str) -> str:
    found = shutil.which(tool)
    if found is None:
        missing(f"{tool} not found ({hint})")
        raise AssertionError
    return found


def newc(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A cpio "newc" archive of regular files (the kernel unpacks concatenated archives)."""
    out = bytearray()
    ino = 1000

    def entry(name: str, data: bytes, mode: int) -> None:
        nonlocal ino
        ino += 1
        nb = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0]
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields) + nb)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for name, (data, mode) in files.items():
        entry(name, data, mode)
    entry("TRAILER!!!", b"", 0)
    return bytes(out)


def initrd_with(initrd: Path, files: dict[str, tuple[bytes, int]], out: Path) -> Path:
    """``initrd`` with ``files`` appended as a second archive (e.g. the run's /test.sh)."""
    base = initrd.read_bytes()
    # The kernel only finds an uncompressed archive after a compressed one if it
    # starts 4-byte aligned (init/initramfs.c); zeros between archives are skipped.
    out.write_bytes(base + b"\0" * (-len(base) % 4) + newc(files))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


@dataclass
class Served:
    """A running ``busbridge serve``; ``url`` is ``HOST:PORT``."""

    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        stop(self.process)


@contextlib.contextmanager
def busbridge_server(config: str | None = None) -> Iterator[Served]:
    """``busbridge serve`` on a free loopback port."""
    port = free_port()
    cmd = [*BUSBRIDGE, "serve", "--listen", f"127.0.0.1:{port}"]
    if config:
        cmd += ["--config", config]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if p.poll() is not None or time.monotonic() > deadline:
                err = p.stderr.read().decode() if p.stderr else ""
                raise AssertionError(f"busbridge serve did not start: {err}")
            time.sleep(0.05)
        yield Served(f"127.0.0.1:{port}", p)
    finally:
        stop(p)


@contextlib.contextmanager
def agent(sock: Path, url: str, bus: str, device: str = "i2c",
          extra: tuple[str, ...] = ()) -> Iterator[subprocess.Popen[bytes]]:
    """``busbridge vhost-user``, waited for until its socket exists.

    Its log (stderr) goes to ``SOCK.log`` next to the socket, for tests to read.
    """
    cmd = [*BUSBRIDGE, "vhost-user", "--socket", str(sock),
           "--connect", url, "--bus", bus, "--device", device, *extra]
    log = sock.with_name(sock.name + ".log")
    with open(log, "wb") as err:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 15
        while not sock.exists():
            if p.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("busbridge vhost-user did not start: "
                                     f"{log.read_text(errors='replace')}")
            time.sleep(0.05)
        yield p
    finally:
        stop(p)


def agent_log(sock: Path) -> str:
    """What the agent serving ``sock`` has logged so far."""
    return sock.with_name(sock.name + ".log").read_text(errors="replace")


@dataclass
class GuestRun:
    output: str
    status: int | None  # the test script's exit status, None if it never finished
    seconds: float

    def section(self, name: str) -> str:
        """Text between ``=== name`` and the next ``===`` marker."""
        m = re.search(rf"^=== {re.escape(name)}\r?\n(.*?)(?=^===|^E2E-EXIT)", self.output,
                      re.S | re.M)
        assert m, f"section {name!r} missing from guest output:\n{self.output[-3000:]}"
        return m.group(1).replace("\r", "")


def run_guest(qemu: str, kernel: Path, initrd: Path, script: str, devices: list[tuple[str, Path]],
              workdir: Path, *, timeout: float = 120, mem_mb: int = 256,
              extra_files: dict[str, tuple[bytes, int]] | None = None,
              wrapper: Sequence[str] = (), allow_reboot: bool = False) -> GuestRun:
    """Boot the guest with ``script`` as /test.sh and vhost-user ``devices`` attached.

    QEMU is killed at ``timeout``: a guest command stuck in the driver (a request
    that was never completed) shows up as ``status is None`` instead of a hung suite.
    ``wrapper`` runs QEMU through a command (the sid chroot); the kernel and
    initramfs are copied into ``workdir`` so they are visible there too.
    """
    rd = initrd_with(initrd, {"test.sh": (script.encode(), 0o100755), **(extra_files or {})},
                     workdir / "initrd.img")
    shutil.copyfile(kernel, workdir / "bzImage")
    kernel = workdir / "bzImage"
    cmd = [*wrapper, qemu, "-M", "q35,memory-backend=mem", "-accel", "tcg", "-m", f"{mem_mb}M",
           "-object", f"memory-backend-memfd,id=mem,size={mem_mb}M,share=on",
           "-kernel", str(kernel), "-initrd", str(rd),
           "-append", "console=ttyS0 panic=-1 quiet",
           "-nographic", "-nic", "none", "-vga", "none", "-monitor", "none",
           "-serial", "stdio"]
    if not allow_reboot:
        cmd.append("-no-reboot")
    for i, (dev, path) in enumerate(devices):
        cmd += ["-chardev", f"socket,id=vu{i},path={path}", "-device", f"{dev},chardev=vu{i}"]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate(timeout=10)
    text = out.decode(errors="replace")
    m = re.search(r"^E2E-EXIT (\d+)", text, re.M)
    return GuestRun(text, int(m.group(1)) if m else None, time.monotonic() - t0)

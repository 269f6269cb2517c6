"""The board server's SPI_IOC_MESSAGE path on a real kernel's spidev.

A Linux 7.2 guest (the SPI suite's kernel: virtio-spi, spidev on CS 0 and 1)
runs ``busbridge serve`` with ``backend = "linux"`` on ``/dev/spidev0.N``;
its virtio-spi controller is fed by ``busbridge vhost-user`` from the
simulated board in this process (W25Q32 flash on CS 0, loopback on CS 1)::

    client --TCP--> guest: busbridge serve (LinuxSpiBus) --SPI_IOC_MESSAGE--> spidev
      --> spi core --> spi-virtio --> QEMU 11 --> busbridge vhost-user --> simulated bus "0"

The simulated bus's log shows every transfer's fields as the kernel passed
them on.  It also shows the limit docs/vhost-user.md describes: Linux's
virtio-spi driver hands the device one transfer at a time with no mark of
where a message ends, so each transfer of a multi-transfer message arrives
as its own one-transfer message, chip select released in between.

Prerequisites: those of tests/e2e/test_spi_guest.py (the sid chroot with
QEMU 11, the 7.2 kernel, the busybox initramfs).
"""

from __future__ import annotations

import errno
import itertools
import re
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from conformance.test_conformance import CHECK_IDS, judge
from conftest import Running

from bridge.buses.sim import SimSpiBus, SpiLogEntry
from bridge.client import TransferError, spi_xfer
from bridge.conformance import Report, Target, run_checks
from protocol.virtio import SpiResult, SpiTransfer

from .board_guest import (
    GUEST_LIFETIME_S,
    GUEST_REQUEST_TIMEOUT_MS,
    KNOWN_ON_LINUX,
    BoardGuest,
    LogWatch,
    board_guest,
    free_port,
    host_board,
    host_share_and_net,
    python_for_guest,
    shared_memory,
    vhost_user_device,
)
from .guest import SCRIPTS, agent, agent_log, build, initrd_with, missing

pytestmark = pytest.mark.slow

BUS = "0"
HOST_ROOT = "/busbridge-host"  # where the sid chroot sees the host's file tree
STUDY_RUNS = 100


def guest_script(python: str) -> str:
    return rf"""
fail() {{ echo "BUSBRIDGE-GUEST-FAIL: $*"; exit 1; }}
ls /dev/spidev0.0 /dev/spidev0.1 >/dev/null || fail "no spidev devices"
ip link set lo up
ip addr add 10.0.2.15/24 dev eth0 || fail "no eth0"
ip link set eth0 up
mkdir -p /host
mount -t 9p -o trans=virtio,version=9p2000.L,ro host /host || fail "9p mount"
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/busbridge
cat > /host/dev/busbridge/board.toml <<EOF
name = "spi-guest"
description = "Linux 7.2: spidev on a virtio-spi controller"
[server]
listen = "0.0.0.0:7707"
# Reached only through QEMU's user-mode port forward to the host's loopback.
insecure = true
request_timeout_ms = {GUEST_REQUEST_TIMEOUT_MS}
[[spi]]
name = "{BUS}"
backend = "linux"
devices = {{ 0 = "/dev/spidev0.0", 1 = "/dev/spidev0.1" }}
bits_per_word_mask = 0x80008080
max_word_delay_ns = 255000
# Above the far end's 50 MHz, so an over-speed transfer reaches the kernel.
max_freq_hz = 100000000
EOF
# For the chip-select study: one-transfer messages back to back from a C loop.
spidev_test -D /dev/spidev0.1 -s 1000000 -S 2 -I {STUDY_RUNS} >/dev/null || fail "spidev_test"
echo "BUSBRIDGE-GUEST-READY"
timeout {GUEST_LIFETIME_S} chroot /host /usr/bin/env -i PATH=/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 HOME=/dev/busbridge \
    {python} -m bridge.cli serve --config /dev/busbridge/board.toml
echo "BUSBRIDGE-GUEST-SERVER-EXIT: $?"
"""


@dataclass
class Stamp:
    start: float
    end: float
    cs: int
    transfers: tuple[SpiTransfer, ...]


@dataclass
class Chain:
    guest: BoardGuest
    host: Running
    sim: SimSpiBus
    log: LogWatch
    sock: Path
    stamps: list[Stamp]
    #: The guest's own spidev_test loop, run before its server started.
    study: list[Stamp]


def timed(sim: SimSpiBus, stamps: list[Stamp]) -> None:
    """Record when each message runs at the far end (for the chip-select study)."""
    run = sim.transfer
    lock = threading.Lock()

    def transfer(cs: int, transfers: Sequence[SpiTransfer]) -> list[bytes]:
        t0 = time.monotonic()
        try:
            return run(cs, transfers)
        finally:
            with lock:
                stamps.append(Stamp(t0, time.monotonic(), cs, tuple(transfers)))

    sim.transfer = transfer  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def ch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    kernel = build("build-spi-kernel.sh")
    root = build("build-sid-chroot.sh")
    if not (root / "usr/bin/qemu-system-x86_64").exists():
        missing(f"no qemu-system-x86_64 in the sid chroot {root}")
    base = build("build-initramfs.sh")
    python = python_for_guest()
    work = tmp_path_factory.mktemp("spi-chain")
    sock = work / "vspi.sock"
    port = free_port()
    tool = (kernel.parent / "spidev_test").read_bytes()
    initrd = initrd_with(base, {"test.sh": (guest_script(python).encode(), 0o100755),
                                "usr/bin/spidev_test": (tool, 0o100755)}, work / "initrd.img")
    (work / "bzImage").write_bytes(kernel.read_bytes())
    cmd = ["env", f"IN_CHROOT_BIND={work}", f"IN_CHROOT_HOSTROOT={HOST_ROOT}",
           str(SCRIPTS / "in-chroot.sh"), str(root),
           "qemu-system-x86_64", "-accel", "tcg", *shared_memory(1024), "-smp", "1",
           "-nographic", "-no-reboot", "-vga", "none", "-monitor", "none", "-serial", "stdio",
           "-kernel", str(work / "bzImage"), "-initrd", str(initrd),
           "-append", "console=ttyS0 panic=-1 quiet",
           *host_share_and_net(HOST_ROOT, port), *vhost_user_device("vhost-user-spi-pci", sock)]
    stamps: list[Stamp] = []
    with host_board() as host:
        sim = host.board.spi[BUS]
        assert isinstance(sim, SimSpiBus)
        timed(sim, stamps)
        with agent(sock, host.url, BUS, "spi", extra=("--timeout", "60")), \
                board_guest(cmd, work / "console.log", port) as guest:
            yield Chain(guest, host, sim, LogWatch(sim), sock, stamps, stamps[:])


def message(c: Chain, cs: int, transfers: list[SpiTransfer]
            ) -> tuple[list[bytes], list[SpiLogEntry]]:
    """Run one message through the guest; what it returned and what reached the far end."""
    c.log.mark()
    with c.guest.client() as cl:
        reads = cl.spi_transfer(BUS, cs, transfers)
    return reads, c.log.new()


def fields(e: SpiLogEntry) -> list[dict[str, object]]:
    return [{"cs": e.cs, "freq": t.head.freq, "bits": t.head.bits_per_word,
             "cs_change": t.head.cs_change, "hold_ns": t.head.cs_delay_hold_ns,
             "word_ns": t.head.word_delay_ns, "setup_ns": t.head.cs_setup_ns,
             "inactive_ns": t.head.cs_change_delay_inactive_ns, "tx_nbits": t.head.tx_nbits,
             "rx_nbits": t.head.rx_nbits, "tx": t.tx, "rx_len": t.rx_len}
            for t in e.transfers]


def test_jedec_id_is_one_transfer_with_its_fields(ch: Chain) -> None:
    reads, entries = message(ch, 0, [spi_xfer(b"\x9f\x00\x00\x00", speed_hz=1_000_000)])
    assert reads[0][1:] == b"\xef\x40\x16"
    (e,) = entries
    assert e.ok
    assert fields(e) == [{"cs": 0, "freq": 1_000_000, "bits": 8, "cs_change": 0, "hold_ns": 0,
                          "word_ns": 0, "setup_ns": 0, "inactive_ns": 0, "tx_nbits": 1,
                          "rx_nbits": 1, "tx": b"\x9f\x00\x00\x00", "rx_len": 4}]


def test_multi_transfer_message_keeps_every_per_transfer_field(ch: Chain) -> None:
    sent = [
        spi_xfer(b"\x01\x02", speed_hz=1_000_000, cs_hold_ns=5_000, word_delay_ns=2_000,
                 cs_change=True),
        spi_xfer(b"\x11\x22\x33\x44", 0, speed_hz=2_000_000, bits_per_word=16),
        spi_xfer(None, 2, speed_hz=4_000_000),
    ]
    reads, entries = message(ch, 1, sent)
    assert reads == [b"\x01\x02", b"\x00\x00"]  # the loopback: rx = what was clocked out
    # At the far end: each transfer is its own message (virtio-spi sends one transfer at
    # a time and no end-of-message mark), each with the fields the guest asked for.
    # The spi core filled in tx_nbits/rx_nbits = 1 for the directions in use, and the
    # delays travel in ns (spidev's µs * 1000).
    assert [len(e.transfers) for e in entries] == [1, 1, 1]
    assert [f for e in entries for f in fields(e)] == [
        {"cs": 1, "freq": 1_000_000, "bits": 8, "cs_change": 1, "hold_ns": 5_000,
         "word_ns": 2_000, "setup_ns": 0, "inactive_ns": 0, "tx_nbits": 1, "rx_nbits": 1,
         "tx": b"\x01\x02", "rx_len": 2},
        {"cs": 1, "freq": 2_000_000, "bits": 16, "cs_change": 0, "hold_ns": 0,
         "word_ns": 0, "setup_ns": 0, "inactive_ns": 0, "tx_nbits": 1, "rx_nbits": 0,
         "tx": b"\x11\x22\x33\x44", "rx_len": 0},
        {"cs": 1, "freq": 4_000_000, "bits": 8, "cs_change": 0, "hold_ns": 0,
         "word_ns": 0, "setup_ns": 0, "inactive_ns": 0, "tx_nbits": 0, "rx_nbits": 1,
         "tx": None, "rx_len": 2},
    ]


def test_over_speed_transfer_is_refused_by_the_device_as_einval(ch: Chain) -> None:
    ch.log.mark()
    with ch.guest.client() as c:
        res = c.spi(BUS, 0, [spi_xfer(b"\x9f\x00\x00\x00", speed_hz=60_000_000)])
        with pytest.raises(TransferError) as e:
            c.spi_transfer(BUS, 0, [spi_xfer(b"\x9f\x00\x00\x00", speed_hz=60_000_000)])
    # The guest's spi core does not clamp to the device's 50 MHz (spi-virtio leaves the
    # controller's max_speed_hz unset); the device answers PARAM_ERR, the kernel EINVAL,
    # and the server reports the failed ioctl as TRANS_ERR with that errno.
    assert list(res.status) == [SpiResult.TRANS_ERR]
    assert e.value.errno == errno.EINVAL
    assert "SPI_IOC_MESSAGE(1)" in str(e.value)
    assert ch.log.new() == []


def test_command_then_read_in_two_transfers_gets_wrong_data_and_a_warning(ch: Chain) -> None:
    """The documented limit, and the agent's warning about it (docs/vhost-user.md, SPI)."""
    reads, entries = message(ch, 0, [spi_xfer(b"\x9f", 0, speed_hz=1_000_000),
                                     spi_xfer(None, 3, speed_hz=20_000_000)])
    # The flash saw 0x9f, then chip select went away, then a read with no command:
    # status OK, data wrong.  Sent straight to a busbridge server it is ef 40 16.
    assert reads == [b"\xff\xff\xff"]
    assert [(len(e.transfers), e.transfers[0].head.cs_change) for e in entries] == [(1, 0),
                                                                                    (1, 0)]
    log = agent_log(ch.sock)
    warnings = [ln for ln in log.splitlines() if "chip select released" in ln]
    assert any(re.search(r"\bcs=0\b", ln) for ln in warnings), log[-2000:]
    assert all("docs/vhost-user.md" in ln for ln in warnings)
    assert len({re.search(r"\bcs=(\d+)", ln).group(1) for ln in warnings}) == \
        len(warnings)  # once per chip select


def test_message_boundaries_are_invisible_to_the_agent(ch: Chain) -> None:
    """The chip-select study (docs/vhost-user.md): what would tell a message's end.

    Fields: the last transfer of a message and a message's only transfer carry the
    same cs_change (0), so the heads say nothing.  Timing: the gaps between the
    transfers of one message (kernel only) and between back-to-back messages of a C
    loop (a round trip to user space) are printed, not asserted.
    """
    intra: list[float] = []
    for _ in range(20):
        before = len(ch.stamps)
        message(ch, 1, [spi_xfer(b"\xa1", speed_hz=1_000_000),
                        spi_xfer(b"\xa2", speed_hz=1_000_000)])
        a, b = ch.stamps[before:before + 2]
        assert a.transfers[0].head.cs_change == b.transfers[0].head.cs_change == 0
        intra.append(b.start - a.end)
    loop = ch.study
    assert [(s.cs, len(s.transfers), s.transfers[0].length) for s in loop] == \
        [(1, 1, 2)] * STUDY_RUNS
    assert {s.transfers[0].head.cs_change for s in loop} == {0}
    inter = [b.start - a.end for a, b in itertools.pairwise(loop)]

    def show(name: str, xs: list[float]) -> str:
        ms = sorted(x * 1e3 for x in xs)
        return (f"{name}: n={len(ms)} min {ms[0]:.2f} median {statistics.median(ms):.2f} "
                f"p90 {ms[int(len(ms) * 0.9)]:.2f} max {ms[-1]:.2f} ms")

    print("\n" + show("gap between transfers of one message", intra))
    print(show("gap between back-to-back one-transfer messages", inter))


# -- the conformance kit against the guest's server --------------------------------------


@pytest.fixture(scope="module")
def report(ch: Chain) -> Report:
    return run_checks(Target("127.0.0.1", ch.guest.port, timeout=30.0))


KNOWN_ON_SPIDEV = {
    **KNOWN_ON_LINUX,
    "lim.spi-len": "the kit expects a bus to loop back max_spi_len (65536) bytes; spidev takes "
                   "at most its bufsiz (4096) per message, so the Linux backend refuses the "
                   "transfer with PARAM_ERR before the kernel (docs/board.md)",
}


@pytest.mark.parametrize("check_id", CHECK_IDS)
def test_conformance_kit_against_the_guest_server(report: Report, check_id: str) -> None:
    """The kit's SPI device checks find the far end's flash and loopback on bus "0"."""
    judge(report, check_id, KNOWN_ON_SPIDEV)

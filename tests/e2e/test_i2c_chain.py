"""The board server's I2C_RDWR path on a real kernel's full-I2C adapter.

Debian's stock Linux 6.1 in a QEMU guest, with ``i2c-virtio.ko`` built out of
tree (Debian does not enable CONFIG_I2C_VIRTIO) and fed by ``busbridge
vhost-user`` from the simulated board in this process; ``busbridge serve``
runs inside the guest with ``backend = "linux"`` on that adapter's
``/dev/i2c-N``, and the test drives it from the host::

    client --TCP--> guest: busbridge serve (LinuxI2CBus) --I2C_RDWR--> i2c-dev
      --> i2c-virtio --> QEMU 7.2 --> busbridge vhost-user --> simulated bus "1"

The simulated bus's transaction log shows what reached the far end: each
chain must arrive there as ONE transaction with its messages intact.  The
errors are the real kernel's: i2c-virtio reports a NACK as a short message
count from I2C_RDWR, never as an errno (see docs/board.md, "Tested on").

Prerequisites: ``qemu-system-x86_64`` and the guest of
``scripts/e2e_stub/build_guest.py``.
"""

from __future__ import annotations

import errno
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conformance.test_conformance import CHECK_IDS, judge
from conftest import Running, default_bus_addresses

from bridge.buses.sim import I2CLogEntry, SimI2CBus
from bridge.client import Client, TransferError, parse_address
from bridge.conformance import Report, Target, run_checks
from protocol.handshake import I2C_FUNC_10BIT_ADDR, I2C_FUNC_I2C
from protocol.virtio import I2CMsg, chain, read, write

from .board_guest import (
    GUEST_LIFETIME_S,
    KNOWN_ON_LINUX,
    BoardGuest,
    LogWatch,
    board_guest,
    free_port,
    host_board,
    host_share_and_net,
    python_for_guest,
    shared_memory,
    stub_guest_build,
    vhost_user_device,
)
from .guest import agent, which

pytestmark = pytest.mark.slow

BUS = "1"  # the guest server's bus on /dev/i2c-N of the i2c-virtio adapter
HOST_BUS = "1"  # the default board's bus 1: 24C32 EEPROM @0x50, TMP117 @0x48 and six more
ABSENT = 0x33


@dataclass
class Chain:
    guest: BoardGuest
    host: Running
    sim: SimI2CBus
    log: LogWatch

    def eeprom(self, addr: int, n: int) -> bytes:
        return bytes(self.sim.device(0x50).memory[addr:addr + n])  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def ch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    qemu = which("qemu-system-x86_64", "apt-get install qemu-system-x86")
    build = stub_guest_build()
    python = python_for_guest()
    work = tmp_path_factory.mktemp("i2c-chain")
    sock = work / "vi2c.sock"
    port = free_port()
    cmd = [qemu, "-accel", "tcg", *shared_memory(1024), "-smp", "1",
           "-nographic", "-no-reboot", "-vga", "none", "-monitor", "none", "-serial", "stdio",
           "-kernel", str(build / "vmlinuz"), "-initrd", str(build / "initramfs.cpio.gz"),
           "-append", f"console=ttyS0 panic=-1 quiet BB_PYTHON={python} BB_CHIPS=0x48 "
                      f"BB_LIFETIME={GUEST_LIFETIME_S}",
           *host_share_and_net("/", port), *vhost_user_device("vhost-user-i2c-pci", sock)]
    with host_board() as host, agent(sock, host.url, HOST_BUS, extra=("--timeout", "60")), \
            board_guest(cmd, work / "console.log", port) as guest:
        sim = host.board.i2c[HOST_BUS]
        assert isinstance(sim, SimI2CBus)
        yield Chain(guest, host, sim, LogWatch(sim))


def one_transaction(c: Chain) -> I2CLogEntry:
    """The single transaction the last request produced at the far end."""
    entries = c.log.new()
    assert len(entries) == 1, [e.describe() for e in entries]
    return entries[0]


def same_msgs(got: tuple[I2CMsg, ...], sent: list[I2CMsg]) -> bool:
    return [(m.addr, m.flags & 0x2, m.size, m.data if not m.is_read else b"") for m in got] == \
        [(m.addr, m.flags & 0x2, m.size, m.data if not m.is_read else b"") for m in sent]


def test_guest_server_offers_the_virtio_adapter_as_full_i2c(ch: Chain) -> None:
    with ch.guest.client() as c:
        assert c.welcome is not None
        info = {b.name: b for b in c.welcome.i2c}[BUS]
    assert info.functionality & I2C_FUNC_I2C  # so every chain is one I2C_RDWR
    assert not info.functionality & I2C_FUNC_10BIT_ADDR  # the 6.1 driver sends 7-bit only
    assert info.max_msg_len == 8192  # i2c-dev's limit


def test_probe_finds_the_simulated_devices_one_message_per_address(ch: Chain) -> None:
    ch.log.mark()
    r = subprocess.run([sys.executable, "-m", "bridge.cli", "--connect", ch.guest.url,
                        "--timeout", "90", "i2c", "detect", "-y", BUS],
                       capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    found = {t for line in r.stdout.splitlines()[1:] for t in line[4:].split() if t != "--"}
    assert found == {f"{a:02x}" for a in default_bus_addresses(HOST_BUS)}
    entries = ch.log.new()
    # Every probe reached the far end whole: one message, zero-length quick write or
    # 1-byte read (0x30-0x37, 0x50-0x5f), as i2cdetect sends them.
    assert sorted(e.msgs[0].addr for e in entries) == list(range(0x08, 0x78))
    for e in entries:
        (m,) = e.msgs
        assert (m.is_read, m.length) == ((True, 1) if 0x50 <= m.addr <= 0x5F
                                         or 0x30 <= m.addr <= 0x37 else (False, 0))
        assert e.ok == (m.addr in default_bus_addresses(HOST_BUS))


def test_write_then_read_is_one_transaction(ch: Chain) -> None:
    ch.log.mark()
    sent = [write(0x50, [0x00, 0x00]), read(0x50, 16)]
    with ch.guest.client() as c:
        (data,) = c.transfer(BUS, sent)
    assert data == ch.eeprom(0, 16)
    e = one_transaction(ch)
    assert e.ok
    assert same_msgs(e.msgs, sent)
    assert e.reads == (data,)


def test_chain_across_two_addresses_is_one_transaction(ch: Chain) -> None:
    ch.log.mark()
    sent = [write(0x48, [0x0F]), read(0x48, 2), write(0x50, [0x00, 0x10]), read(0x50, 4)]
    with ch.guest.client() as c:
        ident, mem = c.transfer(BUS, sent)
    assert ident == b"\x01\x17"  # TMP117 device ID register, big-endian
    assert mem == ch.eeprom(0x10, 4)
    e = one_transaction(ch)
    assert e.ok
    assert same_msgs(e.msgs, sent)


def test_longest_read_i2c_dev_allows_is_one_message(ch: Chain) -> None:
    ch.log.mark()
    sent = [write(0x50, [0x00, 0x00]), read(0x50, 8192)]
    with ch.guest.client() as c:
        (data,) = c.transfer(BUS, sent)
    whole = ch.eeprom(0, 4096)
    assert data == whole + whole  # the 4 KiB part wraps around
    e = one_transaction(ch)
    assert same_msgs(e.msgs, sent)
    assert len(e.reads[0]) == 8192


def test_nack_on_message_0_fails_the_chain_and_leaves_the_eeprom_untouched(
        ch: Chain) -> None:
    before = ch.eeprom(0x80, 4)
    ch.log.mark()
    sent = [write(ABSENT, [0x00]), write(0x50, [0x00, 0x80, 0xAA, 0xBB])]
    with ch.guest.client() as c:
        res = c.i2c(BUS, chain(sent))
        with pytest.raises(TransferError) as e:
            c.transfer(BUS, sent)
    # i2c-virtio returns 0 completed messages, not an errno: the server answers EIO.
    assert list(res.status) == [1, 1]
    assert e.value.errno == errno.EIO
    assert "completed only 0 of 2" in str(e.value)
    # At the far end: the whole chain arrived (twice, one per request above), failed at
    # message 0, and the FAIL_NEXT rule kept message 1 off the bus.
    entries = ch.log.new()
    assert len(entries) == 2
    for t in entries:
        assert same_msgs(t.msgs, sent)
        assert (t.errno, t.index) == (errno.ENXIO, 0)
    assert ch.eeprom(0x80, 4) == before


def test_nack_mid_chain_reports_which_message_failed(ch: Chain) -> None:
    ch.log.mark()
    sent = [write(0x48, [0x02, 0x12, 0x34]), write(ABSENT, [0x00]), read(0x48, 2)]
    with ch.guest.client() as c:
        res = c.i2c(BUS, chain(sent))
    # I2C_RDWR returned 1: message 0 ran (the sensor took its register write), 1 and 2
    # did not.
    assert list(res.status) == [0, 1, 1]
    assert [f.errno for f in res.failures] == [errno.EIO]
    assert res.failures[0].index == 1
    t = one_transaction(ch)
    assert same_msgs(t.msgs, sent)
    assert (t.errno, t.index) == (errno.ENXIO, 1)
    with Client(*parse_address(ch.host.url)) as host:
        assert host.transfer(HOST_BUS, [write(0x48, [0x02]), read(0x48, 2)]) == [b"\x12\x34"]


def test_chain_longer_than_the_virtqueue_never_reaches_the_bus(ch: Chain) -> None:
    # QEMU 7.2's vhost-user-i2c queue has 4 entries: i2c-virtio can queue at most 4
    # messages of a transfer.  The 4 it queued all carry FAIL_NEXT, so the agent
    # fails them unexecuted; the kernel reports 0 of 5.
    ch.log.mark()
    sent = [write(0x50, [0x00, 0xA0])] + [read(0x50, 1)] * 4
    with ch.guest.client() as c:
        res = c.i2c(BUS, chain(sent))
    assert list(res.status) == [1] * 5
    assert res.failures[0].errno == errno.EIO
    assert ch.log.new() == []


def test_ten_bit_address_is_refused_before_the_bus(ch: Chain) -> None:
    ch.log.mark()
    with ch.guest.client() as c, pytest.raises(TransferError) as e:
        c.transfer(BUS, [write(0x2A5, [0x00], ten_bit=True), read(0x2A5, 1, ten_bit=True)])
    assert e.value.errno == errno.EOPNOTSUPP
    assert ch.log.new() == []


def test_guest_server_keeps_the_stub_bus_working_alongside(ch: Chain) -> None:
    # The same guest serves the SMBus-only i2c-stub adapter: the two paths coexist.
    with ch.guest.client() as c:
        c.transfer("stub", [write(0x48, [0x10, 0x34, 0x12])])
        assert c.transfer("stub", [write(0x48, [0x10]), read(0x48, 2)]) == [b"\x34\x12"]


# -- the conformance kit against the guest's server --------------------------------------


@pytest.fixture(scope="module")
def report(ch: Chain) -> Report:
    return run_checks(Target("127.0.0.1", ch.guest.port, timeout=30.0))


@pytest.mark.parametrize("check_id", CHECK_IDS)
def test_conformance_kit_against_the_guest_server(report: Report, check_id: str) -> None:
    """The kit's device checks find the far end's TMP117 and EEPROM on the guest's bus "1"."""
    judge(report, check_id, KNOWN_ON_LINUX)

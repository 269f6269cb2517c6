"""Record on a real kernel's adapter, replay on the host: ``serve --record`` on the Linux backend.

The board server runs inside the i2c-stub QEMU guest (Debian's stock kernel,
``backend = "linux"`` on /dev/i2c-N, every request through the SMBus mapping) with
``--record`` on a writable 9p share of a host directory.  The test drives the bus
from the host, stops the guest by killing QEMU (the server never gets to write its
``end`` record: what a crash leaves), then serves the file as replay buses on the host
and runs the same requests: the same answers and the same kernel errnos.

Prerequisites as for test_i2c_stub_guest.py; without them the suite skips.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import start_server_thread, stop_server_thread
from e2e.board_guest import board_guest, free_port, stub_guest_build, stub_guest_cmd
from e2e.guest import which

from bridge.client import Client, TransferError
from bridge.config import replay_board
from bridge.recording import read_recording
from protocol.virtio import read, write

pytestmark = pytest.mark.slow


def stub_sequence(url: str) -> dict[str, Any]:
    """Block, word and probe traffic on the stub chips, and two kernel refusals."""
    out: dict[str, Any] = {}
    with Client.from_url(url, timeout=60.0) as c:
        c.transfer("stub", [write(0x50, [0x20, 0xDE, 0xAD, 0xBE, 0xEF])])
        out["block"] = c.transfer("stub", [write(0x50, [0x20]), read(0x50, 4)])
        c.transfer("stub", [write(0x48, [0x11, 0x34, 0x12])])
        out["word"] = c.transfer("stub", [write(0x48, [0x11]), read(0x48, 2)])
        res = c.i2c("stub", [write(0x48), read(0x48, 0), write(0x49)])
        out["probe"] = (list(res.status), [(f.index, f.errno) for f in res.failures])
        for name, msgs in (("absent", [write(0x49, [0x00]), read(0x49, 1)]),
                           ("no_smbus_form", [read(0x48, 4)])):
            try:
                c.transfer("stub", msgs)
            except TransferError as e:
                out[name] = (e.errno, str(e))
    return out


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    qemu = which("qemu-system-x86_64", "apt-get install qemu-system-x86")
    build = stub_guest_build()
    port = free_port()
    tmp = tmp_path_factory.mktemp("guest")
    share = tmp / "rec"
    share.mkdir()
    cmd = stub_guest_cmd(qemu, build, port, "0x48,0x50", append="BB_RECORD=1", extra=[
        "-virtfs", f"local,path={share},mount_tag=rec,security_model=none,multidevs=remap"])
    with board_guest(cmd, tmp / "console.log", port) as g:
        seen = stub_sequence(g.url)
    return share / "session.bbrec", seen


def test_the_guest_recorded_the_linux_backend(recorded: tuple[Path, dict[str, Any]]) -> None:
    path, seen = recorded
    assert seen["block"] == [b"\xde\xad\xbe\xef"]
    assert seen["word"] == [b"\x34\x12"]
    rec = read_recording(str(path))
    assert rec.header["board"] == "i2c-stub-guest"
    assert rec.buses("i2c") == ["stub"]
    assert rec.ended is None  # QEMU was killed: no end record, every transaction kept
    addrs = [t.msgs[0].addr for t in rec.transactions]
    # Each chain of the probe frame is its own transaction: 0x48 twice, then 0x49.
    assert addrs[:4] == [0x50, 0x50, 0x48, 0x48]
    assert addrs[4:] == [0x48, 0x48, 0x49, 0x49, 0x48]


@pytest.mark.parametrize("mode", ["strict", "lenient"])
def test_the_recording_replays_on_the_host(mode: str,
                                           recorded: tuple[Path, dict[str, Any]]) -> None:
    running, t = start_server_thread(replay_board(str(recorded[0]), mode))
    try:
        assert stub_sequence(running.url) == recorded[1]
    finally:
        stop_server_thread(running, t)

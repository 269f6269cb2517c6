"""Record and replay: ``busbridge serve --record`` on the simulated board, then replay buses.

The recording is made by the real CLI (a ``busbridge serve --record`` process)
while an unmodified PyPI driver (RPi.bme280, written against smbus2) and the
smbus2/spidev drop-ins run a realistic sequence over TCP: BME280 calibration
and a forced sample, TMP117 ID and temperature, an EEPROM page write and read
back, an absent chip's NACK, the SPI flash's JEDEC ID and a data read.  A board
of ``backend = "replay"`` buses then serves that file, and the same sequence
must get the same answers.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bme280
import msgpack
import pytest
from conftest import ROOT, Running, cli_env, serve_process, start_server_thread, stop_server_thread

from bridge import dropin
from bridge.client import Client, chain, read, spi_xfer, write
from bridge.config import Board, BoardConfigError, load_board
from bridge.dropin.smbus import SMBus, i2c_msg
from bridge.dropin.spidev import SpiDev
from bridge.recording import read_recording
from bridge.server.record import Recorder

BME280, TMP117, EEPROM, ABSENT = 0x76, 0x48, 0x50, 0x77


def sequence(url: str) -> dict[str, Any]:
    """What a driver's test would do and check, and what it saw."""
    out: dict[str, Any] = {}
    dropin.connect(url)
    try:
        with SMBus(1) as bus:
            cal = bme280.load_calibration_params(bus, BME280)
            s = bme280.sample(bus, BME280, cal)
            out["bme280"] = (s.temperature, s.pressure, s.humidity)
            out["tmp117_id"] = bus.read_word_data(TMP117, 0x0F)
            wr, rd = i2c_msg.write(TMP117, [0x00]), i2c_msg.read(TMP117, 2)
            bus.i2c_rdwr(wr, rd)
            out["tmp117_raw"] = bytes(rd)
            bus.i2c_rdwr(i2c_msg.write(EEPROM, [0x00, 0x40, *b"replay"]))
            ptr, back = i2c_msg.write(EEPROM, [0x00, 0x40]), i2c_msg.read(EEPROM, 6)
            bus.i2c_rdwr(ptr, back)
            out["eeprom"] = bytes(back)
            try:
                bus.read_byte(ABSENT)
            except OSError as e:
                out["absent"] = e.errno
        spi = SpiDev()
        spi.open(0, 0)
        spi.max_speed_hz = 1_000_000
        try:
            out["jedec"] = spi.xfer2([0x9F, 0, 0, 0])[1:]
            out["flash"] = spi.xfer2([0x03, 0, 0, 0] + [0] * 8)[4:]
        finally:
            spi.close()
    finally:
        dropin.disconnect()
    return out


@contextmanager
def cli_server(*args: str) -> Iterator[str]:
    """A ``busbridge serve --listen 127.0.0.1:0 ARGS`` process: its address; SIGTERM after."""
    with serve_process(*args) as serve:
        m = serve.wait_for(r"^busbridge: serving board .* on 127\.0\.0\.1:(\d+) ")
        yield f"127.0.0.1:{m.group(1)}"
        assert serve.stop() == 0


@contextmanager
def served(board: Board, record: Path | None = None) -> Iterator[Running]:
    """``board`` on a server thread, recorded to ``record`` if given, stopped afterwards."""
    running, t = start_server_thread(board)
    recorder = (Recorder(str(record), board).attach(running.server.observers)
                if record is not None else None)
    try:
        yield running
    finally:
        stop_server_thread(running, t)
        if recorder is not None:
            recorder.close()


def record_with_cli(path: Path) -> dict[str, Any]:
    """Run ``busbridge serve --record`` on the default board, the sequence, then SIGTERM."""
    with cli_server("--record", str(path)) as url:
        return sequence(url)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One recording of the sequence on the default simulated board, and what it saw."""
    path = tmp_path_factory.mktemp("rec") / "session.bbrec"
    return path, record_with_cli(path)


def replay_board(tmp: Path, recording: Path, mode: str, spi_mode: str | None = None) -> Path:
    """A board file of replay buses, naming the recording relative to itself."""
    rel = os.path.relpath(recording, tmp)
    text = 'name = "replayed"\n'
    buses = (("i2c", "1", mode), ("i2c", "2", mode), ("spi", "0", spi_mode or mode))
    for kind, name, m in buses:
        text += (f'[[{kind}]]\nname = "{name}"\nbackend = "replay"\nfile = "{rel}"\n'
                 f'mode = "{m}"\n')
    board = tmp / f"replay-{mode}.toml"
    board.write_text(text)
    return board


@pytest.fixture
def replaying(request: pytest.FixtureRequest, tmp_path: Path,
              recorded: tuple[Path, dict[str, Any]]) -> Iterator[Running]:
    with served(load_board(replay_board(tmp_path, recorded[0], request.param))) as running:
        yield running


def test_the_recording_is_what_the_board_did(recorded: tuple[Path, dict[str, Any]]) -> None:
    path, seen = recorded
    assert seen["tmp117_id"] == 0x1701  # the TMP117's device ID, byte-swapped by SMBus
    assert seen["eeprom"] == b"replay"
    assert seen["absent"] == errno.ENXIO
    assert seen["jedec"] == [0xEF, 0x40, 0x16]
    rec = read_recording(str(path))
    assert rec.ended == "closed"
    assert not rec.truncated
    assert rec.header["board"] == "busbridge-sim"
    assert rec.buses("i2c") == ["1", "2"]
    assert rec.buses("spi") == ["0"]
    nack = [t for t in rec.transactions if t.kind == "i2c" and t.msgs[0].addr == ABSENT]
    assert [t.error[1] for t in nack if t.error] == [errno.ENXIO]
    assert [t.number for t in rec.transactions] == list(range(1, len(rec.transactions) + 1))


@pytest.mark.parametrize("replaying", ["strict", "lenient"], indirect=True)
def test_replay_answers_what_the_chips_once_said(replaying: Running,
                                                 recorded: tuple[Path, dict[str, Any]]) -> None:
    assert sequence(replaying.url) == recorded[1]


@pytest.mark.parametrize("replaying", ["strict"], indirect=True)
def test_strict_replay_fails_at_the_first_divergence_and_after(replaying: Running) -> None:
    with Client.from_url(replaying.url, timeout=10) as c:
        # The recording starts with RPi.bme280 reading the calibration at 0x88; ask the TMP117.
        with pytest.raises(OSError, match="replay diverged") as first:
            c.transfer("1", [write(TMP117, [0x00]), read(TMP117, 2)])
        msg = str(first.value)
        assert first.value.errno == errno.EIO
        assert "replay diverged at recorded transaction #1" in msg
        assert "expected w1@0x76 [88] r2@0x76" in msg  # read_word_data of dig_T1
        assert "received w1@0x48 [00] r2@0x48" in msg
        # Now even the recorded first request fails: the test cannot pass by luck.
        with pytest.raises(OSError, match="replay diverged earlier"):
            c.transfer("1", [write(BME280, [0x88]), read(BME280, 2)])


@pytest.mark.parametrize("replaying", ["lenient"], indirect=True)
def test_lenient_replay_answers_by_lookup(replaying: Running,
                                          recorded: tuple[Path, dict[str, Any]]) -> None:
    seen = recorded[1]
    with Client.from_url(replaying.url, timeout=10) as c:
        # Out of order, twice, and as a write then a separate read (the register pointer).
        for _ in range(2):
            assert c.transfer("1", [write(TMP117, [0x00]), read(TMP117, 2)]) == [
                seen["tmp117_raw"]]
        c.transfer("1", [write(EEPROM, [0x00, 0x40])])
        assert c.transfer("1", [read(EEPROM, 6)]) == [b"replay"]
        # A write the recording never had, to a chip that answered: ACKed.
        c.transfer("1", [write(EEPROM, [0x01, 0x00, 0xAA])])
        # A chip that never answered: NACK, as an absent chip.
        with pytest.raises(OSError, match="never answered in the recording") as nack:
            c.transfer("1", [read(0x33, 1)])
        assert nack.value.errno == errno.ENXIO
        # A read nobody recorded: a precise error, not made-up data.
        with pytest.raises(OSError, match=r"no recorded answer for w1@0x48 \[07\] r2@0x48"):
            c.transfer("1", [write(TMP117, [0x07]), read(TMP117, 2)])
        # SPI by MOSI prefix: 4 of the 8 flash bytes read at address 0.
        assert c.spi_transfer("0", 0, [spi_xfer(b"\x03\x00\x00\x00", 0),
                                         spi_xfer(None, 4)]) == [bytes(seen["flash"][:4])]


def test_a_recording_is_readable_from_its_documented_format(
        recorded: tuple[Path, dict[str, Any]]) -> None:
    """An independent reader, from docs/record.md alone: magic, u32le length + msgpack map."""
    data = recorded[0].read_bytes()
    assert data[:8] == b"BBRECORD"
    pos, records = 8, []
    while pos < len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        records.append(msgpack.unpackb(data[pos + 4:pos + 4 + n]))
        pos += 4 + n
    assert pos == len(data)
    hdr, *txns, end = records
    assert (hdr["k"], hdr["format"], hdr["version"]) == ("header", "busbridge-recording", 1)
    assert [b["name"] for b in hdr["spi"]] == ["0"]
    assert "max_freq_hz" in hdr["spi"][0]["config"]
    assert end == {"k": "end", "why": "closed", "transactions": len(txns)}
    # The EEPROM read back: a write [00 40] then a 6-byte read, answered b"replay".
    eeprom = [t for t in txns if t["k"] == "i2c" and t["m"] == [[EEPROM, False, b"\x00\x40"],
                                                               [EEPROM, False, 6]]]
    assert eeprom[0]["r"] == [b"replay"]
    assert "e" not in eeprom[0]
    nack = next(t for t in txns if t["k"] == "i2c" and t["m"][0][0] == ABSENT)
    assert nack["e"][:2] == [0, errno.ENXIO]
    assert nack["r"] == []
    jedec = next(t for t in txns if t["k"] == "spi" and t["x"][0][0] == b"\x9f\0\0\0")
    assert jedec["cs"] == 0
    assert jedec["r"][0][1:] == b"\xef\x40\x16"
    assert jedec["x"][0][1] == 4
    assert len(jedec["x"][0][2]) == 11
    assert all(isinstance(t["t"], float) and t["us"] >= 0 for t in txns)


def test_a_crash_loses_at_most_the_last_record(tmp_path: Path,
                                               recorded: tuple[Path, dict[str, Any]]) -> None:
    full = read_recording(str(recorded[0]))
    data = recorded[0].read_bytes()
    # Cut inside the "end" record and inside the last transaction: what a crash leaves.
    end_len = struct.unpack_from("<I", data, len(data) - _last_record_size(data))[0] + 4
    cut = tmp_path / "cut.bbrec"
    cut.write_bytes(data[:len(data) - end_len - 3])
    rec = read_recording(str(cut))
    assert rec.truncated
    assert rec.ended is None
    assert len(rec.transactions) == len(full.transactions) - 1


def _last_record_size(data: bytes) -> int:
    pos, last = 8, 0
    while pos < len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        last = 4 + n
        pos += last
    return last


def test_refused_requests_are_not_recorded(tmp_path: Path) -> None:
    path = tmp_path / "r.bbrec"
    with served(load_board(None), path) as running, \
            Client.from_url(running.url, timeout=10) as c:
        with pytest.raises(OSError, match="above max"):  # PARAM_ERR: never on the bus
            c.spi_transfer("0", 0, [spi_xfer(b"\x9f\0\0\0", speed_hz=60_000_000)])
        with pytest.raises(OSError, match="no ACK"):  # an address NACK did reach the bus
            c.transfer("1", [read(ABSENT, 1)])
        assert c.transfer("2", [read(0x2A5, 1, ten_bit=True)]) == [b"\xa5"]
    rec = read_recording(str(path))
    assert [(x.kind, x.bus, x.msgs[0].addr) for x in rec.transactions] == [
        ("i2c", "1", ABSENT), ("i2c", "2", 0x2A5)]


def test_replay_config_errors_name_the_problem(tmp_path: Path,
                                               recorded: tuple[Path, dict[str, Any]]) -> None:
    board = tmp_path / "b.toml"
    board.write_text(f'name = "x"\n[[i2c]]\nname = "7"\nbackend = "replay"\n'
                     f'file = "{recorded[0]}"\n')
    with pytest.raises(BoardConfigError, match=r"i2c bus '7': the recording has no i2c bus "
                                               r"'7' \(it has: 1, 2\)"):
        load_board(board)
    board.write_text('name = "x"\n[[spi]]\nname = "0"\nbackend = "replay"\nfile = "nope.rec"\n'
                     'mode = "strict"\n')
    with pytest.raises(BoardConfigError, match=r"cannot read recording .*nope\.rec"):
        load_board(board)
    not_rec = tmp_path / "not.rec"
    not_rec.write_bytes(b"hello world")
    board.write_text(f'name = "x"\n[[spi]]\nname = "0"\nbackend = "replay"\n'
                     f'file = "{not_rec}"\n')
    with pytest.raises(BoardConfigError, match="not a busbridge recording"):
        load_board(board)


def test_a_frame_of_several_chains_replays_chain_by_chain(tmp_path: Path) -> None:
    """Each FAIL_NEXT chain is its own recorded transaction; a NACK in the second chain
    comes back with the same status bytes, reads and failure message."""
    frame = [*chain([write(TMP117, [0x0F]), read(TMP117, 2)]),
             *chain([write(ABSENT, [0x00]), read(ABSENT, 1)]),
             write(EEPROM, [0x00, 0x40]), read(EEPROM, 3)]
    path = tmp_path / "chains.bbrec"
    with served(load_board(None), path) as running, \
            Client.from_url(running.url, timeout=10) as c:
        c.transfer("1", [write(EEPROM, [0x00, 0x40, 1, 2, 3])])
        live = c.i2c("1", frame)
    assert list(live.status) == [0, 0, 1, 1, 0, 0]
    assert len(read_recording(str(path)).transactions) == 5
    cfg = tmp_path / "b.toml"
    cfg.write_text('name = "r"\n[[i2c]]\nname = "1"\nbackend = "replay"\nfile = "chains.bbrec"\n')
    with served(load_board(cfg)) as running, Client.from_url(running.url, timeout=10) as c:
        c.transfer("1", [write(EEPROM, [0x00, 0x40, 1, 2, 3])])
        again = c.i2c("1", frame)
    assert again.status == live.status
    assert again.reads == live.reads == [b"\x01\x17", b"", b"\x01\x02\x03"]  # ID 0x0117
    assert again.failures == live.failures
    assert "message 2 (w1@0x77)" in live.failures[0].message


def test_a_request_that_expired_on_the_bus_replays_as_unknown(tmp_path: Path) -> None:
    """Its deadline passed while the chip held the bus: recorded as "outcome unknown", and
    replayed as ETIMEDOUT saying so (not as a made-up answer)."""
    path = tmp_path / "expired.bbrec"
    board = load_board(None)
    dev = board.i2c["1"].device(TMP117)  # type: ignore[attr-defined]
    dev.stall_s = 3.0  # the chip stretches the clock for 3 s; the deadline is 0.5 s
    with served(board, path) as running, Client.from_url(running.url, timeout=10) as c, \
            pytest.raises(OSError, match="deadline passed while on the bus"):
        c.transfer("1", [write(TMP117, [0x00]), read(TMP117, 2)], timeout=0.5)
    (txn,) = read_recording(str(path)).transactions
    assert txn.unknown
    assert txn.reads == []
    cfg = tmp_path / "b.toml"
    cfg.write_text('name = "r"\n[[i2c]]\nname = "1"\nbackend = "replay"\nfile = "expired.bbrec"\n')
    with served(load_board(cfg)) as running, Client.from_url(running.url, timeout=10) as c, \
            pytest.raises(OSError, match=r"recorded transaction #1 passed its deadline on "
                                         r"the bus; what the chip answered is unknown") as e:
        c.transfer("1", [write(TMP117, [0x00]), read(TMP117, 2)])
    assert e.value.errno == errno.ETIMEDOUT
    # Lenient answers only with what is known: nothing, so the chip seems absent.
    cfg.write_text(cfg.read_text() + 'mode = "lenient"\n')
    with served(load_board(cfg)) as running, Client.from_url(running.url, timeout=10) as c, \
            pytest.raises(OSError, match="never answered in the recording") as e:
        c.transfer("1", [write(TMP117, [0x00]), read(TMP117, 2)])
    assert e.value.errno == errno.ENXIO


@pytest.mark.parametrize("mode", ["strict", "lenient"])
def test_serve_replay_serves_a_recording_without_a_board_file(
        mode: str, recorded: tuple[Path, dict[str, Any]]) -> None:
    with cli_server("--replay", str(recorded[0]), "--replay-mode", mode) as url:
        assert sequence(url) == recorded[1]
        with Client.from_url(url, timeout=10) as c:
            assert c.welcome.board == "busbridge-sim (replay)"



def test_the_size_limit_ends_the_recording_and_the_server_keeps_serving(tmp_path: Path) -> None:
    path = tmp_path / "limited.bbrec"
    board = load_board(None)
    running, t = start_server_thread(board)
    recorder = Recorder(str(path), board, max_bytes=4000).attach(running.server.observers)
    try:
        with Client.from_url(running.url, timeout=10) as c:
            for _ in range(100):
                assert c.transfer("1", [write(TMP117, [0x0F]), read(TMP117, 2)]) == [b"\x01\x17"]
        assert len(running.server.observers) == 0  # detached: the hot path is back to one test
    finally:
        stop_server_thread(running, t)
        recorder.close()
    rec = read_recording(str(path))
    assert rec.ended == "size limit"
    assert 10 < len(rec.transactions) < 100
    assert path.stat().st_size <= 4000 + 100  # and the end record


def test_a_full_disk_stops_the_recording_not_the_server(tmp_path: Path) -> None:
    """The file-size limit (RLIMIT_FSIZE) makes the recording's writes fail with EFBIG
    mid-run, as a full disk would: the server answers every request regardless, says why
    the recording stopped, and the file keeps every whole record before the failure."""
    path = tmp_path / "full.bbrec"

    # The limit and SIG_IGN for SIGXFSZ are set in the child, then kept across its exec.
    limited = ("import os, resource, signal, sys\n"
               "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
               "resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))\n"
               "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n")
    proc = subprocess.Popen(
        [sys.executable, "-c", limited, "-m", "bridge.cli", "serve", "--listen", "127.0.0.1:0",
         "--record", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=ROOT)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        m = re.match(r"busbridge: serving board .* on 127\.0\.0\.1:(\d+) ", line)
        assert m, line
        with Client.from_url(f"127.0.0.1:{m.group(1)}", timeout=10) as c:
            for _ in range(100):
                assert c.transfer("1", [write(TMP117, [0x0F]), read(TMP117, 2)]) == [b"\x01\x17"]
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "recording stopped: cannot write" in err
    rec = read_recording(str(path))
    assert rec.ended is None
    assert 10 < len(rec.transactions) < 100

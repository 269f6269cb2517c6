"""A C program compiled here, Debian's spi-tools, and what `busbridge run` says about
programs the preload library cannot reach (static, setuid)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Running

from .conftest import BUSBRIDGE, PROGRAMS, compile_c, need, run


def test_c_program_with_i2c_rdwr_and_a_two_transfer_spi_message(board: Running,
                                                                 tmp_path: Path) -> None:
    exe = compile_c(PROGRAMS / "rdwr_spi.c", tmp_path / "rdwr_spi")
    spi = board.board.spi["0"]
    before = len(spi.log_snapshot())  # type: ignore[attr-defined]
    r = run(board, str(exe))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "rdwr 2 id 0117"
    assert lines[1] == "nack 0 errno - untouched 5a"  # i2c-virtio's short count, no errno
    # The total length, and the JEDEC ID ef 40 16 read as 16-bit words: each word is a
    # native (little-endian) u16 in the buffer, as with spidev on the board.
    assert lines[2] == "spi 5 rx 40 ef ff 16"
    (msg,) = spi.log_snapshot()[before:]  # type: ignore[attr-defined]
    # ONE message on the remote bus, each transfer with its own clock and word size.
    assert [(t.head.freq, t.head.bits_per_word) for t in msg.transfers] == [
        (1_000_000, 8), (20_000_000, 16)]
    first, second = (t.head for t in msg.transfers)
    assert (first.cs_delay_hold_ns, first.word_delay_ns) == (5000, 2000)
    assert (second.cs_delay_hold_ns, second.word_delay_ns) == (0, 0)
    assert msg.transfers[0].tx == b"\x9f"
    assert msg.transfers[1].rx_len == 4


def test_spi_tools_configure_and_pipe(board: Running) -> None:
    need("spi-config", "spi-tools")
    q = run(board, "spi-config", "-d", "/dev/spidev0.1", "-q")
    assert q.returncode == 0, q.stderr
    assert q.stdout.strip() == "/dev/spidev0.1: mode=0, lsb=0, bits=8, speed=50000000, spiready=0"
    # Mode and word size belong to the device and outlive the process that set them;
    # the default speed goes back to the maximum when the last user closes (spidev.c:659).
    both = run(board, "sh", "-c", "spi-config -d /dev/spidev0.1 -m 3 -s 1000000 && "
                                  "spi-config -d /dev/spidev0.1 -q")
    assert both.stdout.strip() == ("/dev/spidev0.1: mode=3, lsb=0, bits=8, speed=50000000, "
                                   "spiready=0")
    pipe = run(board, "sh", "-c", "printf 'hello, spi' | spi-pipe -d /dev/spidev0.1 -b 10 -n 1")
    assert pipe.returncode == 0, pipe.stderr
    assert pipe.stdout == "hello, spi"
    jedec = run(board, "sh", "-c", "printf '\\237\\0\\0\\0' | spi-pipe -d /dev/spidev0.0 -b 4 -n 1 "
                                   "| od -An -tx1")
    assert jedec.stdout.split() == ["ff", "ef", "40", "16"]


def test_static_program_gets_a_warning(board: Running, tmp_path: Path) -> None:
    exe = compile_c(PROGRAMS / "rdwr_spi.c", tmp_path / "rdwr_static", "-static")
    r = run(board, str(exe))
    assert "rdwr_static is statically linked: LD_PRELOAD does not apply" in r.stderr
    assert "open i2c: No such file or directory" in r.stdout  # this machine's /dev


def test_setuid_program_gets_a_warning(board: Running, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("making a program setuid to another user needs root")
    if os.statvfs(tmp_path).f_flag & os.ST_NOSUID:
        pytest.skip(f"{tmp_path} is on a nosuid mount")
    exe = compile_c(PROGRAMS / "rdwr_spi.c", tmp_path / "rdwr_suid")
    os.chmod(tmp_path, 0o755)
    os.chown(exe, 65534, 65534)  # nobody: exec changes the effective uid (AT_SECURE)
    os.chmod(exe, 0o4755)
    r = run(board, str(exe))
    assert "rdwr_suid is setuid/setgid" in r.stderr
    assert "busbridge mount" in r.stderr
    assert "open i2c: No such file or directory" in r.stdout  # this machine's /dev
    # Setuid to the user who runs it changes nothing: preloaded, no warning.
    os.chown(exe, os.getuid(), os.getgid())
    os.chmod(exe, 0o4755)
    same = run(board, str(exe))
    assert "setuid" not in same.stderr
    assert same.stdout.splitlines()[0] == "rdwr 2 id 0117"


def test_without_the_library_native_programs_are_told_why(board: Running,
                                                         tmp_path: Path) -> None:
    missing = tmp_path / "missing.so"
    env = dict(os.environ, BUSBRIDGE_PRELOAD_LIBRARY=str(missing))
    r = run(board, "true", env=env)
    assert r.returncode == 0
    assert f"BUSBRIDGE_PRELOAD_LIBRARY={missing} does not exist" in r.stderr
    assert "compiler" not in r.stderr  # the build is not what went wrong
    py = run(board, sys.executable, "-c", "pass", env=env)
    assert "preload" not in py.stderr  # Python programs have the drop-ins anyway


def test_no_native_runs_the_program_without_the_library(board: Running) -> None:
    r = run(board, shutil.which("env") or "env", opts=("--no-native",))
    assert r.returncode == 0
    assert "LD_PRELOAD=" not in r.stdout or "busbridge" not in r.stdout.split(
        "LD_PRELOAD=")[1].splitlines()[0]
    with_lib = run(board, "env")
    assert "libbusbridge_preload.so" in with_lib.stdout


def test_sigterm_reaches_the_command_and_its_status_comes_back(board: Running) -> None:
    child = ("import signal, sys, time\n"
             "signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))\n"
             "print('ready', flush=True)\n"
             "time.sleep(60)\n")
    e = dict(os.environ)
    proc = subprocess.Popen([*BUSBRIDGE, "--connect", board.url, "run", "--", sys.executable,
                             "-c", child], stdout=subprocess.PIPE, text=True, env=e,
                            stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_command_that_cannot_start_exits_as_in_the_shell(board: Running,
                                                          tmp_path: Path) -> None:
    not_elf = tmp_path / "not_elf"
    not_elf.write_bytes(b"\x7fELF garbage")
    not_elf.chmod(0o755)
    no_x = tmp_path / "no_x"
    no_x.write_text("true\n")
    for command, status, message in [
            ("/nonexistent/prog", 127, "/nonexistent/prog: No such file or directory"),
            ("no-such-command-here", 127, "no-such-command-here: command not found"),
            (str(not_elf), 126, f"{not_elf}: Exec format error"),
            (str(no_x), 126, f"{no_x}: Permission denied")]:
        for opts in ((), ("--no-native",)):
            r = run(board, command, opts=opts)
            assert r.returncode == status, (command, opts, r.stderr)
            assert r.stderr.strip().splitlines()[-1] == f"busbridge: error: {message}"

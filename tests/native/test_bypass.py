"""Calls that reach a device descriptor besides ioctl/read/write: each answers as
i2c-dev and spidev do in the kernel (Linux 6.1), and what bypasses libc (io_uring,
raw system calls) fails with an error instead of touching the library's state.

The C program is built with -O2 -D_FORTIFY_SOURCE=2, as distributions build, so its
pread() is glibc's __pread_chk().
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import Running

from .conftest import PROGRAMS, compile_c, run, unavailable


def io_uring_works() -> bool:
    """io_uring_setup (425 on every architecture) succeeds in this process."""
    libc = ctypes.CDLL(None, use_errno=True)
    params = ctypes.create_string_buffer(120)
    fd = libc.syscall(425, 1, params)
    if fd < 0:
        return False
    os.close(fd)
    return True


@pytest.fixture(scope="module")
def lines(board: Running, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    exe = compile_c(PROGRAMS / "bypass.c", tmp_path_factory.mktemp("bypass") / "bypass",
                    "-D_FORTIFY_SOURCE=2")
    nm = shutil.which("nm")
    if nm is None:
        unavailable("nm not found (apt-get install binutils)")
    assert nm is not None
    imports = subprocess.run([nm, "-D", str(exe)], capture_output=True, text=True,
                             check=True).stdout
    assert "__pread_chk" in imports  # the fortified call is what this test exercises
    spi = board.board.spi["0"]
    before = len(spi.log_snapshot())  # type: ignore[attr-defined]
    r = run(board, str(exe))
    assert r.returncode == 0, r.stdout + r.stderr
    out = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    log = spi.log_snapshot()[before:]  # type: ignore[attr-defined]
    out["spi_log"] = " | ".join(" ".join(t.tx.hex() for t in m.transfers if t.tx) for m in log)
    return out


def test_writev_is_one_write_per_iovec(lines: dict[str, str]) -> None:
    # Two EEPROM writes (address, data) of 3 bytes each; one concatenated write
    # would have stored aa 01 21 bb from 0x0120.
    assert lines["writev"] == "6"
    assert lines["eeprom"] == "2 aa bb"


def test_readv_preadv_and_fortified_pread_read_the_device(lines: dict[str, str]) -> None:
    # Each iovec is one read message from the TMP117 (ID 0x0117): the device's bytes,
    # not the library's state.  i2c-dev allows positioned I/O and ignores the offset.
    assert lines["readv"] == "4 01 17 01 17"
    assert lines["preadv"] == "4 01 17 01 17"
    assert lines["pread_chk"] == "2 01 17"
    assert lines["preadv2_nowait"] == "-1 EOPNOTSUPP"  # do_loop_readv_writev: only RWF_HIPRI
    assert lines["preadv_negative"] == "-1 EINVAL"


def test_a_write_to_an_absent_address_changes_nothing(lines: dict[str, str]) -> None:
    assert lines["writev_nack"] == "0"  # i2c-virtio's NACK: 0 messages done
    assert lines["pwritev_nack"] == "0"
    assert lines["after_writev"] == "2 01 17"  # I2C_RDWR still works afterwards


def test_truncate_mmap_and_splice_family_are_refused(lines: dict[str, str]) -> None:
    for call in ("ftruncate", "truncate", "sendfile_from", "splice_from", "splice_to",
                 "copy_file_range"):
        assert lines[call] == "-1 EINVAL", call
    assert lines["mmap"] == "-1 ENODEV"  # neither driver has an mmap method
    assert lines["after_truncate"] == "2 01 17"  # no SIGBUS, the descriptor still works


def test_raw_system_calls_fail_instead_of_reaching_the_state(lines: dict[str, str]) -> None:
    # What io_uring or a raw syscall sees: the descriptor is inert, never the state.
    assert lines["raw_read"] == "-1 EBADF"
    assert lines["raw_write"] == "-1 EPERM"
    assert lines["raw_ftruncate"] == "-1 EPERM"
    assert lines["after_raw"] == "2 01 17"
    assert lines["getfl"] == "O_RDWR"  # not the descriptor's O_WRONLY|O_APPEND
    assert lines["getfl_nonblock"] == "O_RDWR|O_NONBLOCK"
    assert lines["raw_write_after_setfl"] == "-1 EPERM"  # F_SETFL kept O_APPEND


def test_o_path_descriptor_does_no_io(lines: dict[str, str]) -> None:
    assert lines["o_path"] == "opened"
    assert lines["o_path_ioctl"] == "-1 EBADF"
    assert lines["o_path_read"] == "-1 EBADF"
    assert lines["o_path_reopen"] == "2 01 17"  # open("/proc/self/fd/N"): the device


def test_reopen_through_proc_opens_the_device_again(lines: dict[str, str]) -> None:
    assert lines["reopen"] == "2 01 17"
    # A new open file: the first one's I2C_SLAVE 0x48 is not its address (0: NACK).
    assert lines["reopen_own_address"] == "0"


def test_only_the_kernels_device_names_open(lines: dict[str, str]) -> None:
    assert lines["i2c-01"] == "-1 ENOENT"
    assert lines["spidev0.00"] == "-1 ENOENT"
    assert lines["spidev00.0"] == "-1 ENOENT"


def test_spidev_vectors_and_no_positioned_io(lines: dict[str, str]) -> None:
    assert lines["spi_writev"] == "4"
    assert lines["spi_readv"] == "4"
    # Two transfers of 2 bytes (one per iovec), then the read's transfer of zeros.
    assert lines["spi_log"].startswith("0102 | 0304")
    assert lines["spi_preadv"] == "-1 ESPIPE"  # stream_open
    assert lines["spi_preadv2_current"] == "4"  # offset -1: the file position, allowed
    assert lines["spi_pread_chk"] == "-1 ESPIPE"
    assert lines["spi_sendfile_offset"] == "-1 ESPIPE"


def test_exec_keeps_a_device_descriptor_usable(board: Running, tmp_path: Path) -> None:
    # The program's descriptor cannot be mapped (it is write-only): after exec the
    # library maps the state through a read-write reopen, and the address set
    # before exec still holds.
    script = ("import fcntl, os, sys\n"
              "fd = os.open('/dev/i2c-1', os.O_RDWR)\n"
              "os.set_inheritable(fd, True)\n"
              "path = os.open('/dev/i2c-1', os.O_PATH)\n"  # inherited too: no state page
              "os.set_inheritable(path, True)\n"
              "fcntl.ioctl(fd, 0x0703, 0x48)\n"  # I2C_SLAVE in this process
              "os.write(fd, b'\\x0f')\n"
              "os.execv(sys.executable, [sys.executable, '-c',\n"
              "  'import os; print(os.read(%d, 2).hex())' % fd])\n")
    py = shutil.which("python3")
    assert py is not None
    r = run(board, py, "-c", script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0117"  # the address set before exec, read after it


def test_calls_after_the_agent_is_gone_fail_enodev(board: Running) -> None:
    # A child that outlives `busbridge run`: connected while the run lasts, then the
    # agent goes; every later call fails ENODEV, the first one included.
    script = ("import errno, os, time\n"
              "fd = os.open('/dev/i2c-1', os.O_RDWR)\n"
              "r, w = os.pipe()\n"
              "if os.fork():\n"
              "    os.read(r, 1)\n"
              "    os._exit(0)\n"
              "os.write(fd, b'\\x0f')\n"  # this child's connection to the agent is up
              "os.write(w, b'x')\n"
              "errs = []\n"
              "for _ in range(600):\n"
              "    try:\n"
              "        os.write(fd, b'\\x0f')\n"
              "    except OSError as e:\n"
              "        errs.append(errno.errorcode[e.errno])\n"
              "        if len(errs) == 2:\n"
              "            break\n"
              "    time.sleep(0.1)\n"
              "print(*errs, flush=True)\n")
    py = shutil.which("python3")
    assert py is not None
    r = run(board, py, "-c", script)  # returns when the orphan closes stdout
    assert r.stdout.split() == ["ENODEV", "ENODEV"], r.stderr


def test_node_fs_through_io_uring_fails_instead_of_corrupting(board: Running) -> None:
    node = shutil.which("node")
    if node is None:
        unavailable("node not found (apt-get install nodejs)")
    assert node is not None
    spi = board.board.spi["0"]
    before = len(spi.log_snapshot())  # type: ignore[attr-defined]
    # busbridge run turns libuv's io_uring off unless asked: the calls reach the library.
    default = run(board, node, str(PROGRAMS / "spidev_fs.js"))
    assert default.stdout.split() == ["write", "2", "read", "2"], default.stderr
    assert [t.tx for m in spi.log_snapshot()[before:]  # type: ignore[attr-defined]
            for t in m.transfers][:1] == [b"\x01\x02"]
    # Asked for: io_uring bypasses libc and meets the inert descriptor.
    if not io_uring_works():
        pytest.skip("io_uring is disabled here (sysctl or seccomp): libuv falls back")
    env = dict(os.environ, UV_USE_IO_URING="1")
    uring = run(board, node, str(PROGRAMS / "spidev_fs.js"), env=env)
    assert uring.stdout.split() == ["write", "EPERM", "read", "EBADF"], uring.stderr

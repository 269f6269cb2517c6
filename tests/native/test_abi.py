"""The kernel's answers, call by call: i2c-dev and spidev through the preload library.

programs/ioctl_checks.py runs once under `busbridge run` and reports each
call's result or errno; the expectations below cite the Linux 6.1 source line
that gives that answer (drivers/i2c/i2c-dev.c, drivers/spi/spidev.c,
drivers/spi/spi.c, drivers/i2c/i2c-core-smbus.c, drivers/i2c/busses/i2c-virtio.c).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from conftest import Running

from bridge.buses.sim import SIM_I2C_FUNCTIONALITY

from .conftest import PROGRAMS, run

EXPECTED: dict[str, Any] = {
    "funcs": SIM_I2C_FUNCTIONALITY,            # I2C_FUNCS: the remote adapter's
    "slave_0x80_7bit": "EINVAL",               # i2c-dev.c:403-405
    "tenbit_on": 0,
    "slave_0x80_10bit": 0,
    "slave_0x400": "EINVAL",
    "tenbit_off": 0,
    "slave_0x48": 0,
    "write_pointer": 1,                        # write(): count
    "read_id": "0117",
    "pread_id": "0117",                        # i2c-dev keeps FMODE_PREAD: a plain read
    "lseek": "ESPIPE",                         # .llseek = no_llseek
    "slave_absent": 0,                         # no EBUSY: no local driver owns it
    "read_nack": 0,                            # i2c_transfer_buffer_flags: short count 0
    "write_nack": 0,
    "rdwr_id": "0117",
    "rdwr_nack_count": 0,                      # i2c-virtio: messages completed, no errno
    "rdwr_nack_untouched": "5a00",
    "rdwr_mid_chain_count": 1,
    "rdwr_zero_msgs": "EINVAL",                # i2c-dev.c:443
    "rdwr_null_msgs": "EINVAL",
    "rdwr_43_msgs": "EINVAL",                  # :450 I2C_RDWR_IOCTL_MAX_MSGS
    "rdwr_42_msgs": 42,
    "rdwr_8193_bytes": "EINVAL",               # :250
    "rdwr_8192_bytes": 1,
    "rdwr_bad_buffer": "EFAULT",               # :256 memdup_user
    "rdwr_bad_arg": "EFAULT",                  # :438
    "rdwr_nostart": "EOPNOTSUPP",              # not carried by virtio-i2c: refused
    "rdwr_recv_len_write": "EINVAL",           # :275-284
    "rdwr_recv_len_short": "EINVAL",
    "rdwr_recv_len": "011700",                 # count 1, one byte, rest untouched
    "smbus_bad_size": "EINVAL",                # :318-331
    "smbus_bad_rw": "EINVAL",                  # :334-340
    "smbus_null_data": "EINVAL",               # :352-356
    "smbus_quick": 0,
    "smbus_word": 0x1701,
    "smbus_block_len_0": "EINVAL",             # i2c-core-smbus.c:571-578
    "smbus_block_len_33": "EINVAL",
    "smbus_i2c_block": "020117",
    "smbus_block_broken": 32,                  # i2c-dev.c:374-380
    "pec_on": 0,                               # the sim adapter has I2C_FUNC_SMBUS_PEC
    "pec_off": 0,
    "smbus_nack": "EIO",                       # i2c-core-smbus.c:472-475
    "retries_big": "EINVAL",                   # i2c-dev.c:473
    "retries": 0,
    "timeout_big": "EINVAL",                   # :483
    "timeout": 0,
    "unknown_ioctl": "ENOTTY",                 # :494
    "spi_ioctl_on_i2c": "ENOTTY",
    "getfl_accmode": 2,                        # O_RDWR as opened
    "poll": 5,                                 # POLLIN|POLLOUT at once (no poll method)
    "epoll": "EPERM",                          # epoll_ctl: file_can_poll() is false
    "dup_shares_address": "0117",              # state lives in the open file
    "fork_child": 0,
    "exec_child": "0117",
    "threads": ["0117", 40],
    "write_on_rdonly": "EBADF",                # vfs_write without FMODE_WRITE
    "absent_bus": "ENOENT",                    # no such device node
    "spi_mode": 0,
    "spi_bits": 8,
    "spi_speed": 50_000_000,                   # the controller's maximum
    "spi_set_mode3": 0,
    "spi_mode32": 3,
    "spi_set_3wire": "EINVAL",                 # spi.c:3726-3746 unsupported mode bits
    "spi_set_unknown_bit": "EINVAL",           # spidev.c:420
    "spi_set_lsb": 0,
    "spi_lsb": 1,
    "spi_set_bits_12": "EINVAL",               # spi.c:3655 bits_per_word_mask
    "spi_set_bits_16": 0,
    "spi_bits_after": 16,
    "spi_set_speed_0": "EINVAL",               # spidev.c:474
    "spi_set_speed": 0,
    "spi_speed_after": 1_000_000,
    "spi_loopback": "11223344",
    "spi_loopback_total": 4,                   # spidev_message returns the total length
    "spi_cs_change": 2,
    "spi_message_0": 0,                        # spidev.c:337, 500
    "spi_size_33": "EINVAL",                   # :334
    "spi_nr_7": "ENOTTY",                      # :328-331
    "spi_dir_read": "ENOTTY",
    "spi_type_j": "ENOTTY",                    # :355
    "spi_odd_len_16bit": "EINVAL",             # spi.c:3966-3975
    "spi_dual_without_mode": "EINVAL",         # spi.c:3990-4001
    "spi_nbits_3": "EINVAL",
    "spi_over_bufsiz": "EMSGSIZE",             # spidev.c:249-260
    "spi_bad_tx": "EFAULT",                    # :264-267
    "spi_write": 3,
    "spi_read": 3,
    "spi_read_over_bufsiz": "EMSGSIZE",        # :153
    "spi_pread": "ESPIPE",                     # stream_open()
    "spi_lseek": "ESPIPE",
    "spi_absent_cs": "ENOENT",
}


@pytest.fixture(scope="module")
def results(board: Running) -> dict[str, Any]:
    r = run(board, sys.executable, str(PROGRAMS / "ioctl_checks.py"), timeout=300)
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    return out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_call_answers_as_the_kernel(results: dict[str, Any], name: str) -> None:
    got = results.get(name)
    want = EXPECTED[name]
    if want == "EOPNOTSUPP":  # errno.errorcode names 95 ENOTSUP on Linux
        assert got in ("EOPNOTSUPP", "ENOTSUP")
    else:
        assert got == want


def test_every_spi_transfer_field_reaches_the_board(results: dict[str, Any],
                                                    board: Running) -> None:
    assert results["spi_cs_change"] == 2
    log = board.board.spi["0"].log_snapshot()  # type: ignore[attr-defined]
    (msg,) = [m for m in log if [t.tx for t in m.transfers] == [b"\xc5", b"\xc6"]]
    first, last = (t.head for t in msg.transfers)
    assert (msg.cs, first.cs_change, first.cs_delay_hold_ns) == (1, 1, 7000)
    # The wire releases chip select after every message: the last cs_change is dropped.
    assert (last.cs_change, last.word_delay_ns) == (0, 3000)

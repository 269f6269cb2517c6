"""The conformance kit against the Linux backend: busbridge serve inside the i2c-stub
QEMU guest (an SMBus-only adapter), reached through QEMU's user-mode network.

The device-level and timing checks skip there (none of the default board's devices
exist, and the kernel's stub answers too fast to keep a bus busy); the protocol-level
checks run, with the same known failures as on the simulated board.
"""

from __future__ import annotations

import pytest
from conformance.test_conformance import CHECK_IDS, KNOWN_FAILURES, judge
from e2e.board_guest import BoardGuest
from test_i2c_stub_guest import guest  # noqa: F401  (the booted guest)

from bridge.conformance import Report, Target, run_checks

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stub_report(guest: BoardGuest) -> Report:  # noqa: F811
    return run_checks(Target("127.0.0.1", guest.port, timeout=20.0))


@pytest.mark.parametrize("check_id", CHECK_IDS)
def test_linux_backend_in_the_i2c_stub_guest(stub_report: Report, check_id: str) -> None:
    judge(stub_report, check_id, KNOWN_FAILURES)

"""Load suite: 32 clients on 5 buses (3 I2C, 2 SPI), every answer counted and
held against the buses' transaction logs (see load.py for what each client does).

The default run is short; ``pytest -m slow tests/reliability/test_load.py`` (run
by .ci/run) holds the load for 30 s.  Figures are printed (``-s`` shows them).
"""

from __future__ import annotations

import dataclasses

import pytest

from bridge.config import Board

from .load import Figures, run_load


def assert_nothing_lost(fig: Figures) -> None:
    print(fig.summary())
    assert fig.unexpected == []
    assert fig.clients >= 32
    assert fig.buses >= 4
    assert fig.answered + fig.lost_by_disconnect == fig.sent, "a request got no answer"
    assert fig.lost_by_disconnect <= fig.disconnects * 5 * 4, "more lost than were in flight"
    assert fig.duplicates == 0
    assert fig.missing_on_bus == 0
    assert fig.order_violations == 0
    assert fig.interleaved == 0
    assert fig.expected_errors > 0
    assert fig.disconnects == 4
    assert fig.ok > 1000


def test_load_short() -> None:
    assert_nothing_lost(run_load(2.5))


@pytest.mark.slow
def test_load_long() -> None:
    assert_nothing_lost(run_load(30.0))


def test_the_checker_catches_a_duplicated_and_an_interleaved_transaction() -> None:
    def tamper(board: Board) -> None:
        bus = board.i2c["a"]
        ok = next(e for e in reversed(bus.log) if e.ok)
        bus.log.append(dataclasses.replace(ok, seq=ok.seq + 1000))
        bus.log.append(dataclasses.replace(ok, seq=ok.seq + 1001, reads=(b"\x00" * 4,)))

    fig = run_load(0.5, clients=4, droppers=0, tamper=tamper)
    assert fig.duplicates == 2
    assert fig.interleaved == 1

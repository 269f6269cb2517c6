"""The bench's verdicts: a target judged against a floor that a busy machine disturbed
says so (a newcomer saw PASS for a throughput target that was not met: the floor's
own throughput had collapsed in that run)."""

from __future__ import annotations

from bridge.bench.figures import Figure
from bridge.bench.report import report


def figures(floor: list[float], ours: list[float]) -> dict[str, Figure]:
    return {
        "floor throughput": Figure("floor throughput", "req/s", floor),
        "throughput": Figure("throughput", "req/s", ours, baseline="floor throughput",
                             better="higher", target=1.0),
    }


def verdict(figs: dict[str, Figure]) -> str:
    lines, _ok = report(figs)
    return next(line for line in lines if line.startswith("  throughput"))


def test_a_steady_run_gives_a_plain_verdict() -> None:
    line = verdict(figures([250e3, 255e3, 252e3], [251e3, 256e3, 253e3]))
    assert line.endswith("PASS")


def test_a_disturbed_floor_makes_the_verdict_unsure() -> None:
    line = verdict(figures([250e3, 123e3, 252e3], [251e3, 250e3, 253e3]))
    assert "PASS (unsure: floor throughput varied by over 25 %; rerun)" in line


def test_a_noisy_figure_makes_a_miss_unsure_too() -> None:
    line = verdict(figures([250e3, 251e3, 252e3], [150e3, 240e3, 245e3]))
    assert "MISS (unsure: throughput varied by over 25 %; rerun)" in line

"""A figure: one measured quantity, its value at each repetition, its baseline and target.

Each figure is the median of several repetitions; the spread between them is
kept, and a wide one is warned about.  Ratios are taken to a baseline
measured seconds earlier on the same machine, which is what makes them
comparable across machines where absolute times are not: each repetition's
figure is divided by the same repetition's baseline, and the ratio reported
is the median of those (a machine that gets busier between repetitions moves
both halves of a ratio alike).
"""

from __future__ import annotations

import os
import statistics
import sys
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Figure:
    """``values`` per repetition; ``ratio`` to the figure named ``baseline``; ``target`` the
    ratio to meet, ``better`` says in which direction; ``context`` names a second
    reference shown beside it (the bare echo), never judged."""

    name: str
    unit: str
    values: list[float]  # one per repetition
    baseline: str = ""
    better: str = "lower"
    target: float | None = None  # ratio target
    samples: list[int] = field(default_factory=list)  # ns, last repetition, for the plot
    context: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def spread(self) -> float:
        lo, hi = min(self.values), max(self.values)
        return (hi - lo) / self.median if self.median else 0.0


def percentile_us(samples: list[int], q: float) -> float:
    """The ``q`` quantile of ``samples`` (ns), in µs."""
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))] / 1000.0


def ratio(figs: dict[str, Figure], f: Figure, baseline: str | None = None) -> float | None:
    """The median over repetitions of ``f`` / its baseline (or ``baseline``) in the same
    repetition; None without one."""
    name = f.baseline if baseline is None else baseline
    base = figs.get(name) if name else None
    if base is None:
        return None
    pairs = [v / b for v, b in zip(f.values, base.values, strict=False) if b]
    return statistics.median(pairs) if pairs else None


def met(figs: dict[str, Figure], f: Figure) -> bool | None:
    """Whether ``f`` meets its target; None when it has none (or no baseline)."""
    r = ratio(figs, f)
    if f.target is None or r is None:
        return None
    return r <= f.target if f.better == "lower" else r >= f.target


def noisy(figs: dict[str, Figure], limit: float = 0.25) -> list[str]:
    """Figures whose repetitions spread by more than ``limit`` of their median."""
    return [f.name for f in figs.values() if len(f.values) > 1 and f.spread > limit]


def to_json(figs: dict[str, Figure], **about: Any) -> dict[str, Any]:
    """Every figure with its median, spread, ratio and whether it met its target
    (``--json``), without the samples; ``about`` describes the run."""
    out: dict[str, Any] = {"python": sys.version.split()[0], "cpus": os.cpu_count(),
                           **about, "figures": {}}
    for f in figs.values():
        d = asdict(f)
        d.pop("samples")
        d["median"] = f.median
        d["spread"] = f.spread
        d["ratio"] = ratio(figs, f)
        d["met"] = met(figs, f)
        if f.context:
            d["context_ratio"] = ratio(figs, f, f.context)
        out["figures"][f.name] = d
    return out

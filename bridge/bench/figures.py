"""A figure: one measured quantity, its value at each repetition, its baseline and target.

Each figure is the median of several repetitions; the spread between them is
kept, and a wide one is warned about.  Ratios are taken to a baseline
measured seconds earlier on the same machine, which is what makes them
comparable across machines where absolute times are not.
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
    ratio to meet, ``better`` says in which direction."""

    name: str
    unit: str
    values: list[float]  # one per repetition
    baseline: str = ""
    better: str = "lower"
    target: float | None = None  # ratio target
    samples: list[int] = field(default_factory=list)  # ns, last repetition, for the plot

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


def ratio(figs: dict[str, Figure], f: Figure) -> float | None:
    """``f``'s median over its baseline's, or None without a baseline."""
    if not f.baseline or f.baseline not in figs:
        return None
    return f.median / figs[f.baseline].median


def noisy(figs: dict[str, Figure], limit: float = 0.25) -> list[str]:
    """Figures whose repetitions spread by more than ``limit`` of their median."""
    return [f.name for f in figs.values() if len(f.values) > 1 and f.spread > limit]


def to_json(figs: dict[str, Figure]) -> dict[str, Any]:
    """Every figure with its median, spread and ratio (``--json``), without the samples."""
    out: dict[str, Any] = {"python": sys.version.split()[0], "cpus": os.cpu_count(),
                           "figures": {}}
    for f in figs.values():
        d = asdict(f)
        d.pop("samples")
        d["median"] = f.median
        d["spread"] = f.spread
        d["ratio"] = ratio(figs, f)
        out["figures"][f.name] = d
    return out

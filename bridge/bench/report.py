"""The bench's output: the results table, the targets with PASS/MISS, and a latency PNG."""

from __future__ import annotations

from .figures import Figure, met, percentile_us, ratio


def _value(f: Figure) -> str:
    return f"{f.median:,.0f}" if f.unit == "req/s" else f"{f.median:,.1f}"


def _ratio(r: float | None) -> str:
    return f"{r:.2f}x" if r is not None else ""


def report(figs: dict[str, Figure]) -> tuple[list[str], bool]:
    """Lines of the results table and of the targets, and whether every target was met."""
    lines = [f"{'figure':42} {'median':>9} {'unit':5} {'ratio':>7}  {'to':38} {'x echo':>7} "
             f"{'spread':>6}", "-" * 122]
    for f in figs.values():
        lines.append(f"{f.name:42} {_value(f):>9} {f.unit:5} {_ratio(ratio(figs, f)):>7}  "
                     f"{f.baseline:38} {_ratio(ratio(figs, f, f.context)):>7} "
                     f"{f.spread * 100:5.0f}%")
    targets = [f for f in figs.values() if f.target is not None]
    ok = True
    if targets:
        lines += ["", "targets (ratios to baselines measured in the same run):"]
    for f in targets:
        r, m = ratio(figs, f), met(figs, f)
        ok &= bool(m)
        sign = "≤" if f.better == "lower" else "≥"
        lines.append(f"  {f.name:36} {_ratio(r):>7} {sign} {f.target:<4g} x {f.baseline:38} "
                     f"{'PASS' if m else 'MISS'}{_unsure(figs, f)}")
    return lines, ok


def _unsure(figs: dict[str, Figure], f: Figure) -> str:
    """A warning after a verdict whose figure or baseline spread by over 25 % between
    repetitions: a disturbed floor on a busy machine can turn a miss into a PASS."""
    base = figs.get(f.baseline)
    wide = [g.name for g in (f, base) if g is not None and len(g.values) > 1 and g.spread > 0.25]
    return f" (unsure: {' and '.join(wide)} varied by over 25 %; rerun)" if wide else ""


def plot(figs: dict[str, Figure], path: str) -> bool:
    """Latency distributions as a PNG; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5))
    series = [(name, label, figs[name].samples) for name, label in (
        ("echo p50", "bare uvloop echo"),
        ("msgpack echo floor p50", "msgpack echo floor"),
        ("register read p50", "busbridge register read"),
    ) if name in figs and figs[name].samples]
    if series:
        top = max(sorted(x)[int(len(x) * 0.995) - 1] for _n, _l, x in series) / 1000
        bins = [top * i / 120 for i in range(121)]  # one scale for all, so widths compare
        for _name, label, samples in series:
            us = [x / 1000 for x in samples if x / 1000 <= top]
            p50 = percentile_us(samples, 0.5)
            ax.hist(us, bins=bins, alpha=0.6, label=f"{label} (p50 {p50:.0f} µs)")
    ax.set_xlabel("round trip (µs), one request in flight, loopback")
    ax.set_yscale("log")  # the echo's narrow peak would flatten the others
    ax.set_ylabel("requests (log scale)")
    ax.set_title("busbridge vs a bare echo and the msgpack floor: latency distribution")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True

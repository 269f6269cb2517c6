"""The bench's output: the results table, and the latency distributions as a PNG."""

from __future__ import annotations

from .figures import Figure, percentile_us, ratio


def report(figs: dict[str, Figure]) -> tuple[list[str], bool]:
    """Lines of the results table and whether every target was met."""
    lines = [f"{'figure':40} {'median':>10} {'unit':6} {'ratio':>6} {'target':>8} "
             f"{'spread':>7}", "-" * 83]
    ok = True
    for f in figs.values():
        r = ratio(figs, f)
        tgt = ""
        if f.target is not None and r is not None:
            met = r <= f.target if f.better == "lower" else r >= f.target
            ok &= met
            tgt = f"{'≤' if f.better == 'lower' else '≥'}{f.target:g} {'ok' if met else 'MISS'}"
        val = f"{f.median:,.0f}" if f.unit == "req/s" else f"{f.median:,.1f}"
        lines.append(f"{f.name:40} {val:>10} {f.unit:6} "
                     f"{(f'{r:.2f}x' if r is not None else ''):>6} {tgt:>8} "
                     f"{f.spread * 100:6.0f}%")
    return lines, ok


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
    ax.set_title("busbridge vs a bare echo: latency distribution")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True

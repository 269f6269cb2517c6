"""``busbridge bench``: the bridge against a bare echo, measured in the same run.

Absolute times differ between machines; ratios to a baseline measured seconds
earlier on the same machine do not (much).  Each figure is the median of
several repetitions; the spread between repetitions is reported and a wide
one is warned about.

Servers run in their own processes pinned to another core than the client,
as a board and a guest would be.  The baseline is a uvloop ``Protocol`` that
answers every length-prefixed frame with a reply of the size the bridge sends
back (the same bytes cross the socket); the "future floor" is the same echo
awaited through one future per request, the least any awaitable client API
can cost.

- ``echo_server``, ``bridge_server``: the two server programs (``python -m``)
- ``processes``: starting them pinned to a core; the client's event loop
- ``workload``: the bench board and the measured requests
- ``floors``: the baselines' clients (echo, echo+future, the msgpack floors)
- ``clients``: busbridge's clients, latency and throughput
- ``cpu``: CPU time per request of each side, from ``/proc``
- ``memory``: the server's RSS over many requests, heap per queued request
- ``runner``: one run of every figure; ``figures``: the figure and its ratio;
  ``report``: the table and the plot

This module only parses arguments and imports the rest when a bench runs, so
``python -m bridge.bench.echo_server`` stays a bare uvloop process.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``benchmarks/bench.py``; ``busbridge bench`` calls the same."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="one short repetition (smoke test)")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--plot", metavar="FILE.png")
    ap.add_argument("--memory", type=int, metavar="N", default=None,
                    help="also run N pipelined requests watching the server's RSS "
                         "(1000000 for the full check)")
    args = ap.parse_args(argv)
    return bench_command(args.reps, args.quick, args.json, args.plot, args.memory)


def bench_command(reps: int, quick: bool, json_path: str | None, plot_path: str | None,
                  memory: int | None = None) -> int:
    """Run every figure (and the memory figures if asked, or ``quick``); print the table."""
    from .figures import noisy, to_json
    from .memory import run_memory
    from .report import plot, report
    from .runner import run_bench

    t0 = time.monotonic()

    def progress(s: str) -> None:
        print(f"bench: {s}", file=sys.stderr, flush=True)

    from ..compiled import build_status

    build = build_status()
    load0 = _load()
    progress(build.summary())
    figs = run_bench(reps=reps, quick=quick, progress=progress)
    mem = None
    if memory is not None or quick:
        mem = run_memory(memory if memory is not None else 20_000, progress)
    load1 = _load()
    lines, ok = report(figs)
    print(f"build: {build.summary()}; Python {sys.version.split()[0]}; "
          f"load average {load0} at the start, {load1} at the end")
    print("\n".join(lines))
    print(f"\n{reps if not quick else 1} repetition(s), medians; ratio = median over "
          f"repetitions of figure / baseline of the same repetition; x echo: the same to the "
          f"bare echo; {time.monotonic() - t0:.0f} s")
    for name in noisy(figs):
        print(f"warning: '{name}' varied by more than 25% between repetitions: "
              "this machine is noisy, compare ratios with care", file=sys.stderr)
    if mem is not None:
        print()
        print("\n".join(mem.lines()))
        ok &= mem.flat and mem.no_heap_regression
    if json_path:
        data = to_json(figs, build=build.state, compiled=list(build.compiled),
                       load_average=[load0, load1])
        if mem is not None:
            data["memory"] = {"requests": mem.requests, "rss": mem.rss,
                              "growth_bytes": mem.growth,
                              "bytes_per_in_flight": mem.bytes_per_in_flight,
                              "flat": mem.flat, "no_heap_regression": mem.no_heap_regression}
        with open(json_path, "w") as fh:
            json.dump(data, fh, indent=2)
    if plot_path and not plot(figs, plot_path):
        print("warning: matplotlib is not installed; no plot (pip install busbridge[bench])",
              file=sys.stderr)
    if not quick:
        print("all targets met" if ok else "some targets missed")
    return 0


def _load() -> str:
    """The 1-minute load average: how busy the machine was (the figures are wall-clock)."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "unknown"


__all__ = ["bench_command", "main"]

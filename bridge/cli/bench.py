"""``busbridge bench``: the click command only; the measuring itself is :mod:`bridge.bench`.

The bench engine is imported when the command runs, so no other command pays for it.
"""

from __future__ import annotations

import click

from .common import CONTEXT, CliError


@click.command(context_settings=CONTEXT)
@click.option("--reps", type=click.IntRange(1, 50), default=5, show_default=True,
              help="Repetitions; each figure is the median.")
@click.option("--quick", is_flag=True,
              help="One short repetition: a smoke test, not a measurement.")
@click.option("--json", "json_path", metavar="FILE", help="Write the figures as JSON.")
@click.option("--plot", "plot_path", metavar="FILE.png",
              help="Write a latency-distribution plot (needs busbridge[bench]).")
@click.option("--memory", type=click.IntRange(1000), metavar="N", default=None,
              help="Also run N pipelined requests watching the server's RSS "
                   "(1000000 for the full check).")
def bench(reps: int, quick: bool, json_path: str | None, plot_path: str | None,
          memory: int | None) -> None:
    """Measure the bridge against a bare uvloop echo in the same run; print ratios."""
    if plot_path:  # checked first: a run of minutes must not end in "no plot"
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CliError("--plot needs matplotlib: pip install 'busbridge[bench]' "
                           "(nothing was measured)") from None
    from ..bench import bench_command

    bench_command(reps, quick, json_path, plot_path, memory)

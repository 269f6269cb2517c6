"""One bench run: every figure, ``reps`` times, baselines measured beside what they judge.

Within a repetition each baseline runs just before the bridge figures that are
divided by it, so a machine that gets busier between repetitions moves both.
The targets (issue 19) are ratios to baselines of the same run:

- register read p50 ≤ 1.15× and p99 ≤ 1.3× the msgpack echo floor's;
- pipelined throughput, one connection and four, ≥ 1.0× the msgpack floor's,
  pipelined the same way;
- the ``BlockingClient`` register read ≤ 1.1× a blocking-socket msgpack floor;
- CPU per register read, client and server each ≤ 2.0× the echo+future's.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .clients import (
    blocking_latency,
    bridge_latency,
    bridge_spi_latency,
    bridge_throughput,
)
from .cpu import CpuMeter
from .figures import Figure, percentile_us
from .floors import (
    blocking_msgpack_latency,
    echo_latency,
    echo_throughput,
    future_echo_latency,
    msgpack_latency,
    msgpack_throughput,
)
from .processes import bridge_server_process, echo_server_process, pin, run_client
from .workload import REG_READ_REQ, REG_READ_RES, SPI_4K

#: Requests in flight per connection in the throughput figures.
DEPTH = 64


class _Figures(dict[str, Figure]):
    """The figures of a run by name, in the order they were first added."""

    def add(self, name: str, unit: str, value: float, baseline: str = "",
            better: str = "lower", target: float | None = None,
            samples: list[int] | None = None, context: str = "") -> None:
        f = self.setdefault(name, Figure(name, unit, [], baseline, better, target,
                                         context=context))
        f.values.append(value)
        if samples is not None:
            f.samples = samples

    def latency(self, name: str, samples: list[int], baseline: str = "",
                target: float | None = None, context: str = "", p99: str = "",
                p99_baseline: str = "", p99_target: float | None = None,
                p99_context: str = "") -> None:
        """``name`` (p50) from ``samples`` and, if named, ``p99`` from the same samples."""
        self.add(name, "µs", percentile_us(samples, 0.5), baseline, target=target,
                 samples=samples, context=context)
        if p99:
            self.add(p99, "µs", percentile_us(samples, 0.99), p99_baseline, target=p99_target,
                     context=p99_context)

    def cpu(self, prefix: str, meter: CpuMeter, baseline: str = "",
            target: float | None = None) -> None:
        """Client and server CPU per request of one latency run."""
        for side, us in (("client", meter.client_us), ("server", meter.server_us)):
            self.add(f"{prefix}, {side}", "µs", us,
                     f"{baseline}, {side}" if baseline else "", target=target)


def run_bench(reps: int = 5, n: int = 2000, n_tp: int = 20000, quick: bool = False,
              progress: Callable[[str], None] = lambda s: None) -> dict[str, Figure]:
    """Every figure, ``reps`` times; returns them by name."""
    if quick:
        reps, n, n_tp = 1, 200, 1000
    pin(os.getpid(), 0)
    figs = _Figures()
    for rep in range(reps):
        progress(f"repetition {rep + 1}/{reps}")
        _baselines(figs, n, n_tp)
        _bridge(figs, n, n_tp)
        _default_loop(figs, n)
    return dict(figs)


def _baselines(figs: _Figures, n: int, n_tp: int) -> None:
    """The bare echo, the echo awaited through futures, and the msgpack floors."""
    with echo_server_process(REG_READ_RES) as srv:
        s = run_client(lambda: echo_latency(srv.port, REG_READ_REQ, REG_READ_RES, n))
        figs.latency("echo p50", s, p99="echo p99")
        meter = CpuMeter(srv.pid)
        s = run_client(lambda: future_echo_latency(srv.port, REG_READ_REQ, REG_READ_RES, n,
                                                   meter))
        figs.latency("echo+future p50", s, "echo p50")
        figs.cpu("echo+future CPU per request", meter)
        figs.add("echo throughput, 64 in flight", "req/s", run_client(
            lambda: echo_throughput(srv.port, REG_READ_REQ, REG_READ_RES, n_tp, DEPTH)),
            better="higher")
        figs.add("echo throughput, 4 conns x 64", "req/s", run_client(
            lambda: echo_throughput(srv.port, REG_READ_REQ, REG_READ_RES, n_tp // 4, DEPTH,
                                    conns=4)), better="higher")
    with echo_server_process(REG_READ_RES, msgpack=True) as srv:
        meter = CpuMeter(srv.pid)
        s = run_client(lambda: msgpack_latency(srv.port, n, meter))
        figs.latency("msgpack echo floor p50", s, "echo p50", p99="msgpack echo floor p99",
                     p99_baseline="echo p99")
        figs.cpu("msgpack floor CPU per request", meter)
        figs.add("msgpack floor throughput, 64 in flight", "req/s",
                 run_client(lambda: msgpack_throughput(srv.port, n_tp, DEPTH)),
                 "echo throughput, 64 in flight", "higher")
        figs.add("msgpack floor throughput, 4 conns x 64", "req/s",
                 run_client(lambda: msgpack_throughput(srv.port, n_tp // 4, DEPTH, conns=4)),
                 "echo throughput, 4 conns x 64", "higher")
        figs.latency("blocking msgpack floor p50", blocking_msgpack_latency(srv.port, n))
    with echo_server_process(SPI_4K + 24) as srv:
        s = run_client(lambda: echo_latency(srv.port, SPI_4K + 70, SPI_4K + 24,
                                            max(n // 4, 50)))
        figs.latency("echo 4 KiB p50", s)


def _bridge(figs: _Figures, n: int, n_tp: int) -> None:
    """busbridge on uvloop, judged against the baselines of the same repetition."""
    with bridge_server_process() as srv:
        meter = CpuMeter(srv.pid)
        s = run_client(lambda: bridge_latency(srv.port, n, meter))
        figs.latency("register read p50", s, "msgpack echo floor p50", 1.15, "echo p50",
                     p99="register read p99", p99_baseline="msgpack echo floor p99",
                     p99_target=1.3, p99_context="echo p99")
        figs.cpu("CPU per register read", meter, "echo+future CPU per request", 2.0)
        figs.add("throughput, 64 in flight", "req/s",
                 run_client(lambda: bridge_throughput(srv.port, n_tp, DEPTH)),
                 "msgpack floor throughput, 64 in flight", "higher", 1.0,
                 context="echo throughput, 64 in flight")
        figs.add("throughput, 4 conns x 4 buses", "req/s",
                 run_client(lambda: bridge_throughput(srv.port, n_tp // 4, DEPTH, conns=4)),
                 "msgpack floor throughput, 4 conns x 64", "higher", 1.0,
                 context="echo throughput, 4 conns x 64")
        figs.latency("BlockingClient register read p50", blocking_latency(srv.port, n),
                     "blocking msgpack floor p50", 1.1, "echo p50")
        s = run_client(lambda: bridge_spi_latency(srv.port, max(n // 4, 50)))
        figs.latency("4 KiB SPI p50", s, "echo 4 KiB p50")


def _default_loop(figs: _Figures, n: int) -> None:
    """The same register read on asyncio's own loop, against a BufferedProtocol echo."""
    with echo_server_process(REG_READ_RES, buffered=True, uv=False) as srv:
        s = run_client(lambda: echo_latency(srv.port, REG_READ_REQ, REG_READ_RES, n), uv=False)
        figs.latency("echo (asyncio, BufferedProtocol) p50", s)
    with bridge_server_process(uv=False) as srv:
        s = run_client(lambda: bridge_latency(srv.port, n), uv=False)
        figs.latency("register read p50 (asyncio)", s, "echo (asyncio, BufferedProtocol) p50")

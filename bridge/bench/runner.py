"""One bench run: every figure, ``reps`` times, baselines measured beside what they judge.

Within a repetition each baseline runs just before the bridge figures that are
divided by it, so a machine that gets busier between repetitions moves both.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .clients import (
    bridge_latency,
    bridge_spi_latency,
    bridge_throughput,
    echo_latency,
    echo_throughput,
    future_echo_latency,
    msgpack_echo_latency,
)
from .figures import Figure, percentile_us
from .processes import bridge_server_process, echo_server_process, pin, run_client
from .workload import REG_READ_REQ, REG_READ_RES, SPI_4K


def run_bench(reps: int = 5, n: int = 2000, n_tp: int = 20000, quick: bool = False,
              progress: Callable[[str], None] = lambda s: None) -> dict[str, Figure]:
    """Every figure, ``reps`` times; returns them by name."""
    if quick:
        reps, n, n_tp = 1, 200, 1000
    pin(os.getpid(), 0)
    figs: dict[str, Figure] = {}

    def add(name: str, unit: str, value: float, baseline: str = "", better: str = "lower",
            target: float | None = None, samples: list[int] | None = None) -> None:
        f = figs.setdefault(name, Figure(name, unit, [], baseline, better, target))
        f.values.append(value)
        if samples is not None:
            f.samples = samples

    for rep in range(reps):
        progress(f"repetition {rep + 1}/{reps}")
        with echo_server_process(REG_READ_RES) as port:
            s = run_client(lambda: echo_latency(port, REG_READ_REQ, REG_READ_RES, n))
            add("echo p50", "µs", percentile_us(s, 0.5), samples=s)
            add("echo p99", "µs", percentile_us(s, 0.99))
            s = run_client(lambda: future_echo_latency(port, REG_READ_REQ, REG_READ_RES, n))
            add("echo+future p50", "µs", percentile_us(s, 0.5), "echo p50")
            add("echo throughput, 64 in flight", "req/s",
                run_client(lambda: echo_throughput(port, REG_READ_REQ, REG_READ_RES, n_tp, 64)),
                better="higher")
            add("echo throughput, 4 conns x 64", "req/s",
                run_client(lambda: echo_throughput(port, REG_READ_REQ, REG_READ_RES, n_tp // 4, 64,
                                             conns=4)), better="higher")
        with echo_server_process(REG_READ_RES, msgpack=True) as port:
            s = run_client(lambda: msgpack_echo_latency(port, n))
            add("msgpack echo floor p50", "µs", percentile_us(s, 0.5), "echo p50", samples=s)
        with echo_server_process(SPI_4K + 24) as port:
            s = run_client(lambda: echo_latency(port, SPI_4K + 70, SPI_4K + 24, max(n // 4, 50)))
            add("echo 4 KiB p50", "µs", percentile_us(s, 0.5))
        with bridge_server_process() as port:
            s = run_client(lambda: bridge_latency(port, n))
            add("register read p50", "µs", percentile_us(s, 0.5), "echo p50", target=1.3, samples=s)
            add("register read p99", "µs", percentile_us(s, 0.99), "echo p99", target=1.5)
            add("throughput, 64 in flight", "req/s",
                run_client(lambda: bridge_throughput(port, n_tp, 64)),
                "echo throughput, 64 in flight", "higher", 0.7)
            add("throughput, 4 conns x 4 buses", "req/s",
                run_client(lambda: bridge_throughput(port, n_tp // 4, 64, conns=4)),
                "echo throughput, 4 conns x 64", "higher", 0.7)
            s = run_client(lambda: bridge_spi_latency(port, max(n // 4, 50)))
            add("4 KiB SPI p50", "µs", percentile_us(s, 0.5), "echo 4 KiB p50", target=1.4)
        with echo_server_process(REG_READ_RES, buffered=True, uv=False) as port:
            s = run_client(lambda: echo_latency(port, REG_READ_REQ, REG_READ_RES, n), uv=False)
            add("echo (asyncio, BufferedProtocol) p50", "µs", percentile_us(s, 0.5))
        with bridge_server_process(uv=False) as port:
            s = run_client(lambda: bridge_latency(port, n), uv=False)
            add("register read p50 (asyncio)", "µs", percentile_us(s, 0.5),
                "echo (asyncio, BufferedProtocol) p50", target=1.5)
    return figs

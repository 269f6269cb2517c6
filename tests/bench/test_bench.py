"""The benchmark runs end to end (a smoke test: it asserts nothing about time)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_bench_quick_runs_and_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "bench", "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    figures = data["figures"]
    for name in ("echo p50", "register read p50", "throughput, 64 in flight",
                 "throughput, 4 conns x 4 buses", "4 KiB SPI p50",
                 "register read p50 (asyncio)"):
        assert figures[name]["median"] > 0, name
    assert figures["register read p50"]["ratio"] > 0
    assert figures["msgpack echo floor p50"]["median"] > 0
    memory = data["memory"]  # the quick run also watches the server's RSS
    assert memory["requests"] > 0
    assert len(memory["rss"]) > 2
    assert memory["bytes_per_in_flight"] > 0
    assert "memory per in-flight request" in proc.stdout
    assert "register read p50" in proc.stdout

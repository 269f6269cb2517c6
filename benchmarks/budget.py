"""The instruction budget of each issue-19 target: what each side costs now, what it may cost.

Reads the JSON of ``benchmarks/instructions.py`` (instructions per request, per
side and per part) and of ``busbridge bench --json`` from the same build (the
wall-clock and CPU figures that turn a ratio target into instructions), and
prints, per target, the instructions the two sides spend now, the most they
may spend to meet it, and the cut; then each side's parts, now and scaled to
the budget of the tightest target::

    python benchmarks/budget.py instructions.json bench.json

The model (docs/performance.md explains it): what the bridge adds over a
baseline is user-space work, so extra CPU time = extra instructions / k, where
k (instructions per µs) is measured as the bridge's extra instructions over the
echo+future divided by its extra CPU time, per side.  The system calls and
wake-ups are the same for both and cancel out.

- CPU target, per side: bridge ≤ echo+future + k × CPU(echo+future).
- p50 target: client + server ≤ the msgpack floor's + k × 0.15 × floor p50.
- BlockingClient target: its client + the server ≤ the blocking floor's client +
  the msgpack floor's server + k × 0.1 × blocking floor p50.
- Throughput targets: pipelined client + server ≤ the pipelined msgpack floor's
  (the two processes alternate, docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

SIDES = ("client", "server")
#: Which side each part of benchmarks/hot_path.py runs on.
PART_SIDE = {
    "client: encode the request": "client",
    "client: decode the RESULT": "client",
    "server: decode + validate the frame": "server",
    "server: may_block check": "server",
    "server: run_i2c (virtio rules + sim bus)": "server",
    "server: encode the RESULT": "server",
}


def budgets(ins: dict[str, Any], bench: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per target: instructions now and allowed (client + server unless it says a side)."""
    s = ins["sides"]
    f = bench["figures"]

    def cpu(name: str, side: str) -> float:
        return float(f[f"{name}, {side}"]["median"])

    bridge, ef = s["busbridge AsyncClient"], s["echo+future"]
    k = {side: (bridge[side] - ef[side]) / max(
        cpu("CPU per register read", side) - cpu("echo+future CPU per request", side), 1e-3)
        for side in SIDES}
    k_both = (k["client"] + k["server"]) / 2
    floor, bfloor = s["msgpack floor"], s["blocking msgpack floor"]
    out: dict[str, dict[str, float]] = {}
    for side in SIDES:
        out[f"CPU per register read, {side} ≤ 2.0x echo+future"] = {
            "now": bridge[side],
            "budget": ef[side] + k[side] * cpu("echo+future CPU per request", side),
            "k": k[side]}
    out["register read p50 ≤ 1.15x msgpack floor"] = {
        "now": bridge["client"] + bridge["server"],
        "budget": floor["client"] + floor["server"]
        + k_both * 0.15 * f["msgpack echo floor p50"]["median"], "k": k_both}
    blocking = s["busbridge BlockingClient"]
    out["BlockingClient p50 ≤ 1.1x blocking floor"] = {
        "now": blocking["client"] + blocking["server"],
        "budget": bfloor["client"] + floor["server"]
        + k_both * 0.1 * f["blocking msgpack floor p50"]["median"], "k": k_both}
    pb, pf = s["busbridge, 64 in flight"], s["msgpack floor, 64 in flight"]
    out["throughput ≥ 1.0x msgpack floor, pipelined"] = {
        "now": pb["client"] + pb["server"], "budget": pf["client"] + pf["server"], "k": 0.0}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("instructions", help="JSON of benchmarks/instructions.py")
    ap.add_argument("bench", help="JSON of busbridge bench --json, same build")
    args = ap.parse_args()
    with open(args.instructions) as fh:
        ins = json.load(fh)
    with open(args.bench) as fh:
        bench = json.load(fh)
    b = budgets(ins, bench)
    print(f"build: {ins['build']}; instructions per register read\n")
    print(f"{'target':48} {'now':>8} {'budget':>8} {'cut':>8}  k (instr/µs)")
    for name, v in b.items():
        cut = max(v["now"] - v["budget"], 0)
        print(f"{name:48} {v['now']:8,.0f} {v['budget']:8,.0f} {cut:8,.0f}  "
              f"{v['k']:,.0f}" if v["k"] else
              f"{name:48} {v['now']:8,.0f} {v['budget']:8,.0f} {cut:8,.0f}")
    # Each side's parts, scaled to the budget of that side's tightest target.
    side_budget = {side: b[f"CPU per register read, {side} ≤ 2.0x echo+future"]["budget"]
                   for side in SIDES}
    seq = ins["sides"]["busbridge AsyncClient"]
    both = b["register read p50 ≤ 1.15x msgpack floor"]
    for side in SIDES:  # the p50 budget, shared in proportion to each side's cost now
        share = seq[side] / (seq["client"] + seq["server"])
        side_budget[side] = min(side_budget[side], both["budget"] * share)
    for side in SIDES:
        parts = {n: v for n, v in ins["parts"].items() if PART_SIDE.get(n) == side}
        rest = seq[side] - sum(parts.values())
        scale = min(side_budget[side] / seq[side], 1.0)
        print(f"\n{side}: {seq[side]:,.0f} now, {side_budget[side]:,.0f} budget "
              f"(x{scale:.2f} for every part)")
        for n, v in [*parts.items(), ("the rest: loop, transport, futures, glue", rest)]:
            print(f"  {n:46} {v:8,.0f} -> {v * scale:8,.0f}")


if __name__ == "__main__":
    main()

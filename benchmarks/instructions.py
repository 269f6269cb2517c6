"""Instructions per register read, counted by callgrind: each side of each client, each part.

Wall-clock figures move with machine load; instruction counts do not.  Every
figure here is the difference between two runs under ``valgrind
--tool=callgrind`` that differ only in the number of measured requests (N and
0: the same start-up, connection and warm-up), divided by N.  The side under
valgrind is the only one counted; the other runs at full speed.

* sides: client and server of the echo awaited through a future, the msgpack
  floor, busbridge's AsyncClient, the blocking msgpack floor and BlockingClient,
  one request in flight; and the msgpack floor and busbridge pipelined (64 in
  flight on one connection).  The same programs as ``busbridge bench``.
* parts: each piece of busbridge's hot path alone, in one process
  (``benchmarks/hot_path.py``), less the cost of the loop that calls it.

::

    python benchmarks/instructions.py                    # this build, ~15 min on 2 cores
    python benchmarks/instructions.py --only parts --n 5000
    scripts/build_compiled.sh /tmp/bb-compiled           # then the compiled build:
    PYTHONPATH=/tmp/bb-compiled python benchmarks/instructions.py --json compiled.json

Needs valgrind.  Counts are user-space instructions (no kernel), of CPython
3.11 here; the table in docs/performance.md came from this script.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bridge.bench.echo_server import frame_of
from bridge.bench.floors import (
    WARM_UP,
    BlockingMsgpackClient,
    FutureEchoClient,
    MsgpackClient,
)
from bridge.bench.processes import Served, pin, run_client, server_process
from bridge.bench.workload import REG_READ, REG_READ_REQ, REG_READ_RES
from bridge.client import AsyncClient, BlockingClient
from bridge.compiled import build_status

DEPTH = 64
SERVERS: dict[str, tuple[str, ...]] = {
    "echo": ("bridge.bench.echo_server", str(REG_READ_RES), "plain", "uv"),
    "msgpack": ("bridge.bench.echo_server", str(REG_READ_RES), "msgpack", "uv"),
    "busbridge": ("bridge.bench.bridge_server", "uv"),
}
#: name -> (client kind, server): what ``busbridge bench`` measures, one side at a time.
SIDES: dict[str, tuple[str, str]] = {
    "echo+future": ("future", "echo"),
    "msgpack floor": ("msgpack", "msgpack"),
    "busbridge AsyncClient": ("async", "busbridge"),
    "blocking msgpack floor": ("blocking-msgpack", "msgpack"),
    "busbridge BlockingClient": ("blocking", "busbridge"),
    "msgpack floor, 64 in flight": ("msgpack-pipelined", "msgpack"),
    "busbridge, 64 in flight": ("async-pipelined", "busbridge"),
}


# -- the measured programs (run under valgrind by the driver below) --------------------


async def _async_client(kind: str, port: int, n: int) -> None:
    loop = asyncio.get_running_loop()
    call: Callable[[], Awaitable[Any]]
    if kind.startswith("async"):
        c = await AsyncClient.connect("127.0.0.1", port)
        close: Callable[[], Awaitable[None] | None] = c.close

        def call() -> Awaitable[Any]:
            return c.transfer("1", REG_READ)
    else:
        factory: Callable[[], Any] = (MsgpackClient if kind.startswith("msgpack") else
                                      lambda: FutureEchoClient(frame_of(REG_READ_REQ),
                                                                REG_READ_RES))
        _, proto = await loop.create_connection(factory, "127.0.0.1", port)
        call, close = proto.call, proto.transport.close
    depth = DEPTH if kind.endswith("pipelined") else 1

    async def worker(count: int) -> None:
        for _ in range(count):
            await call()

    await asyncio.gather(*(worker(WARM_UP) for _ in range(depth)))
    await asyncio.gather(*(worker(n // depth) for _ in range(depth)))
    res = close()
    if res is not None:
        await res


def _blocking_client(kind: str, port: int, n: int) -> None:
    if kind == "blocking":
        with BlockingClient("127.0.0.1", port) as c:
            for _ in range(WARM_UP + n):
                c.transfer("1", REG_READ)
    else:
        m = BlockingMsgpackClient(port)
        for _ in range(WARM_UP + n):
            m.call()
        m.close()


def run_part(name: str, n: int) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from hot_path import parts

    table = parts()  # built in every run, so the 0 run's start-up is every run's
    fn = (lambda: None) if name == "loop" else table[name]
    for _ in range(n):
        fn()


# -- the driver -------------------------------------------------------------------------


def _valgrind(out: str) -> list[str]:
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "-q"]


def _total(path: str) -> int:
    with open(path) as fh:
        for line in fh:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no instruction total in {path}")


@contextmanager
def _server(name: str, counted: bool, out: str) -> Iterator[Served]:
    # In an empty directory: `python -m` puts the current one on sys.path, and the
    # imports' directory listing of a busy /tmp changed the start-up by millions of
    # instructions from run to run.
    with tempfile.TemporaryDirectory() as empty, server_process(
            *SERVERS[name], wrapper=_valgrind(out) if counted else (), exit_timeout=300.0,
            cwd=empty) as served:
        yield served


def _client_cmd(kind: str, port: int, n: int) -> list[str]:
    return [sys.executable, __file__, "--client", kind, str(port), str(n)]


def count_side(name: str, side: str, n: int, tmp: str) -> float:
    """Instructions per request on ``side`` of ``name``: (run of n - run of 0) / n."""
    kind, server = SIDES[name]
    totals = []
    for k in (n, 0):
        out = os.path.join(tmp, f"{side}.{k}.out")
        with _server(server, side == "server", out) as srv:
            cmd = _client_cmd(kind, srv.port, k)
            subprocess.run([*_valgrind(out), *cmd] if side == "client" else cmd, check=True,
                           timeout=1800)
        totals.append(_total(out))
    return (totals[0] - totals[1]) / n


def _count_run(tmp: str, *args: str) -> int:
    out = os.path.join(tmp, "part.out")
    subprocess.run([*_valgrind(out), sys.executable, __file__, *args], check=True,
                   timeout=1800)
    return _total(out)


def count_parts(names: list[str], n: int, tmp: str) -> dict[str, float]:
    """Instructions per call of each part, less the calling loop's (one shared 0 run:
    every run builds every part)."""
    zero = _count_run(tmp, "--part", "loop", "0")
    loop = (_count_run(tmp, "--part", "loop", str(n)) - zero) / n
    out = {"(the calling loop)": loop}
    for name in names:
        out[name] = (_count_run(tmp, "--part", name, str(n)) - zero) / n - loop
        print(f"{name:46} {out[name]:12,.0f}", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--only", choices=("sides", "parts"), help="one of the two tables")
    ap.add_argument("--n", type=int, default=2000, help="measured requests (default 2000)")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--client", nargs=3, metavar=("KIND", "PORT", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--part", nargs=2, metavar=("NAME", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        kind, port, n = args.client[0], int(args.client[1]), int(args.client[2])
        if kind.startswith("blocking"):
            _blocking_client(kind, port, n)
        else:
            run_client(lambda: _async_client(kind, port, n))
        return 0
    if args.part:
        run_part(args.part[0], int(args.part[1]))
        return 0

    os.environ["PYTHONHASHSEED"] = "0"  # the same dict layouts in every run
    pin(os.getpid(), 0)
    build = build_status()
    print(f"{build.summary()}; Python {sys.version.split()[0]}; N = {args.n}", flush=True)
    result: dict[str, Any] = {"build": build.state, "n": args.n, "sides": {}, "parts": {}}
    with tempfile.TemporaryDirectory() as tmp:
        if args.only != "parts":
            print(f"\n{'instructions per request':34} {'client':>9} {'server':>9}", flush=True)
            for name in SIDES:
                c, s = (count_side(name, side, args.n, tmp) for side in ("client", "server"))
                result["sides"][name] = {"client": c, "server": s}
                print(f"{name:34} {c:9,.0f} {s:9,.0f}", flush=True)
        if args.only != "sides":
            sys.path.insert(0, str(Path(__file__).parent))
            from hot_path import parts

            print(f"\n{'part of one register read':46} {'instructions':>12}", flush=True)
            result["parts"] = count_parts(list(parts()), args.n * 5, tmp)
            print(f"(less the calling loop's {result['parts']['(the calling loop)']:,.0f} "
                  "each)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

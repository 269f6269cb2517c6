"""Where a register read's time goes: each piece of the hot path, timed alone.

``busbridge bench`` measures the whole round trip against a bare echo; this
splits the bridge's own Python work into its parts (medians of 7 runs of
``timeit``), so a change to one of them can be judged on its own, and adds
an in-process round trip (client and server on one loop, real TCP) with an
optional cProfile of it:

    python benchmarks/hot_path.py            # per-part costs
    python benchmarks/hot_path.py --profile  # + cProfile of 20k round trips
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        python benchmarks/hot_path.py --round-trips 6000 [--in-flight 64]   # and 2000

For figures that do not move with machine load, run a part under
``valgrind --tool=callgrind`` and compare instruction counts (see
docs/performance.md).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
import timeit
from collections.abc import Callable

from bridge.bench.clients import bridge_throughput
from bridge.bench.workload import REG_READ, bench_board_text
from bridge.client import AsyncClient
from bridge.client.requests import i2c_frame
from bridge.config import board_from_toml_text
from bridge.runtime import new_event_loop
from bridge.server import Server
from bridge.server.execute import run_i2c
from protocol import (
    DEFAULT_LIMITS,
    Connection,
    Hello,
    HelloInfo,
    I2CRequest,
    LimitsInfo,
    Result,
    Role,
    Welcome,
    WelcomeInfo,
)
from protocol.fastpath import ClientConnection


def parts() -> dict[str, Callable[[], object]]:
    board = board_from_toml_text(bench_board_text(1), "<bench>")
    bus = board.i2c["1"]
    msgs = tuple(REG_READ)
    client, server = ClientConnection(), Connection(Role.SERVER)
    server.receive(client.send(Hello(HelloInfo(client="hot_path"))))
    welcome = Welcome(WelcomeInfo(limits=LimitsInfo(**DEFAULT_LIMITS.as_dict())))
    client.receive(server.send(welcome))
    # Each part runs alone, so it puts back what the others would have done.  A
    # client never withdraws a request (its answer is due), hence the private
    # set: it stands in for the send or receive measured in the other part.
    pending = client._in_flight
    accepted = server._in_flight  # a server sends a RESULT only for a request it accepted
    request = memoryview(bytearray(client.send(I2CRequest(1, "1", msgs))))
    pending.discard(1)
    accepted.add(1)
    result = memoryview(bytearray(server.send(Result(1, b"\0\0", [b"\x0c\x80"], []))))

    def server_encode() -> None:
        accepted.add(1)
        server.send(Result(1, b"\0\0", [b"\x0c\x80"], []))

    def client_request() -> None:
        rid, _ = i2c_frame(client, "1", REG_READ, None, True)
        pending.discard(rid)

    def server_decode() -> None:
        server.receive(request)
        server.withdraw(1)

    def client_encode() -> None:
        client.send(I2CRequest(1, "1", msgs))
        pending.discard(1)

    def client_decode() -> None:
        pending.add(1)
        client.receive(result)

    return {
        "client: encode the request": client_encode,
        "client: a transfer()'s request (fast path)": client_request,
        "server: decode + validate the frame": server_decode,
        "server: may_block check": lambda: bus.may_block,
        "server: run_i2c (virtio rules + sim bus)": lambda: run_i2c(bus, msgs),
        "  of which the simulated bus transaction": lambda: bus.transfer(msgs),
        "server: encode the RESULT": server_encode,
        "client: decode the RESULT": client_decode,
    }


async def round_trips(n: int, profile: bool) -> float:
    board = board_from_toml_text(bench_board_text(1), "<bench>")
    server = Server(board, host="127.0.0.1", port=0)
    await server.start()
    c = await AsyncClient.connect("127.0.0.1", server.port)
    try:
        for _ in range(500):
            await c.transfer("1", REG_READ)
        prof = cProfile.Profile() if profile else None
        if prof:
            prof.enable()
        t0 = time.perf_counter()
        for _ in range(n):
            await c.transfer("1", REG_READ)
        dt = time.perf_counter() - t0
        if prof:
            prof.disable()
            stats = pstats.Stats(prof)
            print(f"\ncProfile of {n:,} round trips "
                  f"({stats.total_calls / n:.0f} Python-level calls each):")  # type: ignore[attr-defined]
            stats.sort_stats("tottime").print_stats(20)
        return dt / n
    finally:
        await c.close()
        await server.close()


async def pipelined(n: int, depth: int) -> None:
    """``n`` register reads, ``depth`` in flight on one connection (the bench's throughput)."""
    board = board_from_toml_text(bench_board_text(1), "<bench>")
    server = Server(board, host="127.0.0.1", port=0)
    await server.start()
    try:
        await bridge_throughput(server.port, n, depth)
    finally:
        await server.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--profile", action="store_true", help="cProfile the round trips")
    ap.add_argument("--round-trips", type=int, metavar="N",
                    help="only run N round trips (after 500 to warm up), for callgrind: "
                         "the difference of two N, divided, is one round trip's instructions")
    ap.add_argument("--in-flight", type=int, default=1, metavar="D",
                    help="with --round-trips: D requests in flight on one connection")
    args = ap.parse_args()
    if args.round_trips is not None:
        loop = new_event_loop()
        if args.in_flight > 1:
            loop.run_until_complete(pipelined(args.round_trips, args.in_flight))
        else:
            loop.run_until_complete(round_trips(args.round_trips, False))
        loop.close()
        return
    print(f"{'part of one register read':46} {'ns':>8}")
    for name, fn in parts().items():
        n = 20_000
        t = statistics.median(timeit.repeat(fn, number=n, repeat=7)) / n
        print(f"{name:46} {t * 1e9:8,.0f}")
    loop = new_event_loop()
    try:
        per = loop.run_until_complete(round_trips(20_000, False))
        print(f"{'in-process round trip (client + server, TCP)':46} {per * 1e9:8,.0f}")
        if args.profile:
            loop.run_until_complete(round_trips(20_000, True))
    finally:
        loop.close()


if __name__ == "__main__":
    main()

"""Load generator and checker: many clients, several buses, every answer counted.

Each client ``k`` runs one pipelined stream per bus (``WINDOW`` requests in flight):

* I2C: a FAIL_NEXT chain ``write(0x20, [0, 0, k, s_hi, s_lo])`` ·
  ``write(0x20, [0])`` · ``read(0x20, 4)`` on a register that EVERY client
  shares, so the read-back proves the chain ran alone (another client's write
  in between would show); every ``NACK_EVERY``-th request goes to an absent
  address instead and must fail with ENXIO.
* SPI: a full-duplex transfer of ``[k, s_hi, s_lo, ...]`` on a loopback chip
  select (rx must equal tx); every ``PARAM_EVERY``-th asks for a clock above
  the bus's maximum and must get PARAM_ERR without reaching the bus.

Some clients drop their connection mid-way (abort with requests in flight) and
``reconnect()``.  Afterwards the simulated buses' transaction logs are checked
against what every client saw: each answered request reached its bus exactly
once, nothing reached a bus twice, and per client and bus the sequence numbers
on the bus are strictly increasing.

Run by hand: ``python tests/reliability/load.py --seconds 30 --clients 32``.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from bridge.client import AsyncClient, ConnectionLost, TransferError, spi_xfer
from bridge.config import Board, load_board
from bridge.runtime import new_event_loop
from bridge.server import Server
from protocol import SpiResult, chain, read, write

BOARD = Path(__file__).with_name("load.toml")
I2C_BUSES = ("a", "b", "c")
SPI_BUSES = ("s0", "s1")
DEV, ABSENT = 0x20, 0x21
WINDOW = 4
NACK_EVERY = 10
PARAM_EVERY = 13
SPI_PAD = bytes(range(13))


@dataclass
class Figures:
    clients: int = 0
    buses: int = 0
    seconds: float = 0.0
    sent: int = 0
    answered: int = 0
    ok: int = 0
    expected_errors: int = 0  # NACKs and PARAM_ERRs asked for
    unexpected: list[str] = field(default_factory=list)
    lost_by_disconnect: int = 0  # in flight when a client dropped its own connection
    disconnects: int = 0
    bus_transactions: int = 0
    duplicates: int = 0
    order_violations: int = 0
    missing_on_bus: int = 0
    interleaved: int = 0

    def summary(self) -> str:
        rate = self.answered / self.seconds if self.seconds else 0.0
        return (f"{self.clients} clients on {self.buses} buses for {self.seconds:.1f} s: "
                f"{self.sent} requests sent, {self.answered} answered ({rate:.0f}/s), "
                f"{self.ok} OK, {self.expected_errors} deliberate errors, "
                f"{len(self.unexpected)} unexpected errors, {self.lost_by_disconnect} lost to "
                f"{self.disconnects} deliberate disconnects; on the buses: "
                f"{self.bus_transactions} transactions, {self.duplicates} duplicated, "
                f"{self.missing_on_bus} answered-but-missing, {self.order_violations} out of "
                f"order, {self.interleaved} interleaved chains")


@dataclass
class _Stream:
    """What one client saw on one bus."""

    ok: list[int] = field(default_factory=list)  # seqs answered OK, in answer order
    lost: list[int] = field(default_factory=list)
    answer_order: list[int] = field(default_factory=list)


async def _client(k: int, host: str, port: int, until: float, drop_at: float | None,
                  streams: dict[tuple[int, str], _Stream], fig: Figures) -> None:
    c = await AsyncClient.connect(host, port, timeout=30, name=f"load-{k}")
    dropped = asyncio.Event()

    async def one(bus: str, s: int) -> None:
        st = streams[k, bus]
        fig.sent += 1
        try:
            if bus in I2C_BUSES:
                if s % NACK_EVERY == 0:
                    try:
                        await c.transfer(bus, [write(ABSENT, [k, s >> 8, s & 0xFF])])
                        fig.unexpected.append(f"client {k} bus {bus} seq {s}: NACK expected")
                    except TransferError as e:
                        if e.errno != errno.ENXIO:
                            fig.unexpected.append(f"client {k} bus {bus} seq {s}: {e}")
                        fig.expected_errors += 1
                else:
                    value = bytes([0, k, s >> 8, s & 0xFF])
                    (back,) = await c.transfer(bus, chain([
                        write(DEV, [0, *value]), write(DEV, [0]), read(DEV, 4)]))
                    if back != value:
                        fig.unexpected.append(f"client {k} bus {bus} seq {s}: read back "
                                              f"{back.hex()} != {value.hex()}")
                    st.ok.append(s)
                    fig.ok += 1
            else:
                tx = bytes([k, s >> 8, s & 0xFF]) + SPI_PAD
                if s % PARAM_EVERY == 0:
                    r = await c.spi(bus, 0, [spi_xfer(tx, speed_hz=100_000_000)])
                    if r.status != bytes([SpiResult.PARAM_ERR]):
                        fig.unexpected.append(f"client {k} bus {bus} seq {s}: {r.status!r}")
                    fig.expected_errors += 1
                else:
                    rx = await c.xfer(bus, 0, tx)
                    if rx != tx:
                        fig.unexpected.append(f"client {k} bus {bus} seq {s}: rx {rx.hex()}")
                    st.ok.append(s)
                    fig.ok += 1
            st.answer_order.append(s)
            fig.answered += 1
        except ConnectionLost:
            if not dropped.is_set():
                fig.unexpected.append(f"client {k} bus {bus} seq {s}: connection lost")
            st.lost.append(s)
            fig.lost_by_disconnect += 1
        except Exception as e:
            fig.unexpected.append(f"client {k} bus {bus} seq {s}: {e!r}")

    async def stream(bus: str) -> None:
        s = 0
        inflight: list[asyncio.Task[None]] = []
        while time.monotonic() < until:
            while len(inflight) < WINDOW:
                s += 1
                inflight.append(asyncio.ensure_future(one(bus, s)))
            await inflight.pop(0)
            if dropped.is_set() and not c.connected:
                await asyncio.gather(*inflight)
                inflight.clear()
                await reconnected.wait()
        await asyncio.gather(*inflight)

    reconnected = asyncio.Event()

    async def dropper() -> None:
        assert drop_at is not None
        await asyncio.sleep(max(0.0, drop_at - time.monotonic()))
        dropped.set()
        assert c._transport is not None
        c._transport.abort()  # as if the network went away, requests in flight
        fig.disconnects += 1
        await c.reconnect()
        reconnected.set()

    tasks = [asyncio.ensure_future(stream(b)) for b in (*I2C_BUSES, *SPI_BUSES)]
    if drop_at is not None:
        tasks.append(asyncio.ensure_future(dropper()))
    try:
        await asyncio.gather(*tasks)
    finally:
        await c.close()


class LogReader:
    """Follows the buses' bounded transaction logs while the load runs.

    Polled often enough that no entry falls off a log before it is read (a
    gap in the sequence numbers fails the run), so memory stays bounded
    however long the run is.
    """

    def __init__(self, board: Board) -> None:
        self.board = board
        self.on_bus: dict[tuple[int, str], list[int]] = defaultdict(list)
        self.last: dict[str, int] = defaultdict(int)
        self.transactions = 0
        self.interleaved = 0

    def _new(self, name: str, log: list[Any]) -> list[Any]:
        if not log:
            return []
        last = self.last[name]
        start = last + 1 - log[0].seq
        assert start >= 0, f"bus {name}: log entries {last + 1}..{log[0].seq - 1} were lost " \
                           "before they were read; poll more often or raise log_size"
        new = log[start:]
        if new:
            self.last[name] = new[-1].seq
        return new

    def poll(self) -> None:
        for name in I2C_BUSES:
            for e in self._new(name, self.board.i2c[name].log_snapshot()):
                self.transactions += 1
                if e.msgs[0].addr == ABSENT:
                    continue
                w = e.msgs[0]
                k, s = w.data[2], int.from_bytes(w.data[3:5], "big")
                # The whole chain, alone: its read returns what its own write put there.
                if not (len(e.msgs) == 3 and e.msgs[1].data == b"\x00" and e.msgs[2].is_read
                        and e.reads == (w.data[1:5],)):
                    self.interleaved += 1
                self.on_bus[k, name].append(s)
        for name in SPI_BUSES:
            for se in self._new(name, self.board.spi[name].log_snapshot()):
                self.transactions += 1
                tx = se.transfers[0].tx or b""
                self.on_bus[tx[0], name].append(int.from_bytes(tx[1:3], "big"))

    def check(self, streams: dict[tuple[int, str], _Stream], fig: Figures) -> None:
        """Hold what reached the buses against what every client saw."""
        self.poll()
        fig.bus_transactions = self.transactions
        fig.interleaved = self.interleaved
        for key, st in streams.items():
            seen = self.on_bus.get(key, [])
            fig.duplicates += len(seen) - len(set(seen))
            fig.order_violations += sum(1 for a, b in pairwise(seen) if b <= a)
            fig.order_violations += sum(1 for a, b in pairwise(st.answer_order) if b <= a)
            fig.missing_on_bus += len(set(st.ok) - set(seen))
            allowed = set(st.ok) | set(st.lost)
            fig.unexpected += [f"{key}: seq {s} on the bus was never sent"
                               for s in set(seen) - allowed]


def run_load(seconds: float, clients: int = 32, droppers: int = 4,
             tamper: Callable[[Board], None] | None = None) -> Figures:
    """Serve the load board on its own thread and loop; drive it from this thread's loop.

    ``tamper`` runs on the board before the final check (to prove the checker
    catches a duplicated transaction, say).
    """
    board = load_board(str(BOARD))
    fig = Figures(clients=clients, buses=len(I2C_BUSES) + len(SPI_BUSES))
    server_loop = new_event_loop()
    ready = threading.Event()
    holder: dict[str, Server] = {}

    def serve() -> None:
        async def main() -> None:
            s = Server(board, host="127.0.0.1", port=0, request_timeout=30.0)
            await s.start()
            holder["s"] = s
            ready.set()
            await s.serve_forever()

        server_loop.run_until_complete(main())

    t = threading.Thread(target=serve, name="load-server", daemon=True)
    t.start()
    assert ready.wait(10)
    server = holder["s"]
    streams: dict[tuple[int, str], _Stream] = defaultdict(_Stream)
    logs = LogReader(board)

    async def follow(until: float) -> None:
        while time.monotonic() < until:
            logs.poll()
            await asyncio.sleep(0.1)

    # Every (clients // droppers)-th client drops its connection, at 30..70 % of the run.
    every = clients // droppers if droppers else 0

    async def drive() -> None:
        t0 = time.monotonic()
        until = t0 + seconds
        await asyncio.gather(follow(until), *(
            _client(k, server.host, server.port, until,
                    t0 + seconds * (0.3 + 0.4 * k / clients)
                    if every and k % every == every - 1 else None,
                    streams, fig)
            for k in range(clients)))
        fig.seconds = time.monotonic() - t0

    loop = new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(drive(), seconds + 60))
    finally:
        loop.close()
        asyncio.run_coroutine_threadsafe(server.close(grace=5.0), server_loop).result(30)
        t.join(10)
        server_loop.close()
    if tamper is not None:
        tamper(board)
    logs.check(streams, fig)
    return fig


def main(argv: Any = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--droppers", type=int, default=4)
    a = ap.parse_args(argv)
    fig = run_load(a.seconds, a.clients, a.droppers)
    print(fig.summary())
    for u in fig.unexpected[:20]:
        print("UNEXPECTED:", u)


if __name__ == "__main__":
    main()

"""What one long frame on one bus costs everyone else (SPEC §7's bound, §8.4's deadlines).

Starts ``busbridge serve`` (the default board) in its own process and, over raw
sockets and msgpack (no busbridge client code):

* sizes a frame of 8 KiB register-map reads on I2C bus 1 to about ``--frame-ms``;
* measures the round trip of a PING (one connection) and of a register read on
  I2C bus 2 (another), each first with bus 1 idle, then a quarter into that frame,
  ``--rounds`` times; the frame is alternately one transaction and one per read;
* measures when a 1 ms deadline is answered, for that frame itself (running) and
  for a write queued behind it on the same connection (queued), checking the
  §8.4 RESULT each time (all ERR, failures [[0, 110, ...]]).

    python benchmarks/bus_isolation.py
    python benchmarks/bus_isolation.py --frame-ms 20 --rounds 200

Figures are round trips as this client sees them, so they include its own
scheduling on a shared machine; the idle rows are the floor to compare with.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import msgpack

M_RD, FAIL_NEXT = 2, 1
TMP117, MCP9808, EEPROM = 0x48, 0x18, 0x50


def hdr(addr: int, flags: int) -> bytes:
    """A 7-bit address's ``virtio_i2c_out_hdr`` (SPEC §5.1)."""
    return struct.pack("<HHI", addr << 1, 0, flags)


class Conn:
    """One connection, after HELLO: send an array, read the next frame."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.send([0, 0, {"version": 1, "client": "bus_isolation"}])
        self.recv()

    def send(self, obj: list[Any]) -> None:
        body = msgpack.packb(obj, use_bin_type=True)
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def _exactly(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("the server closed the connection")
            buf += chunk
        return buf

    def recv(self) -> list[Any]:
        (n,) = struct.unpack(">I", self._exactly(4))
        frame: list[Any] = msgpack.unpackb(self._exactly(n), raw=False)
        return frame

    def round_trip(self, obj: list[Any]) -> float:
        t0 = time.perf_counter()
        self.send(obj)
        self.recv()
        return time.perf_counter() - t0


def reads(rid: int, n: int, timeout_ms: int, one_chain: bool = False) -> list[Any]:
    """``n`` reads of 8 KiB from the TMP117 model: one transaction, or ``n``."""
    msgs = [[hdr(TMP117, M_RD | (FAIL_NEXT if one_chain and i < n - 1 else 0)), 8192]
            for i in range(n)]
    return [2, rid, "1", msgs, timeout_ms]


def is_deadline(r: list[Any], n: int) -> bool:
    return r[0] == 4 and r[2] == b"\x01" * n and len(r[4]) == 1 and r[4][0][:2] == [0, 110]


@contextlib.contextmanager
def server(port: int) -> Iterator[None]:
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "serve", "--listen",
                             f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.1)
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)


def quantiles(xs: list[float]) -> str:
    s = sorted(xs)

    def q(p: float) -> float:
        return s[min(len(s) - 1, int(p * len(s)))] * 1e3

    return (f"p50 {q(0.5):6.2f}  p90 {q(0.9):6.2f}  p99 {q(0.99):6.2f}  "
            f"max {s[-1] * 1e3:6.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--port", type=int, default=7781)
    ap.add_argument("--frame-ms", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()
    with server(args.port):
        a, b, c = Conn(args.port), Conn(args.port), Conn(args.port)
        n = 1
        for _ in range(6):  # size the frame: 8 KiB reads until it takes about --frame-ms
            work = statistics.median(a.round_trip(reads(1, n, 60_000)) for _ in range(7))
            want = max(1, min(31, round(n * args.frame_ms / 1000 / work)))
            if want == n:
                break
            n = want
        print(f"long frame: {n} reads of 8 KiB on I2C bus 1, {work * 1e3:.1f} ms (median of 7)")
        bus2 = [2, 1, "2", [[hdr(MCP9808, 0), b"\x05"], [hdr(MCP9808, M_RD), 2]], None]
        rows: dict[str, list[float]] = {k: [] for k in (
            "PING, bus 1 idle", "PING, during the frame",
            "bus-2 register read, bus 1 idle", "bus-2 register read, during the frame")}
        for i in range(args.rounds):
            rows["PING, bus 1 idle"].append(b.round_trip([6, 1]))
            rows["bus-2 register read, bus 1 idle"].append(c.round_trip(bus2))
            a.send(reads(2, n, 60_000, one_chain=i % 2 == 1))
            time.sleep(work / 4)
            rows["PING, during the frame"].append(b.round_trip([6, 2]))
            rows["bus-2 register read, during the frame"].append(c.round_trip(bus2))
            a.recv()
        print("round trips:")
        for name, xs in rows.items():
            print(f"  {name:38s} {quantiles(xs)}")
        running: list[float] = []
        queued: list[float] = []
        for _ in range(max(args.rounds // 2, 1)):
            t0 = time.perf_counter()
            a.send(reads(3, n, 1))
            r = a.recv()
            running.append(time.perf_counter() - t0)
            assert is_deadline(r, n), r
            a.send(reads(4, n, 60_000))
            t0 = time.perf_counter()
            a.send([2, 5, "1", [[hdr(EEPROM, 0), b"\x0f\xf0\x00"]], 1])
            got: dict[int, tuple[list[Any], float]] = {}
            while len(got) < 2:
                r = a.recv()
                got[r[1]] = (r, time.perf_counter() - t0)
            assert is_deadline(got[5][0], 1), got[5][0]
            assert "never" in got[5][0][4][0][2], got[5][0]
            queued.append(got[5][1])
        print("1 ms deadlines, answered after sending:")
        print(f"  {f'running ({work * 1e3:.0f} ms of work)':38s} {quantiles(running)}")
        print(f"  {'queued behind it':38s} {quantiles(queued)}")


if __name__ == "__main__":
    main()

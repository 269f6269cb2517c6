"""Per-call latency of native programs on a remote bus: ``python benchmarks/native_latency.py``.

Starts a board server on 127.0.0.1 (the built-in simulated board), then times
the same TMP117 register read (write 0x0f, read 2 bytes) made five ways:

* the Python drop-in (``smbus2.SMBus.read_word_data`` of bridge.dropin);
* a C program's ``I2C_SMBUS`` and ``I2C_RDWR`` ioctls under ``busbridge run``
  (preload library -> agent -> server);
* an ioctl the agent answers alone (``SPI_IOC_RD_MODE``): the agent hop's cost;
* an ioctl the library answers alone (``I2C_SLAVE``);
* the same request spoken by C straight to the server in busbridge frames: the
  floor for a library that would speak the protocol itself.

Prints median / p90 / mean in microseconds for each, over ``--calls`` calls,
``--runs`` times.  Numbers depend on the machine; docs/native.md has a run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUSBRIDGE = [sys.executable, "-m", "bridge.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def dropin(url: str, calls: int) -> tuple[float, float, float]:
    from bridge.dropin import connect
    from bridge.dropin.smbus import SMBus

    connect(url)
    bus = SMBus(1)
    for _ in range(50):
        bus.read_word_data(0x48, 0x0F)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        bus.read_word_data(0x48, 0x0F)
        times.append((time.perf_counter() - t0) * 1e6)
    times.sort()
    return times[len(times) // 2], times[len(times) * 9 // 10], statistics.fmean(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        sys.exit("needs a C compiler")
    tmp = Path(tempfile.mkdtemp(prefix="busbridge-native-bench-"))
    exe = tmp / "native_latency"
    subprocess.run([gcc, "-O2", "-o", str(exe), str(HERE / "native_latency.c")], check=True)
    port = free_port()
    url = f"127.0.0.1:{port}"
    server = subprocess.Popen([*BUSBRIDGE, "serve", "--listen", url],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                time.sleep(0.2)
        rows: dict[str, list[tuple[float, float, float]]] = {}
        n = str(args.calls)
        for _ in range(args.runs):
            rows.setdefault("python drop-in read_word_data", []).append(dropin(url, args.calls))
            for mode, label in (("smbus", "native I2C_SMBUS read word"),
                                ("rdwr", "native I2C_RDWR w1+r2"),
                                ("agent", "native SPI_IOC_RD_MODE (agent only)"),
                                ("slave", "native I2C_SLAVE (library only)")):
                out = subprocess.run([*BUSBRIDGE, "--connect", url, "run", "--", str(exe), mode,
                                      n], capture_output=True, text=True, check=True,
                                     env=dict(os.environ))
                med, p90, mean = map(float, out.stdout.split())
                rows.setdefault(label, []).append((med, p90, mean))
            out = subprocess.run([str(exe), "direct", "127.0.0.1", str(port), n],
                                 capture_output=True, text=True, check=True)
            med, p90, mean = map(float, out.stdout.split())
            rows.setdefault("C speaking busbridge directly, w1+r2", []).append((med, p90, mean))
        print(f"{'call':44} {'median µs':>10} {'p90 µs':>8} {'mean µs':>8}   ({args.runs} runs "
              f"x {args.calls} calls; median of the runs)")
        for label, vals in rows.items():
            med = statistics.median(v[0] for v in vals)
            p90 = statistics.median(v[1] for v in vals)
            mean = statistics.median(v[2] for v in vals)
            print(f"{label:44} {med:10.1f} {p90:8.1f} {mean:8.1f}")
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

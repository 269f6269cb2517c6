"""CPU time per request, client and server separately, read from ``/proc``.

Latency says how long a request waits; CPU time says what it costs each side,
which is what a board pays (a Raspberry Pi-class server is several times
slower than the machine the bench runs on) and what pipelined throughput is
made of.  The kernel's per-thread run time is read from
``/proc/PID/task/*/schedstat`` (nanoseconds); where that file is missing,
``utime + stime`` from ``/proc/PID/stat``, which the kernel rounds to clock
ticks (10 ms: too coarse for a 2,000-request run, so figures from it are
rough).
"""

from __future__ import annotations

import os


def cpu_ns(pid: int) -> int:
    """CPU time ``pid`` has used so far, all its threads, in ns."""
    try:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[0])
        return total
    except (OSError, ValueError, IndexError):
        pass
    with open(f"/proc/{pid}/stat") as fh:
        # Fields after the command name (which may hold spaces): utime is the 14th field.
        fields = fh.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used by this process (the client) and ``server_pid`` between :meth:`start`
    and :meth:`stop`, per request."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.client_us = 0.0
        self.server_us = 0.0
        self._t0 = (0, 0)

    def _now(self) -> tuple[int, int]:
        return cpu_ns(os.getpid()), cpu_ns(self.server_pid)

    def start(self) -> None:
        self._t0 = self._now()

    def stop(self, requests: int) -> None:
        c, s = self._now()
        self.client_us = (c - self._t0[0]) / requests / 1000
        self.server_us = (s - self._t0[1]) / requests / 1000

"""What a server did, counted once: the MQTT health message and the stop line read these.

Every bus request frame counts once in ``requests`` of its bus and once in exactly
one outcome: answered without failure, ``errors`` (the bus failed it, a passed
deadline included, also counted in ``timeouts``), ``nacks`` (no device answered
its address, ENXIO: the normal answer to a probe, so one ``i2c detect`` is not a
hundred errors) or ``refused`` (an ERROR frame: busy, denied, rate-limited,
shutting down).  The totals are the sums over the buses, plus the frames for a
bus the board does not have (``refused`` only).  What is not a bus request is
counted apart: ``protocol_errors`` (frames refused before they named a bus, and
connections closed with an ERROR) and ``lease_refused``.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

#: The outcome counters of one bus, in the order the health message lists them.
BUS_FIELDS = ("requests", "errors", "nacks", "refused", "timeouts")


class _Failure(Protocol):
    errno: int


@dataclass(slots=True)
class BusCounts:
    """One bus's counters (hot path: plain attribute increments)."""

    requests: int = 0
    errors: int = 0
    nacks: int = 0
    refused: int = 0
    timeouts: int = 0

    def failed(self, failures: Iterable[_Failure]) -> None:
        """An answer carrying failures: a NACK of the address if that is all it says."""
        if all(f.errno == errno.ENXIO for f in failures):
            self.nacks += 1
        else:
            self.errors += 1


@dataclass
class ServerStats:
    """The server's counters; per bus in ``buses`` (``(kind, name)`` → counts)."""

    connections: int = 0
    protocol_errors: int = 0
    lease_refused: int = 0
    #: Frames for buses the board does not have: refused, belonging to no bus.
    unknown_bus: int = 0
    buses: dict[tuple[str, str], BusCounts] = field(default_factory=dict)

    def bus(self, kind: str, name: str) -> BusCounts:
        counts = self.buses.get((kind, name))
        if counts is None:
            counts = self.buses[kind, name] = BusCounts()
        return counts

    def totals(self) -> dict[str, int]:
        out = dict.fromkeys(BUS_FIELDS, 0)
        for counts in self.buses.values():
            for k in BUS_FIELDS:
                out[k] += getattr(counts, k)
        out["requests"] += self.unknown_bus
        out["refused"] += self.unknown_bus
        return out

    def per_bus(self) -> dict[str, dict[str, dict[str, int]]]:
        """``{"i2c": {"1": {...}}, "spi": {...}}``, as the health message nests them."""
        out: dict[str, dict[str, dict[str, int]]] = {"i2c": {}, "spi": {}}
        for (kind, name), counts in self.buses.items():
            out.setdefault(kind, {})[name] = asdict(counts)
        return out

    def snapshot(self) -> dict[str, Any]:
        """Everything, totals first, then ``i2c`` and ``spi`` per bus: the health message."""
        return {"connections": self.connections, **self.totals(),
                "protocol_errors": self.protocol_errors, "lease_refused": self.lease_refused,
                **self.per_bus()}

    def stop_line(self) -> dict[str, Any]:
        """The fields of the server's "stopped" log line: totals and ``by_bus``."""
        return {"connections": self.connections, **self.totals(),
                "protocol_errors": self.protocol_errors, "lease_refused": self.lease_refused,
                "by_bus": {f"{kind}:{name}": asdict(c)
                           for (kind, name), c in self.buses.items()}}

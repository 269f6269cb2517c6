"""What a server did, counted once: the MQTT health message, the stop line and the
Prometheus metrics (:mod:`.metrics`) all read these.

Every bus request frame counts once in ``requests`` of its bus and once in exactly
one outcome: answered without failure, ``errors`` (the bus failed it, a passed
deadline included, also counted in ``timeouts``), ``nacks`` (no device answered
its address, ENXIO: the normal answer to a probe, so one ``i2c detect`` is not a
hundred errors) or ``refused`` (an ERROR frame: busy, denied, rate-limited,
shutting down).  The totals are the sums over the buses, plus the frames for a
bus the board does not have (``refused`` only).  What is not a bus request is
counted apart: ``protocol_errors`` (frames refused before they named a bus, and
connections closed with an ERROR) and ``lease_refused``.

Between a request frame's arrival and its answer, :class:`~.tally.RequestTally`
adds what the answer says: bytes moved, latency (a fixed-bucket histogram), the
errno of a failure, the code of a refusal, and the bus's busy time and queue.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

#: The outcome counters of one bus, in the order the health message lists them.
BUS_FIELDS = ("requests", "errors", "nacks", "refused", "timeouts")

#: Upper bounds (seconds) of the request latency histogram's buckets; one more
#: bucket above the last holds the rest (Prometheus ``le="+Inf"``).  From a
#: simulated register read (tens of µs) to a deadline (the default is 1 s).
LATENCY_BOUNDS: Final[tuple[float, ...]] = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                            0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _Failure(Protocol):
    errno: int


def errno_name(code: int) -> str:
    """``EIO``; a number the platform has no name for stays a number."""
    return errno.errorcode.get(code, str(code))


@dataclass(slots=True)
class BusCounts:
    """One bus's counters (hot path: plain attribute increments)."""

    requests: int = 0
    errors: int = 0
    nacks: int = 0
    refused: int = 0
    timeouts: int = 0
    #: Bytes the bus moved for requests (messages, transfers) that completed OK.
    bytes_read: int = 0
    bytes_written: int = 0
    #: Seconds during which the bus had at least one request admitted and not yet
    #: answered (like a disk's io_ticks): how busy the bus is, queueing included.
    busy_s: float = 0.0
    #: Requests admitted and not yet answered: queued or on the bus (the queue depth).
    in_flight: int = 0
    busy_since: float = 0.0
    #: Request latency (arrival to answer): counts per LATENCY_BOUNDS bucket, and the sum.
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS) + 1))
    latency_s: float = 0.0
    #: Answers with failures by errno name (the first failure other than ENXIO,
    #: else ENXIO): their ENXIO count is ``nacks``, the rest sum to ``errors``.
    by_errno: dict[str, int] = field(default_factory=dict)
    #: ERROR answers by code (busy, denied, rate-limited, shutting-down, ...).
    by_code: dict[str, int] = field(default_factory=dict)

    def failed(self, failures: Iterable[_Failure]) -> None:
        """An answer carrying failures: a NACK of the address if that is all it says."""
        if all(f.errno == errno.ENXIO for f in failures):
            self.nacks += 1
        else:
            self.errors += 1

    def outcomes(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in BUS_FIELDS}

    def as_dict(self) -> dict[str, Any]:
        """The health message's entry: outcomes, then bytes, busy time, queue, latency."""
        return {**self.outcomes(), "bytes_read": self.bytes_read,
                "bytes_written": self.bytes_written, "busy_s": round(self.busy_s, 6),
                "in_flight": self.in_flight, "errnos": self.by_errno.copy(),
                "codes": self.by_code.copy(),
                "latency": {"buckets": list(self.latency), "sum_s": round(self.latency_s, 6)}}


@dataclass
class ServerStats:
    """The server's counters; per bus in ``buses`` (``(kind, name)`` → counts)."""

    connections: int = 0
    protocol_errors: int = 0
    lease_refused: int = 0
    #: Frames for buses the board does not have: refused, belonging to no bus.
    unknown_bus: int = 0
    #: Connected clients now (admitted, not yet gone).
    clients: int = 0
    #: ERROR frames sent, by code, for any frame or connection (bus requests, leases,
    #: HELLO): ``unauthorized`` counts failed authentications, ``denied`` access rules.
    error_frames: dict[str, int] = field(default_factory=dict)
    #: TLS handshakes refused (no or untrusted client certificate, not TLS at all).
    tls_refused: int = 0
    #: Leases held now, per ``(kind, bus)`` (kept by :meth:`leases_changed`).
    leases: dict[tuple[str, str], int] = field(default_factory=dict)
    buses: dict[tuple[str, str], BusCounts] = field(default_factory=dict)
    #: ``buses`` by kind, then name: one lookup per request frame.
    by_kind: dict[str, dict[str, BusCounts]] = field(
        default_factory=lambda: {"i2c": {}, "spi": {}})

    def bus(self, kind: str, name: str) -> BusCounts:
        counts = self.buses.get((kind, name))
        if counts is None:
            counts = self.buses[kind, name] = BusCounts()
            self.by_kind.setdefault(kind, {})[name] = counts
        return counts

    @property
    def auth_failures(self) -> int:
        """HELLOs refused ``unauthorized`` and TLS handshakes refused."""
        return self.error_frames.get("unauthorized", 0) + self.tls_refused

    @property
    def denials(self) -> int:
        """Frames an access rule refused (``denied``)."""
        return self.error_frames.get("denied", 0)

    def leases_changed(self, leases: Iterable[Any]) -> None:
        """A lease table listener: count the leases held per bus (``kind``/``bus`` keys)."""
        held: dict[tuple[str, str], int] = {}
        for x in leases:
            key = (str(x["kind"]), str(x["bus"]))
            held[key] = held.get(key, 0) + 1
        self.leases = held

    def totals(self) -> dict[str, int]:
        out = dict.fromkeys(BUS_FIELDS, 0)
        for counts in self.buses.values():
            for k in BUS_FIELDS:
                out[k] += getattr(counts, k)
        out["requests"] += self.unknown_bus
        out["refused"] += self.unknown_bus
        return out

    def per_bus(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``{"i2c": {"1": {...}}, "spi": {...}}``, as the health message nests them."""
        out: dict[str, dict[str, dict[str, Any]]] = {"i2c": {}, "spi": {}}
        for (kind, name), counts in list(self.buses.items()):
            entry = out.setdefault(kind, {})[name] = counts.as_dict()
            entry["leases"] = self.leases.get((kind, name), 0)
        return out

    def snapshot(self) -> dict[str, Any]:
        """Everything, totals first, then ``i2c`` and ``spi`` per bus: the health message."""
        return {"clients": self.clients, "connections": self.connections, **self.totals(),
                "protocol_errors": self.protocol_errors, "lease_refused": self.lease_refused,
                "auth_failures": self.auth_failures, "denials": self.denials,
                "leases": sum(self.leases.values()), "error_frames": self.error_frames.copy(),
                "latency_bounds_s": list(LATENCY_BOUNDS), **self.per_bus()}

    def stop_line(self) -> dict[str, Any]:
        """The fields of the server's "stopped" log line: totals and ``by_bus``."""
        return {"connections": self.connections, **self.totals(),
                "protocol_errors": self.protocol_errors, "lease_refused": self.lease_refused,
                "auth_failures": self.auth_failures, "denials": self.denials,
                "by_bus": {f"{kind}:{name}": {**c.outcomes(), "bytes_read": c.bytes_read,
                                              "bytes_written": c.bytes_written,
                                              "busy_s": round(c.busy_s, 3)}
                           for (kind, name), c in self.buses.items()}}

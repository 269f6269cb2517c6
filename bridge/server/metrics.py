"""Prometheus metrics: the server's :class:`~.stats.ServerStats`, read at scrape time.

There is no second set of counters: :class:`StatsCollector` is a custom
``prometheus_client`` collector that turns the numbers the MQTT health message
reports into metric families each time Prometheus scrapes.  The HTTP endpoint is
``prometheus_client``'s own server on a thread of its own (:class:`MetricsServer`);
it only reads integers and copies small dicts the event loop writes, so a scrape
never waits for the loop and the loop never waits for a scrape.  A reading may be
one request apart between two families; every counter is monotonic regardless.

Only ``busbridge serve --metrics`` imports this module; the rest of the server
does not need ``prometheus_client``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import GCCollector, ProcessCollector, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from .. import __version__
from .stats import LATENCY_BOUNDS, ServerStats

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

BUS = ["kind", "bus"]

#: Metric name -> (type, labels, help): what docs/operations lists.  The names are
#: the families' names; Prometheus adds ``_total`` to counters and ``_bucket``,
#: ``_sum``, ``_count`` to the histogram.
FAMILIES: dict[str, tuple[str, list[str], str]] = {
    "busbridge_info": ("gauge", ["board", "version"], "The board served and the server version "
                       "(always 1)."),
    "busbridge_requests": ("counter", BUS, "Bus request frames (I2C frames, SPI messages) for "
                           "this bus, whatever their outcome."),
    "busbridge_errors": ("counter", BUS, "Requests the bus failed (a passed deadline "
                         "included), not counting NACKs."),
    "busbridge_nacks": ("counter", BUS, "Requests no device answered (ENXIO: the normal "
                        "answer to a probe)."),
    "busbridge_refused": ("counter", BUS, "Requests answered with an ERROR frame (busy, "
                          "denied, rate-limited, shutting down); they touched no bus."),
    "busbridge_timeouts": ("counter", BUS, "Requests whose deadline passed (also in errors)."),
    "busbridge_failures": ("counter", [*BUS, "errno"], "Answers carrying a failure, by errno "
                           "(the first other than ENXIO, else ENXIO): ENXIO are the nacks, the "
                           "rest sum to errors."),
    "busbridge_refusals": ("counter", [*BUS, "code"], "ERROR answers to requests of this bus, "
                           "by error code: they sum to refused."),
    "busbridge_unknown_bus_requests": ("counter", [], "Request frames naming a bus the board "
                                       "does not have (refused)."),
    "busbridge_bytes": ("counter", [*BUS, "direction"], "Bytes moved by completed messages "
                        "and transfers (direction read or write)."),
    "busbridge_bus_busy_seconds": ("counter", BUS, "Seconds the bus had at least one request "
                                   "admitted and not yet answered (queueing included)."),
    "busbridge_queue_depth": ("gauge", BUS, "Requests admitted and not yet answered: queued "
                              "or on the bus."),
    "busbridge_request_duration_seconds": ("histogram", BUS, "Seconds from a request frame's "
                                           "arrival to its answer (RESULT or ERROR)."),
    "busbridge_leases_held": ("gauge", BUS, "Leases held on this bus now."),
    "busbridge_connected_clients": ("gauge", [], "Client connections open now."),
    "busbridge_connections": ("counter", [], "Client connections admitted."),
    "busbridge_auth_failures": ("counter", ["stage"], "Failed authentications: HELLOs "
                                "refused unauthorized (stage hello) and TLS handshakes refused "
                                "(stage tls)."),
    "busbridge_denials": ("counter", [], "Frames an access rule refused (denied)."),
    "busbridge_error_frames": ("counter", ["code"], "ERROR frames sent, by code: refusals of "
                               "requests, leases and connections."),
    "busbridge_protocol_errors": ("counter", [], "Frames refused before they named a bus, and "
                                  "connections closed with an ERROR."),
    "busbridge_lease_refused": ("counter", [], "LEASE frames refused."),
}


class StatsCollector(Collector):
    """The families of :data:`FAMILIES`, read from one server's stats at each scrape."""

    def __init__(self, stats: ServerStats, board: str) -> None:
        self.stats = stats
        self.board = board

    def _family(self, name: str) -> Any:
        kind, labels, doc = FAMILIES[name]
        cls = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily,
               "histogram": HistogramMetricFamily}[kind]
        return cls(name, doc, labels=labels)

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        fam = {name: self._family(name) for name in FAMILIES}
        fam["busbridge_info"].add_metric([self.board, __version__], 1)
        for (kind, bus), c in list(s.buses.items()):
            key = [kind, bus]
            for name, value in (("busbridge_requests", c.requests),
                                ("busbridge_errors", c.errors), ("busbridge_nacks", c.nacks),
                                ("busbridge_refused", c.refused),
                                ("busbridge_timeouts", c.timeouts),
                                ("busbridge_bus_busy_seconds", c.busy_s),
                                ("busbridge_queue_depth", c.in_flight),
                                ("busbridge_leases_held", s.leases.get((kind, bus), 0))):
                fam[name].add_metric(key, value)
            for errno_name, n in sorted(c.by_errno.copy().items()):
                fam["busbridge_failures"].add_metric([*key, errno_name], n)
            for code, n in sorted(c.by_code.copy().items()):
                fam["busbridge_refusals"].add_metric([*key, code], n)
            fam["busbridge_bytes"].add_metric([*key, "read"], c.bytes_read)
            fam["busbridge_bytes"].add_metric([*key, "write"], c.bytes_written)
            counts, total, buckets = list(c.latency), 0, []
            for bound, n in zip((*LATENCY_BOUNDS, float("inf")), counts, strict=True):
                total += n
                buckets.append((_le(bound), total))
            fam["busbridge_request_duration_seconds"].add_metric(key, buckets, c.latency_s)
        for name, value in (("busbridge_unknown_bus_requests", s.unknown_bus),
                            ("busbridge_connected_clients", s.clients),
                            ("busbridge_connections", s.connections),
                            ("busbridge_denials", s.denials),
                            ("busbridge_protocol_errors", s.protocol_errors),
                            ("busbridge_lease_refused", s.lease_refused)):
            fam[name].add_metric([], value)
        frames = s.error_frames.copy()
        fam["busbridge_auth_failures"].add_metric(["hello"], frames.get("unauthorized", 0))
        fam["busbridge_auth_failures"].add_metric(["tls"], s.tls_refused)
        for code, n in sorted(frames.items()):
            fam["busbridge_error_frames"].add_metric([code], n)
        yield from fam.values()


def _le(bound: float) -> str:
    """The ``le`` label as Prometheus' Go clients write it (``0.0001``, ``1.0``, ``+Inf``)."""
    return "+Inf" if bound == float("inf") else repr(bound)


class MetricsServer(Collector):
    """The ``/metrics`` endpoint: bound at once (so a bad address fails before the board
    is served), serving the server's stats once :meth:`attach` names them, and the
    process's own (memory, CPU, open files, garbage collection)."""

    def __init__(self, host: str, port: int) -> None:
        self._stats: StatsCollector | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        httpd: WSGIServer
        httpd, self._thread = start_http_server(port, host, registry=self.registry)
        self._httpd = httpd
        self.host = host
        self.port = int(httpd.server_port)

    def attach(self, stats: ServerStats, board: str) -> None:
        """Serve these stats from now on (one attribute store: atomic for the scraper)."""
        self._stats = StatsCollector(stats, board)

    def collect(self) -> Iterator[Metric]:
        c = self._stats
        if c is not None:
            yield from c.collect()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

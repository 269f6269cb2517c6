"""The server's counters since it started: logged when it stops, published as MQTT health."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ServerStats:
    connections: int = 0
    requests: int = 0
    errors: int = 0
    timeouts: int = 0
    by_bus: dict[str, int] = field(default_factory=dict)

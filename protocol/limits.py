"""Hard limits, enforced while decoding and before anything is allocated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

PROTOCOL_VERSION = 1
DEFAULT_PORT = 7707

#: Length prefix size in bytes (unsigned, big-endian).
PREFIX_SIZE: Final = 4
MAX_BUS_NAME: Final = 64
#: Longest access token a HELLO may carry (characters); lease tokens are
#: ``leases.MAX_LEASE_TOKEN``.
MAX_ACCESS_TOKEN = 256
MAX_STR: Final = 4096
MAX_REQUEST_ID: Final = 0xFFFF_FFFF
MAX_TIMEOUT_MS: Final = 3_600_000

#: A request frame's RESULT must fit in ``max_frame``: its total read length plus
#: RESULT_BASE plus RESULT_PER_REQUEST per request (status byte, bin header and room
#: for a short failure entry) may not exceed it (SPEC.md, "Limits").
RESULT_BASE: Final = 64
RESULT_PER_REQUEST: Final = 128


def result_room(n_requests: int, read_bytes: int) -> int:
    """Bytes of ``max_frame`` a request of ``n_requests`` reading ``read_bytes`` needs."""
    return RESULT_BASE + RESULT_PER_REQUEST * n_requests + read_bytes


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection limits; the server advertises its own in WELCOME."""

    max_frame: int = 256 * 1024
    max_requests: int = 64
    max_i2c_len: int = 8192  # i2c-dev refuses longer messages
    max_spi_len: int = 65536
    max_in_flight: int = 256

    def as_dict(self) -> dict[str, int]:
        return {
            "max_frame": self.max_frame,
            "max_requests": self.max_requests,
            "max_i2c_len": self.max_i2c_len,
            "max_spi_len": self.max_spi_len,
            "max_in_flight": self.max_in_flight,
        }


DEFAULT_LIMITS = Limits()

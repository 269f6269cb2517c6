"""Hard limits, enforced while decoding and before anything is allocated."""

from __future__ import annotations

from dataclasses import dataclass

PROTOCOL_VERSION = 1
DEFAULT_PORT = 7707

#: Length prefix size in bytes (unsigned, big-endian).
PREFIX_SIZE = 4
MAX_BUS_NAME = 64
MAX_STR = 4096
MAX_REQUEST_ID = 0xFFFF_FFFF
MAX_TIMEOUT_MS = 3_600_000


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

"""The checks, one module per area of SPEC.md; importing them registers them."""

from . import (  # noqa: F401
    admin,
    errors,
    frames,
    handshake,
    i2c,
    leases,
    limits,
    security,
    spi,
    timing,
    vectors,
)

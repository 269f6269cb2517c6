"""The buses a server serves: the backend interface and its two families of backends.

This package exports the interface (``base``): :class:`I2CBackend`, :class:`SpiBackend`
and :class:`BusError`, what the server needs from any bus.  The backends are in
subpackages, imported by name: ``sim`` (the simulated board: buses and devices)
and ``linux`` (real adapters through i2c-dev and spidev).
"""

from .base import BusError, I2CBackend, SpiBackend

__all__ = ["BusError", "I2CBackend", "SpiBackend"]

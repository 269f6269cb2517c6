"""Bus backends: the simulated board (``bridge.buses.sim``) and Linux i2c-dev / spidev
(``bridge.buses.linux``)."""

from .base import BusError, I2CBackend, SpiBackend

__all__ = ["BusError", "I2CBackend", "SpiBackend"]

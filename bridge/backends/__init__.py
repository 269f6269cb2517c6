"""Bus backends: the simulated board (``bridge.sim``) and Linux i2c-dev / spidev."""

from .base import BusError, I2CBackend, SpiBackend

__all__ = ["BusError", "I2CBackend", "SpiBackend"]

"""Bus backends: the simulated board and (later) Linux i2c-dev / spidev."""

from .base import BusError, I2CBackend, SpiBackend

__all__ = ["BusError", "I2CBackend", "SpiBackend"]

"""``spidev`` for code run under ``busbridge run``: the remote board's SPI buses."""

from bridge.dropin.spidev import SpiDev  # noqa: F401

__version__ = "3.8+busbridge"

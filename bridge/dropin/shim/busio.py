"""``busio`` (Blinka's surface) for code run under ``busbridge run``."""

from bridge.dropin.busio import I2C, SPI  # noqa: F401

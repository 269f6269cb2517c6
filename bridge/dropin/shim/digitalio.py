"""``digitalio`` for code run under ``busbridge run``: chip-select pins frame SPI."""

from bridge.dropin.digitalio import (  # noqa: F401
    DigitalInOut,
    Direction,
    DriveMode,
    Pull,
)

"""Drop-in smbus2, spidev and CircuitPython busio on a remote board's buses.

Import the classes directly (``from bridge.dropin import SMBus``) after
:func:`connect`, or run unchanged programs under ``busbridge run``, which
puts :mod:`bridge.dropin.shim` first on ``PYTHONPATH`` so that ``import
smbus2``, ``import smbus`` (python-smbus, :mod:`bridge.dropin.pysmbus`),
``import spidev``, ``import board``/``busio``/``digitalio`` land here.
"""

from __future__ import annotations

from .busio import I2C, SPI, Pin
from .digitalio import DigitalInOut, Direction
from .session import BusMap, DropinSession, connect, disconnect, session
from .smbus import I2cFunc, SMBus, i2c_msg
from .spidev import SpiDev

__all__ = [
    "I2C",
    "SPI",
    "BusMap",
    "DigitalInOut",
    "Direction",
    "DropinSession",
    "I2cFunc",
    "Pin",
    "SMBus",
    "SpiDev",
    "connect",
    "disconnect",
    "i2c_msg",
    "session",
]

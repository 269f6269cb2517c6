"""A Raspberry Pi-shaped ``board`` whose buses are a remote board's.

Blinka's own ``board`` detects the machine and refuses an unknown one (a CI
runner); this one names the Pi header pins (BCM numbering) so drivers and
examples written for a Pi run unchanged, with I2C on local bus 1 and SPI on
local bus 0 (mapped to remote buses by ``--map`` / ``BUSBRIDGE_MAP``).
"""

from __future__ import annotations

from .busio import I2C as _I2C
from .busio import SPI as _SPI
from .busio import Pin
from .session import session as _session

board_id = "BUSBRIDGE_REMOTE"

_pins = {f"D{n}": Pin(n, f"D{n}") for n in range(28)}
globals().update(_pins)

SDA = Pin(2, "SDA")
SCL = Pin(3, "SCL")
CE1 = Pin(7, "CE1")
CE0 = Pin(8, "CE0")
MISO = Pin(9, "MISO")
MOSI = Pin(10, "MOSI")
SCK = SCLK = Pin(11, "SCK")
TXD = Pin(14, "TXD")
RXD = Pin(15, "RXD")
ID_SD = Pin(0, "ID_SD")
ID_SC = Pin(1, "ID_SC")

_i2c: _I2C | None = None
_spi: _SPI | None = None


def I2C() -> _I2C:
    """The board's default I2C bus (a singleton per connection, as Blinka's is per process)."""
    global _i2c
    if _i2c is None or _i2c.deinited or _i2c.session is not _session():
        _i2c = _I2C(SCL, SDA)
    return _i2c


STEMMA_I2C = I2C


def SPI() -> _SPI:
    """The board's default SPI bus (a singleton per connection)."""
    global _spi
    if _spi is None or _spi.deinited or _spi.session is not _session():
        _spi = _SPI(SCK, MOSI, MISO)
    return _spi


"""The simulated board: I2C and SPI buses with devices, for tests, demos and benchmarks.

Build one by hand from these classes, or from a board TOML with
:func:`bridge.config.load_board` (``None`` gives the embedded default board).

- ``i2c``, ``spi``: the buses and the device base classes (``I2CDevice``, ``SpiDevice``)
- ``i2c_devices``, ``spi_devices``: generic devices (register maps, EEPROM, NOR flash, loopback)
- ``chips/``: models of particular parts, one module each (LIS3DH)
- ``common``: what both buses share (the stall check, the transaction log's entries)
"""

from .chips import Lis3dh, Tmp117
from .common import I2CLogEntry, LogEntry, SpiLogEntry
from .i2c import SIM_I2C_FUNCTIONALITY, I2CDevice, I2CDeviceOptions, SimI2CBus
from .i2c_devices import EEPROM_MODELS, Eeprom24, ModelDevice, RegisterMapDevice
from .spi import FloatingMiso, SimSpiBus, SpiDevice, SpiDeviceOptions, sim_spi_config
from .spi_devices import LoopbackDevice, SpiNorFlash, SpiRegisterDevice

__all__ = [
    "EEPROM_MODELS",
    "SIM_I2C_FUNCTIONALITY",
    "Eeprom24",
    "FloatingMiso",
    "I2CDevice",
    "I2CDeviceOptions",
    "I2CLogEntry",
    "Lis3dh",
    "LogEntry",
    "LoopbackDevice",
    "ModelDevice",
    "RegisterMapDevice",
    "SimI2CBus",
    "SimSpiBus",
    "SpiDevice",
    "SpiDeviceOptions",
    "SpiLogEntry",
    "SpiNorFlash",
    "SpiRegisterDevice",
    "Tmp117",
    "sim_spi_config",
]

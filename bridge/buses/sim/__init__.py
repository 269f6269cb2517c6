"""The simulated board: I2C and SPI buses with devices, for tests, demos and benchmarks.

Build one by hand from these classes, or from a board TOML with
:func:`bridge.config.load_board` (``None`` gives the embedded default board).
"""

from .i2c import SIM_I2C_FUNCTIONALITY, I2CDevice, I2CLogEntry, SimI2CBus
from .i2c_devices import EEPROM_MODELS, Eeprom24, RegisterMapDevice
from .spi import FloatingMiso, SimSpiBus, SpiDevice, SpiLogEntry, sim_spi_config
from .spi_devices import LoopbackDevice, SpiNorFlash

__all__ = [
    "EEPROM_MODELS",
    "SIM_I2C_FUNCTIONALITY",
    "Eeprom24",
    "FloatingMiso",
    "I2CDevice",
    "I2CLogEntry",
    "LoopbackDevice",
    "RegisterMapDevice",
    "SimI2CBus",
    "SimSpiBus",
    "SpiDevice",
    "SpiLogEntry",
    "SpiNorFlash",
    "sim_spi_config",
]

"""The simulated board: I2C and SPI buses with devices, for tests, demos and benchmarks.

Build one by hand from these classes, or from a board TOML with
:func:`bridge.config.load_board` (``None`` gives the embedded default board).

- ``i2c``, ``spi``: the buses and the device base classes (``I2CDevice``, ``SpiDevice``)
- ``i2c_devices``, ``spi_devices``: generic devices (register maps, EEPROM, NOR flash, loopback)
- ``chips/``: models of particular parts, one module each (docs/devices.md)
- ``model``: what every chip model shares: the test-control API, value sources, time
- ``control``: the test-control API for any simulated device, by bus and address
- ``common``: what both buses share (the stall check, the transaction log's entries)
"""

from .chips import (
    Ads1115,
    Bme280,
    Ds3231,
    I2CChip,
    Ina219,
    Lis3dh,
    Lm75,
    Mcp9808,
    Mcp23017,
    Mpu6050,
    Pca9685,
    RegisterChip,
    Sht31,
    Ssd1306,
    Tmp117,
)
from .common import I2CLogEntry, LogEntry, SpiLogEntry
from .i2c import SIM_I2C_FUNCTIONALITY, I2CDevice, I2CDeviceOptions, SimI2CBus
from .i2c_devices import EEPROM_MODELS, Eeprom24, ModelDevice, RegisterMapDevice
from .spi import FloatingMiso, SimSpiBus, SpiDevice, SpiDeviceOptions, sim_spi_config
from .spi_devices import LoopbackDevice, SpiNorFlash, SpiRegisterDevice

__all__ = [
    "EEPROM_MODELS",
    "SIM_I2C_FUNCTIONALITY",
    "Ads1115",
    "Bme280",
    "Ds3231",
    "Eeprom24",
    "FloatingMiso",
    "I2CChip",
    "I2CDevice",
    "I2CDeviceOptions",
    "I2CLogEntry",
    "Ina219",
    "Lis3dh",
    "Lm75",
    "LogEntry",
    "LoopbackDevice",
    "Mcp9808",
    "Mcp23017",
    "ModelDevice",
    "Mpu6050",
    "Pca9685",
    "RegisterChip",
    "RegisterMapDevice",
    "Sht31",
    "SimI2CBus",
    "SimSpiBus",
    "SpiDevice",
    "SpiDeviceOptions",
    "SpiLogEntry",
    "SpiNorFlash",
    "SpiRegisterDevice",
    "Ssd1306",
    "Tmp117",
    "sim_spi_config",
]

"""Models of particular chips, one module each (docs/devices.md has the catalogue).

A chip's model cites its datasheet and models the registers its common drivers
touch, with the behaviour in time they rely on; its board-file spec
(``type = "..."``) lives in :mod:`bridge.config.devices`.  Every model has the
test-control API of :class:`~bridge.buses.sim.model.SimModel`.

The I2C device classes are compiled in the mypyc build (setup.py's COMPILED), and
an interpreted class cannot inherit from a compiled one: so a chip model is a
plain class (:class:`I2CChip`, :class:`RegisterChip`) that owns the compiled
:class:`~bridge.buses.sim.i2c_devices.ModelDevice` the bus sees, and nothing
here needs compiling.
"""

from .ads1115 import Ads1115
from .base import I2CChip, RegisterChip
from .bme280 import Bme280
from .ds3231 import Ds3231
from .ina219 import Ina219
from .lis3dh import Lis3dh
from .lm75 import Lm75
from .mcp9808 import Mcp9808
from .mcp23017 import Mcp23017
from .mpu6050 import Mpu6050
from .pca9685 import Pca9685
from .sht31 import Sht31
from .ssd1306 import Ssd1306
from .tmp117 import Tmp117

__all__ = [
    "Ads1115",
    "Bme280",
    "Ds3231",
    "I2CChip",
    "Ina219",
    "Lis3dh",
    "Lm75",
    "Mcp9808",
    "Mcp23017",
    "Mpu6050",
    "Pca9685",
    "RegisterChip",
    "Sht31",
    "Ssd1306",
    "Tmp117",
]

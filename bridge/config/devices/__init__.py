"""Board-file types of the simulated devices: ``[[i2c.devices]]`` and ``[[spi.devices]]``.

Each spec validates its table and builds the device from :mod:`bridge.buses.sim`;
the simulator knows nothing of board files.  The ``type`` key selects the spec
from the two unions below.

To add a device type: a spec class with ``type: Literal["<name>"]``, derived
from :class:`I2CDeviceSpecBase` or :class:`SpiDeviceSpecBase` (which carry the
address or chip select, the name and the fault knobs), in a module of its own
here for a particular chip (as ``lis3dh.py`` beside the model in
``bridge/buses/sim/chips/lis3dh.py``) or in ``i2c.py`` / ``spi.py`` for a
generic one; then list it once in its union below.
"""

from typing import Annotated

from pydantic import Field

from .ads1115 import Ads1115Spec
from .base import I2CDeviceSpecBase, SpiDeviceSpecBase
from .bme280 import Bme280Spec
from .chip import I2CChipSpec, RegisterChipSpec
from .ds3231 import Ds3231Spec
from .i2c import EepromSpec, RegMapSpec
from .ina219 import Ina219Spec
from .lis3dh import Lis3dhI2CSpec, Lis3dhSpec
from .lm75 import Lm75Spec
from .mcp9808 import Mcp9808Spec
from .mcp23017 import Mcp23017Spec
from .mpu6050 import Mpu6050Spec
from .pca9685 import Pca9685Spec
from .sht31 import Sht31Spec
from .spi import LoopbackSpec, NorFlashSpec, SpiRegMapSpec
from .ssd1306 import Ssd1306Spec
from .tmp117 import Tmp117Spec

#: Every ``[[i2c.devices]]`` type: the generic devices, then the chip models.
I2CDeviceSpec = Annotated[
    RegMapSpec | EepromSpec | Tmp117Spec | Mcp9808Spec | Lm75Spec | Bme280Spec | Sht31Spec |
    Ads1115Spec | Ina219Spec | Pca9685Spec | Mcp23017Spec | Ds3231Spec | Mpu6050Spec |
    Ssd1306Spec | Lis3dhI2CSpec,
    Field(discriminator="type"),
]

SpiDeviceSpec = Annotated[
    LoopbackSpec | NorFlashSpec | SpiRegMapSpec | Lis3dhSpec, Field(discriminator="type")
]

__all__ = [
    "Ads1115Spec",
    "Bme280Spec",
    "Ds3231Spec",
    "EepromSpec",
    "I2CChipSpec",
    "I2CDeviceSpec",
    "I2CDeviceSpecBase",
    "Ina219Spec",
    "Lis3dhI2CSpec",
    "Lis3dhSpec",
    "Lm75Spec",
    "LoopbackSpec",
    "Mcp9808Spec",
    "Mcp23017Spec",
    "Mpu6050Spec",
    "NorFlashSpec",
    "Pca9685Spec",
    "RegMapSpec",
    "RegisterChipSpec",
    "Sht31Spec",
    "SpiDeviceSpec",
    "SpiDeviceSpecBase",
    "SpiRegMapSpec",
    "Ssd1306Spec",
    "Tmp117Spec",
]

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

from .base import I2CDeviceSpecBase, SpiDeviceSpecBase
from .i2c import EepromSpec, RegMapSpec
from .lis3dh import Lis3dhSpec
from .spi import LoopbackSpec, NorFlashSpec, SpiRegMapSpec
from .tmp117 import Tmp117Spec

I2CDeviceSpec = Annotated[
    RegMapSpec | EepromSpec | Tmp117Spec,
    Field(discriminator="type"),
]

SpiDeviceSpec = Annotated[
    LoopbackSpec | NorFlashSpec | SpiRegMapSpec | Lis3dhSpec, Field(discriminator="type")
]

__all__ = [
    "EepromSpec",
    "I2CDeviceSpec",
    "I2CDeviceSpecBase",
    "Lis3dhSpec",
    "LoopbackSpec",
    "NorFlashSpec",
    "RegMapSpec",
    "SpiDeviceSpec",
    "SpiDeviceSpecBase",
    "SpiRegMapSpec",
    "Tmp117Spec",
]

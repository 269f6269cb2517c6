"""Models of particular chips, one module each, built on the generic simulated devices.

A chip's model cites its datasheet and models the registers its common drivers
touch; its board-file spec (``type = "..."``) lives in :mod:`bridge.config.devices`.

The I2C device classes are compiled in the mypyc build (setup.py's COMPILED), and
an interpreted class cannot inherit from a compiled one: a chip module here that
subclasses an I2C device must be listed in COMPILED too (``scripts/check_compiled.sh``
catches it).
"""

from .lis3dh import Lis3dh
from .tmp117 import Tmp117

__all__ = ["Lis3dh", "Tmp117"]

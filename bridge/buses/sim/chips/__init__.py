"""Models of particular chips, one module each, built on the generic simulated devices.

A chip's model cites its datasheet and models the registers its common drivers
touch; its board-file spec (``type = "..."``) lives in :mod:`bridge.config.devices`.
"""

from .lis3dh import Lis3dh

__all__ = ["Lis3dh"]

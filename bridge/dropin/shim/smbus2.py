"""``smbus2`` for code run under ``busbridge run``: the remote board's I2C buses."""

from bridge.dropin.smbus import (  # noqa: F401
    I2C_M_RD,
    I2C_SMBUS_BLOCK_MAX,
    I2cFunc,
    SMBus,
    i2c_msg,
)

__version__ = "0.6.1+busbridge"

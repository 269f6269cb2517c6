"""``board`` for code run under ``busbridge run``: Raspberry Pi pin names."""

from bridge.dropin.board import *  # noqa: F403
from bridge.dropin.board import I2C, SPI, STEMMA_I2C, board_id  # noqa: F401

"""Board files: the TOML schema that describes a board's buses, devices and server settings.

- ``board``: the whole file (:class:`BoardConfig`), the built :class:`Board`, loading and
  the error messages that point into the file
- ``buses``: ``[[i2c]]`` / ``[[spi]]``, simulated, Linux or replay (from a recording)
- ``devices/``: the simulated device types (how to add one: its docstring)
- ``settings``: ``[server]`` and ``[mqtt]``
- ``fields``: the number and name types they all use
- ``boards/default.toml``: the embedded default board
"""

from .board import (
    Board,
    BoardConfig,
    BoardConfigError,
    board_config_from_toml_text,
    board_from_toml_text,
    build_board,
    default_board_text,
    load_board,
    load_board_config,
    replay_board,
)
from .settings import MqttSettings, ServerSettings

__all__ = [
    "Board",
    "BoardConfig",
    "BoardConfigError",
    "MqttSettings",
    "ServerSettings",
    "board_config_from_toml_text",
    "board_from_toml_text",
    "build_board",
    "default_board_text",
    "load_board",
    "load_board_config",
    "replay_board",
]

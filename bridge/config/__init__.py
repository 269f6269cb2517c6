"""Board files: the TOML schema that describes a board's buses, devices and server settings."""

from .board import (
    Board,
    BoardConfig,
    BoardConfigError,
    MqttSettings,
    ServerSettings,
    board_config_from_toml_text,
    board_from_toml_text,
    build_board,
    default_board_text,
    load_board,
    load_board_config,
)

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
]

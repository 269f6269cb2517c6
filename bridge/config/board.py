"""Board configuration: one TOML file describes a board's buses, devices and server settings.

Layout::

    name = "my-board"
    [server]                      # optional
    listen = "127.0.0.1:7707"
    request_timeout_ms = 1000
    [[i2c]]
    name = "1"
    backend = "sim"
    [[i2c.devices]]
    type = "eeprom"
    address = 0x50
    model = "24c32"
    [[spi]]
    name = "0"
    backend = "sim"
    [[spi.devices]]
    type = "nor_flash"
    cs = 0

``backend`` and ``type`` are discriminators: a new backend (``"linux"``) or
device type is one more model in the matching union (``buses.py``,
``devices/``); ``settings.py`` has ``[server]`` and ``[mqtt]``.  This module
has the whole file's model, the built board and the loading.  Validation
happens before anything is built, and every problem is reported with the file
and the bus/device it is about, because a board config is hand-written and
the error is the only documentation its author reads.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError, model_validator

from ..buses.base import I2CBackend, SpiBackend
from ..buses.sim import control
from ..buses.sim.control import Controllable, Kind
from ..recording import RecordingError, read_recording
from .buses import I2CBusSpec, SpiBusSpec
from .fields import STRICT
from .settings import MqttSettings, ServerSettings


class BoardConfigError(ValueError):
    """A board file that cannot be used; ``problems`` has one line per issue."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"invalid board config {source}:\n{lines}")


class BoardConfig(BaseModel):
    """A whole board file, validated but not built."""

    model_config = STRICT

    name: str = Field(min_length=1)
    description: str = ""
    server: ServerSettings = ServerSettings()
    mqtt: MqttSettings | None = None
    i2c: list[I2CBusSpec] = []
    spi: list[SpiBusSpec] = []

    @model_validator(mode="after")
    def _check_names(self) -> BoardConfig:
        for kind, buses in (("i2c", self.i2c), ("spi", self.spi)):
            seen: set[str] = set()
            for b in buses:
                if b.name in seen:
                    raise ValueError(f"two {kind} buses are named {b.name!r}")
                seen.add(b.name)
        return self


@dataclass
class Board:
    """A built board: live backends keyed by bus name, as the server serves them."""

    name: str
    i2c: dict[str, I2CBackend]
    spi: dict[str, SpiBackend]
    description: str = ""
    server: ServerSettings = field(default_factory=ServerSettings)
    source: str = ""
    mqtt: MqttSettings | None = None

    def close(self) -> None:
        for i2c_bus in self.i2c.values():
            i2c_bus.close()
        for spi_bus in self.spi.values():
            spi_bus.close()

    # Test control of the simulated buses, for the server's admin ops (which may not
    # import the simulator themselves); see bridge.buses.sim.control.

    def sim_device(self, kind: Kind, bus: str, where: int, ten_bit: bool = False
                   ) -> Controllable:
        """The simulated device at I2C address / SPI chip select ``where``: KeyError if
        there is none, ValueError if the bus is not simulated."""
        return control.find(self.i2c, self.spi, kind, bus, where, ten_bit=ten_bit)

    def sim_devices(self, bus: str | None = None) -> list[dict[str, Any]]:
        """Every device of the simulated buses (or of ``bus``), as ``sim.devices`` lists it."""
        return control.devices(self.i2c, self.spi, bus)

    def sim_log(self, kind: Kind, bus: str, since: int = 0, limit: int = 100
                ) -> tuple[list[dict[str, Any]], bool]:
        """A page of a simulated bus's transaction log, as ``sim.log`` answers it."""
        return control.log_entries(self.i2c, self.spi, kind, bus, since, limit)


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------

DEFAULT_BOARD = "default.toml"
_T = TypeVar("_T")


def _lookup(node: Any, key: Any) -> Any:
    if isinstance(node, dict):
        return node.get(key)
    if isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
        return node[key]
    return None


def _describe_device(i: int, dev: Any) -> str:
    if not isinstance(dev, dict):
        return f"device #{i}"
    kind = dev.get("type", "no type")
    if "cs" in dev:
        return f"device #{i} ({kind} on cs {dev['cs']})"
    addr = dev.get("address")
    if isinstance(addr, int) and not isinstance(addr, bool):
        where = f"{addr:#x}" + (" 10-bit" if dev.get("ten_bit") else "")
        return f"device #{i} ({kind} at {where})"
    return f"device #{i} ({kind})"


def _where(data: Any, loc: tuple[int | str, ...]) -> str:
    """Turn a pydantic location into words: ``i2c bus '1' > device #2 (eeprom at 0x50) > size``."""
    parts: list[str] = []
    node = data
    k = 0
    while k < len(loc):
        key = loc[k]
        nxt = loc[k + 1] if k + 1 < len(loc) else None
        child = _lookup(_lookup(node, key), nxt) if isinstance(nxt, int) else None
        if key in ("i2c", "spi") and isinstance(nxt, int) and node is data:
            name = child.get("name") if isinstance(child, dict) else None
            parts.append(f"{key} bus '{name}'" if name is not None else f"{key} bus #{nxt}")
            tag = child.get("backend") if isinstance(child, dict) else None
        elif key == "devices" and isinstance(nxt, int):
            parts.append(_describe_device(nxt, child))
            tag = child.get("type") if isinstance(child, dict) else None
        else:
            parts.append(str(key))
            node = _lookup(node, key)
            k += 1
            continue
        node = child
        k += 2
        if k < len(loc) and tag is not None and loc[k] == tag:
            k += 1  # pydantic puts the discriminator's value in the path
    return " > ".join(parts) or "board"


def _problem(data: Any, err: Any) -> str:
    loc = tuple(err["loc"])
    where = _where(data, loc)
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "union_tag_invalid":
        disc = str(ctx.get("discriminator", "")).strip("'")
        what = "backend" if disc == "backend" else "device type"
        msg = f"unknown {what} {ctx.get('tag')!r} (known: {ctx.get('expected_tags')})"
    elif kind == "union_tag_not_found":
        disc = str(ctx.get("discriminator", "")).strip("'")
        msg = f"missing {disc!r}" + (' (e.g. backend = "sim")' if disc == "backend" else "")
    elif kind == "extra_forbidden":
        msg = "unknown setting (typo?)"
    else:
        msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {msg}"


def board_config_from_toml_text(text: str, source: str = "<text>",
                                base_dir: str | None = None) -> BoardConfig:
    """Parse and validate; raises :class:`BoardConfigError` naming ``source``.

    Relative file names in the board (a replay bus's ``file``) are taken from
    ``base_dir`` (the board file's directory), else from the working directory.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise BoardConfigError(source, [f"not valid TOML: {e}"]) from None
    try:
        return BoardConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as e:
        raise BoardConfigError(source, [_problem(data, err) for err in e.errors()]) from None


def build_board(config: BoardConfig, source: str = "") -> Board:
    """Instantiate every bus; a bus that fails to build closes the ones already built."""
    i2c: dict[str, I2CBackend] = {}
    spi: dict[str, SpiBackend] = {}
    board = Board(config.name, i2c, spi, config.description, config.server, source, config.mqtt)
    try:
        for ib in config.i2c:
            i2c[ib.name] = _build(ib.build, source, f"i2c bus {ib.name!r}")
        for sb in config.spi:
            spi[sb.name] = _build(sb.build, source, f"spi bus {sb.name!r}")
    except BaseException:
        board.close()
        raise
    return board


def _build(fn: Callable[[], _T], source: str, where: str) -> _T:
    try:
        return fn()
    except ValueError as e:
        raise BoardConfigError(source or "<config>", [f"{where}: {e}"]) from e


def board_from_toml_text(text: str, source: str = "<text>") -> Board:
    """Build a board from TOML text (tests, embedded configs)."""
    return build_board(board_config_from_toml_text(text, source), source)


def default_board_text() -> str:
    """The embedded default board, ``bridge/config/boards/default.toml``."""
    return resources.files("bridge.config").joinpath("boards", DEFAULT_BOARD).read_text("utf-8")


def load_board_config(path: str | os.PathLike[str] | None) -> BoardConfig:
    """Validate a board file without building it; ``None`` is the embedded default board."""
    if path is None:
        return board_config_from_toml_text(default_board_text(), f"<embedded {DEFAULT_BOARD}>")
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise BoardConfigError(source, [f"cannot read: {e.strerror or e}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BoardConfigError(source, [f"not UTF-8: {e}"]) from None
    return board_config_from_toml_text(text, source, os.path.dirname(os.path.abspath(source)))


def load_board(path: str | os.PathLike[str] | None) -> Board:
    """Load and build a board; ``None`` loads the packaged simulated board."""
    source = f"<embedded {DEFAULT_BOARD}>" if path is None else os.fspath(path)
    return build_board(load_board_config(path), source)


def replay_board(path: str, mode: str = "strict") -> Board:
    """Every bus of a recording as a replay bus (``busbridge serve --replay FILE``).

    The board is named after the recorded one; its server settings are the defaults.
    """
    try:
        rec = read_recording(path)
    except OSError as e:
        raise BoardConfigError(path, [f"cannot read recording: {e.strerror or e}"]) from None
    except RecordingError as e:
        raise BoardConfigError(path, [str(e)]) from None
    data: dict[str, Any] = {"name": f"{rec.header.get('board') or 'board'} (replay)"}
    for kind in ("i2c", "spi"):
        data[kind] = [{"name": n, "backend": "replay", "file": path, "mode": mode}
                      for n in rec.buses(kind)]
    try:
        config = BoardConfig.model_validate(data)
    except ValidationError as e:
        raise BoardConfigError(path, [_problem(data, err) for err in e.errors()]) from None
    return build_board(config, path)


__all__ = [
    "DEFAULT_BOARD",
    "Board",
    "BoardConfig",
    "BoardConfigError",
    "board_config_from_toml_text",
    "board_from_toml_text",
    "build_board",
    "default_board_text",
    "load_board",
    "load_board_config",
    "replay_board",
]

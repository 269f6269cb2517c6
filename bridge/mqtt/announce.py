"""A serving board announced on MQTT: its settings, and its presence started beside the server.

Board side (like :mod:`.presence`).  The settings are the board file's
``[mqtt]`` with a command line's broker/advertise on top, checked before the
server starts, so a typo fails at once rather than in a publisher that keeps
retrying.  Importing this module does not import ``aiomqtt``: only a board that
does announce needs it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..config import MqttSettings
from .topics import BrokerAddress, Topics

if TYPE_CHECKING:
    from ..server import Server
    from .presence import Presence


def announce_settings(board: str, base: MqttSettings | None, broker: str | None,
                      advertise: str | None) -> MqttSettings | None:
    """``base`` (the board file's ``[mqtt]``) with ``broker``/``advertise`` applied, or None.

    None when there is no broker to announce on.  Raises ``ValueError`` for
    settings that cannot work (a bad broker address, a board name that cannot
    be a topic level) and ``OSError`` for TLS files that cannot be read.
    """
    if base is None and broker is None:
        return None
    updates: dict[str, Any] = {}
    if broker is not None:
        updates["broker"] = broker
    if advertise is not None:
        updates["advertise"] = advertise
    data = {**(base.model_dump() if base is not None else {}), **updates}
    settings = MqttSettings.model_validate(data)
    BrokerAddress.parse(settings.broker).client_kwargs(settings.ca_file)  # TLS files too
    Topics(settings.prefix).board(board, "status")
    return settings


async def serve_announced(settings: MqttSettings | None, description: str,
                          serve: Callable[[Callable[[Server], None]], Awaitable[None]],
                          ready: Callable[[Server], None],
                          announced: Callable[[Presence], None] | None = None) -> None:
    """Run ``serve(ready)``; once the server listens, start its presence beside it.

    ``announced`` is told about the presence once it has started.  The presence
    is stopped (announcing "offline") after the server has closed, so a board
    never says offline while it still answers.
    """
    started: list[Presence] = []

    def on_ready(server: Server) -> None:
        ready(server)
        if settings is not None:
            from .presence import Presence

            p = Presence(server, settings, description=description)
            p.start()
            started.append(p)
            if announced is not None:
                announced(p)

    try:
        await serve(on_ready)
    finally:
        for p in started:
            await p.stop()

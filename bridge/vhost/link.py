"""The agent's connection to the board server, re-established on demand.

Requests are never re-sent: a request in flight when the connection drops is
completed with an error (its effect on the bus is unknown).  Later requests
reconnect, at most once per back-off interval, so a dead server costs the
guest one quick error per request instead of a hang.
"""

from __future__ import annotations

import asyncio
import logging

from protocol.handshake import WelcomeInfo

from ..client import AsyncClient, ConnectionLost
from ..client.auth import ClientAuth
from ..logs import event

log = logging.getLogger("busbridge.vhost")


class ServerLink:
    def __init__(self, host: str, port: int, *, timeout: float = 5.0,
                 backoff: tuple[float, float] = (0.1, 5.0),
                 auth: ClientAuth | None = None) -> None:
        self.host = host
        self.auth = auth or ClientAuth()
        self.port = port
        self.timeout = timeout
        self.backoff_min, self.backoff_max = backoff
        self._backoff = self.backoff_min
        self._client: AsyncClient | None = None
        self._next_try = 0.0
        self._lock = asyncio.Lock()
        self.welcome: WelcomeInfo | None = None
        self.reconnects = 0

    async def start(self) -> WelcomeInfo:
        """First connection: failures raise, so a mistyped address is reported at once."""
        self._client = await AsyncClient.connect(self.host, self.port, timeout=self.timeout,
                                                 name="busbridge-vhost-user", auth=self.auth)
        assert self._client.welcome is not None
        self.welcome = self._client.welcome
        return self.welcome

    async def client(self) -> AsyncClient:
        c = self._client
        if c is not None and c.connected:
            return c
        async with self._lock:
            c = self._client
            if c is not None and c.connected:
                return c
            loop = asyncio.get_running_loop()
            if loop.time() < self._next_try:
                raise ConnectionLost(f"not connected to {self.host}:{self.port}; "
                                     f"next attempt in {self._next_try - loop.time():.1f} s")
            try:
                c = await AsyncClient.connect(self.host, self.port, timeout=self.timeout,
                                              name="busbridge-vhost-user", auth=self.auth)
            except (OSError, ConnectionError) as e:
                self._next_try = loop.time() + self._backoff
                self._backoff = min(self._backoff * 2, self.backoff_max)
                event(log, logging.WARNING, "server unreachable", server=f"{self.host}:"
                      f"{self.port}", error=str(e), retry_in=self._next_try - loop.time())
                raise ConnectionLost(f"cannot reconnect to {self.host}:{self.port}: {e}") from e
            self._backoff = self.backoff_min
            self._client = c
            self.welcome = c.welcome
            self.reconnects += 1
            event(log, logging.INFO, "reconnected", server=f"{self.host}:{self.port}")
            return c

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

"""What the synchronous clients share.

:class:`SyncClientBase` builds every bus call on two primitives a synchronous
client provides: :class:`~bridge.client.Client` provides them by running an
:class:`~bridge.client.AsyncClient` on a private event-loop thread, and
:class:`~bridge.client.BlockingClient` by doing the socket I/O on the caller's
thread.  So the two agree on every call, and neither depends on the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self, Unpack

from protocol.events import Result
from protocol.limits import DEFAULT_PORT
from protocol.virtio import I2CMsg, SpiTransfer

from .auth import ClientAuth
from .requests import SpiHead, raise_for_i2c, raise_for_spi, server_address, spi_xfer

__all__ = ["SyncClientBase"]


class SyncClientBase:
    """What the synchronous clients share: how they open, and the bus calls built on
    their two primitives, :meth:`_i2c_result` and :meth:`spi`."""

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
                 timeout: float = 5.0, name: str = "", leases: Sequence[str] = (),
                 auth: ClientAuth | None = None) -> None:
        """Connect and complete the handshake; the arguments mean what they mean for
        :meth:`AsyncClient.connect <bridge.client.AsyncClient.connect>`."""
        raise NotImplementedError  # pragma: no cover - the subclasses connect

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 5.0, name: str = "",
                 leases: Sequence[str] = (), auth: ClientAuth | None = None) -> Self:
        """Connect to ``HOST[:PORT]`` (port 7707 by default)."""
        host, port = server_address(url)
        return cls(host, port, timeout=timeout, name=name, leases=leases, auth=auth)

    def _i2c_result(self, bus: str | int, msgs: Sequence[I2CMsg], timeout: float | None,
                    chained: bool) -> Result:
        raise NotImplementedError  # pragma: no cover

    def spi(self, bus: str | int, cs: int, transfers: Sequence[SpiTransfer], *,
            timeout: float | None = None) -> Result:
        """One SPI message on ``cs``; every head's chip_select_id is set to ``cs``."""
        raise NotImplementedError  # pragma: no cover

    def i2c(self, bus: str | int, msgs: Sequence[I2CMsg], *, timeout: float | None = None
            ) -> Result:
        """Send virtio-i2c requests as they are (FAIL_NEXT flags are the caller's)."""
        return self._i2c_result(bus, msgs, timeout, False)

    def transfer(self, bus: str | int, msgs: Sequence[I2CMsg], *,
                 timeout: float | None = None) -> list[bytes]:
        """Run ``msgs`` as ONE combined transaction; return the read data, in order."""
        result = self._i2c_result(bus, msgs, timeout, True)
        if any(result.status):
            raise_for_i2c(result)
        return result.reads

    def spi_transfer(self, bus: str | int, cs: int, transfers: Sequence[SpiTransfer], *,
                     timeout: float | None = None) -> list[bytes]:
        """Run one SPI message; return the received bytes of each reading transfer."""
        result = self.spi(bus, cs, transfers, timeout=timeout)
        raise_for_spi(result)
        return result.reads

    def xfer(self, bus: str | int, cs: int, data: bytes | Sequence[int],
             **head: Unpack[SpiHead]) -> bytes:
        """Full-duplex transfer of ``data``; returns what was clocked in."""
        (rx,) = self.spi_transfer(bus, cs, [spi_xfer(data, **head)])
        return rx

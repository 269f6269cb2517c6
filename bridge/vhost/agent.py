"""Wire a device to the server connection and the vhost-user socket (one device per process)."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from ..client.auth import ClientAuth
from .backend import VhostUserBackend
from .device import VirtioDevice
from .i2c import VirtioI2CDevice
from .link import ServerLink
from .spi import VirtioSpiDevice


class AgentError(Exception):
    pass


async def make_device(link: ServerLink, bus: str, kind: str) -> VirtioDevice:
    """Connect, check the bus exists, and build the device from what the board advertises."""
    try:
        welcome = await link.start()
    except (OSError, ConnectionError) as e:
        raise AgentError(f"cannot connect to {link.host}:{link.port}: {e}") from e
    if kind == "i2c":
        if welcome.i2c_bus(bus) is None:
            raise AgentError(f"the board has no I2C bus {bus!r} (I2C buses: "
                             f"{', '.join(b.name for b in welcome.i2c) or 'none'})")
        return VirtioI2CDevice(link, bus)
    info = welcome.spi_bus(bus)
    if info is None:
        raise AgentError(f"the board has no SPI bus {bus!r} (SPI buses: "
                         f"{', '.join(b.name for b in welcome.spi) or 'none'})")
    return VirtioSpiDevice(link, bus, info.config)


async def run_agent(socket_path: str, host: str, port: int, bus: str, kind: str, *,
                    timeout: float = 5.0, ready: asyncio.Event | None = None,
                    auth: ClientAuth | None = None) -> None:
    """Serve until cancelled or SIGINT/SIGTERM."""
    link = ServerLink(host, port, timeout=timeout, auth=auth)
    device = await make_device(link, bus, kind)
    backend = VhostUserBackend(device, socket_path)
    backend.listen()
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(backend.serve_forever())
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, task.cancel)
    if ready is not None:
        ready.set()
    try:
        await task
    except asyncio.CancelledError:
        pass
    finally:
        backend.close()
        await link.close()

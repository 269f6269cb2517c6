"""What a virtio device behind the vhost-user socket must provide.

The base class owns the one promise the guest depends on: every chain handed
to :meth:`VirtioDevice.handle` is completed, whatever goes wrong (Linux's I2C and
SPI drivers wait without a timeout).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence

from ..logs import event
from .link import ServerLink
from .virtqueue import Chain, Virtqueue

log = logging.getLogger("busbridge.vhost")


class VirtioDevice:
    """One virtio device on the vhost-user socket: its IDs, features and config space,
    and what becomes of the chains its queue hands over."""

    device_id = 0
    features = 0
    protocol_features = 0
    #: Status byte written to a chain that fails for any reason.
    error_status: int = 1

    def __init__(self, link: ServerLink, bus: str) -> None:
        self.link = link
        self.bus = bus
        self._tasks: set[asyncio.Task[None]] = set()
        self.completed = 0
        self.failed = 0

    def config(self) -> bytes:
        """The device config space (GET_CONFIG)."""
        return b""

    def handle(self, vq: Virtqueue, chains: Sequence[Chain]) -> None:
        """Take freshly popped chains; completion happens asynchronously."""
        raise NotImplementedError

    def stop(self, vq: Virtqueue) -> None:
        """The ring is stopping: complete anything held back waiting for more chains."""

    # -- helpers for subclasses ---------------------------------------------------

    def spawn(self, vq: Virtqueue, chains: Sequence[Chain], work: Awaitable[None]) -> None:
        """Run ``work``; whatever happens, every chain in ``chains`` ends up completed."""
        task = asyncio.ensure_future(self._guard(vq, chains, work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, vq: Virtqueue, chains: Sequence[Chain], work: Awaitable[None]) -> None:
        try:
            await work
        except Exception as e:
            event(log, logging.WARNING, "request failed", bus=self.bus, error=str(e))
        finally:
            for c in chains:
                if not c.done:
                    self.fail(vq, c)
            self.signal(vq)

    def finish(self, vq: Virtqueue, chain: Chain, status: int, data: bytes = b"") -> None:
        """Write ``data`` and the trailing status byte, then publish the chain as used."""
        if chain.done:
            return
        try:
            n = chain.write(data) if data else 0
            wrote = chain.write_last_byte(status)
            vq.push(chain, n + 1 if wrote else 0)
        except (ValueError, OSError):
            # The mapping went away under us (memory table replaced): give the
            # descriptor back all the same.
            vq.push(chain, 0)
        if status == 0:
            self.completed += 1
        else:
            self.failed += 1

    def fail(self, vq: Virtqueue, chain: Chain, status: int | None = None) -> None:
        self.finish(vq, chain, self.error_status if status is None else status)

    @staticmethod
    def signal(vq: Virtqueue) -> None:
        try:
            vq.signal()
        except (ValueError, OSError) as e:
            event(log, logging.WARNING, "cannot signal the guest", error=str(e))

    async def drain(self, timeout: float) -> None:
        """Wait for requests in flight (bounded: their own timeouts end them)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

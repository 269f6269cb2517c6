"""The virtqueues of one front-end connection: mapping, kicks, and handing chains over.

Ring state is only touched from the event loop (kicks arrive on eventfds watched
by it). A broken ring, not just a broken chain, is disabled until the front end
resets it, so one bad descriptor cannot spin the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from ..logs import event
from . import messages
from .channel import VhostUserError
from .device import VirtioDevice
from .memory import GuestMemory, GuestMemoryError
from .virtqueue import ChainError, Virtqueue

log = logging.getLogger("busbridge.vhost")

#: How long GET_VRING_BASE waits for requests in flight before answering.
DRAIN_TIMEOUT = 10.0


class Rings:
    """The guest memory map and the virtqueues mapped into it."""

    def __init__(self, device: VirtioDevice, n_queues: int) -> None:
        self.device = device
        self.loop = asyncio.get_running_loop()
        self.mem = GuestMemory()
        self.queues = [Virtqueue(i) for i in range(n_queues)]

    def vq(self, index: int) -> Virtqueue:
        if not 0 <= index < len(self.queues):
            raise VhostUserError(f"no virtqueue {index}")
        return self.queues[index]

    def remap(self) -> None:
        for vq in self.queues:
            if vq.desc_addr and vq.size:
                try:
                    vq.map(self.mem)
                except (ChainError, GuestMemoryError) as e:
                    vq.unmap()
                    event(log, logging.DEBUG, "ring not mapped yet", index=vq.index, why=str(e))

    def set_fd(self, payload: bytes, fds: list[int], attr: str) -> Virtqueue:
        value = u64(payload)
        vq = self.vq(value & messages.VRING_FILE_INDEX_MASK)
        old = getattr(vq, attr)
        if attr == "kick_fd" and old is not None:
            self.loop.remove_reader(old)
        if old is not None:
            os.close(old)
        new = None if value & messages.VRING_FILE_NOFD or not fds else fds.pop(0)
        for fd in fds:
            os.close(fd)
        setattr(vq, attr, new)
        return vq

    def on_kick(self, vq: Virtqueue) -> None:
        if vq.kick_fd is not None:
            with contextlib.suppress(BlockingIOError):
                os.read(vq.kick_fd, 8)
        self.process(vq)

    def process(self, vq: Virtqueue) -> None:
        """Take every available chain and hand them to the device."""
        if not vq.ready:
            return
        try:
            while True:
                chains = []
                while (c := vq.pop()) is not None:
                    chains.append(c)
                # EVENT_IDX: ask for a kick on the next new entry, then look again
                # in case the driver queued one before seeing the update.
                vq.publish_avail_event()
                if chains:
                    self.device.handle(vq, chains)
                if vq.pending() == 0:
                    return
        except (ChainError, GuestMemoryError, ValueError) as e:
            # A broken ring (not just a broken chain): stop using it until reset.
            event(log, logging.WARNING, "virtqueue broken", index=vq.index, error=str(e))
            vq.enabled = False

    async def stop(self, vq: Virtqueue) -> None:
        if vq.kick_fd is not None:
            self.loop.remove_reader(vq.kick_fd)
        was = vq.started
        vq.started = False
        if was or vq.mem is not None:
            self.device.stop(vq)
            await self.device.drain(DRAIN_TIMEOUT)
        vq.unmap()



def u64(payload: bytes) -> int:
    if len(payload) < 8:
        raise VhostUserError("payload too short for a u64")
    return int(messages.U64.unpack_from(payload)[0])
